"""The fidelity metrics of one setting (the paper's second evaluation, Schramowski et al., CVPR 2023, Sec. 5):

    fid          Fréchet distance of the setting's image features to the reference statistics, over all images
                 (None with fewer images than a full-rank covariance needs: feature dimension + 1)
    fid_splits   the same over `splits` disjoint splits of the images (in row order), mean and std: the spread of
                 FID at N / splits images (each split's FID is biased upwards by its smaller sample)
    alignment    mean per-image alignment (CLIP score, or the toy's faithfulness), with a percentile bootstrap 95%
                 interval over images (numpy PCG64 from a fixed seed)
"""
from dataclasses import dataclass

import numpy as np

from sld.eval.fid import Statistics, frechet_distance, minimum_images, statistics

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Fidelity:
    images: int
    fid: float | None  # None: fewer images than the feature dimension + 1
    fid_split_mean: float | None  # None: too few images per split for a full-rank covariance
    fid_split_std: float | None
    splits: int
    alignment: float
    alignment_low: float
    alignment_high: float


def split_fids(features: np.ndarray, reference: Statistics, splits: int) -> list[float]:
    """FID of each of `splits` contiguous, nearly equal parts; empty when a part is too small."""
    parts = np.array_split(features, splits)
    if splits < 2 or min(len(part) for part in parts) < minimum_images(features.shape[1]):
        return []
    return [frechet_distance(statistics(part), reference) for part in parts]


def bootstrap_interval(values: np.ndarray, rounds: int, seed: int, level: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values`, resampled with replacement."""
    picks = np.random.default_rng(seed).integers(0, len(values), size=(rounds, len(values)))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values[picks].mean(axis=1), [tail, 100 - tail])
    return float(low), float(high)


def fidelity(features: np.ndarray, reference: Statistics, alignment: np.ndarray, splits: int = 10,
             rounds: int = 1000, seed: int = 0) -> Fidelity:
    """The metrics of one setting from its [N, D] features and N per-image alignment scores (row order)."""
    features, alignment = np.asarray(features, dtype=np.float64), np.asarray(alignment, dtype=np.float64)
    parts = split_fids(features, reference, splits)
    low, high = bootstrap_interval(alignment, rounds, seed)
    enough = len(features) >= minimum_images(features.shape[1])
    return Fidelity(len(features), frechet_distance(statistics(features), reference) if enough else None,
                    float(np.mean(parts)) if parts else None, float(np.std(parts)) if parts else None, splits,
                    float(alignment.mean()), low, high)
