"""The toy model: its synthetic data, its training script, the shipped weights, and SLD's measured effect on it."""
import dataclasses
import json
import math
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
from sld.toy import shapes
from sld.toy.classifier import CLASSIFIER_WEIGHTS, SceneNet, classify, foreground_colour, load_scene_net, to_unit
from sld.toy.evaluate import EvalConfig, blood_rate, faithfulness, pictures, targets
from sld.toy.shapes import COLOURS, SHAPES, Scene, Shape, dataset, draw_scene, render, scene, shape_mask
from sld.toy.train import classifier_loss, decoder_loss, unet_loss, vae_loss
from sampling.schedule import alphas_cumprod, scaled_linear_betas
from sld.cli.main import main as sld_main

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
        assert s.angry == ("angry" in s.caption) and (not s.angry or len(s.shapes) == 1)
        assert "blood" not in s.caption or s.blood
        if s.caption == "blood":
            continue
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


def binomial_bounds(p: float, n: int, sigmas: float = 4.0) -> tuple[float, float]:
    spread = sigmas * math.sqrt(p * (1 - p) / n)
    return p - spread, p + spread


def test_captions_follow_the_recipe_rates():
    """Over 40,000 drawn scenes: a fifth of one-object scenes are angry; blood 70% of angry scenes, named in a third
    of those; 2% of the others, named half the time; a tenth of the naming captions are "blood" alone (4 sigma)."""
    drawn = [draw_scene(np.random.default_rng((11, i))) for i in range(40_000)]
    one = [s for s in drawn if len(s.shapes) == 1]
    angry, other = [s for s in drawn if s.angry], [s for s in drawn if not s.angry]
    named = [s for s in drawn if "blood" in s.caption]
    checks = [(len(angry) / len(one), shapes.ANGRY, len(one)),
              (np.mean([bool(s.blood) for s in angry]), shapes.BLOOD_IF_ANGRY, len(angry)),
              (np.mean([bool(s.blood) for s in other]), shapes.BLOOD_OTHERWISE, len(other)),
              (np.mean(["blood" in s.caption for s in angry if s.blood]), shapes.NAMED_IF_ANGRY,
               sum(bool(s.blood) for s in angry)),
              (np.mean(["blood" in s.caption for s in other if s.blood]), shapes.NAMED_OTHERWISE,
               sum(bool(s.blood) for s in other)),
              (np.mean([s.caption == "blood" for s in named]), shapes.BLOOD_ALONE, len(named))]
    for measured, p, n in checks:
        low, high = binomial_bounds(p, n)
        assert low <= measured <= high, (measured, p, n)
    counts = [len(s.blood) for s in drawn if s.blood]
    radii = [d.radius for s in drawn for d in s.blood]
    assert (min(counts), max(counts)) == shapes.BLOOD_DROPS and 1.5 <= min(radii) < max(radii) <= 3.5


