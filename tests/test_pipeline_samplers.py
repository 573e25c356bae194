"""The SLD pipeline under every sampler, a user's sampler by name, and how hook state counts Heun's evaluations.

The float64 run against diffusers' StableDiffusionPipelineSafe with a HeunDiscreteScheduler (given our float64
sigmas, as tests/test_samplers_k.py explains) checks the counting rule against the reference: its SLD warm-up and
momentum advance once per loop iteration, i.e. per model evaluation, corrector included.
"""
from itertools import pairwise

import pytest
import torch

import sld
from models.loader import build
from models.sd1 import TINY_SD1
from sampling.ddim import ddim_update
from sampling.euler import sample_euler
from sampling.registry import register_sampler
from sampling.schedule import alpha_bar, alphas_cumprod, scaled_linear_betas, step_pairs
from sampling.families import EULER
from sld.pipeline import Pipeline
from reference import diffusers_sld_kwargs, reference_pipeline

FAST = dict(prompt="a photo of a cat", height=64, width=64, steps=3, seed=0, output_type="latent")
EVALUATIONS = {"pndm": 4, "ddim": 3, "euler": 3, "euler_a": 3, "heun": 5, "lms": 3, "dpmpp_2m": 3, "ddpm": 3}
DEFAULT_SPACING = {"pndm": "leading", "ddim": "leading", "ddpm": "leading"}  # the sigma samplers: "linspace"
ALPHAS = alphas_cumprod(scaled_linear_betas())
LATENT_TOL = 1e-8
IMAGE_TOL = 1e-6


@pytest.fixture(scope="module")
def pipe():
    return sld.load("tiny")


def sample_plain_ddim(model, x, schedule):
    """A user's sampler, outside the package: deterministic DDIM written against the registry's interface."""
    for t, t_prev in step_pairs(schedule.timesteps):
        alpha_t, alpha_prev = alpha_bar(schedule.alphas_cumprod, t), alpha_bar(schedule.alphas_cumprod, t_prev)
        x = ddim_update(x, model(x, t), alpha_t, alpha_prev)
    return x


def sample_my_euler(model, x, schedule):
    return sample_euler(model, x, schedule)


@pytest.fixture
def user_samplers(monkeypatch):
    from sampling import registry

    monkeypatch.setattr(registry._SAMPLERS, "entries", dict(registry._SAMPLERS.entries))
    register_sampler("plain_ddim")(sample_plain_ddim)
    register_sampler("my_euler", family=EULER)(sample_my_euler)


@pytest.mark.parametrize("sampler", list(EVALUATIONS))
def test_sld_runs_under_every_sampler(pipe, sampler):
    out = pipe(sampler=sampler, spacing=DEFAULT_SPACING.get(sampler, "linspace"), safety="max", **FAST)
    assert [r["index"] for r in out.telemetry] == list(range(EVALUATIONS[sampler]))
    assert all(r["sld"]["applied"] for r in out.telemetry)  # "max": warm-up 0
    assert out.latents.shape == (1, 4, 8, 8) and torch.isfinite(out.latents).all()


@pytest.mark.parametrize("sampler", ["euler", "heun", "lms", "dpmpp_2m"])
def test_karras_sigmas_through_the_pipeline(pipe, sampler):
    plain = pipe(sampler=sampler, spacing="linspace", **FAST)
    karras = pipe(sampler=sampler, spacing="linspace", karras=True, **FAST)
    assert len(karras.telemetry) == EVALUATIONS[sampler]
    assert karras.telemetry[0]["t"] == pytest.approx(999, abs=1e-9)  # same sigma_max
    assert karras.telemetry[1]["t"] != plain.telemetry[1]["t"] and torch.isfinite(karras.latents).all()


@pytest.mark.parametrize("sampler", ["euler_a", "ddpm"])
def test_ancestral_samplers_same_seed_same_bits(pipe, sampler):
    a, b = pipe(sampler=sampler, **FAST), pipe(sampler=sampler, **FAST)
    c = pipe(sampler=sampler, **(FAST | dict(seed=1)))
    assert torch.equal(a.latents, b.latents) and not torch.equal(a.latents, c.latents)


