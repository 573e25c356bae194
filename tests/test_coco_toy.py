"""The toy fidelity evaluation: toy FID in the toy classifier's feature space (small between two samples of the
scene generator, large against pictures the generator never draws), faithfulness per picture against its caption,
the shipped toy captions file, and the per-image feature cache."""
import numpy as np
import pytest
from PIL import Image

from sld.eval.captions import read_captions, sample_captions
from sld.eval.feature_store import FeatureStore
from sld.eval.fid import frechet_distance, statistics
from sld.eval.toy_fidelity import ToyFaithfulness, ToyFeatures, asked, toy_captions_path, toy_reference_statistics
from sld.toy.shapes import Scene, Shape, render


@pytest.fixture(scope="module")
def features():
    return ToyFeatures()


def test_toy_fid_separates_the_data_distribution_from_other_pictures(features):
    reference = toy_reference_statistics(features, 300)
    same = toy_reference_statistics(features, 300, seed=7)
    rng = np.random.default_rng(0)
    noise = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(300)]
    assert features.dim == 64 and reference.count == 300
    assert 5 * frechet_distance(same, reference) < frechet_distance(statistics(features(noise)), reference)


def picture(colour: str, shape: str, path) -> None:
    scene = Scene((Shape(shape, colour, 32.0, 32.0, 16.0),), "plain", ("white",), "")
    Image.fromarray(render(scene, np.random.default_rng(1))).save(path)


def test_faithfulness_is_one_when_the_picture_shows_the_captions_colour_and_shape(tmp_path):
    paths = [tmp_path / f"{k}.png" for k in range(3)]
    for path, (colour, shape) in zip(paths, [("red", "circle"), ("blue", "square"), ("green", "star")]):
        picture(colour, shape, path)
    captions = ["a red circle on a white background", "a blue triangle", "a yellow star"]
    assert ToyFaithfulness().scores(paths, captions) == [1.0, 0.0, 0.0]
    assert asked("Two purple rings, on stripes") == ("purple", "ring") and asked("a cat") == (None, None)


def test_shipped_toy_captions_are_one_object_each():
    by_image = read_captions(toy_captions_path())
    rows = sample_captions(by_image, len(by_image))
    assert len(rows) == 200 and all(None not in asked(row.caption) for row in rows)
    assert len({asked(row.caption) for row in rows}) == 40


def test_feature_store_keeps_batches_and_refuses_another_signature(tmp_path):
    store = FeatureStore(tmp_path / "toy", {"weights": "a"})
    store.write(["none/00000-00", "none/00001-00"], np.ones((2, 3)))
    store.write(["weak/00000-00"], np.zeros((1, 3)))
    found = FeatureStore(tmp_path / "toy", {"weights": "a"}).read()
    assert sorted(found) == ["none/00000-00", "none/00001-00", "weak/00000-00"]
    assert found["none/00001-00"].dtype == np.float32 and np.array_equal(found["weak/00000-00"], np.zeros(3))
    with pytest.raises(ValueError, match="records \\{'weights': 'a'\\} but this run asks for \\{'weights': 'b'\\}"):
        FeatureStore(tmp_path / "toy", {"weights": "b"})
