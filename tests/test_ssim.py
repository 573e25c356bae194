"""SSIM against scikit-image's structural_similarity (Wang et al. 2004 settings), float64."""
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from sld.toy.ssim import ssim


def reference(first: np.ndarray, second: np.ndarray) -> float:
    return structural_similarity(first, second, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=255)


def test_ssim_matches_scikit_image():
    rng = np.random.default_rng(0)
    first = rng.integers(0, 256, (3, 64, 48, 3), dtype=np.uint8)
    noisy = np.clip(first.astype(int) + rng.integers(-40, 41, first.shape), 0, 255).astype(np.uint8)
    ours = ssim(first, noisy)
    expected = [reference(a, b) for a, b in zip(first, noisy)]
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)
    assert 0.5 < ours.min() < ours.max() < 0.99  # a real difference, not a trivial 1
    assert ssim(first[0], first[0]) == pytest.approx(1.0, abs=1e-15)


def test_ssim_refuses_mismatched_or_tiny_pictures():
    with pytest.raises(ValueError, match="one shape"):
        ssim(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="one shape"):
        ssim(np.zeros((16, 16, 3), np.uint8), np.zeros((16, 17, 3), np.uint8))
