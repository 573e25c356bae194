"""The full SLD pipeline against diffusers' StableDiffusionPipelineSafe on the same random weights, in float64.

Same explicit latents, the same safety concept and diffusers' scheduler given our float64 alphas-bar (diffusers
computes its schedule in float32; tests/test_samplers.py bounds that difference separately). 30 steps, so
1000 % steps != 0. Images must agree within 1e-6, latents within 1e-8.
"""
import pytest
import torch

import sld
from models.loader import build
from models.sd1 import TINY_SD1
from sld.pipeline import Pipeline

IMAGE_TOL = 1e-6
LATENT_TOL = 1e-8
STEPS = 30


@pytest.fixture(scope="module")
def ours(tiny_weights):
    return Pipeline(build(TINY_SD1, tiny_weights, "cpu", torch.float64))


@pytest.fixture(scope="module")
def reference(reference_parts, reference_tokenizer):
    from diffusers import DDIMScheduler, PNDMScheduler
    from diffusers.pipelines.deprecated.stable_diffusion_safe import StableDiffusionPipelineSafe

    unet, vae, text = reference_parts
    common = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", set_alpha_to_one=False,
                  steps_offset=1)
    schedulers = {"ddim": DDIMScheduler(clip_sample=False, **common), "pndm": PNDMScheduler(skip_prk_steps=True, **common)}
    from sampling.schedule import alphas_cumprod, scaled_linear_betas

    alphas = alphas_cumprod(scaled_linear_betas())
    for scheduler in schedulers.values():
        scheduler.alphas_cumprod = alphas
        scheduler.final_alpha_cumprod = alphas[0]
    pipes = {}
    for name, scheduler in schedulers.items():
        pipe = StableDiffusionPipelineSafe(vae=vae, text_encoder=text, tokenizer=reference_tokenizer, unet=unet,
                                           scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                           requires_safety_checker=False)
        pipe.safety_concept = sld.DEFAULT_CONCEPT
        pipe.set_progress_bar_config(disable=True)
        pipes[name] = pipe
    return pipes


def diffusers_kwargs(safety: str | None) -> dict:
    if safety is None:
        return dict(sld_guidance_scale=0.0)
    hook = sld.PRESETS[safety]
    return dict(sld_guidance_scale=hook.guidance_scale, sld_warmup_steps=hook.warmup_steps,
                sld_threshold=hook.threshold, sld_momentum_scale=hook.momentum_scale,
                sld_mom_beta=hook.momentum_beta)


def run_both(ours, reference, sampler, safety, prompt, negative, size, per_prompt, seed=0):
    n_prompts = 1 if isinstance(prompt, str) else len(prompt)
    latents = torch.randn(n_prompts * per_prompt, 4, size[0] // 8, size[1] // 8,
                          generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    captured = {}
    expected = reference[sampler](
        prompt, height=size[0], width=size[1], num_inference_steps=STEPS, guidance_scale=7.5,
        negative_prompt=negative, num_images_per_prompt=per_prompt, latents=latents.clone(), output_type="np",
        callback=lambda i, t, x: captured.__setitem__("latents", x), **diffusers_kwargs(safety))
    got = ours(prompt, negative_prompt=negative, height=size[0], width=size[1], steps=STEPS, guidance_scale=7.5,
               sampler=sampler, latents=latents, num_images_per_prompt=per_prompt, safety=safety, output_type="np")
    return got, expected.images, captured["latents"]


@pytest.mark.parametrize("sampler", ["ddim", "pndm"])
@pytest.mark.parametrize("safety", [None, "weak", "medium", "strong", "max"])
def test_matches_diffusers_safe_pipeline(ours, reference, sampler, safety):
    got, images, latents = run_both(ours, reference, sampler, safety, "a photo of a cat", None, (64, 64), 1)
    assert (got.latents - latents).abs().max().item() <= LATENT_TOL
    assert abs(got.images - images).max() <= IMAGE_TOL
    assert len(got.telemetry) == STEPS + (sampler == "pndm")


@pytest.mark.parametrize("sampler", ["ddim", "pndm"])
def test_batch_negative_prompts_non_square(ours, reference, sampler):
    prompts = ["a photo of a cat", "a red car in the rain"]
    negatives = ["blurry", "low quality, watermark"]
    got, images, latents = run_both(ours, reference, sampler, "strong", prompts, negatives, (64, 96), 2, seed=5)
    assert got.images.shape == (4, 64, 96, 3)
    assert (got.latents - latents).abs().max().item() <= LATENT_TOL
    assert abs(got.images - images).max() <= IMAGE_TOL