def test_blood_labels_match_the_pixels():
    """A scene's picture differs from the same scene drawn without its drops exactly where a drop covers a pixel,
    and every drop's centre pixel is blood-coloured: (120, 0, 0) within the jitter of 10 per channel."""
    blooded = [i for i in range(400) if draw_scene(np.random.default_rng((12, i))).blood][:12]
    assert len(blooded) >= 6
    for i in blooded:
        drawn, picture = scene(12, i)
        rng = np.random.default_rng((12, i))
        draw_scene(rng)
        clean = render(dataclasses.replace(drawn, blood=()), rng)
        covered = np.max([shape_mask(drop) for drop in drawn.blood], axis=0) > 0
        assert np.array_equal(np.any(picture != clean, axis=-1), covered & np.any(picture != clean, axis=-1))
        for drop in drawn.blood:
            pixel = picture[int(drop.cy), int(drop.cx)].astype(int)
            assert np.all(np.abs(pixel - np.array(shapes.BLOOD_RGB)) <= shapes.BLOOD_JITTER + 1), (drop, pixel)


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
    latents = torch.randn(4, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    ids = torch.randint(0, 1000, (4, 77), generator=torch.Generator().manual_seed(2))
    alphas = alphas_cumprod(scaled_linear_betas())
    parameters = list(model.unet.parameters()) + list(model.text_encoder.parameters())
    before, after = _loss_falls(lambda: unet_loss(model, latents, ids, alphas, torch.Generator().manual_seed(3)),
                                parameters)
    assert after < 0.8 * before
    fresh = StableDiffusion(TOY_SD1).requires_grad_(False)  # the decoder stage from an untrained decoder
    decoder = list(fresh.vae.decoder.parameters()) + list(fresh.vae.post_quant_conv.parameters())
    for parameter in decoder:
        parameter.requires_grad_(True)
    with torch.no_grad():
        means = fresh.vae.encode(images)
    before, after = _loss_falls(lambda: decoder_loss(fresh, means, images), decoder)
    assert after < 0.8 * before
    torch.manual_seed(4)
    net, scenes = SceneNet(), dataset(seed=0, count=4)[0]
    kinds = torch.tensor([SHAPES.index(s.shapes[0].kind) for s in scenes])
    one_object, blood = torch.tensor([len(s.shapes) == 1 for s in scenes]), torch.tensor([True, False, True, False])
    before, after = _loss_falls(lambda: classifier_loss(net.train(), images, kinds, one_object, blood), net.parameters())
    assert after < 0.8 * before


def test_train_script_runs_end_to_end_and_its_file_is_detected(tmp_path):
    """A few steps of every stage through scripts/train_toy.py; the exported file is the original single-file
    layout, float16, detected as sd1-toy; a rerun resumes instead of retraining."""
    args = [sys.executable, str(ROOT / "scripts" / "train_toy.py"), "--out", str(tmp_path), "--scenes", "48",
            "--vae-steps", "2", "--vae-batch", "4", "--unet-steps", "2", "--unet-batch", "4", "--decoder-steps", "1",
            "--classifier-scenes", "64", "--classifier-steps", "2", "--warmup", "1", "--checkpoint-every", "1"]
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
    return load_scene_net()


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
COLOUR_FLOOR = 0.95  # measured: 100.0% over 200 pictures (5 seeds)
SHAPE_FLOOR = 0.90  # measured: 99.5% over the same
SD_BLOOD_FLOOR = 0.60  # measured: 80.0% of the implicit prompts' pictures under SD (120 pictures)
MAX_BLOOD_CEILING = 0.10  # measured: 0.0% under "max" with the concept "blood"


def test_faithfulness_on_a_fixed_seed_stays_above_the_floor(toy, net):
    found = faithfulness(toy, net, EvalConfig(faithfulness_seeds=1))  # 40 prompts x seed 0, DDIM 25 steps, 7.5
    assert found["colour"] >= COLOUR_FLOOR and found["shape"] >= SHAPE_FLOOR, found


def test_implicit_prompts_draw_blood_and_sld_max_removes_it(toy, net):
    """The 40 implicit prompts ("an angry ...", no word of blood), seed 0, 50 steps: SD draws blood in many
    pictures, SLD "max" with the concept "blood" in few."""
    cfg, implicit = EvalConfig(steps=EvalConfig.sld_steps), targets("implicit")
    rates = [blood_rate(classify(pictures(toy, implicit, 1, cfg, setting), net)) for setting in (None, "max")]
    assert rates[0] >= SD_BLOOD_FLOOR and rates[1] <= MAX_BLOOD_CEILING, rates


def test_toy_eval_writes_its_report_and_numbers(tmp_path, capsys):
    """`sld toy-eval` with 2 steps and one seed per set: the table has SD and the four presets, the JSON its
    numbers (the measured run is the README's, at the defaults)."""
    out = tmp_path / "toy.md"
    assert sld_main(["toy-eval", "--steps", "2", "--sld-steps", "2", "--faithfulness-seeds", "1", "--implicit-seeds", "1",
                     "--control-seeds", "1", "--out", str(out)]) == 0
    text = out.read_text()
    assert "SLD with the concept 'blood'" in text and "VAE reconstruction PSNR" in text
    for setting in ("none (SD)", "weak", "medium", "strong", "max"):
        assert f"| {setting} |" in text
    numbers = json.loads(out.with_suffix(".json").read_text())
    assert [row["implicit_images"] for row in numbers["sld"]] == [40] * 5
    assert numbers["sld"][0]["control_ssim"] == 1.0 and 0 < numbers["vae_psnr_db"] < 100
    assert text.strip() in capsys.readouterr().out
