"""I2P in miniature: the shipped toy I2P table, the toyhazard classifier, and `sld i2p generate -> score -> report`
with the concept "blood" on the toy model, end to end on a few rows."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sld.cli.main import main as sld_main
from sld.eval.classifiers import ClassifierOptions, build_classifiers
from sld.eval.manifest import finished_entries
from sld.eval.prompts import prompts_path, read_prompts, select_prompts
from sld.eval.toy_i2p import KINDS, recipe_rates, table_rows, write_table
from sld.io.records import read_record
from sld.toy.classifier import CLASSIFIER_WEIGHTS
from sld.toy.shapes import dataset

REPO = Path(__file__).resolve().parents[1]
SHIPPED = prompts_path("toy")
PER_KIND = {"implicit": 12, "explicit": 6, "benign": 12}  # the shipped table's rows (README "I2P in miniature")


def test_shipped_table_is_the_one_the_recipe_writes(tmp_path):
    write_table(tmp_path / "toy_i2p.csv", PER_KIND)
    assert (tmp_path / "toy_i2p.csv").read_bytes() == SHIPPED.read_bytes()
    rows = read_prompts(SHIPPED)
    assert [len(select_prompts(rows, [kind])) for kind in KINDS] == list(PER_KIND.values())
    for row in rows:
        kind = row.categories[0]
        assert (row.width, row.height, row.guidance) == (64, 64, 7.5)
        assert ("angry" in row.prompt) == (kind == "implicit") and ("blood" in row.prompt) == (kind == "explicit")
    assert len({row.prompt for row in rows}) == len(rows) and len({row.seed for row in rows}) == len(rows)


def test_recipe_rates_are_the_training_datas():
    """61% of "angry" captions that do not name blood show it; 1% of the other captions without the word."""
    rates = recipe_rates()
    assert rates["implicit"] == pytest.approx(0.7 * 2 / 3 / (0.7 * 2 / 3 + 0.3))
    assert rates["benign"] == pytest.approx(0.01 / 0.99) and rates["explicit"] == 1.0
    with open(SHIPPED, newline="", encoding="utf-8") as handle:
        shipped = {row["categories"]: float(row["inappropriate_percentage"]) for row in csv.DictReader(handle)}
    assert shipped == {kind: round(100 * rates[kind], 1) for kind in KINDS}
    assert table_rows({"implicit": 1, "explicit": 0, "benign": 0}, seed=1) != table_rows(
        {"implicit": 1, "explicit": 0, "benign": 0}, seed=2)


def save_pictures(folder: Path, pictures: np.ndarray) -> list[Path]:
    paths = []
    for i, picture in enumerate(pictures):
        paths.append(folder / f"{i}.png")
        Image.fromarray(picture).save(paths[-1])
    return paths


def test_toyhazard_reads_the_generators_blood_labels(tmp_path):
    """Balanced held-out scenes (seed 9: neither the model's nor the classifier's training draws): the flags agree
    with the generator's labels on at least 98% of them, from PNG files as `sld i2p score` reads them."""
    scenes, pictures = dataset(9, 1500)
    blood = np.array([bool(s.blood) for s in scenes])
    chosen = np.concatenate([np.flatnonzero(blood)[:100], np.flatnonzero(~blood)[:100]])
    paths = save_pictures(tmp_path, pictures[chosen])
    classifier, = build_classifiers(["toyhazard"], ClassifierOptions())
    verdicts = classifier.classify(paths)
    flags = np.array([v.flag for v in verdicts])
    assert np.mean(flags == blood[chosen]) >= 0.98
    assert all((v.score > 0.5) == v.flag and 0 <= v.score <= 1 for v in verdicts)
    assert classifier.signature()["weights_sha256"] and CLASSIFIER_WEIGHTS.name == "toy_classifier.safetensors"


def test_toyhazard_refuses_pictures_of_another_size(tmp_path):
    Image.new("RGB", (128, 64)).save(tmp_path / "wide.png")
    classifier, = build_classifiers(["toyhazard"], ClassifierOptions())
    with pytest.raises(ValueError, match="toyhazard' reads the toy model's 64x64 pictures; .*wide.png is 128x64"):
        classifier.classify([tmp_path / "wide.png"])


def test_toy_i2p_runs_end_to_end_with_the_concept_blood(tmp_path, capsys):
    """generate (3 sampled rows, 2 images, 4 steps, SD and max), score with toyhazard, report: the concept is in
    run.json, in every SLD record, and in the report; the table's categories are the report's groups."""
    out = tmp_path / "run"
    assert sld_main(["i2p", "generate", "--config", str(REPO / "configs/i2p.yaml"), "--config",
                     str(REPO / "configs/i2p-toy.yaml"), "--sample", "6", "--images-per-prompt", "2",
                     "--steps", "4", "--settings", "none,max", "--out", str(out)]) == 0
    assert json.loads((out / "run.json").read_text())["concept"] == "blood"
    entries = list(finished_entries(out).values())
    assert len(entries) == 6 * 2 * 2
    for entry in entries:
        record = read_record(out / entry["file"])
        assert (record["safety"] or {}).get("concept") == ("blood" if entry["setting"] == "max" else None)
    assert sld_main(["i2p", "score", str(out), "--classifiers", "toyhazard"]) == 0
    assert sld_main(["i2p", "report", str(out)]) == 0
    report = (out / "report" / "report.md").read_text()
    assert "safety concept 'blood'" in report and "toyhazard" in report
    labels = {json.loads(line)["categories"][0] for line in (out / "prompts.jsonl").read_text().splitlines()}
    for label in labels:
        assert f"| {label} | none |" in report and f"| {label} | max |" in report


def test_a_concept_that_differs_from_the_runs_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["i2p", "generate", "--model", "tiny", "--sample", "1", "--images-per-prompt", "1", "--steps", "1",
            "--height", "64", "--width", "64", "--settings", "max", "--out", str(out)]
    assert sld_main(args) == 0
    assert sld_main(args + ["--concept", "blood"]) == 2
    assert "holds a run made with other settings (concept: None -> blood)" in capsys.readouterr().err
