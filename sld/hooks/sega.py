"""SEGA: semantic guidance (Brack et al., NeurIPS 2023) as a guidance hook.

Reference semantics: diffusers' `SemanticStableDiffusionPipeline` (deprecated pipelines), whose loop body this
follows term by term. Per edit concept e (model-evaluation index i):

    psi_e = +-(eps_e - eps_u) * s_e, zeroed where |psi_e| < its `threshold` percentile over each latent channel
    while some but not all concepts are past warm-up: guidance += sum of the warmed-up psi_e, weights normalised
    E = sum_e w_e psi_e + s_m * nu ;  nu <- beta_m * nu + (1 - beta_m) * E ;  guidance += E once all are warmed up

Concepts past their cooldown contribute zero. diffusers adds these terms to the already scaled CFG guidance
s_g * (eps_c - eps_u); our hooks edit the unscaled direction, so the terms enter divided by s_g (same result).
"""
from dataclasses import dataclass, field

import torch

from sampling.guidance import SPACES, GuidanceInputs
from sampling.registry import register_hook
from sld.hooks.safety import DEFAULT_CONCEPT

DIRECTIONS = ("toward", "away")


def _require(ok: bool, owner: str, name: str, value, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{owner} {name}={value!r} is invalid; allowed: {allowed}")


@dataclass(frozen=True)
class EditConcept:
    text: str
    direction: str = "toward"  # "toward" adds the concept, "away" removes it (diffusers: reverse_editing_direction)
    scale: float = 5.0  # s_e
    warmup_steps: int = 10  # model evaluations before the edit is applied
    cooldown_steps: int | None = None  # evaluation index from which the edit stops (None: never)
    threshold: float = 0.9  # percentile of |psi| below which elements are dropped
    weight: float = 1.0

    def __post_init__(self):
        _require(isinstance(self.text, str) and self.text.strip() != "", "EditConcept", "text", self.text,
                 "a non-empty string")
        _require(self.direction in DIRECTIONS, "EditConcept", "direction", self.direction, " or ".join(DIRECTIONS))
        _require(self.scale >= 0, "EditConcept", "scale", self.scale, ">= 0")
        _require(isinstance(self.warmup_steps, int) and self.warmup_steps >= 0, "EditConcept", "warmup_steps",
                 self.warmup_steps, "an integer >= 0")
        _require(self.cooldown_steps is None or (isinstance(self.cooldown_steps, int) and self.cooldown_steps >= 0),
                 "EditConcept", "cooldown_steps", self.cooldown_steps, "None or an integer >= 0")
        _require(0 <= self.threshold <= 1, "EditConcept", "threshold", self.threshold, "in [0, 1]")


@register_hook("sega")
@dataclass
class SEGA:
    edits: tuple[EditConcept, ...]
    momentum_scale: float = 0.1  # s_m
    momentum_beta: float = 0.4  # beta_m
    space: str = "eps"
    name: str = field(default="sega", repr=False)
    momentum: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        self.edits = tuple(self.edits)
        _require(len(self.edits) > 0 and all(isinstance(e, EditConcept) for e in self.edits), "SEGA", "edits",
                 self.edits, "one or more sld.EditConcept")
        _require(self.momentum_scale >= 0, "SEGA", "momentum_scale", self.momentum_scale, ">= 0")
        _require(0 <= self.momentum_beta <= 1, "SEGA", "momentum_beta", self.momentum_beta, "in [0, 1]")
        _require(self.space in SPACES, "SEGA", "space", self.space, " or ".join(map(repr, SPACES)))

    def concepts(self) -> tuple[str, ...]:
        return tuple(edit.text for edit in self.edits)

    def reset(self) -> None:
        self.momentum = None

    def _edit_term(self, edit: EditConcept, inputs: GuidanceInputs) -> torch.Tensor:
        psi = inputs.concepts[edit.text] - inputs.uncond
        psi = (-psi if edit.direction == "away" else psi) * edit.scale
        magnitude = psi.abs()
        # per (image, channel) percentile over the latent pixels, as diffusers' torch.quantile over flatten(start_dim=2)
        work = magnitude if magnitude.dtype in (torch.float32, torch.float64) else magnitude.float()
        cutoff = torch.quantile(work.flatten(start_dim=2), edit.threshold, dim=2).to(psi.dtype)
        return torch.where(magnitude >= cutoff[:, :, None, None], psi, torch.zeros_like(psi))

    def __call__(self, direction: torch.Tensor, inputs: GuidanceInputs) -> tuple[torch.Tensor, dict]:
        if inputs.guidance_scale <= 0:
            raise ValueError(f"SEGA needs guidance_scale > 0 (got {inputs.guidance_scale}); its terms are added to "
                             "the classifier-free guidance")
        i, batch = inputs.index, direction.shape[0]
        if self.momentum is None:
            self.momentum = torch.zeros_like(direction)
        terms = torch.zeros((len(self.edits), *direction.shape), dtype=direction.dtype, device=direction.device)
        weights = torch.zeros((len(self.edits), batch), dtype=direction.dtype, device=direction.device)
        warmed = [c for c, edit in enumerate(self.edits) if i >= edit.warmup_steps]
        for c, edit in enumerate(self.edits):
            if edit.cooldown_steps is not None and i >= edit.cooldown_steps:
                continue
            weights[c] = edit.weight
            terms[c] = self._edit_term(edit, inputs)
        added = torch.zeros_like(direction)
        if 0 < len(warmed) < len(self.edits):
            partial = weights[warmed].clamp(min=0)
            # diffusers divides by the weight sum unguarded; a sum of 0 (all warmed concepts cooled down) adds nothing
            partial = torch.nan_to_num(partial / partial.sum(dim=0))
            added = added + torch.einsum("cb,cbijk->bijk", partial, terms[warmed])
        edit = torch.einsum("cb,cbijk->bijk", torch.nan_to_num(weights.clamp(min=0)), terms)
        edit = edit + self.momentum_scale * self.momentum
        self.momentum = self.momentum_beta * self.momentum + (1 - self.momentum_beta) * edit
        applied = len(warmed) == len(self.edits)
        if applied:
            added = added + edit
        telemetry = {
            "active_fraction": (terms != 0).double().mean().item(),
            "mean_abs_guidance": added.abs().double().mean().item(),
            "momentum_norm": self.momentum.double().norm().item(),
            "applied": applied,
        }
        return direction + added / inputs.guidance_scale, telemetry


# The authors' SEGA-as-safety settings: one "away" concept (the SLD safety concept), (s_e, warm-up, s_m, threshold).
# The momentum beta is not part of them; diffusers' default 0.4 is used.
SEGA_SAFETY_VALUES = {"medium": (4.0, 10, 0.3, 0.9), "strong": (7.0, 5, 0.5, 0.85), "max": (10.0, 0, 0.5, 0.75)}


def sega_safety(level: str, concept: str = DEFAULT_CONCEPT) -> SEGA:
    if level not in SEGA_SAFETY_VALUES:
        raise ValueError(f"SEGA safety level {level!r} is unknown; allowed: {', '.join(SEGA_SAFETY_VALUES)}")
    scale, warmup, momentum, threshold = SEGA_SAFETY_VALUES[level]
    edit = EditConcept(concept, "away", scale=scale, warmup_steps=warmup, threshold=threshold)
    return SEGA((edit,), momentum_scale=momentum)
