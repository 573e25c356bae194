"""Structural similarity (SSIM; Wang, Bovik, Sheikh and Simoncelli, IEEE TIP 2004) of uint8 RGB pictures: an 11x11
Gaussian window of sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255, per channel, averaged over the window positions that
fit inside the picture and over the channels (scikit-image's `structural_similarity` with gaussian_weights=True,
use_sample_covariance=False, data_range=255 computes the same)."""
import numpy as np
import torch
import torch.nn.functional as F

SIGMA = 1.5
RADIUS = 5  # int(3.5 * sigma + 0.5): the window scipy's Gaussian filter uses at scikit-image's truncate=3.5
K1, K2, DATA_RANGE = 0.01, 0.03, 255.0


def _window() -> torch.Tensor:
    offsets = torch.arange(-RADIUS, RADIUS + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets / SIGMA) ** 2)
    return weights / weights.sum()


def _blur(x: torch.Tensor) -> torch.Tensor:
    """[N, 1, H, W] -> the Gaussian-weighted local means at every window position inside the picture."""
    w = _window()
    return F.conv2d(F.conv2d(x, w.view(1, 1, -1, 1)), w.view(1, 1, 1, -1))


def ssim(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Mean SSIM of each pair: uint8 [B, H, W, 3] (or [H, W, 3]) x the same shape -> float64 [B] (or a scalar)."""
    if first.shape != second.shape or first.shape[-1] != 3 or min(first.shape[-3:-1]) <= 2 * RADIUS:
        raise ValueError(f"ssim compares two RGB pictures of one shape, each side > {2 * RADIUS} px; got "
                         f"{first.shape} and {second.shape}")
    x, y = (torch.from_numpy(np.asarray(p, dtype=np.float64)).reshape(-1, *p.shape[-3:]).permute(0, 3, 1, 2)
            for p in (first, second))
    x, y = (p.reshape(-1, 1, *p.shape[-2:]) for p in (x, y))
    mx, my = _blur(x), _blur(y)
    vx, vy, cov = _blur(x * x) - mx * mx, _blur(y * y) - my * my, _blur(x * y) - mx * my
    c1, c2 = (K1 * DATA_RANGE) ** 2, (K2 * DATA_RANGE) ** 2
    # Wang et al. 2004, eq. 13: SSIM = (2 mx my + C1)(2 cov + C2) / ((mx^2 + my^2 + C1)(vx + vy + C2))
    index = (2 * mx * my + c1) * (2 * cov + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    per_picture = index.reshape(-1, 3 * index.shape[-2] * index.shape[-1]).mean(dim=1).numpy()
    return per_picture if first.ndim == 4 else per_picture[0]
