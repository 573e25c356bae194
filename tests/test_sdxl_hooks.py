"""SLD, SEGA and safety="negative" on SDXL: one batched UNet call per evaluation, every branch with its own pooled
embedding. diffusers has no safe SDXL pipeline, so the reference is a short loop over diffusers' SDXL parts
(`encode_prompt`, `_get_add_time_ids`, UNet, Euler scheduler) with StableDiffusionPipelineSafe's SLD math; the loop
is first shown equal to StableDiffusionXLPipeline with SLD off. Float64; images within 1e-6."""
import pytest
import torch

import sld
from models.loader import build
from models.sdxl import TINY_SDXL
from sampling.builtins import BUILTINS
from sld.pipeline import Pipeline
from reference import Float64Torch, float64_euler

IMAGE_TOL = 1e-6
STEPS = 30
PROMPTS = ["a photo of a cat", "a red car in the rain"]
NEGATIVES = ["blurry", "low quality, watermark"]
SIZE = (64, 96)


@pytest.fixture(scope="module")
def ours(tiny_sdxl_weights):
    return Pipeline(build(TINY_SDXL, tiny_sdxl_weights, "cpu", torch.float64))


@pytest.fixture(scope="module")
def reference(tiny_sdxl_folder):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl_folder), torch_dtype=torch.float64,
                                                     scheduler=float64_euler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(autouse=True)
def float64_euler_step(monkeypatch):
    import diffusers.schedulers.scheduling_euler_discrete as euler

    monkeypatch.setattr(euler, "torch", Float64Torch())


def sld_direction(text, uncond, concept, guidance, hook, momentum, index):
    """StableDiffusionPipelineSafe's safety guidance (pipeline_stable_diffusion_safe.py, its denoising loop)."""
    scale = torch.clamp(torch.abs(text - concept) * hook.guidance_scale, max=1.0)
    scale = torch.where(text - concept >= hook.threshold, torch.zeros_like(scale), scale)
    safety = torch.mul(concept - uncond, scale) + hook.momentum_scale * momentum
    momentum = hook.momentum_beta * momentum + (1 - hook.momentum_beta) * safety
    return (guidance - safety if index >= hook.warmup_steps else guidance), momentum


@torch.no_grad()
def reference_loop(pipe, latents, hook, guidance_scale=7.5):
    """SDXL sampling written out on diffusers' parts; with `hook` (an sld.SLD) its concept is one more branch."""
    prompt, negative, pooled, negative_pooled = pipe.encode_prompt(PROMPTS, device="cpu", negative_prompt=NEGATIVES)
    contexts, pools = [negative, prompt], [negative_pooled, pooled]
    if hook is not None:
        concept, _, concept_pooled, _ = pipe.encode_prompt([hook.concept] * len(PROMPTS), device="cpu",
                                                           do_classifier_free_guidance=False)
        contexts, pools = contexts + [concept], pools + [concept_pooled]
    time_ids = pipe._get_add_time_ids(SIZE, (0, 0), SIZE, torch.float64,
                                      text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim)
    branches = len(contexts)
    scheduler = pipe.scheduler
    scheduler.set_timesteps(STEPS)
    x = latents * scheduler.init_noise_sigma
    momentum = torch.zeros_like(x)
    for index, t in enumerate(scheduler.timesteps):
        x_in = scheduler.scale_model_input(torch.cat([x] * branches), t)
        out = pipe.unet(x_in, t, encoder_hidden_states=torch.cat(contexts),
                        added_cond_kwargs=dict(text_embeds=torch.cat(pools),
                                               time_ids=time_ids.repeat(branches * len(PROMPTS), 1))).sample
        uncond, text, *concept = out.chunk(branches)
        guidance = text - uncond
        if hook is not None:
            guidance, momentum = sld_direction(text, uncond, concept[0], guidance, hook, momentum, index)
        x = scheduler.step(uncond + guidance_scale * guidance, t, x).prev_sample
    image = pipe.vae.decode(x / pipe.vae.config.scaling_factor).sample
    return pipe.image_processor.postprocess(image, output_type="np")


