"""SEGA against diffusers' SemanticStableDiffusionPipeline (float64, same weights and latents), the SEGA safety
presets and the negative-prompt baseline."""
import pytest
import torch

import sld
from models.loader import build
from models.sd1 import TINY_SD1
from sld.pipeline import Pipeline
from sld.hooks.sega import SEGA_SAFETY_VALUES, EditConcept, sega_safety
from reference import float64_scheduler, reference_pipeline

STEPS = 30
IMAGE_TOL = 1e-6
LATENT_TOL = 1e-8


@pytest.fixture(scope="module")
def ours(tiny_weights):
    return Pipeline(build(TINY_SD1, tiny_weights, "cpu", torch.float64))


@pytest.fixture(scope="module")
def reference(reference_parts, reference_tokenizer):
    return reference_pipeline(reference_parts, reference_tokenizer, float64_scheduler("DDIMScheduler"), kind="semantic")


EDITS = (
    EditConcept("a red hat", "toward", scale=6.0, warmup_steps=3, cooldown_steps=20, threshold=0.9, weight=1.0),
    EditConcept("blurry", "away", scale=4.0, warmup_steps=8, cooldown_steps=None, threshold=0.8, weight=0.5),
    EditConcept("sunglasses", "toward", scale=3.0, warmup_steps=5, cooldown_steps=25, threshold=0.95, weight=2.0),
)


def test_matches_diffusers_semantic_pipeline(ours, reference):
    latents = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    captured = {}
    expected = reference(
        ["a photo of a cat", "a dog on a beach"], height=64, width=64, num_inference_steps=STEPS, guidance_scale=7.5,
        num_images_per_prompt=2, latents=latents.clone(), output_type="np",
        callback=lambda i, t, x: captured.__setitem__("x", x),
        editing_prompt=[e.text for e in EDITS], reverse_editing_direction=[e.direction == "away" for e in EDITS],
        edit_guidance_scale=[e.scale for e in EDITS], edit_warmup_steps=[e.warmup_steps for e in EDITS],
        edit_cooldown_steps=[e.cooldown_steps if e.cooldown_steps is not None else STEPS + 1 for e in EDITS],
        edit_threshold=[e.threshold for e in EDITS], edit_weights=[e.weight for e in EDITS],
        edit_momentum_scale=0.3, edit_mom_beta=0.6)
    hook = sld.SEGA(EDITS, momentum_scale=0.3, momentum_beta=0.6)
    got = ours(["a photo of a cat", "a dog on a beach"], height=64, width=64, steps=STEPS, sampler="ddim",
               num_images_per_prompt=2, latents=latents, safety=None, hooks=[hook], output_type="np")
    assert (got.latents - captured["x"]).abs().max().item() <= LATENT_TOL
    assert abs(got.images - expected.images).max() <= IMAGE_TOL
    applied = [r["sega"]["applied"] for r in got.telemetry]
    assert applied == [i >= 8 for i in range(STEPS)]


def test_sega_safety_presets_and_names(ours):
    assert SEGA_SAFETY_VALUES == {"medium": (4.0, 10, 0.3, 0.9), "strong": (7.0, 5, 0.5, 0.85), "max": (10.0, 0, 0.5, 0.75)}
    hook = sega_safety("strong")
    assert hook.edits[0].direction == "away" and hook.edits[0].text == sld.DEFAULT_CONCEPT
    out = ours("a cat", safety="sega-max", concept="red", height=64, width=64, steps=3, seed=0, output_type="latent")
    assert set(out.telemetry[0]) == {"index", "t", "sega"} and out.telemetry[0]["sega"]["applied"]


def test_negative_prompt_baseline_uses_the_concept_as_negative_prompt(ours):
    baseline = ours("a cat", safety="negative", concept="red", height=64, width=64, steps=3, seed=0,
                    output_type="latent")
    manual = ours("a cat", safety=None, negative_prompt="red", height=64, width=64, steps=3, seed=0,
                  output_type="latent")
    assert torch.equal(baseline.latents, manual.latents)
    with pytest.raises(ValueError, match="safety='negative' uses the concept as the negative prompt"):
        ours("a cat", safety="negative", negative_prompt="x", height=64, width=64, steps=3)


@pytest.mark.parametrize("kwargs,message", [
    (dict(text=""), "EditConcept text=''"), (dict(text="a", direction="up"), "EditConcept direction='up'"),
    (dict(text="a", threshold=1.5), "EditConcept threshold=1.5"), (dict(text="a", cooldown_steps=-1), "cooldown"),
])
def test_invalid_edit_concepts(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EditConcept(**kwargs)
