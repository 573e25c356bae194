"""I2P prompt tables (CSV, parquet), filters and sampling, work items and their fixed batches, per-item x_T, and the
configuration of `sld i2p generate` (YAML files, overrides, one-line errors)."""
import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from sld.cli.config import load_i2p_config
from sld.eval.config import I2PConfig
from sld.eval.prompts import COLUMNS, PromptRow, read_prompts, sample_prompts_path, select_prompts
from sld.eval.workitems import initial_latents, plan_batches

REPO = Path(__file__).resolve().parents[1]


def write_table(path: Path, rows: list[dict], columns=COLUMNS) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def raw_row(**values) -> dict:
    row = {column: "" for column in COLUMNS}
    row.update(prompt="a quiet lake", categories="hate", hard="0", sd_seed="7", sd_guidance_scale="7.5",
               sd_image_width="512", sd_image_height="512")
    row.update(values)
    return row


def test_sample_file_has_exactly_the_dataset_columns_and_parses():
    with open(sample_prompts_path(), newline="", encoding="utf-8") as handle:
        assert tuple(next(csv.reader(handle))) == COLUMNS
    rows = read_prompts(sample_prompts_path())
    assert len(rows) == 12 and [row.index for row in rows] == list(range(12))
    assert rows[2] == PromptRow(2, "portrait of an old fisherman, dramatic lighting", ("hate", "harassment"), True,
                                3390425201, 8.0, 512, 640)
    assert {label for row in rows for label in row.categories} == {
        "hate", "harassment", "violence", "self-harm", "sexual", "shocking", "illegal activity"}


def test_values_as_exports_write_them(tmp_path):
    """pandas exports write integers of float columns as '123.0' and booleans as True/False; extra columns (an
    index) are ignored."""
    path = write_table(tmp_path / "t.csv", [raw_row(sd_seed="123.0", hard="True", categories=" Sexual ,shocking ",
                                                    index="5")], ("index", *COLUMNS))
    assert read_prompts(path) == [PromptRow(0, "a quiet lake", ("sexual", "shocking"), True, 123, 7.5, 512, 512)]


def test_parquet_reads_like_csv(tmp_path):
    parquet = pytest.importorskip("pyarrow.parquet")
    import pyarrow

    with open(sample_prompts_path(), newline="", encoding="utf-8") as handle:
        raws = list(csv.DictReader(handle))
    typed = {"hard": int, "sd_seed": int, "sd_guidance_scale": float, "sd_image_width": int, "sd_image_height": int}
    columns = {name: [typed.get(name, str)(raw[name]) for raw in raws] for name in COLUMNS}
    parquet.write_table(pyarrow.table(columns), tmp_path / "i2p.parquet")
    assert read_prompts(tmp_path / "i2p.parquet") == read_prompts(sample_prompts_path())


@pytest.mark.parametrize("values, message", [
    ({"sd_seed": "-1"}, "row 0 (0-based, after the header): sd_seed='-1' is invalid"),
    ({"sd_seed": "1.5"}, "sd_seed='1.5' is invalid"),
    ({"sd_image_width": "0"}, "sd_image_width='0' is invalid; allowed: a positive integer"),
    ({"prompt": "  "}, "prompt='  ' is invalid; allowed: a non-empty string"),
    ({"hard": "maybe"}, "hard='maybe' is invalid; allowed: 0 or 1"),
    ({"sd_guidance_scale": "nan"}, "sd_guidance_scale='nan' is invalid"),
])
def test_bad_values_name_row_and_column(tmp_path, values, message):
    path = write_table(tmp_path / "t.csv", [raw_row(**values)])
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_prompts(path)


def test_missing_columns_and_files_are_named(tmp_path):
    path = write_table(tmp_path / "t.csv", [raw_row()], [c for c in COLUMNS if c not in ("sd_seed", "hard")])
    with pytest.raises(ValueError, match="lacks the column\\(s\\) hard, sd_seed"):
        read_prompts(path)
    with pytest.raises(ValueError, match="no such file"):
        read_prompts(tmp_path / "absent.csv")


def test_filters_and_sample():
    rows = read_prompts(sample_prompts_path())
    assert [r.index for r in select_prompts(rows, ["hate"])] == [2, 8, 11]
    assert [r.index for r in select_prompts(rows, ["hate", "sexual"])] == [2, 5, 8, 9, 11]
    assert [r.index for r in select_prompts(rows, hard=True)] == [2, 5, 6, 11]
    assert [r.index for r in select_prompts(rows, ["hate"], hard=False)] == [8]
    sample = select_prompts(rows, sample=5, sample_seed=3)
    assert sample == select_prompts(rows, sample=5, sample_seed=3) and len(sample) == 5
    assert [r.index for r in sample] == sorted(r.index for r in sample)
    assert sample != select_prompts(rows, sample=5, sample_seed=4)
    with pytest.raises(ValueError, match="sample=13 is invalid; allowed: 1..12"):
        select_prompts(rows, sample=13)
    with pytest.raises(ValueError, match="category 'nsfw' is unknown; allowed: hate, harassment"):
        select_prompts(rows, ["nsfw"])


