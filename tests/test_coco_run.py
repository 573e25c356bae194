"""`sld coco generate -> score -> report` end to end on the toy model and the shipped toy captions (70 captions, 2
steps, settings none and medium): the report's numbers recomputed directly from the PNGs; generation resumed after
a real SIGINT and SIGKILL and run as 2 Lightning Fabric processes, both equal to one run byte for byte; the score
caches resumed after a cut; the I2P run of the same model beside the table; bad input as one line, exit 2, nothing
lost."""
import csv
import json
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import run_dirs
from run_dirs import environment, run_files, wait_for_finished
from sld.cli.main import main as sld_main
from sld.eval.fid import frechet_distance, statistics
from sld.eval.manifest import MANIFEST, PARTS, finished_entries, read_jsonl
from sld.eval.toy_fidelity import ToyFeatures, asked, pictures, toy_reference_statistics
from sld.io.records import read_record
from sld.toy.classifier import classify, load_scene_net

SAMPLE, SETTINGS = 70, ("none", "medium")  # 70 images per setting: above the 65 a 64-d toy FID needs
IMAGES = SAMPLE * len(SETTINGS)
RUN_ARGS = ["--model", "toy", "--sample", str(SAMPLE), "--sampler", "ddim", "--steps", "4", "--batch-size", "10",
            "--settings", ",".join(SETTINGS)]
TOY_REFERENCE, ROUNDS = 300, 200


def main(argv: list[str]) -> int:
    """`sld coco ARGV` in process."""
    return sld_main(["coco", *argv])


def generate_command(out: Path, *extra: str) -> list[str]:
    return run_dirs.generate_command("coco", RUN_ARGS, out, *extra)


