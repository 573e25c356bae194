"""FID: the Inception network and the tf1 resize against torch-fidelity's modules (random weights, every tensor
randomised, float64), the clean resize against clean-fid's, the Fréchet distance against closed forms and the
eigenvalue formula with its error handling, and the cached reference statistics. The references are the published
files in tests/vendor/ (see its README for why they are copies)."""
import base64
import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import sld.eval.fid as fid
from models.checkpoint import CheckpointError
from reference import randomised
from sld.eval.fid import Statistics, frechet_distance, reference_statistics, statistics
from sld.eval.fid_features import InceptionFeatures, network_input, resize_clean, resize_tf1
from sld.eval.inception import FIDInceptionV3, load_fid_inception

VENDOR = Path(__file__).parent / "vendor"
# sha256 of each file as the wheels' RECORD lists it (torch-fidelity 0.4.0, clean-fid 0.1.35)
PUBLISHED = {
    "torch_fidelity/defaults.py": "zrRu69Kk1T5N-vMio2qKReRocswSNqwxVaeGs8QBsxI",
    "torch_fidelity/deprecations.py": "ebcgsBV40ZURVYEKS3lUsn-YBjgL9WGSzmdjep-AT7M",
    "torch_fidelity/feature_extractor_base.py": "CsCsiqRFmUGInnD7Csbe5q0t9I2hbIuAAlXgwl5rZs0",
    "torch_fidelity/feature_extractor_inceptionv3.py": "QTCP0WKjVx2L8FLi2_eyX5Rtqlp0pZHRuFt2ynugJi8",
    "torch_fidelity/helpers.py": "7YaD--eQtMSM48VekizxNT8yhtevyqUILgn2uVa4B4k",
    "torch_fidelity/interpolate_compat_tensorflow.py": "6QqWXwxPbhO50hYwi6NPgWIpa_SkQNgpiPRTqTXM7hE",
    "torch_fidelity/LICENSE.md": "PR4LdaUwlM42fLeEezH1SFGagzMp-5DErQAqaXLrDRI",
    "cleanfid/__init__.py": "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU",
    "cleanfid/resize.py": "xgNhjC5bSq03fwIUUFqCrQUcG9JNlVu0w_AqT1woa14",
    "cleanfid/LICENSE": "VMh3aq_WZp9FiUAgALi57r1Xe2C_fIWd5ixPzhq247U",
}


@pytest.fixture(scope="module")
def vendored(monkeypatch_module):
    monkeypatch_module.syspath_prepend(str(VENDOR))
    from cleanfid import resize
    from torch_fidelity import feature_extractor_inceptionv3, interpolate_compat_tensorflow

    return feature_extractor_inceptionv3, interpolate_compat_tensorflow, resize


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch
    for name in [name for name in sys.modules if name.split(".")[0] in ("torch_fidelity", "cleanfid")]:
        del sys.modules[name]


def test_vendored_references_are_the_published_files():
    for name, digest in PUBLISHED.items():
        found = base64.urlsafe_b64encode(hashlib.sha256((VENDOR / name).read_bytes()).digest()).rstrip(b"=").decode()
        assert found == digest, name


def fid_weights(seed: int) -> dict[str, torch.Tensor]:
    """A FID Inception state dict as the published file holds it (1008-class fc, batch-norm counters), every tensor
    randomised; variances positive."""
    with torch.device("meta"):
        names = FIDInceptionV3().state_dict()
    shapes = {key: torch.empty(value.shape) for key, value in names.items()}
    shapes.update({"fc.weight": torch.empty(1008, 2048), "fc.bias": torch.empty(1008)})
    weights = randomised(shapes, seed)
    for key in [key for key in weights if key.endswith("running_var")]:
        weights[key] = 0.5 + weights[key].abs() * 10
        weights[key.replace("running_var", "num_batches_tracked")] = torch.tensor(7)
    return weights


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / "pt_inception-random.pth"
    torch.save(fid_weights(3), path)
    return path


