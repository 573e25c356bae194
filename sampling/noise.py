"""Gaussian draws of the ancestral samplers, placed as diffusers' `randn_tensor` places them."""
import torch


def standard_normal(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """z ~ N(0, I) shaped like `like`, in its dtype, drawn on the generator's device and moved to `like`'s.

    A CPU generator therefore gives the same draws on every device, as diffusers' pipelines do.
    """
    device = generator.device if generator is not None else like.device
    return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=device).to(like.device)
