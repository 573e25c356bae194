"""The toy model: its synthetic data, its training script, the shipped weights, and SLD's measured effect on it."""
import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import sld
from models.detect import FAMILIES
from models.loader import StableDiffusion, load_checkpoint
from models.toy import TOY_SD1, TOY_WEIGHTS
from sld.toy.classifier import CLASSIFIER_WEIGHTS, classify, foreground_colour, load_shape_net, to_unit
from sld.toy.evaluate import SETTINGS, EvalConfig, attributes, concept_rate, faithfulness, targets
from sld.toy.shapes import COLOURS, SHAPES, Scene, Shape, dataset, render, scene, shape_mask
from sld.toy.train import TrainConfig, train_vae, unet_loss, vae_loss
from sampling.schedule import alphas_cumprod, scaled_linear_betas

ROOT = Path(__file__).resolve().parents[1]
MB = 1e6


def test_dataset_is_deterministic_and_indexable():
    scenes, pictures = dataset(seed=7, count=6)
    again_scenes, again = dataset(seed=7, count=6)
    assert scenes == again_scenes and np.array_equal(pictures, again)
    assert np.array_equal(scene(7, 4)[1], pictures[4])  # scene i does not depend on the others
    assert not np.array_equal(dataset(seed=8, count=6)[1], pictures)
    assert pictures.shape == (6, 64, 64, 3) and pictures.dtype == np.uint8


def test_captions_name_what_is_drawn():
    scenes, _ = dataset(seed=0, count=300)
    for s in scenes:
        for shape in s.shapes:
            assert shape.kind in s.caption or shape.colour in s.caption or "two" in s.caption
        if s.caption.startswith("two "):
            assert len(s.shapes) == 2 and s.shapes[0].kind == s.shapes[1].kind
        assert not any(c in s.caption.split(" on ")[0] for c in s.background_colours if c not in
                       {shape.colour for shape in s.shapes})


def test_labels_match_the_pictures():
    """Every labelled object covers pixels of its colour at its centre (rings at their band), on single-object
    plain-background scenes the pixel-statistics classifier reads the labelled colour back."""
    scenes, pictures = dataset(seed=1, count=200)
    palette = {name: np.array(rgb, dtype=float) for name, rgb in COLOURS.items()}
    for s, picture in zip(scenes, pictures):
        for shape in s.shapes:
            y = int(shape.cy) if shape.kind != "ring" else int(shape.cy - 0.8 * shape.radius)
            pixel = picture[y, int(shape.cx)].astype(float)
            assert np.linalg.norm(pixel - palette[shape.colour]) < 40, (s.caption, shape)
        if len(s.shapes) == 1 and s.background == "plain":
            assert foreground_colour(picture)[0] == s.shapes[0].colour, s.caption


def test_shape_masks_cover_their_analytic_areas():
    """In units of r^2: circle pi, square (1.6)^2, equilateral triangle 3 sqrt(3) / 4, ring pi (1 - 0.55^2),
    five-pointed star with radii 1 and 0.45: 5 * 0.45 * sin(36 deg). At r = 16 and 2x supersampling an edge is
    placed to within a quarter pixel, up to 2% of a 26-pixel side per dimension: 4% of the area."""
    expected = {"circle": np.pi, "square": 1.6**2, "triangle": 3 * np.sqrt(3) / 4, "ring": np.pi * (1 - 0.55**2),
                "star": 5 * 0.45 * np.sin(np.pi / 5)}
    for kind in SHAPES:
        area = shape_mask(Shape(kind, "red", 32, 32, 16)).sum() / 16**2
        assert area == pytest.approx(expected[kind], rel=0.04), kind
    plain = render(Scene((), "plain", ("blue",), "a blue background"), np.random.default_rng(0))
    assert foreground_colour(plain)[0] is None


def _loss_falls(loss_of, parameters, steps: int = 12, lr: float = 1e-3) -> tuple[float, float]:
    optimizer = torch.optim.Adam(parameters, lr=lr)
    before = loss_of().item()
    for _ in range(steps):
        loss = loss_of()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return before, loss_of().item()


