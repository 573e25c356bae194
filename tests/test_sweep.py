"""`sld sweep` end to end on the tiny model (64x64, 2 steps, 2 prompts x 2 seeds, a 4 x 2 grid over safety settings
and samplers): files, tables row by row against the pipeline's telemetry, sweep images equal to `sld generate`'s,
contact sheets cell by cell, resume, and one-line errors for bad grids."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import sld
from sld.cli.main import main
from sld.cli.sweep.grid import read_sweep
from sld.cli.sweep.tables import flatten_dotted
from sld.io.image_grid import row_label_width
from sld.io.records import RECORD_KEY, read_record

PROMPTS = ["a photo of a cat", "a red house"]
PRESETS = ["none", "max", "sega-max", "negative"]
SAMPLERS = ["ddim", "pndm"]
EVALUATIONS = {"ddim": 2, "pndm": 3}  # PNDM makes steps + 1 model evaluations
SEEDS = [7, 8, 9, 10]  # image j of prompt p: seed 7 + 2 p + j
CONFIG = f"""
model: {{path: tiny}}
prompt: {{file: prompts.txt}}
sampler: {{steps: 2, seed: 7}}
image: {{n: 2, height: 64, width: 64}}
sweep:
  sld.preset: [{', '.join(PRESETS)}]
  sampler:
    name: [{', '.join(SAMPLERS)}]
