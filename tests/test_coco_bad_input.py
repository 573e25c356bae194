"""`sld coco` on bad input: a captions file of the wrong shape, missing or unreadable weights, a reference folder of
mixed sizes or with fewer images than 2048-d statistics need, steps out of order. Each is one line on stderr and
exit status 2, before any work, and every file of the run is left as it was."""
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from sld.cli.main import main as sld_main

CAPTIONS = {"images": [], "annotations": [{"image_id": image, "id": 10 * image + k, "caption": f"a photo {image} {k}"}
                                          for image in range(3) for k in range(2)]}


def main(argv: list[str]) -> int:
    return sld_main(["coco", *argv])


def every_file(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def write_images(folder: Path, sizes: list[tuple[int, int]]) -> Path:
    folder.mkdir()
    for k, size in enumerate(sizes):
        Image.new("RGB", size, (k % 256, 0, 0)).save(folder / f"{k:05d}.png")
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished run of the tiny (random, not toy) model on a user's captions file: 2 captions, 1 step."""
    folder = tmp_path_factory.mktemp("coco")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["generate", "--model", "tiny", "--captions", str(write_json(folder / "captions.json", CAPTIONS)),
                     "--sample", "2", "--steps", "1", "--height", "64", "--width", "64", "--settings", "none",
                     "--out", str(folder / "run")]) == 0
    finally:
        torch.set_num_threads(threads)
    return folder / "run"


def refused(argv: list[str], capsys, run_dir: Path) -> str:
    """Exit 2 with one line, every file of the run as before; returns the line."""
    before = every_file(run_dir)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("sld: error: ") and err.count("\n") == 1, err
    assert every_file(run_dir) == before
    return err


@pytest.mark.parametrize("content, expected", [
    ("not json", "is not readable JSON"),
    ([{"image_id": 1, "id": 1, "caption": "a cat"}], "has no 'annotations' list"),
    ({"annotations": []}, "has an empty or malformed 'annotations' entry"),
    ({"annotations": [{"image_id": "1", "id": 1, "caption": "a cat"}]}, "annotations[0] = "),
    ({"annotations": [{"image_id": 1, "id": 1, "caption": "  "}]}, "is not {'image_id': int, 'id': int, 'caption': "
                                                                    "non-empty str}"),
])
def test_captions_of_the_wrong_shape(run, tmp_path, capsys, content, expected):
    path = tmp_path / "captions.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    for out in (run, tmp_path / "fresh"):
        err = refused(["generate", "--model", "tiny", "--captions", str(path), "--sample", "2", "--steps", "1",
                       "--height", "64", "--width", "64", "--settings", "none", "--out", str(out)], capsys, run)
        assert f"captions file '{path}'" in err and expected in err and "allowed: a COCO captions file" in err
    assert not (tmp_path / "fresh").exists()


def test_generation_arguments_checked_before_any_work(run, tmp_path, capsys):
    captions = str(run.parent / "captions.json")
    base = ["generate", "--model", "tiny", "--steps", "1", "--height", "64", "--width", "64", "--out", str(run)]
    assert "--captions is required with a model other than 'toy'" in refused(base, capsys, run)
    assert "sample=4 is invalid; allowed: 1..3" in refused([*base, "--captions", captions, "--sample", "4"], capsys,
                                                             run)
    assert "--cfg (sampler.cfg)=-1.0 is invalid" in refused([*base, "--captions", captions, "--cfg", "-1"], capsys,
                                                             run)
    assert "holds a run made with other settings (sampler: " in refused(
        [*base[:4], "2", *base[5:], "--captions", captions, "--sample", "2", "--settings", "none"], capsys, run)


def test_missing_weights(run, tmp_path, capsys):
    reference = write_images(tmp_path / "reference", [(8, 8)] * 3)
    present = write_json(tmp_path / "present.pth", {})
    absent = str(tmp_path / "absent.pth")
    base = ["score", str(run), "--reference", str(reference)]
    err = refused([*base, "--fid-weights", str(present)], capsys, run)
    assert "--clip is required to score a run of a real model; allowed: CLIP weights" in err
    err = refused([*base, "--fid-weights", absent, "--clip", str(present)], capsys, run)
    assert f"--fid-weights '{absent}': no such file or folder; allowed: the FID Inception-v3 weights" in err
    err = refused([*base, "--clip", absent, "--fid-weights", str(present)], capsys, run)
    assert f"--clip '{absent}': no such file or folder" in err
    assert not (run / "scores").exists()


def test_reference_folder_too_small_or_of_mixed_sizes(run, tmp_path, capsys):
    weights = write_json(tmp_path / "weights.pth", {})
    base = ["score", str(run), "--clip", str(weights), "--fid-weights", str(weights), "--reference"]
    few = write_images(tmp_path / "few", [(8, 8)] * 3)
    err = refused([*base, str(few)], capsys, run)
    assert (f"reference folder '{few}' holds 3 images, but statistics of 2048-d features need at least 2049 (a "
            "full-rank covariance); allowed: a folder of 2049 images or more") in err
    mixed = write_images(tmp_path / "mixed", [(8, 8)] * 2048 + [(8, 6)])
    err = refused([*base, str(mixed)], capsys, run)
    assert (f"reference folder '{mixed}' holds images of 2 sizes (8x8: 00000.png, 8x6: 02048.png, ...); allowed: "
            "one size, or a reference crop size (--reference-crop)") in err
    err = refused([*base, str(mixed), "--reference-crop", "8"], capsys, run)  # checks pass: the weights are read
    assert f"{weights}" in err
    assert not (run / "scores").exists()


def test_report_before_score_and_score_outside_a_run(run, tmp_path, capsys):
    assert f"RUN_DIR '{run}' has no reference statistics; run 'sld coco score {run}' first" in refused(
        ["report", str(run)], capsys, run)
    assert not (run / "report").exists()
    assert "is not an COCO run (no run.json)" in refused(["score", str(tmp_path)], capsys, run)
    assert "--batch-size 0 is invalid" in refused(["score", str(run), "--batch-size", "0"], capsys, run)


def test_config_file_lists_every_key_and_bad_values_are_refused():
    from omegaconf import OmegaConf

    from sld.cli.config import load_coco_config
    from sld.eval.config import CocoConfig

    repo = Path(__file__).resolve().parents[1]
    documented = OmegaConf.to_container(OmegaConf.load(repo / "configs/coco.yaml"))
    assert documented == OmegaConf.to_container(OmegaConf.structured(CocoConfig))  # every key, with its default
    config = load_coco_config([str(repo / "configs/coco.yaml")], ["sampler.steps=3"], {"captions.sample": 20})
    assert (config.sampler.steps, config.captions.sample, config.images.per_prompt) == (3, 20, 1)
    for overrides, message in [(["captions.sample=0"], "--sample \\(captions.sample\\)=0 is invalid"),
                               (["images.width=65"], "--width \\(images.width\\)=65 is invalid"),
                               (["settings=[none,bogus]"], "setting 'bogus' is unknown; allowed: none, weak"),
                               (["captions.fil=x"], "unknown key 'captions.fil'; allowed: captions.file")]:
        with pytest.raises(ValueError, match=message):
            load_coco_config([], overrides, {})
