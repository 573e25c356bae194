"""The `sld` command end to end: the real entry point (`python -m sld`) in a subprocess on the tiny model and on a
saved fixture file (64x64, 2 steps): PNGs and their records, grids, config merging, one-line errors, resume."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from safetensors.torch import save_file

from models.loader import random_weights
from models.sd1 import SD1, TINY_SD1
from sld.cli.config import RunConfig, load_run_config, safety_setting
from sld.cli.main import build_parsers, main
from sld.hooks.safety import DEFAULT_CONCEPT, PRESET_VALUES, preset
from sld.io.model_id import ModelId, full_hash, model_id
from sld.io.records import PARAMETERS_KEY, RECORD_KEY, read_record

REPO = Path(__file__).resolve().parents[1]
FAST = ["--steps", "2", "--height", "64", "--width", "64"]
RECORD_KEYS = {"version", "model", "dtype", "device", "prompt", "negative_prompt", "prompt_index", "image_index", "seed",
               "base_seed", "sampler", "spacing", "karras", "steps", "timesteps", "eta", "cfg_scale", "height", "width",
               "safety", "hooks"}
SLD_KEYS = {"method", "preset", "guidance_scale", "threshold", "warmup_steps", "momentum_scale", "momentum_beta", "concept",
            "space"}


def environment(cache: Path) -> dict[str, str]:
    """The repo importable, a private hash cache, one thread (the tiny model gains nothing from more, and a busy
    machine's spinning threads would slow it many times over)."""
    return {**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(cache), "OMP_NUM_THREADS": "1"}


def sld_command(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m sld ...`; generate and compare run on the random tiny model unless the arguments name one."""
    if args[:1] in (("generate",), ("compare",)) and "--model" not in args:
        args = (args[0], "--model", "tiny", *args[1:])
    return subprocess.run([sys.executable, "-m", "sld", *args], cwd=cwd, env=environment(cwd / "cache"),
                          capture_output=True, text=True, timeout=300, check=False)


def pngs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.png"))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def a1111_fields(parameters: str) -> tuple[list[str], dict[str, str]]:
    *text, last = parameters.split("\n")
    return text, dict(field.split(": ", 1) for field in last.split(", ") if ": " in field)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def generated(work) -> tuple[subprocess.CompletedProcess, list[Path]]:
    """Two images of one prompt on the tiny model: strong SLD with threshold and warm-up changed (so SLD acts within
    2 steps), a negative prompt, seeds 5 and 6."""
    result = sld_command("generate", "--prompt", "a photo of a cat", "--negative", "blurry", "--n", "2", "--seed", "5",
                         "--preset", "strong", "--sld-threshold", "0.02", "--sld-warmup-steps", "0", *FAST, "--out", "generated",
                         cwd=work)
    return result, pngs(work / "generated")


@pytest.fixture(scope="module")
def fixture_file(work) -> Path:
    """The tiny model's exact weights (float64) saved as a CompVis single file."""
    path = work / "tiny-fixture.safetensors"
    save_file({k: v.contiguous() for k, v in random_weights(TINY_SD1, 0).items()}, path)
    return path


def test_generate_writes_one_png_per_image_with_complete_records(generated):
    result, files = generated
    assert result.returncode == 0, result.stderr
    assert len(files) == 2 and result.stdout.split() == [str(Path("generated") / f.name) for f in files]
    assert "generate: 100%" in result.stderr and "2 written, 0 already done" in result.stderr  # progress bar, summary
    for index, file in enumerate(files):
        image = Image.open(file)
        assert image.size == (64, 64) and image.mode == "RGB"
        record = json.loads(image.text[RECORD_KEY])
        assert set(record) == RECORD_KEYS and set(record["safety"]) == SLD_KEYS
        assert record["seed"] == 5 + index and record["image_index"] == index and record["base_seed"] == 5
        assert record["safety"] == {"method": "sld", "preset": "strong", "guidance_scale": 2000.0, "threshold": 0.02, "warmup_steps": 0,
                                    "momentum_scale": 0.5, "momentum_beta": 0.7, "concept": DEFAULT_CONCEPT,
                                    "space": "eps"}
        assert record["model"] == {"name": "tiny", "hash": "tiny", "family": "sd1", "prediction": "epsilon",
                                   "ema": False}
        assert (record["sampler"], record["spacing"], record["steps"], record["timesteps"]) == ("pndm", "leading", 2,
                                                                                                 [501, 1])
        assert record["negative_prompt"] == "blurry" and record["version"] == "0.1.0"
        text, fields = a1111_fields(image.text[PARAMETERS_KEY])
        assert text == ["a photo of a cat", "Negative prompt: blurry"]
        assert fields["Steps"] == "2" and fields["Sampler"] == "PLMS" and fields["CFG scale"] == "7.5"
        assert fields["Seed"] == str(5 + index) and fields["Size"] == "64x64"
        assert fields["Model hash"] == "tiny" and fields["Model"] == "tiny" and fields["Version"] == "sld 0.1.0"
        assert image.text[PARAMETERS_KEY].split("\n")[2].startswith(
            f"Steps: 2, Sampler: PLMS, CFG scale: 7.5, Seed: {5 + index}, Size: 64x64, Model hash: tiny, Model: tiny")
    assert not np.array_equal(pixels(Image.open(files[0])), pixels(Image.open(files[1])))  # seeds 5 and 6


def test_fixture_file_gives_the_tiny_image_and_its_hash(generated, fixture_file, work):
    result = sld_command("generate", "--model", str(fixture_file), "--prompt", "a photo of a cat", "--negative", "blurry",
                         "--seed", "6", "--preset", "strong", "--sld-threshold", "0.02", "--sld-warmup-steps", "0", *FAST,
                         "--out", "from-file", cwd=work)
    assert result.returncode == 0, result.stderr
    [file] = pngs(work / "from-file")
    record = read_record(file)
    full = hashlib.sha256(fixture_file.read_bytes()).hexdigest()
    assert record["model"]["name"] == "tiny-fixture.safetensors" and record["model"]["hash"] == full[:10]
    assert a1111_fields(Image.open(file).text[PARAMETERS_KEY])[1]["Model"] == "tiny-fixture"
    assert record["seed"] == 6 and record["image_index"] == 0
    # same weights, same seed: `--seed 6 --n 1` reproduces image 1 of the seed-5 run bit for bit
    assert np.array_equal(pixels(Image.open(file)), pixels(Image.open(generated[1][1])))
    cache = json.loads((work / "cache" / "sld" / "model_hashes.json").read_text())
    assert cache[str(fixture_file.resolve())]["sha256"] == full


def test_info_reads_the_checkpoint_without_building_it(fixture_file, work):
    result = sld_command("info", str(fixture_file), cwd=work)
    assert result.returncode == 0, result.stderr
    info = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    weights = random_weights(TINY_SD1, 0)
    count = {part: sum(v.numel() for k, v in weights.items() if k.startswith(prefix)) for part, prefix in
             (("unet", "model.diffusion_model."), ("vae", "first_stage_model."), ("text encoder", "cond_stage_model."))}
    assert info["family"].startswith("sd1 (") and info["prediction"].startswith("epsilon")
    assert info["dtype"] == "float64" and info["ema"] == "no"
    for part, n in count.items():
        assert info[f"parameters {part}"] == f"{n:,}"
    assert info["parameters total"] == f"{sum(count.values()):,}"


def test_info_reports_ema_and_half_precision(work):
    weights = {k: v.half() for k, v in random_weights(TINY_SD1, 0).items()}
    ema = {"model_ema." + k.removeprefix("model.").replace(".", ""): v for k, v in weights.items()
           if k.startswith("model.diffusion_model.")}
    path = work / "with-ema.ckpt"
    torch.save({"state_dict": {**weights, **ema}}, path)
    result = sld_command("info", str(path), cwd=work)
    assert result.returncode == 0, result.stderr
    info = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert info["dtype"] == "float16" and info["ema"] == f"yes ({len(ema)} model_ema tensors)"


def test_compare_grid_is_labelled_and_its_cells_are_the_generated_images(generated, work):
    result = sld_command("compare", "--prompt", "a photo of a cat", "--negative", "blurry", "--seed", "5", "--n", "2",
                         "--settings", "none,strong:threshold=0.02:warmup_steps=0", *FAST, "--out", "grids", cwd=work)
    assert result.returncode == 0, result.stderr
    [file] = pngs(work / "grids")
    grid = Image.open(file)
    header = grid.height - 2 * 64
    assert grid.width == 2 * 64 and header > 0
    record = json.loads(grid.text[RECORD_KEY])
    assert record["seeds"] == [5, 6] and [cell["label"] for cell in record["cells"]] == ["none", "strong threshold=0.02 warmup_steps=0"]
    assert record["cells"][0]["safety"] is None and record["cells"][1]["safety"]["threshold"] == 0.02
    assert a1111_fields(grid.text[PARAMETERS_KEY])[1]["SLD grid"] == "none | strong threshold=0.02 warmup_steps=0"
    assert pixels(grid.crop((0, 0, 128, header))).min() < 128  # label text drawn on the white header
    for row, generated_file in enumerate(generated[1]):  # column 1 is the setting of the generate run
        cell = grid.crop((64, header + row * 64, 128, header + (row + 1) * 64))
        assert np.array_equal(pixels(cell), pixels(Image.open(generated_file)))
    without_sld = pixels(grid.crop((0, header, 64, header + 64)))
    assert not np.array_equal(without_sld, pixels(Image.open(generated[1][0])))  # SLD changed the image


def test_config_file_dotlist_and_flags_in_order(work):
    result = sld_command("generate", "--config", str(REPO / "configs/experiments/example.yaml"), "sampler.steps=2",
                         "image.n=1", "--sampler", "pndm", "--height", "64", "--width", "64", "--out", "experiment",
                         cwd=work)
    assert result.returncode == 0, result.stderr
    [file] = pngs(work / "experiment")
    record = read_record(file)
    assert (record["sampler"], record["spacing"], record["steps"], record["timesteps"]) == ("pndm", "compvis", 2,
                                                                                             [501, 1])
    assert record["seed"] == 2211 and record["negative_prompt"] == "blurry, low quality"
    assert record["safety"]["preset"] == "strong" and record["safety"]["threshold"] == 0.02
    assert record["safety"]["warmup_steps"] == 7


def test_interrupted_prompt_file_run_resumes(work):
    folder = work / "resume"
    folder.mkdir()
    prompts = [f"prompt number {i}" for i in range(8)]
    (folder / "prompts.txt").write_text("# eight prompts\n\n" + "\n".join(prompts) + "\n")
    command = [sys.executable, "-m", "sld", "generate", "--prompt-file", "prompts.txt", *FAST, "--out", "out"]
    process = subprocess.Popen(command, cwd=folder, env=environment(work / "cache"), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not pngs(folder / "out") and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1].startswith("sld: interrupted") and "Traceback" not in stderr
    finished = pngs(folder / "out")
    assert 1 <= len(finished) < len(prompts)
    assert sorted(p.name for p in (folder / "out").iterdir()) == [p.name for p in finished]  # no temporary file left
    assert all(read_record(p) is not None for p in finished)  # every file complete, record readable
    stamps = {p: p.stat().st_mtime_ns for p in finished}

    rerun = subprocess.run(command, cwd=folder, env=environment(work / "cache"), capture_output=True, text=True,
                           timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stderr
    done = len(finished)
    assert f"{len(prompts) - done} written, {done} already done" in rerun.stderr
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in stamps.items())  # finished images were not recomputed
    records = [read_record(p) for p in pngs(folder / "out")]
    assert [r["prompt"] for r in records] == prompts and [r["seed"] for r in records] == list(range(8))


def test_preset_takes_every_safety_name():
    _, parsers = build_parsers()
    [preset_action] = [action for action in parsers["generate"]._actions if action.dest == "sld.preset"]
    assert tuple(preset_action.choices) == ("none", "weak", "medium", "strong", "max", "negative", "sega-medium",
                                            "sega-strong", "sega-max")


def test_sega_and_negative_records_describe_the_setting_exactly(tmp_path):
    concept = "rain, fog"
    for name in ("sega-max", "negative"):
        assert main(["generate", "--prompt", "a cat", "--preset", name, "--concept", concept, "--seed", "3", *FAST,
                     "--out", str(tmp_path / name)]) == 0
    [sega_file], [negative_file] = pngs(tmp_path / "sega-max"), pngs(tmp_path / "negative")
    sega = read_record(sega_file)
    assert sega["safety"] == {"method": "sega", "preset": "sega-max", "momentum_scale": 0.5, "momentum_beta": 0.4,
                              "space": "eps", "edits": [{"text": concept, "direction": "away", "scale": 10.0,
                                                         "warmup_steps": 0, "cooldown_steps": None,
                                                         "threshold": 0.75, "weight": 1.0}]}
    assert sega["negative_prompt"] is None and sega["hooks"] == []
    parameters = Image.open(sega_file).text[PARAMETERS_KEY]
    assert "SLD:" not in parameters and parameters.split("\n")[1].endswith(  # values holding commas are quoted
        'Spacing: leading, SEGA: "sega-max, s_m=0.5, beta_m=0.4", SEGA edit 1: "away, s_e=10.0, warm-up=0, '
        f'cooldown=none, threshold=0.75, weight=1.0", SEGA edit 1 concept: "{concept}", Version: sld 0.1.0')
    negative = read_record(negative_file)
    assert negative["safety"] == {"method": "negative", "preset": "negative", "concept": concept}
    assert negative["negative_prompt"] == concept  # what the pipeline used in place of the empty prompt
    text, fields = a1111_fields(Image.open(negative_file).text[PARAMETERS_KEY])
    assert text == ["a cat", f"Negative prompt: {concept}"] and fields["Safety"] == "negative prompt"


def test_compare_columns_take_sega_and_the_negative_baseline(tmp_path):
    concept = "rain, fog"
    assert main(["compare", "--prompt", "a cat", "--concept", concept, "--settings", "none,negative,sega-strong",
                 "--seed", "3", *FAST, "--out", str(tmp_path / "grid")]) == 0
    assert main(["generate", "--prompt", "a cat", "--negative", concept, "--preset", "none", "--seed", "3", *FAST,
                 "--out", str(tmp_path / "plain")]) == 0
    [grid_file], [plain_file] = pngs(tmp_path / "grid"), pngs(tmp_path / "plain")
    grid = Image.open(grid_file)
    record = json.loads(grid.text[RECORD_KEY])
    assert [cell["label"] for cell in record["cells"]] == ["none", "negative", "sega-strong"]
    assert record["cells"][1]["safety"] == {"method": "negative", "preset": "negative", "concept": concept}
    sega = record["cells"][2]["safety"]
    assert sega["method"] == "sega" and [e["text"] for e in sega["edits"]] == [concept]
    assert (sega["edits"][0]["scale"], sega["edits"][0]["warmup_steps"], sega["momentum_scale"]) == (7.0, 5, 0.5)
    header = grid.height - 64
    # the negative baseline is exactly a plain run with the concept as negative prompt
    assert np.array_equal(pixels(grid.crop((64, header, 128, header + 64))), pixels(Image.open(plain_file)))
    assert not np.array_equal(pixels(grid.crop((0, header, 64, header + 64))), pixels(Image.open(plain_file)))


# ---- bad input: one line on stderr naming the problem and what is allowed, exit status 2 ----

@pytest.fixture
def files(tmp_path) -> Path:
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    (tmp_path / "truncated.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00bad")
    (tmp_path / "empty.txt").write_text("# only a comment\n\n")
    (tmp_path / "a-file").write_text("")
    (tmp_path / "prompts.txt").write_text("a cat\n")
    (tmp_path / "broken.yaml").write_text("sampler: [unclosed\n")
    (tmp_path / "list.yaml").write_text("- steps\n")
    return tmp_path


P = ["--prompt", "a cat"]
BAD_INPUTS = {
    "unknown preset": (["generate", *P, "--preset", "extreme"], "invalid choice: 'extreme' (choose from 'none', 'weak'"),
    "unknown sampler": (["generate", *P, "--sampler", "euler_x"],
                        "--sampler (sampler.name)='euler_x' is unknown; allowed: pndm, ddim, euler"),
    "unknown dtype": (["generate", *P, "--dtype", "float8"], "invalid choice: 'float8'"),
    "not an integer": (["generate", *P, "--steps", "many"], "argument --steps: invalid int value: 'many'"),
    "unknown flag": (["generate", *P, "--guidance", "3"], "unrecognized arguments: --guidance"),
    "size not a multiple of 8": (["generate", *P, "--height", "100"],
                                 "--height (image.height)=100 is invalid; allowed: a positive multiple of 8"),
    "steps < 1": (["generate", *P, "--steps", "0"], "steps=0 is invalid; allowed: an integer >= 1"),
    "negative seed": (["generate", *P, "--seed", "-1"], "--seed (sampler.seed)=-1 is invalid; allowed: 0.."),
    "eta without ddim": (["generate", *P, "sampler.eta=0.5"], "eta=0.5 applies only to sampler="),
    "spacing the sampler lacks": (["generate", *P, "--sampler", "euler", "--spacing", "compvis"],
                                  "spacing='compvis' is not supported by sampler='euler'; allowed: linspace"),
    "missing model file": (["generate", *P, "--model", "{tmp}/missing.safetensors"],
                           "no such file or folder; allowed: 'toy', 'tiny', a .safetensors or .ckpt file"),
    "not a checkpoint": (["generate", *P, "--model", "{tmp}/notes.txt"], "unsupported file type; expected a .safetensors"),
    "truncated checkpoint": (["generate", *P, "--model", "{tmp}/truncated.safetensors"], "corrupt or truncated"),
    "missing prompt file": (["generate", "--prompt-file", "{tmp}/missing.txt"], "cannot be read (No such file"),
    "prompt file not UTF-8": (["generate", "--prompt-file", "{tmp}/binary.txt"], "cannot be read (not UTF-8 text)"),
    "empty prompt file": (["generate", "--prompt-file", "{tmp}/empty.txt"], "holds no prompts; allowed: a UTF-8"),
    "prompt and prompt file": (["generate", *P, "--prompt-file", "{tmp}/prompts.txt"], "give exactly one of --prompt"),
    "no prompt": (["generate"], "give exactly one of --prompt"),
    "output is a file": (["generate", *P, "--out", "{tmp}/a-file"], "is a file; allowed: a folder you can write to"),
    "output under a file": (["generate", *P, "--out", "{tmp}/a-file/images"],
                            "cannot be written (Not a directory); allowed: a folder you can write to"),
    "SLD value without SLD": (["generate", *P, "--preset", "none", "--sld-threshold", "0.1"],
                              "--sld-threshold (sld.threshold) is set but --preset (sld.preset) is 'none'"),
    "SLD value out of range": (["generate", *P, "--sld-momentum-beta", "2"], "momentum_beta=2.0 is invalid; allowed: in [0"),
    "unknown config key": (["generate", *P, "sampler.stepz=3"], "unknown key 'sampler.stepz'; allowed: sampler.name"),
    "config type": (["generate", *P, "sampler.steps=many"], "could not be converted to Integer (key sampler.steps)"),
    "not a dotlist item": (["generate", *P, "steps"], "override 'steps' is not KEY=VALUE"),
    "missing config file": (["generate", *P, "--config", "{tmp}/missing.yaml"], "cannot be read (No such file"),
    "config not YAML": (["generate", *P, "--config", "{tmp}/broken.yaml"], "broken.yaml' is not valid YAML ("),
    "config not a mapping": (["generate", *P, "--config", "{tmp}/list.yaml"], "must hold a mapping of sections"),
    "unknown compare setting": (["compare", *P, "--settings", "none,extreme"], "compare setting 'extreme' is unknown"),
    "bad compare value": (["compare", *P, "--settings", "strong:threshold=high"], "threshold='high' is invalid"),
    "unknown device": (["generate", *P, "--device", "gpu7"], "not a torch device; allowed: cpu, cuda"),
    "info on a missing file": (["info", "{tmp}/missing.ckpt"], "no such file; expected a .safetensors"),
    "SLD value with SEGA": (["generate", *P, "--preset", "sega-max", "--sld-threshold", "0.1"],
                            "--sld-threshold (sld.threshold) applies to SLD presets only, but --preset (sld.preset) "
                            "is 'sega-max'; allowed: an SLD preset (weak, medium, strong, max)"),
    "SLD value with the negative baseline": (["generate", *P, "--preset", "negative", "sld.warmup_steps=3"],
                                             "--sld-warmup-steps (sld.warmup_steps) applies to SLD presets only"),
    "negative baseline and a negative prompt": (["generate", *P, "--preset", "negative", "--negative", "blurry"],
                                                "--negative (prompt.negative) cannot be combined with --preset"),
    "values on a SEGA compare column": (["compare", *P, "--settings", "none,sega-max:threshold=0.1"],
                                        "compare setting 'sega-max:threshold=0.1' is unknown; allowed: none, a safety"),
    "negative compare column and a negative prompt": (["compare", *P, "--negative", "blurry", "--settings",
                                                       "none,negative"], "compare setting 'negative' uses the concept"),
    "unknown hook": (["generate", *P, "--hook", "nope"], "--hook (hooks.names)='nope' is unknown; allowed: sld, sega"),
    "hook arguments it does not take": (["generate", *P, "--hook", "sld", "hooks.args.sld.volume=2"],
                                        "hook 'sld' cannot be built from hooks.args.sld={'volume': 2}"),
    "arguments of an unlisted hook": (["generate", *P, "hooks.args.sld.threshold=2"],
                                      "hooks.args.sld is set but 'sld' is not in --hook (hooks.names)"),
    "missing plug-in": (["generate", *P, "--plugin", "sld_no_such_plugin"],
                        "--plugin (plugins) 'sld_no_such_plugin' failed to import (ModuleNotFoundError"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_and_exit_status_2(case, files, capsys, monkeypatch):
    monkeypatch.chdir(files)
    argv, expected = BAD_INPUTS[case]
    status = main([arg.replace("{tmp}", str(files)) for arg in argv + (["--out", str(files / "out")]
                                                                       if "--out" not in argv and argv[0] != "info"
                                                                       else [])])
    err = capsys.readouterr().err
    assert status == 2 and len(err.splitlines()) == 1, err
    assert expected.replace("{tmp}", str(files)) in err and "error" in err


@pytest.mark.parametrize("argv, expected", [
    (["generate", "--prompt", "a cat", "--preset", "extreme"], "sld generate: error: argument --preset: invalid choice"),
    (["generate", "--prompt", "a cat", "--model", "missing.safetensors"], "sld: error: --model 'missing.safetensors'"),
])
def test_bad_input_through_the_real_entry_point(argv, expected, tmp_path):
    result = sld_command(*argv, cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(expected), result.stderr


# ---- configs/: each YAML maps onto the dataclass it documents ----

def test_defaults_yaml_lists_every_key_with_its_default():
    documented = OmegaConf.to_container(OmegaConf.load(REPO / "configs/defaults.yaml"))
    assert documented == OmegaConf.to_container(OmegaConf.structured(RunConfig))


@pytest.mark.parametrize("name", PRESET_VALUES)
def test_preset_yaml_is_the_published_preset(name):
    run = load_run_config([str(REPO / f"configs/sld/{name}.yaml")], [], {})
    assert run.sld.preset == name and safety_setting(run.sld).hook == preset(name)
    delta, scale, threshold, momentum, beta = PRESET_VALUES[name]
    assert (run.sld.warmup_steps, run.sld.guidance_scale, run.sld.threshold, run.sld.momentum_scale,
            run.sld.momentum_beta) == (delta, scale, threshold, momentum, beta)


def test_sd1_family_yaml_matches_the_model_config():
    family = OmegaConf.load(REPO / "configs/models/sd1.yaml")
    merged = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(SD1), family))
    assert merged == SD1


def test_sources_merge_in_order_defaults_files_dotlist_flags(tmp_path):
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text("sampler: {steps: 10, cfg: 5.0}\nsld: {preset: weak}\n")
    second.write_text("sampler: {steps: 20}\n")
    run = load_run_config([str(first), str(second)], ["sampler.steps=30", "sampler.seed=4"], {"sampler.seed": 9})
    assert (run.sampler.steps, run.sampler.cfg, run.sampler.seed, run.sld.preset) == (30, 5.0, 9, "weak")
    assert run.sampler.name is None and run.image.height is None  # untouched defaults (None: the family's)


def test_model_hash_of_a_diffusers_folder_covers_the_weight_files_it_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "pipeline"
    for part in ("unet", "vae", "text_encoder"):
        (folder / part).mkdir(parents=True)
        (folder / part / "diffusion_pytorch_model.safetensors").write_bytes(part.encode())
    (folder / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"not loaded")
    (folder / "model_index.json").write_text("{}")
    first = full_hash(folder)
    assert model_id(str(folder)) == ModelId("pipeline", first[:10])
    (folder / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"changed, still not loaded")
    assert full_hash(folder) == first
    (folder / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"new vae weights")
    assert full_hash(folder) != first  # the cache entry is invalidated by the file's size and modification time
