"""A deterministic stand-in for the guided denoiser, for sampler tests without a network."""
import torch

SHAPE = (2, 4, 8, 8)


class FakeEps:
    """Deterministic noise predictor eps = tanh(W x) + 0.3 sin(t / 97 + phase); records every call."""

    def __init__(self, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        features = SHAPE[1] * SHAPE[2] * SHAPE[3]
        self.weight = torch.randn(features, features, generator=g, dtype=torch.float64) / features**0.5
        self.phase = torch.rand(SHAPE[1:], generator=g, dtype=torch.float64) * 6.28
        self.calls: list[tuple[torch.Tensor, float]] = []

    def __call__(self, x: torch.Tensor, t) -> torch.Tensor:
        t = t.item() if isinstance(t, torch.Tensor) else t  # diffusers passes tensors, our samplers numbers
        self.calls.append((x.clone(), t))
        mixed = torch.tanh(x.flatten(1) @ self.weight.T.to(x.dtype)).view(x.shape)
        return mixed + 0.3 * torch.sin(t / 97 + self.phase.to(x.dtype))

    @property
    def seen_timesteps(self) -> list[float]:
        return [t for _, t in self.calls]