def generate(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_dirs.generate("coco", RUN_ARGS, out, *extra)


def every_file(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def score_args(run_dir: Path) -> list[str]:
    return ["score", str(run_dir), "--toy-reference", str(TOY_REFERENCE), "--batch-size", "16"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One uninterrupted single-process run, scored and reported."""
    run_dir = tmp_path_factory.mktemp("coco") / "reference"
    generate(run_dir)
    assert main(score_args(run_dir)) == 0
    assert main(["report", str(run_dir), "--rounds", str(ROUNDS), "--splits", "2"]) == 0
    return run_dir


def read_csv(path: Path) -> dict[str, dict]:
    with open(path, newline="") as handle:
        return {row["setting"]: row for row in csv.DictReader(handle)}


def test_run_layout_records_and_captions(reference):
    entries = read_jsonl(reference / MANIFEST)
    assert [e["id"] for e in entries] == sorted(f"{s}/{k:05d}-00" for s in SETTINGS for k in range(SAMPLE))
    rows = read_jsonl(reference / "prompts.jsonl")
    assert [row["index"] for row in rows] == list(range(SAMPLE)) and not (reference / PARTS).exists()
    record = read_record(reference / "images/medium/00003-00.png")
    row = rows[3]
    assert record["prompt"] == row["caption"] and record["seed"] == row["image_id"]
    assert record["coco"]["image_id"] == row["image_id"] and record["coco"]["annotation_id"] == row["annotation_id"]
    assert (record["height"], record["width"], record["steps"], record["cfg_scale"]) == (64, 64, 4, 7.5)
    identity = json.loads((reference / "run.json").read_text())
    assert identity["prompts"]["file"] == "toy_captions.json" and identity["prompts"]["selected"] == SAMPLE


def test_report_numbers_equal_a_direct_computation(reference):
    """Toy FID from the PNGs' toy-classifier features against 300 fresh generator scenes, faithfulness from the toy
    classifier's colour and shape against each caption's words, the bootstrap interval by hand."""
    table = read_csv(reference / "report" / "report.csv")
    captions = {row["index"]: row["caption"] for row in read_jsonl(reference / "prompts.jsonl")}
    extract, net = ToyFeatures(), load_scene_net()
    real = toy_reference_statistics(extract, TOY_REFERENCE)
    assert set(table) == set(SETTINGS)
    for setting in SETTINGS:
        images = [Image.open(reference / f"images/{setting}/{k:05d}-00.png").convert("RGB") for k in range(SAMPLE)]
        features = extract(images)
        cached = features.astype(np.float32).astype(np.float64)  # the feature cache keeps float32
        row = table[setting]
        assert int(row["images"]) == SAMPLE
        assert float(row["fid"]) == pytest.approx(frechet_distance(statistics(cached), real), rel=1e-9)
        assert float(row["fid"]) == pytest.approx(frechet_distance(statistics(features), real), rel=1e-4)
        assert row["fid_split_mean"] == "" and row["splits"] == "2"  # 35 images per split: too few for 64-d
        found = classify(pictures(images), net)
        faithful = np.array([float((seen.colour, seen.shape) == asked(captions[k])) for k, seen in enumerate(found)])
        assert float(row["alignment"]) == pytest.approx(faithful.mean(), abs=1e-15) and 0 < faithful.mean() < 1
        picks = np.random.default_rng(0).integers(0, SAMPLE, size=(ROUNDS, SAMPLE))
        low, high = np.percentile(faithful[picks].mean(axis=1), [2.5, 97.5])
        assert (float(row["alignment_low"]), float(row["alignment_high"])) == (pytest.approx(low, abs=1e-12),
                                                                               pytest.approx(high, abs=1e-12))
        assert row["i2p_probability"] == ""
    markdown = (reference / "report" / "report.md").read_text()
    assert f"| none | {SAMPLE} | {float(table['none']['fid']):.2f} | n/a | {float(table['none']['alignment']):.3f} |" \
           in markdown
    with Image.open(reference / "report" / "report.png") as chart:
        assert chart.format == "PNG" and chart.width > 300


def test_score_caches_resume_after_a_cut(reference, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir, ignore=shutil.ignore_patterns("report"))
    batches = sorted((run_dir / "scores" / "toy-features").glob("batch-*.npz"))
    for path in batches[1:]:  # as if killed after the first feature batch
        path.unlink()
    cache = run_dir / "scores" / "toy-faithfulness.jsonl"
    lines = cache.read_text().splitlines(keepends=True)
    cache.write_text("".join(lines[:20]) + lines[20][:9])  # a kill mid-line after 20 images
    assert main(score_args(run_dir)) == 0
    assert (f"features of {IMAGES - 16} images computed, 16 cached; faithfulness of {IMAGES - 20} scored, 20 cached"
            in capsys.readouterr().err)
    assert main(["report", str(run_dir), "--rounds", str(ROUNDS), "--splits", "2"]) == 0
    assert (run_dir / "report" / "report.csv").read_text() == (reference / "report" / "report.csv").read_text()
    assert main(score_args(run_dir)) == 0
    assert f"features of 0 images computed, {IMAGES} cached" in capsys.readouterr().err


def test_generation_killed_and_resumed_equals_one_run(reference, tmp_path):
    run_dir = tmp_path / "resumed"
    process = subprocess.Popen(generate_command(run_dir), env=environment(tmp_path), stderr=subprocess.PIPE, text=True)
    wait_for_finished(run_dir, 10, process)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 130 and "interrupted" in process.stderr.read()
    process.stderr.close()
    after_interrupt = len(finished_entries(run_dir))
    process = subprocess.Popen(generate_command(run_dir), env=environment(tmp_path), stderr=subprocess.DEVNULL)
    wait_for_finished(run_dir, after_interrupt + 10, process)
    process.kill()
    process.wait(timeout=60)
    assert len(finished_entries(run_dir)) < IMAGES
    generate(run_dir)
    assert run_files(run_dir) == run_files(reference)


def test_two_processes_equal_one(reference, tmp_path):
    pytest.importorskip("lightning")
    run_dir = tmp_path / "ddp"
    result = generate(run_dir, "--devices", "2", "--strategy", "ddp")
    assert "(rank 0 of 2)" in result.stderr
    assert run_files(run_dir) == run_files(reference)


def test_i2p_run_of_the_same_model_joins_the_table(reference, tmp_path, capsys, one_thread):
    """An I2P run of the toy model, scored by the colour classifier: its overall flagged share per setting stands in
    the I2P column; an I2P run of another model is refused."""
    i2p = tmp_path / "i2p"
    base = ["i2p", "generate", "--sample", "2", "--images-per-prompt", "2", "--steps", "2", "--height", "64",
            "--width", "64", "--settings", ",".join(SETTINGS), "--out"]
    assert sld_main([*base, str(i2p), "--model", "toy"]) == 0
    assert sld_main(["i2p", "score", str(i2p), "--classifiers", "colour", "--colour-threshold", "0.3"]) == 0
    out = tmp_path / "out"
    assert main(["report", str(reference), "--i2p", str(i2p), "--rounds", str(ROUNDS), "--out", str(out)]) == 0
    flags = {e["id"]: e["flag"] for e in read_jsonl(i2p / "scores" / "colour.jsonl")}
    table = read_csv(out / "report.csv")
    for setting in SETTINGS:
        mine = [flag for item, flag in flags.items() if item.startswith(setting + "/")]
        assert len(mine) == 4 and float(table[setting]["i2p_probability"]) == pytest.approx(sum(mine) / 4, abs=1e-15)
    assert "I2P inappropriate |" in (out / "report.md").read_text()
    other = tmp_path / "other"
    assert sld_main([*base, str(other), "--model", "tiny"]) == 0
    capsys.readouterr()
    assert main(["report", str(reference), "--i2p", str(other), "--out", str(tmp_path / "x")]) == 2
    assert "is a run of tiny (" in capsys.readouterr().err and not (tmp_path / "x").exists()