def test_training_losses_fall():
    torch.manual_seed(0)
    model = StableDiffusion(TOY_SD1)
    _, pictures = dataset(seed=0, count=4)
    images = to_unit(pictures)
    before, after = _loss_falls(lambda: vae_loss(model, images, torch.Generator().manual_seed(0), 1e-6),
                                model.vae.parameters())
    assert after < 0.8 * before
    latents = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    ids = torch.randint(0, 1000, (4, 77), generator=torch.Generator().manual_seed(2))
    alphas = alphas_cumprod(scaled_linear_betas())
    parameters = list(model.unet.parameters()) + list(model.text_encoder.parameters())
    before, after = _loss_falls(lambda: unet_loss(model, latents, ids, alphas, torch.Generator().manual_seed(3)),
                                parameters)
    assert after < 0.8 * before


def test_train_script_runs_end_to_end_and_its_file_is_detected(tmp_path):
    """A few steps of every stage through scripts/train_toy.py; the exported file is the original single-file
    layout, float16, detected as sd1-toy; a rerun resumes instead of retraining."""
    args = [sys.executable, str(ROOT / "scripts" / "train_toy.py"), "--out", str(tmp_path), "--scenes", "48",
            "--vae-steps", "2", "--vae-batch", "4", "--unet-steps", "2", "--unet-batch", "4", "--decoder-steps", "1",
            "--classifier-scenes", "32", "--classifier-steps", "2", "--warmup", "1", "--checkpoint-every", "1"]
    first = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "vae 1/2" in first.stdout and "unet 1/2" in first.stdout
    loaded = load_checkpoint(tmp_path / "toy.safetensors")
    assert loaded.model.cfg.family == "sd1-toy" and loaded.model.cfg.unet == TOY_SD1.unet
    with safe_open(str(tmp_path / "toy.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
        assert float(f.metadata()["scaling_factor"]) > 0
    again = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 0 and "unet: resumed at step 2" in again.stdout and "vae 0/" not in again.stdout


# ---------------------------------------------------------------- the shipped model

@pytest.fixture(scope="module")
def toy():
    return sld.load("toy")


@pytest.fixture(scope="module")
def net():
    return load_shape_net()


def test_shipped_files_fit_the_budget_and_the_family_table():
    assert TOY_WEIGHTS.stat().st_size <= 25 * MB and CLASSIFIER_WEIGHTS.stat().st_size <= 1 * MB
    with safe_open(str(TOY_WEIGHTS), "pt") as f:
        stored = float(f.metadata()["scaling_factor"])
    assert FAMILIES["sd1-toy"].scaling_factor == pytest.approx(stored, abs=1e-5)


def test_loads_by_name_from_the_installed_package(toy):
    assert toy.model.cfg.family == "sd1-toy" and toy.source == "toy"
    assert toy.model.cfg.vae.scaling_factor == FAMILIES["sd1-toy"].scaling_factor


def test_latents_of_training_scenes_have_unit_scale(toy):
    """The family's scaling factor is 1 / std of the latent means, as LDM's scale_by_std sets it."""
    _, pictures = dataset(seed=0, count=64)
    with torch.no_grad():
        latents = toy.vae.encode(to_unit(pictures)) * toy.model.cfg.vae.scaling_factor
    assert 0.85 < latents.std().item() < 1.15


# Floors from the measured run (README "The toy model"), minus a margin for the smaller fixed-seed sets here
COLOUR_FLOOR = 0.90  # measured: 98.5% over 200 pictures (5 seeds)
SHAPE_FLOOR = 0.75  # measured: 89.0% over the same


def test_faithfulness_on_a_fixed_seed_stays_above_the_floor(toy, net):
    found = faithfulness(toy, net, EvalConfig(faithfulness_seeds=1))  # 40 prompts x seed 0, DDIM 25 steps, 7.5
    assert found["colour"] >= COLOUR_FLOOR and found["shape"] >= SHAPE_FLOOR, found


def test_sld_lowers_the_concept_rate_monotonically(toy, net):
    """'red' as the safety concept, prompts asking for red, fixed seeds, 50 steps: SD >= weak >= ... >= max."""
    cfg = EvalConfig(steps=EvalConfig.sld_steps)
    asking = targets(("red",))
    rates = [concept_rate(attributes(toy, net, asking, 4, cfg, setting), "red") for setting in SETTINGS]
    assert all(a >= b for a, b in zip(rates, rates[1:])) and rates[-1] < rates[0], rates
