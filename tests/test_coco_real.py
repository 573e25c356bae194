"""`sld coco score | report` on a real model's run (the tiny random SD 1 model, a user's captions file) with the
real measures: the FID Inception network (random weights; its features cut to their first 3 dimensions, so that 4
reference images make a full-rank covariance instead of 2,049) and the CLIP score (random tiny CLIP). Scores equal
the scorers' direct output, the reference statistics are cached as .npz and read back, the report's FID equals a
direct computation."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import sld.eval.fid_features as fid_features
from sld.cli.main import main as sld_main
from sld.eval.clip_score import CLIPScorer
from sld.eval.clip_vision import center_crop
from sld.eval.fid import frechet_distance, statistics
from sld.eval.manifest import read_jsonl
from test_coco_clip_score import reference_model
from test_coco_fid import fid_weights

DIM, CAPTIONS = 3, 4


class FirstFeatures(fid_features.InceptionFeatures):
    """The FID Inception's pool features, first DIM of them, times 1e4 (random weights make them nearly constant:
    their spread over images is ~3e-5)."""

    dim = DIM

    def __call__(self, images):
        return super().__call__(images)[:, :DIM] * 1e4


def one_by_one(extract, images) -> np.ndarray:
    """Features image by image, as the score command computes them with --batch-size 1 (same float32 round-off)."""
    return np.concatenate([extract([image]) for image in images])


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("real")
    captions = {"annotations": [{"image_id": k, "id": k, "caption": f"a photo of {word}"}
                                for k, word in enumerate(["a cat", "a dog", "a red car", "a plate", "a stove"])]}
    (folder / "captions.json").write_text(json.dumps(captions))
    torch.save(fid_weights(3), folder / "inception.pth")
    (folder / "clip").mkdir()
    save_file(reference_model(11)[1], folder / "clip" / "model.safetensors")
    (folder / "val").mkdir()
    rng = np.random.default_rng(0)
    for k in range(DIM + 2):  # of two sizes: cropped to 32 x 32
        Image.fromarray(rng.integers(0, 256, (40 + 8 * (k % 2), 48, 3), dtype=np.uint8)).save(folder / f"val/{k}.png")
    return {name: folder / name for name in ("captions.json", "inception.pth", "clip", "val")} | {"root": folder}


def test_real_measures_score_and_report(files, monkeypatch, capsys):
    monkeypatch.setattr(fid_features, "InceptionFeatures", FirstFeatures)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    run = files["root"] / "run"
    try:
        assert sld_main(["coco", "generate", "--model", "tiny", "--captions", str(files["captions.json"]), "--sample",
                         str(CAPTIONS), "--steps", "1", "--height", "32", "--width", "32", "--settings", "none,max",
                         "--out", str(run)]) == 0
    finally:
        torch.set_num_threads(threads)
    score = ["coco", "score", str(run), "--clip", str(files["clip"]), "--fid-weights", str(files["inception.pth"]),
             "--reference", str(files["val"]), "--reference-crop", "32", "--batch-size", "1"]
    assert sld_main(score) == 0
    assert "reference statistics written to" in capsys.readouterr().err
    assert sld_main(score) == 0
    assert "reference statistics read from" in capsys.readouterr().err  # computed once
    assert sld_main(["coco", "report", str(run), "--rounds", "100", "--splits", "1"]) == 0
    with open(run / "report" / "report.csv", newline="") as handle:
        table = {row["setting"]: row for row in csv.DictReader(handle)}
    captions = {row["index"]: row["caption"] for row in read_jsonl(run / "prompts.jsonl")}
    extract = FirstFeatures(files["inception.pth"])
    val = [Image.open(p).convert("RGB") for p in sorted(files["val"].iterdir())]
    real = statistics(one_by_one(extract, [center_crop(image, 32) for image in val]))  # CLIP's geometry
    scorer = CLIPScorer(files["clip"])
    for setting in ("none", "max"):
        paths = [run / f"images/{setting}/{k:05d}-00.png" for k in range(CAPTIONS)]
        features = one_by_one(extract, [Image.open(p).convert("RGB") for p in paths])
        fid = frechet_distance(statistics(features.astype(np.float32).astype(np.float64)), real)  # cached as float32
        assert float(table[setting]["fid"]) == pytest.approx(fid, rel=1e-9) and fid > 1e-2
        clip = [scorer.scores([path], [captions[k]])[0] for k, path in enumerate(paths)]
        assert float(table[setting]["alignment"]) == pytest.approx(np.mean(clip), abs=1e-12) and np.mean(clip) > 0
    markdown = (run / "report" / "report.md").read_text()
    assert "| setting | images | FID | FID over splits | CLIP score | 95% interval |" in markdown
    assert f"against {DIM + 2} images of {files['val']}, centre-cropped to 32" in markdown
