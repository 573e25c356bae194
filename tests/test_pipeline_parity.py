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
from reference import diffusers_sld_kwargs, float64_scheduler, reference_pipeline

IMAGE_TOL = 1e-6
LATENT_TOL = 1e-8
STEPS = 30


@pytest.fixture(scope="module")
def ours(tiny_weights):
    return Pipeline(build(TINY_SD1, tiny_weights, "cpu", torch.float64))


@pytest.fixture(scope="module")
def reference(reference_parts, reference_tokenizer):
    return {name: reference_pipeline(reference_parts, reference_tokenizer, float64_scheduler(scheduler))
            for name, scheduler in (("ddim", "DDIMScheduler"), ("pndm", "PNDMScheduler"))}


def run_both(ours, reference, sampler, safety, prompt, negative, size, per_prompt, seed=0):
    n_prompts = 1 if isinstance(prompt, str) else len(prompt)
    latents = torch.randn(n_prompts * per_prompt, 4, size[0] // 8, size[1] // 8,
                          generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    captured = {}
    expected = reference[sampler](
        prompt, height=size[0], width=size[1], num_inference_steps=STEPS, guidance_scale=7.5,
        negative_prompt=negative, num_images_per_prompt=per_prompt, latents=latents.clone(), output_type="np",
        callback=lambda i, t, x: captured.__setitem__("latents", x),
        **diffusers_sld_kwargs(None if safety is None else sld.PRESETS[safety]))
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
