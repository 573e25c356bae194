"""Plug-ins by name from the real `sld` command: a sampler and a hook defined in a user's module file outside the
package (written here into tmp_path), imported with --plugin / `plugins:`, used by name in `sld generate` and
`sld sweep`, and recorded by name."""
import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sld.cli.main import main
from sld.io.records import PARAMETERS_KEY, read_record

REPO = Path(__file__).resolve().parents[1]
FAST = ["--steps", "2", "--height", "64", "--width", "64", "--dtype", "float64", "--preset", "none"]
MODULE = textwrap.dedent('''
    """A user's plug-in: DDIM as Euler steps of the probability-flow ODE, and a hook scaling the guidance."""
    from sampling.registry import register_hook, register_sampler
    from sampling.schedule import alpha_bar, step_pairs


    @register_sampler("mine")
    def ddim_as_euler(model, x, schedule, callback=None):
        # DDIM (Song et al. 2021, eq. 13): x / sqrt(alpha-bar) moves along eps, linearly in sigma
        for i, (t, t_prev) in enumerate(step_pairs(schedule.timesteps)):
            a, a_prev = alpha_bar(schedule.alphas_cumprod, t), alpha_bar(schedule.alphas_cumprod, t_prev)
            sigma, sigma_prev = ((1 - a) / a) ** 0.5, ((1 - a_prev) / a_prev) ** 0.5
            x = (x / a**0.5 + (sigma_prev - sigma) * model(x, t)) * a_prev**0.5
            if callback is not None:
                callback(i, t, x)
        return x


    @register_hook("myhook")
    class ScaleGuidance:
        """direction * scale: 1 leaves classifier-free guidance as it is, 0 removes it."""

        name = "myhook"

        def __init__(self, scale=0.0):
            self.scale = scale

        def concepts(self):
            return ()

        def reset(self):
            pass

        def __call__(self, direction, inputs):
            return direction * self.scale, {"scale": self.scale, "evaluation": inputs.index}
''')
SWEEP = """
plugins: [mymod]
model: {path: tiny, dtype: float64}
prompt: {text: a photo of a cat}
sampler: {steps: 2, seed: 4}
image: {height: 64, width: 64}
sld: {preset: none}
hooks: {names: [myhook]}
out: swept
sweep:
  sampler.name: [ddim, mine]
  hooks.args.myhook.scale: [0.0, 1.0]
"""


def sld_command(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m sld ...`; generate runs on the random tiny model (as the sweep config does) unless told otherwise."""
    if args[:1] == ("generate",) and "--model" not in args:
        args = (args[0], "--model", "tiny", *args[1:])
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "XDG_CACHE_HOME": str(cwd / "cache")}
    return subprocess.run([sys.executable, "-m", "sld", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("plugins")
    (folder / "mymod.py").write_text(MODULE)
    (folder / "sweep.yaml").write_text(SWEEP)
    return folder


@pytest.fixture(scope="module")
def generated(folder) -> Path:
    result = sld_command("generate", "--plugin", "mymod", "--sampler", "mine", "--hook", "myhook", "--prompt",
                         "a photo of a cat", "--seed", "4", *FAST, "--out", "generated", cwd=folder)
    assert result.returncode == 0, result.stderr
    [file] = sorted((folder / "generated").glob("*.png"))
    return file


@pytest.fixture(scope="module")
def swept(folder) -> Path:
    result = sld_command("sweep", "--config", "sweep.yaml", cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder / "swept"


def test_generate_uses_the_plugin_sampler_and_hook_by_name_and_records_them(generated):
    record = read_record(generated)
    assert record["sampler"] == "mine" and record["hooks"] == [{"name": "myhook", "args": {}}]
    assert record["timesteps"] == [501, 1] and record["spacing"] == "leading"  # the DISCRETE family's default
    fields = Image.open(generated).text[PARAMETERS_KEY].split("\n")[1]
    assert "Sampler: mine," in fields and "Hooks: myhook," in fields


def test_sweep_over_plugin_sampler_and_hook_arguments(swept, generated):
    runs = list(csv.DictReader(open(swept / "runs.csv", newline="")))
    assert [(r["sampler.name"], r["hooks.args.myhook.scale"]) for r in runs] == [
        ("ddim", "0.0"), ("ddim", "1.0"), ("mine", "0.0"), ("mine", "1.0")]
    images = {(r["sampler.name"], float(r["hooks.args.myhook.scale"])): swept / r["file"] for r in runs}
    for (sampler, scale), path in images.items():
        assert read_record(path)["hooks"] == [{"name": "myhook", "args": {"scale": scale}}]
    # scale 0 is the hook's default: the generate run's image (its record lists no arguments)
    assert np.array_equal(pixels(images["mine", 0.0]), pixels(generated))
    for scale in (0.0, 1.0):  # DDIM rewritten as Euler steps is DDIM: float64 round-off moves at most one level
        assert np.abs(pixels(images["mine", scale]) - pixels(images["ddim", scale])).max() <= 1
    assert np.abs(pixels(images["mine", 0.0]) - pixels(images["mine", 1.0])).max() > 1  # the hook acted
    telemetry = list(csv.DictReader(open(swept / "telemetry.csv", newline="")))
    assert len(telemetry) == 4 * 2  # 4 runs x 1 image x 2 evaluations
    for row in telemetry:
        assert row["myhook.scale"] == row["hooks.args.myhook.scale"] and row["myhook.evaluation"] == row["index"]


def test_a_plugin_that_fails_to_import_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    (tmp_path / "sld_broken_plugin.py").write_text("import sld_no_such_dependency\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "sld_broken_plugin", raising=False)
    status = main(["generate", "--plugin", "sld_broken_plugin", "--prompt", "a cat", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("sld: error: --plugin (plugins) 'sld_broken_plugin' failed to import (ModuleNotFoundError: "
                          "No module named 'sld_no_such_dependency')")
