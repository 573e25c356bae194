"""The guidance-hook protocol and the guided denoiser the samplers call.

One model evaluation = ONE batched network call over every branch (unconditional or negative prompt, prompt,
and one branch per concept a hook asks for), classifier-free guidance, then each hook in order. Hooks edit the
guidance direction, as the SLD reference code does:

    eps_hat = eps_uncond + guidance_scale * direction,  direction = (eps_cond - eps_uncond) edited by each hook

`sampling` never sees a model class: `network(x, t, context)` is any function returning the prediction for
every context row, with x shared by all branches (context has branches * B rows, x has B).
"""
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

Network = Callable[[torch.Tensor, int, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class GuidanceInputs:
    """What a hook sees at one model evaluation (all tensors [B, C, H, W])."""

    uncond: torch.Tensor
    cond: torch.Tensor
    concepts: dict[str, torch.Tensor]
    index: int  # model-evaluation index, 0-based (PNDM makes steps + 1 evaluations)
    t: int
    guidance_scale: float


@runtime_checkable
class GuidanceHook(Protocol):
    """A typed guidance term: declares the concept texts it needs, owns its state, reports telemetry."""

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
                 guidance_scale: float, hooks: Sequence[GuidanceHook]):
        self.network = network
        self.context = context  # rows: [uncond (B), cond (B), concept_texts[0] (B), ...]
        self.concept_texts = list(concept_texts)
        self.guidance_scale = guidance_scale
        self.hooks = list(hooks)
        self.names = hook_names(self.hooks)
        self.telemetry: list[dict] = []
        for hook in self.hooks:
            hook.reset()

    def __call__(self, x: torch.Tensor, t: int) -> torch.Tensor:
        branches = self.network(x, t, self.context).chunk(2 + len(self.concept_texts))
        inputs = GuidanceInputs(
            uncond=branches[0], cond=branches[1], concepts=dict(zip(self.concept_texts, branches[2:])),
            index=len(self.telemetry), t=t, guidance_scale=self.guidance_scale,
        )
        direction = inputs.cond - inputs.uncond
        record: dict = {"index": inputs.index, "t": t}
        for name, hook in zip(self.names, self.hooks):
            direction, record[name] = hook(direction, inputs)
        self.telemetry.append(record)
        # classifier-free guidance (Ho & Salimans 2022) with the hook-edited direction
        return inputs.uncond + self.guidance_scale * direction