def start_latents(seed=0):
    return torch.randn(len(PROMPTS), 4, SIZE[0] // 8, SIZE[1] // 8, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


def test_reference_loop_is_diffusers_sdxl_pipeline_with_sld_off(reference):
    latents = start_latents()
    expected = reference(PROMPTS, negative_prompt=NEGATIVES, height=SIZE[0], width=SIZE[1], num_inference_steps=STEPS,
                         guidance_scale=7.5, latents=latents.clone(), output_type="np").images
    assert abs(reference_loop(reference, latents, None) - expected).max() <= 1e-12


@pytest.mark.parametrize("preset", ["medium", "max"])
def test_sld_on_sdxl_matches_the_reference_loop(ours, reference, preset):
    hook = sld.PRESETS[preset]
    latents = start_latents(1)
    expected = reference_loop(reference, latents, hook)
    got = ours(PROMPTS, negative_prompt=NEGATIVES, height=SIZE[0], width=SIZE[1], steps=STEPS, latents=latents,
               safety=preset, output_type="np")
    assert abs(got.images - expected).max() <= IMAGE_TOL
    assert any(record["sld"]["applied"] for record in got.telemetry)
    off = ours(PROMPTS, negative_prompt=NEGATIVES, height=SIZE[0], width=SIZE[1], steps=STEPS, latents=latents,
               safety=None, output_type="np")
    assert abs(off.images - expected).max() > 100 * IMAGE_TOL  # SLD changed the pictures


def test_one_batched_call_per_evaluation_with_a_pooled_embedding_per_branch(ours, monkeypatch):
    calls = []
    forward = type(ours.unet).forward

    def counting(unet, x, t, context, y=None):
        calls.append((x.shape[0], context.shape[0], y))
        return forward(unet, x, t, context, y)

    monkeypatch.setattr(type(ours.unet), "forward", counting)
    sega = sld.SEGA([sld.EditConcept("a smiling face", warmup_steps=0)])
    out = ours(PROMPTS, height=64, width=64, steps=3, safety="medium", hooks=[sega], output_type="latent", seed=0)
    assert len(calls) == len(out.telemetry) == 3
    rows, context_rows, y = calls[0]
    assert (rows, context_rows, y.shape[0]) == (2, 8, 8)  # uncond, prompt, SLD concept, SEGA concept; 2 images each
    pooled, micro = y.split([TINY_SDXL.text2.projection_dim, y.shape[1] - TINY_SDXL.text2.projection_dim], dim=1)
    assert torch.equal(pooled[:2], torch.zeros_like(pooled[:2]))  # no negative prompt: zeroed
    assert len({tuple(p.tolist()) for p in pooled[2:]}) == 4  # two prompts, two concepts: each its own
    assert torch.equal(micro, micro[:1].expand(8, -1))  # the same micro-conditioning on every branch


def test_negative_safety_is_the_concept_as_negative_prompt(ours):
    kwargs = dict(height=64, width=64, steps=4, output_type="np", seed=3)
    got = ours(PROMPTS, safety="negative", **kwargs)
    expected = ours(PROMPTS, negative_prompt=sld.DEFAULT_CONCEPT, safety=None, **kwargs)
    assert abs(got.images - expected.images).max() == 0


@pytest.mark.parametrize("sampler", [name for name, _, _ in BUILTINS])
def test_every_builtin_sampler_runs_sld_on_sdxl(ours, sampler):
    """Each sampler with its SDXL default spacing (leading), SLD "max" (no warm-up): applied at every evaluation."""
    out = ours("a photo of a cat", height=64, width=64, steps=3, sampler=sampler, safety="max", seed=0,
               output_type="latent")
    assert out.telemetry and all(record["sld"]["applied"] for record in out.telemetry)
    assert out.latents.shape == (1, 4, 8, 8) and torch.isfinite(out.latents).all()