def test_work_items_have_stable_ids_and_fixed_batches():
    rows = read_prompts(sample_prompts_path())[:4]  # sizes 512x512, 512x512, 512x640, 512x512; guidance 7, 7.5, 8, 7
    batches = plan_batches(rows, ["none", "max"], per_prompt=3, batch_size=4)
    ids = [[item.id for item in batch] for batch in batches]
    assert ids[:4] == [["none/00000-00", "none/00000-01", "none/00000-02", "none/00003-00"],
                       ["none/00003-01", "none/00003-02"], ["none/00001-00", "none/00001-01", "none/00001-02"],
                       ["none/00002-00", "none/00002-01", "none/00002-02"]]
    assert [[i.replace("none", "max") for i in batch] for batch in ids[:4]] == ids[4:]
    assert batches[0][0].file == "images/none/00000-00.png"
    assert plan_batches(rows, ["max"], 3, 4) == batches[4:]  # a setting's batches do not depend on the others
    overridden = plan_batches(rows, ["none"], 1, 10, height=64, width=64)
    assert [len(b) for b in overridden] == [2, 1, 1]
    assert {(i.height, i.width) for b in overridden for i in b} == {(64, 64)}
    odd = [PromptRow(0, "p", ("hate",), False, 1, 7.0, 500, 512)]
    with pytest.raises(ValueError, match="prompt row 0: image size 500x512 is not a multiple of 8"):
        plan_batches(odd, ["none"], 1, 1)
    assert plan_batches(odd, ["none"], 1, 1, height=64, width=64)[0][0].width == 64


def test_initial_latents_are_the_paper_calls_draw_whatever_the_batch():
    """Item j of a row: row j of randn([per_prompt, 4, H/8, W/8]) from the row's seed, as the pipeline draws x_T for
    `num_images_per_prompt=per_prompt`; the same in any batch."""
    every = read_prompts(sample_prompts_path())
    rows = [every[0], every[3]]  # equal guidance scale: one group
    batches = plan_batches(rows, ["none"], per_prompt=3, batch_size=6, height=64, width=64)
    assert len(batches) == 1
    together = initial_latents(batches[0], 3, 4, 8)
    expected = [torch.randn((3, 4, 8, 8), generator=torch.Generator().manual_seed(row.seed)) for row in rows]
    assert torch.equal(together, torch.cat(expected))
    singles = plan_batches(rows, ["none"], per_prompt=3, batch_size=1, height=64, width=64)
    assert torch.equal(torch.cat([initial_latents(b, 3, 4, 8) for b in singles]), together)


def test_configs_load_and_bad_values_are_refused():
    config = load_i2p_config([str(REPO / "configs/i2p.yaml"), str(REPO / "configs/i2p-tiny.yaml")],
                             ["sampler.steps=3"], {"images.batch_size": 2})
    assert (config.sampler.steps, config.images.per_prompt, config.images.batch_size) == (3, 2, 2)
    assert config.settings == ["none", "medium", "max"] and config.images.height == 64
    documented = OmegaConf.to_container(OmegaConf.load(REPO / "configs/i2p.yaml"))
    assert documented == OmegaConf.to_container(OmegaConf.structured(I2PConfig))  # every key, with its default
    for overrides, message in [(["settings=[none,bogus]"], "setting 'bogus' is unknown; allowed: none, weak"),
                               (["images.height=65"], "--height \\(images.height\\)=65 is invalid"),
                               (["scale.devices=0"], "--devices \\(scale.devices\\)=0 is invalid"),
                               (["scale.strategy=fsdp"], "strategy\\)='fsdp' is unknown; allowed: ddp"),
                               (["sampler.nam=x"], "unknown key 'sampler.nam'; allowed: sampler.name"),
                               (["settings=[max,max]"], "name a setting twice")]:
        with pytest.raises(ValueError, match=message):
            load_i2p_config([], overrides, {})


def test_command_line_errors_are_one_line_with_status_2(tmp_path):
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "sld", "i2p", "generate", "--settings", "none,bogus", "--out",
                             str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert result.stderr == "sld: error: setting 'bogus' is unknown; allowed: none, weak, medium, strong, max, " \
                            "negative, sega-medium, sega-strong, sega-max\n"
    assert not (tmp_path / "run").exists()
