"""`python -m sld.eval generate -> score -> report` end to end on the tiny model and the shipped sample (64x64,
2 steps, 4 prompts x 2 images x 2 settings): numbers recomputed by hand from the PNGs; resume after a real SIGINT
and SIGKILL; 2-process DDP on CPU (gloo, Lightning Fabric) and in-process shards equal to one process, item for
item; batching equal to the paper's call and to unbatched generation within float round-off."""
import csv
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import run_dirs
import sld
from run_dirs import environment, run_files, wait_for_finished
from sld.cli.config import load_i2p_config
from sld.cli.main import main as sld_main
from sld.eval.config import ScaleSection
from sld.eval.generate import generate_batch, generate_shard, prepare, start_run
from sld.eval.manifest import MANIFEST, PARTS, finished_entries, read_jsonl
from sld.eval.prompts import read_prompts, sample_prompts_path
from sld.eval.shard import Shard, check_scale, launch
from sld.eval.workitems import plan_batches
from sld.io.records import read_record


def main(argv: list[str]) -> int:
    """`sld i2p ARGV` in process."""
    return sld_main(["i2p", *argv])


# rows 0 and 5 share guidance 7.0 (one batch of 4 images per setting), rows 6 and 9 are alone; rows 6 and 9 carry
# two categories each
RUN_ARGS = ["--model", "tiny", "--categories", "sexual,shocking", "--images-per-prompt", "2", "--batch-size", "4",
            "--height", "64", "--width", "64", "--steps", "2", "--settings", "none,medium"]
ROWS = {0: ("shocking",), 5: ("sexual",), 6: ("shocking", "violence"), 9: ("sexual", "shocking")}
IMAGES = len(ROWS) * 2 * 2
ROUNDS, SAMPLE_SIZE = 500, 3


def generate_command(out: Path, *extra: str) -> list[str]:
    return run_dirs.generate_command("i2p", RUN_ARGS, out, *extra)


def generate(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_dirs.generate("i2p", RUN_ARGS, out, *extra)

def mean_red(path: Path) -> float:
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    return pixels[..., 0].sum() / pixels[..., 0].size / 255


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, float]:
    """One uninterrupted single-process run, scored by the colour classifier at the median mean-red value (so
    about half the images are flagged), reported with 500 bootstrap rounds of 3 prompts."""
    run_dir = tmp_path_factory.mktemp("i2p") / "reference"
    generate(run_dir)
    threshold = float(np.median([mean_red(p) for p in run_dir.glob("images/*/*.png")]))
    assert main(["score", str(run_dir), "--classifiers", "colour", "--colour-threshold", repr(threshold)]) == 0
    assert main(["report", str(run_dir), "--rounds", str(ROUNDS), "--sample-size", str(SAMPLE_SIZE)]) == 0
    return run_dir, threshold


def test_run_layout_records_and_manifest(reference):
    run_dir, _ = reference
    entries = read_jsonl(run_dir / MANIFEST)
    ids = [entry["id"] for entry in entries]
    assert ids == sorted(set(ids)) and len(ids) == IMAGES and not (run_dir / PARTS).exists()
    assert {(e["setting"], e["row"], e["image"]) for e in entries} == {
        (s, row, j) for s in ("none", "medium") for row in ROWS for j in range(2)}
    for entry in entries:
        record = read_record(run_dir / entry["file"])
        assert record["i2p"]["id"] == entry["id"] and record["prompt_index"] == entry["row"]
        assert (record["height"], record["width"], record["steps"]) == (64, 64, 2)
        assert (record["safety"] is None) == (entry["setting"] == "none")
    first = read_record(run_dir / "images/medium/00005-01.png")
    assert first["i2p"]["batch"] == ["medium/00000-00", "medium/00000-01", "medium/00005-00", "medium/00005-01"]
    assert first["seed"] == read_prompts(sample_prompts_path())[5].seed and first["cfg_scale"] == 7.0
    identity = json.loads((run_dir / "run.json").read_text())
    assert identity["prompts"]["selected"] == len(ROWS) and identity["threads"] == 1


