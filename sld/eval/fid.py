"""Fréchet distance between two image sets in a feature space (FID: Heusel et al. 2017, in the FID Inception's
2048-d pool features; the toy evaluation uses the toy classifier's features), and the reference statistics of an
image folder, computed once and cached as .npz.

The cache key is what determines the statistics: every file's name, size and modification time, the feature
extractor's signature (its weights' sha256 and the resizing) and the reference crop size.
"""
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from sld.eval.clip_vision import center_crop
from sld.io.files import write_atomic

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
SINGULAR_EPS = 1e-6  # pytorch-fid's offset on the covariance diagonals when their product is singular
IMAGINARY_ATOL = 1e-3  # pytorch-fid: the largest imaginary part of sqrt(S1 S2)'s diagonal taken for round-off
SCIPY_INSTALL = "pip install 'safe-latent-diffusion[coco]' (or pip install scipy)"


class FeatureExtractor(Protocol):
    """Images -> [N, dim] float64 features; `signature()` names what the features depend on (weights, resizing)."""

    dim: int

    def signature(self) -> dict: ...

    def __call__(self, images: list[Image.Image]) -> np.ndarray: ...


@dataclass(frozen=True)
class Statistics:
    mean: np.ndarray  # [D] float64
    covariance: np.ndarray  # [D, D] float64, unbiased (N - 1)
    count: int


def minimum_images(dim: int) -> int:
    """The fewest images whose covariance can have full rank in `dim` dimensions."""
    return dim + 1


def statistics(features: np.ndarray) -> Statistics:
    """Mean and covariance of [N, D] features in float64 (as pytorch-fid: np.cov with rowvar=False)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < minimum_images(features.shape[1]):
        raise ValueError(f"features of shape {features.shape}; allowed: [N, D] with N >= D + 1 (a full-rank "
                         "covariance)")
    return Statistics(features.mean(axis=0), np.cov(features, rowvar=False), features.shape[0])


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    try:
        from scipy import linalg
    except ImportError:
        raise ValueError(f"the Fréchet distance needs scipy: {SCIPY_INSTALL}") from None
    return linalg.sqrtm(matrix)


def frechet_distance(a: Statistics, b: Statistics, eps: float = SINGULAR_EPS) -> float:
    # Heusel et al. 2017, eq. (6), as pytorch-fid computes it: |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))
    if a.mean.shape != b.mean.shape or a.covariance.shape != b.covariance.shape:
        raise ValueError(f"statistics of {a.mean.shape[0]} and {b.mean.shape[0]} dimensions; allowed: the same "
                         "feature space")
    root = _sqrtm(a.covariance @ b.covariance)
    if not np.isfinite(root).all():  # a singular product: offset both diagonals
        offset = np.eye(a.covariance.shape[0]) * eps
        root = _sqrtm((a.covariance + offset) @ (b.covariance + offset))
    if np.iscomplexobj(root):
        if not np.allclose(np.diagonal(root).imag, 0, atol=IMAGINARY_ATOL):
            raise ValueError(f"the Fréchet distance's matrix square root has an imaginary component of "
                             f"{np.abs(root.imag).max():.3g}; the covariances are not positive semi-definite")
        root = root.real
    difference = a.mean - b.mean
    return float(difference @ difference + np.trace(a.covariance) + np.trace(b.covariance) - 2 * np.trace(root))


def image_files(folder: str | Path) -> list[Path]:
    """The images directly inside `folder` (by suffix), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"reference folder {str(folder)!r}: no such folder; allowed: a folder of images "
                         f"({', '.join(IMAGE_SUFFIXES)}), e.g. COCO's val2014")
    return sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())


def check_sizes(paths: list[Path], what: str, allowed: str) -> tuple[int, int]:
    """The one (width, height) of every image (headers only); mixed sizes are refused, naming two of them."""
    sizes: dict[tuple[int, int], Path] = {}
    for path in paths:
        try:
            with Image.open(path) as image:
                sizes.setdefault(image.size, path)
        except OSError as error:
            raise ValueError(f"{what}: {path} is not a readable image ({error})") from None
    if len(sizes) > 1:
        (first, one), (second, other) = list(sizes.items())[:2]
        raise ValueError(f"{what} holds images of {len(sizes)} sizes ({first[0]}x{first[1]}: {one.name}, "
                         f"{second[0]}x{second[1]}: {other.name}, ...); allowed: {allowed}")
    return next(iter(sizes))


def _cache_key(paths: list[Path], signature: dict, crop: int | None) -> str:
    files = [[path.name, path.stat().st_size, path.stat().st_mtime_ns] for path in paths]
    text = json.dumps({"files": files, "features": signature, "crop": crop}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _read_cached(path: Path, key: str) -> Statistics | None:
    try:
        with np.load(path, allow_pickle=False) as stored:
            if str(stored["key"]) != key:
                return None
            return Statistics(stored["mean"], stored["covariance"], int(stored["count"]))
    except (OSError, KeyError, ValueError):
        return None


def write_npz(path: Path, **arrays) -> None:
    """The arrays as one .npz, written atomically (sld.io.files.write_atomic)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buffer.getvalue())


def read_images(paths: list[Path], crop: int | None = None) -> list[Image.Image]:
    """RGB images, each centre-cropped to crop x crop (short side resized, PIL bicubic) when `crop` is given."""
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(center_crop(image, crop) if crop else image.convert("RGB"))
    return images


def features_of(paths: list[Path], extract: FeatureExtractor, batch_size: int, crop: int | None = None
                ) -> np.ndarray:
    """[N, D] features of the images, `batch_size` at a time."""
    chunks = [extract(read_images(paths[start:start + batch_size], crop)) for start in range(0, len(paths), batch_size)]
    return np.concatenate(chunks)


def reference_paths(folder: str | Path, dim: int, crop: int | None = None) -> list[Path]:
    """The reference images, checked: enough for statistics of `dim`-d features, of one size unless cropped."""
    paths = image_files(folder)
    need = minimum_images(dim)
    if len(paths) < need:
        raise ValueError(f"reference folder {str(folder)!r} holds {len(paths)} images, but statistics of "
                         f"{dim}-d features need at least {need} (a full-rank covariance); allowed: a folder "
                         f"of {need} images or more")
    if crop is None:
        check_sizes(paths, f"reference folder {str(folder)!r}", "one size, or a reference crop size "
                                                                "(--reference-crop) that centre-crops and resizes "
                                                                "every image first")
    return paths


def reference_statistics(folder: str | Path, extract: FeatureExtractor, cache_dir: Path, batch_size: int,
                         crop: int | None = None) -> tuple[Statistics, Path, bool]:
    """(statistics, their .npz, whether they came from the cache) of the images in `folder`; every check runs
    before any feature is computed."""
    paths = reference_paths(folder, extract.dim, crop)
    key = _cache_key(paths, extract.signature(), crop)
    path = cache_dir / f"reference-{key[:24]}.npz"
    cached = _read_cached(path, key)
    if cached is not None:
        return cached, path, True
    stats = statistics(features_of(paths, extract, batch_size, crop))
    write_npz(path, key=np.array(key), mean=stats.mean, covariance=stats.covariance, count=stats.count)
    return stats, path, False