"""
POINTS = [(preset, sampler) for preset in PRESETS for sampler in SAMPLERS]  # run id order: the last key fastest


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def sweep(folder: Path, *extra: str) -> int:
    return main(["sweep", "--config", str(folder / "sweep.yaml"), "--out", str(folder / "out"), *extra])


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sweep")
    (folder / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    (folder / "sweep.yaml").write_text(CONFIG.replace("prompts.txt", str(folder / "prompts.txt")))
    assert sweep(folder) == 0
    return folder


def test_every_run_image_sheet_and_table_is_written(swept):
    out = swept / "out"
    assert sorted(p.name for p in out.iterdir()) == ["runs", "runs.csv", "sheets", "telemetry.csv"]
    assert sorted(p.name for p in (out / "runs").iterdir()) == [f"{r:03d}" for r in range(len(POINTS))]
    runs = read_csv(out / "runs.csv")
    assert len(runs) == len(POINTS) * len(PROMPTS) * 2 and list(runs[0]) == [
        "run_id", "sld.preset", "sampler.name", "prompt_index", "image_index", "prompt", "seed", "file"]
    for row in runs:
        preset, sampler = POINTS[int(row["run_id"])]
        record = read_record(out / row["file"])
        assert (row["sld.preset"], row["sampler.name"]) == (preset, sampler) and row["file"].startswith(
            f"runs/{int(row['run_id']):03d}/")
        assert (record["sampler"], record["prompt"], record["seed"]) == (sampler, row["prompt"], int(row["seed"]))
        assert int(row["seed"]) == SEEDS[2 * int(row["prompt_index"]) + int(row["image_index"])]
        assert (record["safety"] or {"preset": "none"})["preset"] == preset
    assert sorted(p.name for p in (out / "sheets").iterdir()) == ["sheet-00000-a-photo-of-a-cat.png",
                                                                 "sheet-00001-a-red-house.png"]


def test_telemetry_has_one_row_per_evaluation_per_image_per_run_as_the_pipeline_reports(swept):
    rows = read_csv(swept / "out" / "telemetry.csv")
    assert len(rows) == sum(EVALUATIONS[sampler] for _, sampler in POINTS) * len(PROMPTS) * 2  # 80
    columns = list(rows[0])
    assert columns[:8] == ["run_id", "sld.preset", "sampler.name", "prompt_index", "image_index", "seed", "index", "t"]
    assert {"sld.active_fraction", "sld.mean_abs_gamma", "sega.active_fraction", "sega.momentum_norm"} <= set(columns)
    pipe = sld.load("tiny")
    for run_id, (preset, sampler) in enumerate(POINTS):
        mine = [row for row in rows if row["run_id"] == str(run_id) and row["prompt_index"] == "1"
                and row["image_index"] == "0"]
        safety = None if preset == "none" else preset
        expected = pipe(PROMPTS[1], safety=safety, sampler=sampler, seed=SEEDS[2], steps=2, height=64, width=64,
                        output_type="latent").telemetry
        assert len(mine) == EVALUATIONS[sampler] == len(expected)
        for row, entry in zip(mine, expected):
            flat = flatten_dotted(entry)
            assert {key: row[key] for key in flat} == {key: str(value) for key, value in flat.items()}  # exact
            assert all(row[key] == "" for key in columns[8:] if key not in flat)  # other hooks' fields: empty


def test_sweep_image_is_the_generate_image_of_its_settings(swept, tmp_path):
    assert main(["generate", "--model", "tiny", "--prompt-file", str(swept / "prompts.txt"), "--preset", "sega-max", "--sampler", "pndm",
                 "--n", "2", "--seed", "7", "--steps", "2", "--height", "64", "--width", "64",
                 "--out", str(tmp_path)]) == 0
    run = swept / "out" / "runs" / f"{POINTS.index(('sega-max', 'pndm')):03d}"
    generated = sorted(tmp_path.glob("*.png"))
    assert [p.name for p in generated] == sorted(p.name for p in run.iterdir())  # same records, same names
    for file in generated:
        assert read_record(file) == read_record(run / file.name)
        assert np.array_equal(pixels(Image.open(file)), pixels(Image.open(run / file.name)))


def test_contact_sheet_has_a_labelled_row_per_run_and_a_column_per_seed(swept):
    out = swept / "out"
    sheet = Image.open(out / "sheets" / "sheet-00001-a-red-house.png")
    left = row_label_width(64)
    header = sheet.height - len(POINTS) * 64
    assert sheet.width == left + 2 * 64 and header > 0
    record = json.loads(sheet.text[RECORD_KEY])
    assert record["seeds"] == SEEDS[2:] and [row["label"] for row in record["rows"]] == [
        f"sld.preset={preset}\nsampler.name={sampler}" for preset, sampler in POINTS]
    runs = read_csv(out / "runs.csv")
    for row in (r for r in runs if r["prompt_index"] == "1"):
        top, column = header + int(row["run_id"]) * 64, left + int(row["image_index"]) * 64
        assert np.array_equal(pixels(sheet.crop((column, top, column + 64, top + 64))),
                              pixels(Image.open(out / row["file"])))
    assert pixels(sheet.crop((0, header, left, header + 64))).min() < 128  # the row label is drawn
    assert pixels(sheet.crop((left, 0, left + 64, header))).min() < 128  # the column label is drawn


def test_rerun_skips_finished_images_and_redoes_a_missing_one(swept, capsys):
    out = swept / "out"
    files = sorted((out / "runs").rglob("*.png"))
    stamps = {p: p.stat().st_mtime_ns for p in files}
    tables = {name: (out / name).read_text() for name in ("runs.csv", "telemetry.csv")}
    capsys.readouterr()
    assert sweep(swept) == 0
    assert f"0 written, {len(files)} already done" in capsys.readouterr().err
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in stamps.items())
    removed = files[5]
    kept = pixels(Image.open(removed))
    removed.unlink()
    assert sweep(swept) == 0
    assert f"1 written, {len(files) - 1} already done" in capsys.readouterr().err
    assert np.array_equal(pixels(Image.open(removed)), kept)
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in stamps.items() if p != removed)
    assert {name: (out / name).read_text() for name in tables} == tables


def test_grid_merges_files_nested_keys_and_sweep_overrides(tmp_path):
    (tmp_path / "a.yaml").write_text("sampler: {steps: 4}\nsweep:\n  sld.threshold: [0.0, 0.1]\n  sld.preset: [max]\n")
    (tmp_path / "b.yaml").write_text("sweep:\n  sampler: {name: [ddim, euler]}\n")
    overrides = ["sweep.sld.preset=[weak,strong]", "sampler.cfg=3", "hooks.args.x.y=1"]
    base, grid = read_sweep([str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")], overrides, {"sampler.seed": 5})
    assert grid == {"sld.threshold": [0.0, 0.1], "sld.preset": ["weak", "strong"], "sampler.name": ["ddim", "euler"]}
    assert (base.sampler.steps, base.sampler.cfg, base.sampler.seed, base.hooks.args.x.y) == (4, 3.0, 5, 1)


BAD_GRIDS = {
    "unknown key": (["sweep.sld.treshold=[0.1]"], "sweep key 'sld.treshold' is unknown; allowed: sampler.name, "
                    "sampler.spacing, sampler.steps, sampler.cfg, sampler.eta, sampler.karras, sld.preset, "
                    "sld.concept, sld.guidance_scale, sld.threshold, sld.warmup_steps, sld.momentum_scale, "
                    "sld.momentum_beta, hooks.names, prompt.negative, model.loras, model.embeddings, "
                    "hooks.args.<hook>.<keyword>"),
    "seeds are not swept": (["sweep.sampler.seed=[1,2]"], "sweep key 'sampler.seed' is unknown; allowed: sampler.name"),
    "not a list": (["sweep.sampler.steps=3"], "sweep key 'sampler.steps' has 3; allowed: a non-empty list of values"),
    "empty list": (["sweep.sampler.steps=[]"], "sweep key 'sampler.steps' has []; allowed: a non-empty list"),
    "wrong type": (["sweep.sampler.steps=[2,many]"],
                   "sweep run 1 (sld.preset=none, sampler.name=ddim, sampler.steps=many): Value 'many' of type 'str' "
                   "could not be converted to Integer (key sampler.steps)"),
    "invalid combination": (["sld.threshold=0.1"], "sweep run 0 (sld.preset=none, sampler.name=ddim): --sld-threshold "
                            "(sld.threshold) is set but --preset (sld.preset) is 'none'"),
    "unknown value": (["sweep.sampler.name=[ddim,euler_x]"], "sweep run 1 (sld.preset=none, sampler.name=euler_x): "
                      "--sampler (sampler.name)='euler_x' is unknown; allowed: pndm"),
}


@pytest.mark.parametrize("case", BAD_GRIDS)
def test_bad_grid_is_one_line_and_exit_status_2(case, tmp_path, capsys):
    (tmp_path / "sweep.yaml").write_text(CONFIG.replace("prompts.txt", "unused.txt"))
    overrides, expected = BAD_GRIDS[case]
    assert sweep(tmp_path, *overrides) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("sld: error: ") and expected in err, err
    assert not (tmp_path / "out").exists()  # nothing written before every grid point is checked


def test_a_config_without_a_sweep_mapping_is_refused(tmp_path, capsys):
    (tmp_path / "sweep.yaml").write_text("prompt: {text: a cat}\n")
    assert sweep(tmp_path) == 2
    assert "the config has no sweep: mapping or it is empty; allowed: sweep: a mapping" in capsys.readouterr().err
