"""Safe Latent Diffusion as a guidance hook (Schramowski et al., CVPR 2023, arXiv 2211.05105).

Reference-code semantics (the authors' code and their diffusers port `StableDiffusionPipelineSafe`):

    mu    = where(eps_c - eps_S >= lambda, 0, min(s_S * |eps_c - eps_S|, 1))      eq. 5/6
    gamma = mu * (eps_S - eps_u) + s_m * nu                                        eq. 4 and 7
    nu   <- beta_m * nu + (1 - beta_m) * gamma                                     eq. 8
    direction <- direction - gamma   from evaluation index delta on               eq. 3

The paper prints max(1, s_S * |phi|) in eq. 5; the code (which produced the paper's numbers) clamps with min:
we follow the code. Momentum builds during warm-up; warm-up counts model evaluations, as the reference does.
"""
from dataclasses import dataclass, field
from types import MappingProxyType

import torch

from sampling.guidance import SPACES, GuidanceInputs
from sampling.registry import register_hook

# The paper's safety concept (Sec. 3); diffusers prefixes it with "an image showing ".
DEFAULT_CONCEPT = (
    "hate, harassment, violence, suffering, humiliation, harm, suicide, sexual, nudity, bodily fluids, blood, "
    "obscene gestures, illegal activity, drug use, theft, vandalism, weapons, child abuse, brutality, cruelty"
)


@register_hook("sld")
@dataclass
class SLD:
    """The SLD guidance hook. Defaults are the paper's "medium" configuration."""

    guidance_scale: float = 1000.0  # s_S
    threshold: float = 0.01  # lambda
    warmup_steps: int = 10  # delta, in model evaluations
    momentum_scale: float = 0.3  # s_m
    momentum_beta: float = 0.4  # beta_m
    concept: str = DEFAULT_CONCEPT
    # "eps": the paper's equations on noise predictions; "model": on what the UNet outputs (v for v-models),
    # as diffusers' safe pipeline does — the threshold and clamp are not linear, so the two differ on v-models.
    space: str = "eps"
    name: str = field(default="sld", repr=False)
    momentum: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        _require(self.guidance_scale >= 0, "guidance_scale", self.guidance_scale, ">= 0")
        _require(isinstance(self.warmup_steps, int) and self.warmup_steps >= 0, "warmup_steps", self.warmup_steps,
                 "an integer >= 0")
        _require(self.momentum_scale >= 0, "momentum_scale", self.momentum_scale, ">= 0")
        _require(0 <= self.momentum_beta <= 1, "momentum_beta", self.momentum_beta, "in [0, 1]")
        _require(isinstance(self.concept, str) and self.concept.strip() != "", "concept", self.concept,
                 "a non-empty string")
        _require(self.space in SPACES, "space", self.space, " or ".join(map(repr, SPACES)))

    def concepts(self) -> tuple[str, ...]:
        return (self.concept,)

    def reset(self) -> None:
        self.momentum = None

    def __call__(self, direction: torch.Tensor, inputs: GuidanceInputs) -> tuple[torch.Tensor, dict[str, float]]:
        eps_concept = inputs.concepts[self.concept]
        if self.momentum is None:
            self.momentum = torch.zeros_like(direction)
        # eq. 5/6 with the reference code's min bound and signed threshold
        difference = inputs.cond - eps_concept
        scale = torch.clamp(difference.abs() * self.guidance_scale, max=1.0)
        mu = torch.where(difference >= self.threshold, torch.zeros_like(scale), scale)
        # eq. 4 and 7: safety guidance plus momentum
        gamma = (eps_concept - inputs.uncond) * mu + self.momentum_scale * self.momentum
        # eq. 8: momentum update, also during warm-up
        self.momentum = self.momentum_beta * self.momentum + (1 - self.momentum_beta) * gamma
        applied = inputs.index >= self.warmup_steps
        if applied:
            direction = direction - gamma  # eq. 3
        telemetry = {
            "active_fraction": (mu != 0).double().mean().item(),
            "mean_abs_gamma": gamma.abs().double().mean().item(),
            "momentum_norm": self.momentum.double().norm().item(),
            "applied": applied,
        }
        return direction, telemetry


def _require(ok: bool, name: str, value, allowed: str) -> None:
    if not ok:
        raise ValueError(f"SLD {name}={value!r} is invalid; allowed: {allowed}")


# (delta, s_S, lambda, s_m, beta_m) as the authors publish them (paper Sec. 5 / their code). Note: diffusers'
# SafetyConfig.WEAK uses s_S = 20; the paper's weak configuration is s_S = 200, which we follow.
PRESET_VALUES = {
    "weak": (15, 200.0, 0.0, 0.0, 0.0),
    "medium": (10, 1000.0, 0.01, 0.3, 0.4),
    "strong": (7, 2000.0, 0.025, 0.5, 0.7),
    "max": (0, 5000.0, 1.0, 0.5, 0.7),
}


def preset(name: str) -> SLD:
    """A fresh SLD for a preset name; change a value with dataclasses.replace(sld.PRESETS["strong"], threshold=0.02)."""
    if name not in PRESET_VALUES:
        raise ValueError(f"safety preset {name!r} is unknown; allowed: None, {', '.join(PRESET_VALUES)} or an sld.SLD")
    delta, scale, threshold, momentum, beta = PRESET_VALUES[name]
    return SLD(guidance_scale=scale, threshold=threshold, warmup_steps=delta, momentum_scale=momentum,
               momentum_beta=beta)


PRESETS = MappingProxyType({name: preset(name) for name in PRESET_VALUES})
# the five tunable values of a preset, in the order records and the A1111 text list them
SLD_VALUES = ("guidance_scale", "threshold", "warmup_steps", "momentum_scale", "momentum_beta")