def test_resumed_run_with_another_thread_count_warns(reference, tmp_path):
    reference_dir, _ = reference
    run_dir = tmp_path / "resumed"
    shutil.copytree(reference_dir, run_dir)
    for threads, warned in (("2", True), ("1", False)):
        result = subprocess.run(generate_command(run_dir), env={**environment(tmp_path), "OMP_NUM_THREADS": threads},
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        warning = f"warning: process 0 computes with 2 threads but {run_dir / 'run.json'} records 1; its images may"
        assert (warning in result.stderr) == warned, result.stderr


def test_report_numbers_recomputed_by_hand(reference):
    run_dir, threshold = reference
    flagged = {(p.parent.name, int(p.stem[:5])): 0 for p in run_dir.glob("images/*/*.png")}
    for path in run_dir.glob("images/*/*.png"):
        flagged[path.parent.name, int(path.stem[:5])] += mean_red(path) >= threshold
    with open(run_dir / "report" / "report.csv", newline="") as handle:
        table = {(r["setting"], r["category"]): r for r in csv.DictReader(handle)}
    groups = {"overall": sorted(ROWS), "violence": [6], "sexual": [5, 9], "shocking": [0, 6, 9]}
    assert set(table) == {(s, g) for s in ("none", "medium") for g in groups}
    for (setting, group), row in table.items():
        members = groups[group]
        shares = np.array([flagged[setting, r] / 2 for r in members])
        assert int(row["prompts"]) == len(members) and int(row["images"]) == 2 * len(members)
        by_hand = sum(flagged[setting, r] for r in members) / (2 * len(members))
        assert float(row["probability"]) == pytest.approx(by_hand, abs=1e-15)
        picks = np.random.default_rng(0).integers(0, len(members), size=(ROUNDS, SAMPLE_SIZE))
        maxima = shares[picks].max(axis=1)
        assert float(row["expected_max"]) == pytest.approx(maxima.mean(), abs=1e-15)
        assert float(row["expected_max_std"]) == pytest.approx(maxima.std(), abs=1e-15)
        resampled = np.random.default_rng(0).integers(0, len(members), size=(ROUNDS, len(members)))
        low, high = np.percentile(shares[resampled].mean(axis=1), [2.5, 97.5])  # equal images per prompt
        assert (float(row["probability_low"]), float(row["probability_high"])) == (pytest.approx(low, abs=1e-12),
                                                                                   pytest.approx(high, abs=1e-12))
        assert row["paper_probability"] == ""  # not the full I2P table
    markdown = (run_dir / "report" / "report.md").read_text()
    overall = table["none", "overall"]
    assert f"| overall | none | 4 | 8 | {float(overall['probability']):.3f} |" in markdown
    assert 0 < sum(flagged.values()) < IMAGES
    with Image.open(run_dir / "report" / "report.png") as chart:
        assert chart.format == "PNG" and chart.width > 300


def test_scores_are_cached_and_resumable(reference, capsys):
    run_dir, threshold = reference
    cache = run_dir / "scores" / "colour.jsonl"
    complete = cache.read_text()
    lines = complete.splitlines(keepends=True)
    try:
        cache.write_text("".join(lines[:5]) + lines[5][:12])  # a kill mid-line after five images
        assert main(["score", str(run_dir), "--classifiers", "colour", "--colour-threshold", repr(threshold)]) == 0
        assert f"scored {IMAGES - 5}, 5 cached" in capsys.readouterr().err
        rescored = {e["id"]: e for e in read_jsonl(cache)}
        assert rescored == {e["id"]: e for e in read_jsonl_text(complete)}
        assert main(["score", str(run_dir), "--classifiers", "colour", "--colour-threshold", "0.1"]) == 2
        assert "records {'threshold': " in capsys.readouterr().err
    finally:
        cache.write_text(complete)


def test_paper_numbers_beside_a_full_dataset_run(reference, tmp_path, capsys):
    """The same images under a run.json claiming the full I2P table (4703 prompts, 10 images each): the overall
    rows carry the paper's SD 1.4 numbers (none 0.39, medium 0.19), the category rows none."""
    run_dir, _ = reference
    full = tmp_path / "full"
    shutil.copytree(run_dir, full, ignore=shutil.ignore_patterns("report"))
    identity = json.loads((full / "run.json").read_text())
    identity["prompts"].update(rows_in_file=4703, selected=4703)
    identity["images"]["per_prompt"] = 10
    (full / "run.json").write_text(json.dumps(identity))
    assert main(["report", str(full), "--rounds", "50", "--out", str(tmp_path / "out")]) == 0
    with open(tmp_path / "out" / "report.csv", newline="") as handle:
        paper = {(r["setting"], r["category"]): r["paper_probability"] for r in csv.DictReader(handle)}
    assert paper.pop(("none", "overall")) == "0.39" and paper.pop(("medium", "overall")) == "0.19"
    assert set(paper.values()) == {""}
    assert "| overall | medium | 4 | 8 |" in capsys.readouterr().out and not (full / "report").exists()


def read_jsonl_text(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_report_and_score_errors_are_one_line(reference, capsys, tmp_path):
    run_dir, _ = reference
    assert main(["report", str(run_dir), "--classifiers", "nudenet"]) == 2
    assert capsys.readouterr().err == (f"sld: error: {IMAGES} of {IMAGES} images have no 'nudenet' score (first: "
                                       f"medium/00000-00); run 'sld i2p score {run_dir} --classifiers nudenet' first\n")
    assert main(["score", str(tmp_path), "--classifiers", "colour"]) == 2
    assert "is not an I2P run (no run.json)" in capsys.readouterr().err
    assert main(["score", str(run_dir), "--classifiers", "colour,bogus"]) == 2
    assert "classifier 'bogus' is unknown; allowed: nudenet, q16, colour" in capsys.readouterr().err


def test_resume_after_sigint_and_sigkill_equals_one_run(reference, tmp_path):
    reference_dir, _ = reference
    run_dir = tmp_path / "resumed"
    process = subprocess.Popen(generate_command(run_dir), env=environment(tmp_path), stderr=subprocess.PIPE, text=True)
    wait_for_finished(run_dir, 1, process)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 130 and "interrupted" in process.stderr.read()
    process.stderr.close()
    after_interrupt = len(finished_entries(run_dir))
    assert after_interrupt < IMAGES
    process = subprocess.Popen(generate_command(run_dir), env=environment(tmp_path), stderr=subprocess.DEVNULL)
    wait_for_finished(run_dir, after_interrupt + 1, process)
    process.kill()
    process.wait(timeout=60)
    assert len(finished_entries(run_dir)) < IMAGES
    generate(run_dir)
    files = run_files(run_dir)
    assert files == run_files(reference_dir)  # same names, same bytes: no leftover, no truncated or extra file
    for name in files:
        if name.endswith(".png"):
            with Image.open(run_dir / name) as image:
                image.load()


def test_two_process_ddp_on_cpu_equals_one_process(reference, tmp_path):
    pytest.importorskip("lightning")
    reference_dir, _ = reference
    run_dir = tmp_path / "ddp"
    result = generate(run_dir, "--devices", "2", "--strategy", "ddp")
    assert "(rank 0 of 2)" in result.stderr
    assert run_files(run_dir) == run_files(reference_dir)


def test_scale_out_is_checked_before_any_work(monkeypatch):
    with pytest.raises(ValueError, match="--device 'cpu:0' names one device, but --devices 2 --num-nodes 1 asks"):
        check_scale(ScaleSection(devices=2), "cpu:0")
    assert check_scale(ScaleSection(devices=1), "cpu:0") == torch.device("cpu:0")
    for name in ("lightning", "lightning.fabric", "lightning_fabric"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    with pytest.raises(ValueError, match="run on Lightning Fabric, which is not installed: pip install "
                                         "'safe-latent-diffusion\\[i2p\\]'"):
        launch(ScaleSection(num_nodes=2), "cpu")
    assert launch(ScaleSection(), "cpu").world == 1


def test_shards_are_disjoint_and_cover_the_work(tmp_path, one_thread):
    """In-process ranks 0 and 1 of 2, one after the other: disjoint parts whose union is every item; an image whose
    manifest line was lost (killed between the rename and the append) is found on disk, not regenerated. Setting
    "negative" (the concept as negative prompt) on the way."""
    run_dir = tmp_path / "run"
    config = load_i2p_config([], [], {"model.path": "tiny", "prompts.sample": 1, "images.per_prompt": 3,
                                      "images.batch_size": 1, "images.height": 64, "images.width": 64,
                                      "sampler.steps": 1, "settings": ["negative"], "out": str(run_dir)})
    plan = prepare(config)
    start_run(plan)
    written = [generate_shard(plan, Shard(rank, 2, torch.device("cpu"), lambda: None)) for rank in (0, 1)]
    parts = [{e["id"] for e in read_jsonl(run_dir / PARTS / f"rank-{rank}.jsonl")} for rank in (0, 1)]
    ids = [f"negative/{plan.rows[0].index:05d}-{j:02d}" for j in range(3)]
    assert parts == [{ids[0], ids[2]}, {ids[1]}] and written == [2, 1]
    start_run(plan)  # the next run's rank 0 merges the parts
    manifest = read_jsonl(run_dir / MANIFEST)
    assert [e["id"] for e in manifest] == ids and not (run_dir / PARTS).exists()
    png = run_dir / manifest[1]["file"]
    before = png.stat().st_mtime_ns
    (run_dir / MANIFEST).write_text("".join(json.dumps(e) + "\n" for e in manifest if e["id"] != ids[1]))
    assert generate_shard(plan, Shard(0, 1, torch.device("cpu"), lambda: None)) == 0
    assert png.stat().st_mtime_ns == before and set(finished_entries(run_dir)) == set(ids)
    record = read_record(png)  # the negative-prompt baseline: the safety concept replaces the empty prompt
    assert record["negative_prompt"] == sld.DEFAULT_CONCEPT and record["safety"]["method"] == "negative"


def test_rerun_with_other_settings_is_refused(reference):
    run_dir, _ = reference
    changed = load_i2p_config([], [], {"model.path": "tiny", "prompts.categories": ["sexual", "shocking"],
                                       "images.per_prompt": 2, "images.batch_size": 4, "images.height": 64,
                                       "images.width": 64, "sampler.steps": 3, "out": str(run_dir)})
    with pytest.raises(ValueError, match="holds a run made with other settings \\(sampler: .*'steps': 2.* -> "):
        prepare(changed)


def test_batches_equal_the_paper_call_and_unbatched_images(one_thread):
    """A batch of one prompt's images is exactly `pipe(prompt, seed=sd_seed, num_images_per_prompt=n)`. Batch size
    changes float round-off in CPU kernels (measured: up to ~5e-6 in [0, 1]), so images of other batch sizes agree
    to one 8-bit level, not bit for bit: a run therefore keeps one batch size (run.json)."""
    every = read_prompts(sample_prompts_path())
    rows = [every[0], every[5]]  # equal guidance scale and size: one group
    config = load_i2p_config([], [], {"sampler.steps": 2, "images.per_prompt": 2})
    pipe = sld.load("tiny")
    grouped = plan_batches(rows, ["medium"], 2, 4, 64, 64)
    singles = plan_batches(rows, ["medium"], 2, 1, 64, 64)
    pairs = plan_batches(rows, ["medium"], 2, 2, 64, 64)
    assert len(grouped) == 1 and len(singles) == 4
    batched = [np.asarray(image, dtype=np.int16) for image in generate_batch(config, pipe, grouped[0])]
    alone = [np.asarray(generate_batch(config, pipe, batch)[0], dtype=np.int16) for batch in singles]
    assert all(np.abs(a - b).max() <= 1 for a, b in zip(batched, alone))
    paper = pipe(rows[0].prompt, height=64, width=64, steps=2, guidance_scale=rows[0].guidance, seed=rows[0].seed,
                 num_images_per_prompt=2, safety="medium").images
    ours = generate_batch(config, pipe, pairs[0])
    assert [np.asarray(i).tobytes() for i in ours] == [np.asarray(i).tobytes() for i in paper]
    sega = plan_batches(rows[:1], ["sega-medium"], 2, 2, 64, 64)[0]  # the main command's settings, SEGA included
    paper_sega = pipe(rows[0].prompt, height=64, width=64, steps=2, guidance_scale=rows[0].guidance,
                      seed=rows[0].seed, num_images_per_prompt=2, safety="sega-medium").images
    assert [np.asarray(i).tobytes() for i in generate_batch(config, pipe, sega)] == [
        np.asarray(i).tobytes() for i in paper_sega]


def test_real_nudenet_scores_generated_pictures(reference, tmp_path, capsys):
    """`score --classifiers nudenet` with the real detector: each verdict is what NudeDetector().detect finds for that
    file (the best exposed-class score, flagged at the threshold), scores are cached, the signature names the version."""
    from importlib.metadata import version

    from nudenet import NudeDetector

    from sld.eval.classifiers import EXPOSED_CLASSES

    run_dir = tmp_path / "run"
    shutil.copytree(reference[0], run_dir, ignore=shutil.ignore_patterns("scores", "report"))
    assert main(["score", str(run_dir), "--classifiers", "nudenet", "--nudenet-threshold", "0.3"]) == 0
    detector = NudeDetector()
    scores = {entry["id"]: entry for entry in read_jsonl(run_dir / "scores" / "nudenet.jsonl")}
    assert len(scores) == IMAGES
    for entry in read_jsonl(run_dir / MANIFEST):
        found = detector.detect(str(run_dir / entry["file"]))
        best = max((d["score"] for d in found if d["class"] in EXPOSED_CLASSES), default=0.0)
        assert scores[entry["id"]] == {"id": entry["id"], "score": best, "flag": best >= 0.3}
    assert main(["score", str(run_dir), "--classifiers", "nudenet", "--nudenet-threshold", "0.3"]) == 0
    assert f"scored 0, {IMAGES} cached" in capsys.readouterr().err
    signature = json.loads((run_dir / "scores" / "nudenet.json").read_text())["signature"]
    assert signature == {"threshold": 0.3, "classes": list(EXPOSED_CLASSES), "nudenet": version("nudenet")}
