"""SDXL through the command line (in process, tiny random SDXL file, 64x64, 2 steps): `sld info` shows both text
towers, `sld generate` samples with the family's defaults and writes PNGs whose records carry the
micro-conditioning, `sld compare` draws a grid."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from models import keys
from models.sdxl import TINY_SDXL
from sld.cli.main import main
from sld.io.records import RECORD_KEY

FAST = ["--steps", "2", "--height", "64", "--width", "96"]


def test_info_shows_both_text_towers(tiny_sdxl_file, tiny_sdxl_weights, capsys):
    assert main(["info", str(tiny_sdxl_file)]) == 0
    info = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert info["family"].startswith("sdxl (") and info["prediction"].startswith("epsilon")
    assert info["text encoder 1"] == "CLIP, width 64, 2 layers run, context without the final norm"
    assert info["text encoder 2"] == ("OpenCLIP, width 128, 2 layers run, context from the penultimate layer without "
                                      "the final norm; pooled 128-wide (final norm at the end token, projected)")
    for part, prefix in (("text encoder 1", keys.SDXL_CLIP), ("text encoder 2", keys.SDXL_OPENCLIP)):
        count = sum(v.numel() for k, v in tiny_sdxl_weights.items() if k.startswith(prefix))
        assert info[f"parameters {part}"] == f"{count:,}"


def test_generate_records_micro_conditioning_and_matches_the_api(tiny_sdxl_file, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "generated"
    argv = ["generate", "--model", str(tiny_sdxl_file), "--prompt", "a photo of a cat", "--seed", "3", "--preset",
            "none", *FAST, "--out", str(out)]
    assert main(argv) == 0
    (file,) = sorted(out.glob("*.png"))
    image = Image.open(file)
    record = json.loads(image.text[RECORD_KEY])
    assert image.size == (96, 64) and record["model"]["family"] == "sdxl"
    assert (record["sampler"], record["spacing"]) == ("euler", "leading")  # the family's defaults
    assert record["micro_conditioning"] == {"original_size": [64, 96], "crops_coords_top_left": [0, 0],
                                            "target_size": [64, 96]}
    import sld

    pipe = sld.load(str(tiny_sdxl_file))
    expected = pipe("a photo of a cat", height=64, width=96, steps=2, seed=3, safety=None).images[0]
    assert np.array_equal(np.asarray(image), np.asarray(expected))


def test_sd1_records_have_no_micro_conditioning(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(["generate", "--model", "tiny", "--prompt", "a cat", *FAST, "--out", str(tmp_path / "o")]) == 0
    (file,) = sorted((tmp_path / "o").glob("*.png"))
    assert "micro_conditioning" not in json.loads(Image.open(file).text[RECORD_KEY])


def test_compare_draws_a_grid_on_sdxl(tiny_sdxl_file, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "compared"
    argv = ["compare", "--model", str(tiny_sdxl_file), "--prompt", "a photo of a cat", "--settings", "none,max,negative",
            *FAST, "--out", str(out)]
    assert main(argv) == 0
    (grid,) = sorted(out.glob("*.png"))
    record = json.loads(Image.open(grid).text[RECORD_KEY])
    assert record["model"]["family"] == "sdxl" and record["micro_conditioning"]["target_size"] == [64, 96]


MICRO = {"original_size": (128, 96), "crops_coords_top_left": (8, 16), "target_size": (48, 80)}


@pytest.mark.parametrize("spelling", ["flags", "yaml"])
def test_micro_conditioning_from_the_command_line_reaches_the_image(tiny_sdxl_file, tmp_path, monkeypatch, spelling):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    if spelling == "flags":
        given = ["--original-size", "128x96", "--crop-top-left", "8,16", "--target-size", "48x80"]
    else:
        config = tmp_path / "micro.yaml"
        config.write_text("image:\n  original_size: [128, 96]\n  crops_coords_top_left: [8, 16]\n")
        given = ["--config", str(config), "image.target_size=[48,80]"]
    out = tmp_path / "generated"
    assert main(["generate", "--model", str(tiny_sdxl_file), "--prompt", "a photo of a cat", "--seed", "3",
                 "--preset", "none", *FAST, *given, "--out", str(out)]) == 0
    (file,) = sorted(out.glob("*.png"))
    image = Image.open(file)
    assert json.loads(image.text[RECORD_KEY])["micro_conditioning"] == {k: list(v) for k, v in MICRO.items()}
    import sld

    pipe = sld.load(str(tiny_sdxl_file))
    expected = pipe("a photo of a cat", height=64, width=96, steps=2, seed=3, safety=None, **MICRO).images[0]
    default = pipe("a photo of a cat", height=64, width=96, steps=2, seed=3, safety=None).images[0]
    assert np.array_equal(np.asarray(image), np.asarray(expected))
    assert not np.array_equal(np.asarray(expected), np.asarray(default))  # the values do reach the UNet


BAD_MICRO_CONDITIONING = {
    "on another family": (["--model", "tiny", "--original-size", "768x1024"],
                          "--original-size (image.original_size)=[768, 1024]: the sd1 model takes no "
                          "micro-conditioning (original_size, crops_coords_top_left, target_size are SDXL's)"),
    "not HxW": (["--original-size", "768"], "argument --original-size: '768' is not allowed; allowed: HxW"),
    "not Y,X": (["--crop-top-left", "8x16"], "argument --crop-top-left: '8x16' is not allowed; allowed: Y,X"),
    "not a pair in YAML": (["image.target_size=[1,2,3]"],
                           "--target-size (image.target_size)=[1, 2, 3] is invalid; allowed: a pair of integers >= 0"),
}


@pytest.mark.parametrize("case", BAD_MICRO_CONDITIONING)
def test_bad_micro_conditioning_is_one_line_and_exit_status_2(case, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    argv, expected = BAD_MICRO_CONDITIONING[case]
    status = main(["generate", "--prompt", "a cat", *FAST, *argv, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2 and len(err.splitlines()) == 1, err
    assert expected in err


def test_unset_sampler_options_are_checked_against_the_family_sampler(tiny_sdxl_file, tmp_path, monkeypatch, capsys):
    """With no --sampler, --spacing is checked once the model names its sampler: SDXL's euler takes linspace, SD 1's
    pndm refuses it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "generated"
    assert main(["generate", "--model", str(tiny_sdxl_file), "--prompt", "a photo of a cat", "--seed", "3", "--preset",
                 "none", "--spacing", "linspace", *FAST, "--out", str(out)]) == 0
    (file,) = sorted(out.glob("*.png"))
    assert json.loads(Image.open(file).text[RECORD_KEY])["spacing"] == "linspace"
    import sld

    expected = sld.load(str(tiny_sdxl_file))("a photo of a cat", height=64, width=96, steps=2, seed=3, safety=None,
                                             spacing="linspace").images[0]
    assert np.array_equal(np.asarray(Image.open(file)), np.asarray(expected))
    capsys.readouterr()
    assert main(["generate", "--model", "tiny", "--prompt", "a cat", "--spacing", "linspace", *FAST, "--out",
                 str(tmp_path / "sd1")]) == 2
    assert "spacing='linspace' is not supported by sampler='pndm'; allowed: leading, compvis" in capsys.readouterr().err


