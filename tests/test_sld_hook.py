"""The SLD hook on hand-made tensors against a literal transcription of the reference code, and its presets."""
import dataclasses

import pytest
import torch

import sld
from sampling.guidance import GuidanceInputs, GuidedDenoiser
from sampling.schedule import alphas_cumprod, scaled_linear_betas

CONCEPT = "red"


def reference_sld(uncond, cond, concept, steps, s_s, lam, delta, s_m, beta):
    """diffusers StableDiffusionPipelineSafe's loop body (eq. 3-8), line by line, for a sequence of evaluations."""
    momentum, directions = None, []
    for i, (u, c, s) in enumerate(zip(uncond, cond, concept)):
        guidance = c - u
        if momentum is None:
            momentum = torch.zeros_like(guidance)
        scale = torch.clamp(torch.abs(c - s) * s_s, max=1.0)
        scale = torch.where((c - s) >= lam, torch.zeros_like(scale), scale)
        safety = torch.mul(s - u, scale) + s_m * momentum
        momentum = beta * momentum + (1 - beta) * safety
        if i >= delta:
            guidance = guidance - safety
        directions.append(guidance)
    return directions


@pytest.mark.parametrize("name", ["weak", "medium", "strong", "max"])
def test_hook_matches_reference_code(name):
    g = torch.Generator().manual_seed(0)
    n = 12
    uncond, cond, concept = (list(torch.randn(n, 2, 4, 5, 5, generator=g, dtype=torch.float64) * 0.05) for _ in range(3))
    hook = dataclasses.replace(sld.PRESETS[name], concept=CONCEPT)
    hook.reset()
    got = []
    for i in range(n):
        inputs = GuidanceInputs(uncond[i], cond[i], {CONCEPT: concept[i]}, i, 999 - i, 7.5)
        direction, record = hook(cond[i] - uncond[i], inputs)
        got.append(direction)
        assert record["applied"] == (i >= hook.warmup_steps)
    expected = reference_sld(uncond, cond, concept, n, hook.guidance_scale, hook.threshold, hook.warmup_steps,
                             hook.momentum_scale, hook.momentum_beta)
    for a, b in zip(got, expected):
        assert torch.equal(a, b)


def test_scale_uses_the_codes_min_bound_and_signed_threshold():
    """mu = min(s_S |c - S|, 1) where c - S < lambda, else 0 (the paper prints max; the code, and we, use min)."""
    cond = torch.tensor([0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    concept = torch.tensor([1.0, 1e-4, -1.0, -0.005], dtype=torch.float64)  # c - S = -1, -1e-4, 1, 0.005
    uncond = torch.zeros(4, dtype=torch.float64)
    hook = sld.SLD(guidance_scale=1000, threshold=0.01, warmup_steps=0, momentum_scale=0.0, momentum_beta=0.0,
                   concept=CONCEPT)
    hook.reset()
    direction, record = hook(cond - uncond, GuidanceInputs(uncond, cond, {CONCEPT: concept}, 0, 999, 7.5))
    mu = torch.tensor([1.0, 0.1, 0.0, 1.0], dtype=torch.float64)  # 0.005 < 0.01 is still below the threshold
    assert torch.allclose(direction, -(concept - uncond) * mu, atol=1e-15)
    assert record["active_fraction"] == 0.75


def test_momentum_builds_during_warmup():
    hook = sld.SLD(guidance_scale=1000, threshold=0.01, warmup_steps=3, momentum_scale=0.5, momentum_beta=0.5,
                   concept=CONCEPT)
    hook.reset()
    u, c, s = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    norms = []
    for i in range(3):
        direction, record = hook(c - u, GuidanceInputs(u, c, {CONCEPT: s}, i, 999 - i, 7.5))
        assert torch.equal(direction, c - u) and not record["applied"]
        norms.append(record["momentum_norm"])
    assert norms[0] > 0 and norms == sorted(norms)
    direction, record = hook(c - u, GuidanceInputs(u, c, {CONCEPT: s}, 3, 996, 7.5))
    assert record["applied"] and (direction < -1).all()  # gamma = 1 + 0.5 * momentum > 1


def test_presets_as_the_authors_publish_them():
    values = {name: (h.warmup_steps, h.guidance_scale, h.threshold, h.momentum_scale, h.momentum_beta)
              for name, h in sld.PRESETS.items()}
    assert values == {"weak": (15, 200, 0.0, 0.0, 0.0), "medium": (10, 1000, 0.01, 0.3, 0.4),
                      "strong": (7, 2000, 0.025, 0.5, 0.7), "max": (0, 5000, 1.0, 0.5, 0.7)}
    assert sld.SLD() == sld.PRESETS["medium"]
    assert sld.DEFAULT_CONCEPT.startswith("hate, harassment, violence") and sld.DEFAULT_CONCEPT.endswith("cruelty")


@pytest.mark.parametrize("field,value", [("guidance_scale", -1), ("warmup_steps", 1.5), ("warmup_steps", -1),
                                         ("momentum_scale", -0.1), ("momentum_beta", 1.5), ("concept", "  "),
                                         ("space", "v")])
def test_invalid_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=f"SLD {field}="):
        sld.SLD(**{field: value})


def test_denoiser_runs_hooks_in_order_and_records_every_evaluation():
    calls = []

    class Recorder:
        def __init__(self, name, shift):
            self.name, self.shift = name, shift

        def concepts(self):
            return ("x",)

        def reset(self):
            calls.append(("reset", self.name))

        def __call__(self, direction, inputs):
            calls.append((self.name, inputs.index))
            return direction + self.shift, {"shift": self.shift}

    def network(x, t, context):
        return context[:, 0, :1, None, None].expand(-1, 1, 2, 2) + 0 * x.repeat(context.shape[0] // x.shape[0], 1, 1, 1)

    context = torch.tensor([0.0, 1.0, 5.0], dtype=torch.float64).reshape(3, 1, 1).expand(3, 77, 1)
    hooks = [Recorder("a", 1.0), Recorder("a", 10.0)]
    denoiser = GuidedDenoiser(network, context, ["x"], 2.0, hooks, alphas_cumprod(scaled_linear_betas()))
    out = denoiser(torch.zeros(1, 1, 2, 2, dtype=torch.float64), 999)
    assert torch.equal(out, torch.full((1, 1, 2, 2), 0.0 + 2.0 * (1.0 + 1.0 + 10.0), dtype=torch.float64))
    denoiser(torch.zeros(1, 1, 2, 2, dtype=torch.float64), 500)
    assert calls == [("reset", "a"), ("reset", "a"), ("a", 0), ("a", 0), ("a", 1), ("a", 1)]
    assert [r["index"] for r in denoiser.telemetry] == [0, 1] and set(denoiser.telemetry[0]) == {"index", "t", "a0", "a1"}
