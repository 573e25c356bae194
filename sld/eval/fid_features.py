"""Images -> FID Inception pool features, with a named resizing to the network's 299x299 input (it changes FID):

    tf1    the FID graph's own bilinear resize (TensorFlow 1.x resize_bilinear without half-pixel centres) on the
           8-bit pixels, as the original TTUR code, torch-fidelity and torchmetrics (antialias=False) compute FID;
           the default, comparable with published FID-30k tables
    clean  clean-fid's "clean" mode (Parmar et al., CVPR 2022): a PIL bicubic resize of each channel in float, with
           PIL's antialiasing, clipped to [0, 255]; the graph's resize is then the identity

Either way the network sees (pixels - 128) / 128.
"""
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sld.eval.inception import FEATURES, INPUT_SIZE, load_fid_inception
from sld.io.model_id import full_hash

RESIZES = ("tf1", "clean")


def resize_tf1_axis(x: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    # TF 1.x resize_bilinear (align_corners=False): source = target * float32(in / out), lerp of floor and floor + 1
    length = x.shape[dim]
    scale = torch.tensor(length / size, dtype=torch.float32)
    position = torch.arange(size, dtype=x.dtype, device=x.device) * scale.to(x.device)
    low = position.long()
    high = (low + 1).clamp(max=length - 1)
    shape = [size if axis == dim % x.dim() else 1 for axis in range(x.dim())]
    fraction = (position - low).view(shape)
    before = x.index_select(dim, low)
    return before + (x.index_select(dim, high) - before) * fraction


def resize_tf1(x: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, size, size], along the width first, as TensorFlow."""
    return resize_tf1_axis(resize_tf1_axis(x, 3, size), 2, size)


def resize_clean(pixels: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """8-bit [H, W, 3] -> float32 [size, size, 3] in [0, 255]: clean-fid's make_resizer("PIL", False, "bicubic")."""
    channels = [np.asarray(Image.fromarray(pixels[:, :, c].astype(np.float32), mode="F").resize((size, size),
                                                                                              Image.BICUBIC))
                for c in range(3)]
    return np.stack(channels, axis=2).clip(0, 255).astype(np.float32)


def network_input(image: Image.Image, resize: str, dtype: torch.dtype) -> torch.Tensor:
    """One image -> [3, 299, 299] in [-1, 1] in `dtype` (CPU)."""
    pixels = np.asarray(image.convert("RGB"))
    if resize == "clean":
        x = torch.from_numpy(resize_clean(pixels)).permute(2, 0, 1).to(dtype)
    else:
        x = resize_tf1(torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].to(dtype))[0]
    return (x - 128) / 128


def check_resize(resize: str) -> str:
    if resize not in RESIZES:
        raise ValueError(f"FID resize {resize!r} is unknown; allowed: {', '.join(RESIZES)}")
    return resize


class InceptionFeatures:
    """Images -> [N, 2048] float64 features; `signature()` is what the features depend on."""

    dim = FEATURES

    def __init__(self, weights: str | Path, resize: str = "tf1", device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32):
        self.resize = check_resize(resize)
        self.weights = Path(weights)
        self.device, self.dtype = torch.device(device), dtype
        self.model = load_fid_inception(self.weights, self.device, dtype)

    def signature(self) -> dict:
        return {"network": "fid-inception-v3", "weights_sha256": full_hash(self.weights), "resize": self.resize}

    @torch.inference_mode()
    def __call__(self, images: list[Image.Image]) -> np.ndarray:
        batch = torch.stack([network_input(image, self.resize, self.dtype) for image in images])
        return self.model(batch.to(self.device)).double().cpu().numpy()