def random_images(sizes, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


@pytest.mark.parametrize("size", [(299, 299), (320, 240), (37, 53)])
def test_tf1_resize_matches_torch_fidelity(vendored, size):
    _, interpolate, _ = vendored
    pixels = torch.from_numpy(np.array(random_images([size], 1)[0])).permute(2, 0, 1)[None].double()
    expected = interpolate.interpolate_bilinear_2d_like_tensorflow1x(pixels, size=(299, 299), align_corners=False)
    assert (resize_tf1(pixels) - expected).abs().max() < 1e-10
    if size == (299, 299):
        assert torch.equal(resize_tf1(pixels), pixels)


@pytest.mark.parametrize("size", [(512, 512), (640, 480), (64, 64)])
def test_clean_resize_matches_clean_fid(vendored, size):
    _, _, clean = vendored
    pixels = np.asarray(random_images([size], 2)[0])
    expected = clean.make_resizer("PIL", False, "bicubic", (299, 299))(pixels)
    assert np.array_equal(resize_clean(pixels), expected)


def test_network_matches_torch_fidelity_in_float64(vendored, weights_file):
    """Pool features of 8-bit images of two sizes through the tf1 resize, against FeatureExtractorInceptionV3. Its
    float64 option maps to float32 (weights rounded on load) and it returns float32 features, so it is set to
    float64 by hand, the weights loaded again, and the features read at its pool layer."""
    inception, _, _ = vendored
    reference = inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], str(weights_file)).double()
    reference.load_state_dict(torch.load(weights_file), strict=True)
    reference.feature_extractor_internal_dtype = torch.float64
    pooled = []
    reference.AvgPool.register_forward_hook(lambda module, inputs, output: pooled.append(output.flatten(1)))
    features = InceptionFeatures(weights_file, "tf1", dtype=torch.float64)
    for size in ((320, 240), (48, 64)):
        images = random_images([size], 4)
        pixels = torch.stack([torch.from_numpy(np.array(image)).permute(2, 0, 1) for image in images])
        reference(pixels)
        expected = pooled.pop()
        assert expected.dtype == torch.float64
        found = features(images)
        assert expected.abs().max() > 0.1 and np.abs(found - expected.numpy()).max() < 1e-10 * expected.abs().max()


def test_clean_input_is_clean_fids_resize_then_the_graphs_normalisation(vendored):
    _, _, clean = vendored
    image = random_images([(640, 480)], 5)[0]
    resized = clean.make_resizer("PIL", False, "bicubic", (299, 299))(np.asarray(image))
    expected = (torch.from_numpy(resized).permute(2, 0, 1).double() - 128) / 128
    assert (network_input(image, "clean", torch.float64) - expected).abs().max() < 1e-12


def test_wrong_inception_weights_are_named(tmp_path):
    weights = fid_weights(5)
    with pytest.raises(CheckpointError, match="absent.pth: no such file; expected the FID Inception-v3 weights"):
        load_fid_inception(tmp_path / "absent.pth")
    torchvision_like = {**weights, "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000),
                        "AuxLogits.fc.weight": torch.zeros(1000, 768)}
    torch.save(torchvision_like, tmp_path / "inception_v3_google.pth")
    with pytest.raises(CheckpointError, match="not the FID Inception network \\(fc.weight of shape \\(1000, 2048\\), "
                                              "expected \\(1008, 2048\\): torchvision's 1000-class"):
        load_fid_inception(tmp_path / "inception_v3_google.pth")
    broken = {**weights, "Mixed_7c.branch_pool.bn.bias": torch.zeros(5), "AuxLogits.conv0.conv.weight": torch.zeros(1)}
    broken.pop("Mixed_5b.branch1x1.conv.weight")
    save_file({k: v.contiguous() for k, v in broken.items()}, tmp_path / "broken.safetensors")
    with pytest.raises(CheckpointError, match="weights do not match the FID Inception network; missing keys \\(1\\): "
                                              "'Mixed_5b.branch1x1.conv.weight'; unexpected keys \\(1\\): "
                                              "'AuxLogits.conv0.conv.weight'; wrong shapes \\(1\\): "
                                              "'Mixed_7c.branch_pool.bn.bias \\(5,\\) \\(expected \\(192,\\)\\)'"):
        load_fid_inception(tmp_path / "broken.safetensors")


def eigenvalue_fid(a: Statistics, b: Statistics) -> float:
    # torch-fidelity's formula: Tr((S_a S_b)^(1/2)) as the sum of the square roots of the product's eigenvalues
    root = np.sum(np.sqrt(np.linalg.eigvals(a.covariance @ b.covariance).astype(complex)).real)
    difference = a.mean - b.mean
    return float(difference @ difference + np.trace(a.covariance) + np.trace(b.covariance) - 2 * root)


def test_frechet_distance_matches_closed_forms_and_the_eigenvalue_formula():
    rng = np.random.default_rng(0)
    mean_a, mean_b, var_a, var_b = rng.normal(size=6), rng.normal(size=6), rng.uniform(0.1, 2, 6), rng.uniform(0.1, 2, 6)
    a, b = Statistics(mean_a, np.diag(var_a), 10), Statistics(mean_b, np.diag(var_b), 10)
    closed = np.sum((mean_a - mean_b) ** 2) + np.sum(var_a + var_b - 2 * np.sqrt(var_a * var_b))
    assert frechet_distance(a, b) == pytest.approx(closed, rel=1e-12)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-12)
    a, b = statistics(rng.normal(size=(200, 8))), statistics(rng.normal(size=(150, 8)) @ rng.normal(size=(8, 8)) + 1)
    assert frechet_distance(a, b) == pytest.approx(eigenvalue_fid(a, b), rel=1e-9)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)