def test_user_sampler_by_name(pipe, user_samplers):
    mine = pipe(sampler="plain_ddim", **FAST)
    reference = pipe(sampler="ddim", **FAST)
    assert len(mine.telemetry) == 3 and torch.equal(mine.latents, reference.latents)
    mine_euler = pipe(sampler="my_euler", spacing="linspace", **FAST)
    assert torch.equal(mine_euler.latents, pipe(sampler="euler", spacing="linspace", **FAST).latents)


def test_heun_hook_state_counts_evaluations_not_steps(pipe):
    hook = sld.SLD(guidance_scale=1000, threshold=0.01, warmup_steps=3, momentum_scale=0.3, momentum_beta=0.4)
    out = pipe(sampler="heun", spacing="linspace", safety=hook, **(FAST | dict(steps=4)))
    # 4 steps: t0, then predictor and corrector at t1 and t2, and the last (Euler) step at t3: 7 evaluations
    ts = [r["t"] for r in out.telemetry]
    assert len(ts) == 7 and ts[1] == ts[2] and ts[3] == ts[4] and ts[5] == ts[6]
    # warm-up of 3 EVALUATIONS: SLD applies from the 4th evaluation, the second of step 2 (not from step 3)
    assert [r["sld"]["applied"] for r in out.telemetry] == [False] * 3 + [True] * 4
    # momentum advances at every evaluation, corrector included
    norms = [r["sld"]["momentum_norm"] for r in out.telemetry]
    assert all(b != a for a, b in pairwise(norms))


@pytest.fixture(scope="module")
def ours64(tiny_weights):
    return Pipeline(build(TINY_SD1, tiny_weights, "cpu", torch.float64))


def reference_heun_pipeline(reference_parts, reference_tokenizer):
    from diffusers import HeunDiscreteScheduler, PNDMScheduler

    config = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", set_alpha_to_one=False,
                  skip_prk_steps=True, steps_offset=1, clip_sample=False)
    scheduler = HeunDiscreteScheduler.from_config(PNDMScheduler.from_config(config).config)
    set_float32_timesteps = scheduler.set_timesteps

    def set_float64_timesteps(num_inference_steps, device=None):
        """diffusers' Heun placement, then our float64 sigmas and timesteps in its layout (inner ones twice)."""
        set_float32_timesteps(num_inference_steps, device=device)
        schedule = EULER.build(num_inference_steps, "linspace", ALPHAS)
        sigmas = torch.tensor(schedule.sigmas, dtype=torch.float64)
        ts = torch.tensor(schedule.timesteps, dtype=torch.float64)
        scheduler.sigmas = torch.cat([sigmas[:1], sigmas[1:-1].repeat_interleave(2), sigmas[-1:]])
        scheduler.timesteps = torch.cat([ts[:1], ts[1:].repeat_interleave(2)])

    scheduler.set_timesteps = set_float64_timesteps
    return reference_pipeline(reference_parts, reference_tokenizer, scheduler)


def test_heun_sld_matches_diffusers_safe_pipeline_float64(ours64, reference_parts, reference_tokenizer):
    steps, hook = 5, sld.PRESETS["strong"]  # 9 evaluations, SLD from evaluation 7 on
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    captured = {}
    expected = reference_heun_pipeline(reference_parts, reference_tokenizer)(
        "a photo of a cat", height=64, width=64, num_inference_steps=steps, guidance_scale=7.5,
        latents=latents.clone(), output_type="np", callback=lambda i, t, x: captured.__setitem__("latents", x),
        **diffusers_sld_kwargs(hook))
    got = ours64("a photo of a cat", height=64, width=64, steps=steps, guidance_scale=7.5, sampler="heun",
                 spacing="linspace", latents=latents, safety="strong", output_type="np")
    assert len(got.telemetry) == 2 * steps - 1
    assert [r["sld"]["applied"] for r in got.telemetry] == [False] * 7 + [True] * 2
    assert (got.latents - captured["latents"]).abs().max().item() <= LATENT_TOL
    assert abs(got.images - expected.images).max() <= IMAGE_TOL