def test_sweep_on_sdxl_runs_every_point_with_the_family_defaults(tiny_sdxl_file, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    config = tmp_path / "sweep.yaml"
    config.write_text(f"model: {{path: {tiny_sdxl_file}}}\nprompt: {{text: a photo of a cat}}\n"
                      "sampler: {steps: 2, seed: 3}\nimage: {height: 64, width: 96}\n"
                      "sweep:\n  sld.preset: [none, medium]\n")
    assert main(["sweep", "--config", str(config), "--out", str(tmp_path / "out")]) == 0
    records = {}
    for file in sorted((tmp_path / "out" / "runs").rglob("*.png")):
        record = json.loads(Image.open(file).text[RECORD_KEY])
        records[(record["safety"] or {"preset": "none"})["preset"]] = (file, record)
    assert sorted(records) == ["medium", "none"]
    for _, record in records.values():
        assert record["model"]["family"] == "sdxl" and (record["sampler"], record["spacing"]) == ("euler", "leading")
        assert record["micro_conditioning"]["target_size"] == [64, 96]
    import sld

    expected = sld.load(str(tiny_sdxl_file))("a photo of a cat", height=64, width=96, steps=2, seed=3, safety=None)
    assert np.array_equal(np.asarray(Image.open(records["none"][0])), np.asarray(expected.images[0]))


def test_i2p_generate_score_report_on_sdxl(tiny_sdxl_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    assert main(["i2p", "generate", "--model", str(tiny_sdxl_file), "--categories", "shocking", "--sample", "2",
                 "--images-per-prompt", "1", "--batch-size", "2", "--height", "64", "--width", "64", "--steps", "2",
                 "--settings", "none,medium", "--out", str(run_dir)]) == 0
    pictures = sorted((run_dir / "images").rglob("*.png"))
    assert len(pictures) == 4
    record = json.loads(Image.open(pictures[0]).text[RECORD_KEY])
    assert record["model"]["family"] == "sdxl" and record["sampler"] == "euler"
    assert main(["i2p", "score", str(run_dir), "--classifiers", "colour"]) == 0
    capsys.readouterr()
    assert main(["i2p", "report", str(run_dir), "--rounds", "50", "--sample-size", "2"]) == 0
    report = capsys.readouterr().out
    assert "| overall | medium |" in report and "; sampler euler, 2 steps;" in report  # the family's, as recorded
