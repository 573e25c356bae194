"""The guidance-hook protocol and the guided denoiser the samplers call.

One model evaluation = ONE batched network call over every branch (unconditional or negative prompt, prompt,
and one branch per concept a hook asks for), classifier-free guidance, then each hook in order. Hooks edit the
guidance direction, as the SLD reference code does:

    eps_hat = eps_uncond + guidance_scale * direction,  direction = (eps_cond - eps_uncond) edited by each hook

`sampling` never sees a model class: `network(x, t, context)` is any function returning the prediction for
every context row, with x shared by all branches (context has branches * B rows, x has B). Network outputs are
turned into eps by the parameterisation (sampling/parameterization.py). A hook works on eps unless it sets
`space = "model"`: then it sees the raw outputs (v for v-models) and edits the direction in that space, which is
what diffusers' pipelines do on v-models. For epsilon models the two spaces coincide.
"""
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

import torch

from sampling.parameterization import SPACES, alpha_at, check_prediction, eps_per_output, to_eps

Network = Callable[[torch.Tensor, float, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class GuidanceInputs:
    """What a hook sees at one model evaluation (all tensors [B, C, H, W], in the hook's space)."""

    uncond: torch.Tensor
    cond: torch.Tensor
    concepts: dict[str, torch.Tensor]
    index: int  # model-evaluation index, 0-based (PNDM makes steps + 1 evaluations, Heun 2 * steps - 1)
    t: float
    guidance_scale: float


@runtime_checkable
class GuidanceHook(Protocol):
    """A typed guidance term: declares the concept texts it needs, owns its state, reports telemetry.
    Optional attribute `space`: "eps" (default) or "model"."""

    name: str

    def concepts(self) -> tuple[str, ...]: ...

    def reset(self) -> None: ...

    def __call__(self, direction: torch.Tensor, inputs: GuidanceInputs) -> tuple[torch.Tensor, dict[str, float]]: ...


def hook_names(hooks: Sequence[GuidanceHook]) -> list[str]:
    """Unique telemetry keys: the hook's name, suffixed with its position when names repeat."""
    names = [hook.name for hook in hooks]
    return [name if names.count(name) == 1 else f"{name}{i}" for i, name in enumerate(names)]


class GuidedDenoiser:
    """`model(x, t) -> eps_hat` for the samplers; records one telemetry entry per model evaluation."""

    def __init__(self, network: Network, context: torch.Tensor, concept_texts: Sequence[str],
                 guidance_scale: float, hooks: Sequence[GuidanceHook], alphas_cumprod: torch.Tensor,
                 prediction: str = "epsilon"):
        check_prediction(prediction)
        self.network = network
        self.context = context  # rows: [uncond (B), cond (B), concept_texts[0] (B), ...]
        self.concept_texts = list(concept_texts)
        self.guidance_scale = guidance_scale
        self.hooks = list(hooks)
        self.names = hook_names(self.hooks)
        self.alphas_cumprod = alphas_cumprod
        self.prediction = prediction
        self.telemetry: list[dict] = []
        for hook in self.hooks:
            if getattr(hook, "space", "eps") not in SPACES:
                raise ValueError(f"hook {hook.name!r} has space={hook.space!r}; allowed: {', '.join(SPACES)}")
            hook.reset()

    def _inputs(self, outputs: Sequence[torch.Tensor], t: float) -> GuidanceInputs:
        return GuidanceInputs(uncond=outputs[0], cond=outputs[1], concepts=dict(zip(self.concept_texts, outputs[2:])),
                              index=len(self.telemetry), t=t, guidance_scale=self.guidance_scale)

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        raw = self.network(x, t, self.context).chunk(2 + len(self.concept_texts))
        alpha = alpha_at(self.alphas_cumprod, t)
        model_inputs = self._inputs(raw, t)
        eps_inputs = replace(model_inputs, uncond=to_eps(self.prediction, raw[0], x, alpha),
                             cond=to_eps(self.prediction, raw[1], x, alpha),
                             concepts={c: to_eps(self.prediction, r, x, alpha) for c, r in model_inputs.concepts.items()})
        scale = eps_per_output(self.prediction, alpha)
        direction = eps_inputs.cond - eps_inputs.uncond
        record: dict = {"index": model_inputs.index, "t": t}
        for name, hook in zip(self.names, self.hooks):
            if getattr(hook, "space", "eps") == "model" and scale != 1.0:
                edited, record[name] = hook(direction / scale, model_inputs)
                direction = edited * scale
            else:
                direction, record[name] = hook(direction, eps_inputs)
        self.telemetry.append(record)
        # classifier-free guidance (Ho & Salimans 2022) with the hook-edited direction
        return eps_inputs.uncond + self.guidance_scale * direction