def test_frechet_distance_error_handling(monkeypatch):
    identity = Statistics(np.zeros(3), np.eye(3), 4)
    with pytest.raises(ValueError, match="imaginary component of 1; the covariances are not positive semi-definite"):
        frechet_distance(Statistics(np.zeros(3), -np.eye(3), 4), identity)
    with pytest.raises(ValueError, match="statistics of 3 and 2 dimensions; allowed: the same feature space"):
        frechet_distance(identity, Statistics(np.zeros(2), np.eye(2), 4))
    calls = []

    def singular_then_offset(matrix):  # a non-finite root, then the root of the offset product with round-off
        calls.append(matrix)
        return np.full((3, 3), np.nan) if len(calls) == 1 else np.sqrt(matrix) + 1e-9j
    monkeypatch.setattr(fid, "_sqrtm", singular_then_offset)
    assert frechet_distance(identity, identity) == pytest.approx(6 - 2 * 3 * (1 + fid.SINGULAR_EPS), rel=1e-12)
    assert np.array_equal(calls[1], (1 + fid.SINGULAR_EPS) ** 2 * np.eye(3))


def test_statistics_are_float64_mean_and_unbiased_covariance():
    features = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
    stats = statistics(features)
    centred = features.astype(np.float64) - features.astype(np.float64).mean(axis=0)
    assert stats.count == 5 and stats.mean.dtype == np.float64
    assert np.allclose(stats.covariance, centred.T @ centred / 4, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="features of shape \\(3, 3\\); allowed: \\[N, D\\] with N >= D \\+ 1"):
        statistics(features[:3])


class MeanColour:
    """A 3-d feature extractor that counts the images it sees."""

    dim = 3

    def __init__(self, tag: str = "a"):
        self.tag, self.seen = tag, 0

    def signature(self) -> dict:
        return {"extractor": "mean colour", "tag": self.tag}

    def __call__(self, images):
        self.seen += len(images)
        return np.stack([np.asarray(image, dtype=np.float64).mean(axis=(0, 1)) for image in images])


def write_images(folder: Path, sizes) -> list[Path]:
    folder.mkdir(exist_ok=True)
    paths = []
    for k, image in enumerate(random_images(sizes, 6)):
        paths.append(folder / f"{k:03d}.png")
        image.save(paths[-1])
    return paths


def test_reference_statistics_are_computed_once_and_keyed_by_what_determines_them(tmp_path):
    paths = write_images(tmp_path / "coco", [(16, 12)] * 6)
    cache, extractor = tmp_path / "cache", MeanColour()
    stats, npz, cached = reference_statistics(tmp_path / "coco", extractor, cache, batch_size=4)
    assert (cached, extractor.seen, npz.parent, stats.count) == (False, 6, cache, 6)
    assert np.allclose(stats.mean, np.mean([np.asarray(Image.open(p), dtype=np.float64).mean(axis=(0, 1))
                                            for p in paths], axis=0), rtol=1e-12)
    again, same_npz, cached = reference_statistics(tmp_path / "coco", extractor, cache, batch_size=2)
    assert cached and same_npz == npz and extractor.seen == 6
    assert np.array_equal(again.covariance, stats.covariance)
    for changed in (MeanColour("b"), extractor):
        if changed is extractor:
            random_images([(16, 12)], 9)[0].save(paths[0])
            os.utime(paths[0], ns=(1, 1))
        _, other_npz, cached = reference_statistics(tmp_path / "coco", changed, cache, batch_size=4)
        assert not cached and other_npz != npz
    _, crop_npz, cached = reference_statistics(tmp_path / "coco", extractor, cache, batch_size=4, crop=8)
    assert not cached and crop_npz not in (npz, other_npz)


def test_reference_folder_problems_are_named_before_any_feature(tmp_path):
    extractor = MeanColour()
    write_images(tmp_path / "few", [(16, 12)] * 3)
    with pytest.raises(ValueError, match="reference folder '.*few' holds 3 images, but statistics of 3-d features "
                                         "need at least 4 \\(a full-rank covariance\\)"):
        reference_statistics(tmp_path / "few", extractor, tmp_path / "cache", batch_size=4)
    write_images(tmp_path / "mixed", [(16, 12)] * 3 + [(12, 16), (16, 16)])
    with pytest.raises(ValueError, match="reference folder '.*mixed' holds images of 3 sizes \\(16x12: 000.png, "
                                         "12x16: 003.png, ...\\); allowed: one size, or a reference crop size"):
        reference_statistics(tmp_path / "mixed", extractor, tmp_path / "cache", batch_size=4)
    with pytest.raises(ValueError, match="reference folder '.*absent': no such folder"):
        reference_statistics(tmp_path / "absent", extractor, tmp_path / "cache", batch_size=4)
    assert extractor.seen == 0
    stats, _, _ = reference_statistics(tmp_path / "mixed", extractor, tmp_path / "cache", batch_size=4, crop=8)
    assert stats.count == 5 and extractor.seen == 5
