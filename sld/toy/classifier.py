"""Attribute classifier for toy-model pictures: the object's colour from foreground pixel statistics, its shape
from a small CNN trained on the synthetic scenes (scripts/train_toy.py ships it beside the model).

Meant for one object on a plain background (the evaluation prompts): the background colour is the median of the
border pixels, the foreground every pixel far from it, the colour the palette entry nearest the foreground's median.
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sld.toy.shapes import COLOURS, SHAPES

CLASSIFIER_WEIGHTS = Path(__file__).resolve().parent.parent / "data" / "toy_shapes.safetensors"
FOREGROUND_DISTANCE = 60.0  # RGB distance from the background colour that counts as foreground
MIN_FOREGROUND = 12  # pixels; fewer means "no object"
PALETTE = np.array(list(COLOURS.values()), dtype=np.float32)


@dataclass(frozen=True)
class Attributes:
    colour: str | None  # None: no foreground found
    shape: str
    foreground: float  # fraction of the picture


class ShapeNet(nn.Module):
    """Four stride-2 convolutions, global average pooling, one linear layer over the shape names."""

    def __init__(self, width: int = 32):
        super().__init__()
        widths = [3, width // 2, width, 2 * width, 2 * width]
        layers = []
        for c_in, c_out in zip(widths, widths[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(widths[-1], len(SHAPES))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, 64, 64] in [-1, 1] -> shape logits [B, len(SHAPES)]."""
        return self.head(self.features(images).mean(dim=(2, 3)))


def to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float32 [B, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def load_shape_net(path: str | Path = CLASSIFIER_WEIGHTS) -> ShapeNet:
    from safetensors.torch import load_file

    net = ShapeNet()
    net.load_state_dict(load_file(str(path)))
    return net.eval().requires_grad_(False)


def foreground_colour(image: np.ndarray) -> tuple[str | None, float]:
    """(palette name of the foreground's median colour, foreground fraction) of one uint8 [H, W, 3] picture."""
    pixels = image.astype(np.float32)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background = np.median(border, axis=0)
    mask = np.linalg.norm(pixels - background, axis=-1) > FOREGROUND_DISTANCE
    if mask.sum() < MIN_FOREGROUND:
        return None, float(mask.mean())
    median = np.median(pixels[mask], axis=0)
    names = list(COLOURS)
    return names[int(np.argmin(np.linalg.norm(PALETTE - median, axis=1)))], float(mask.mean())


def classify(images: np.ndarray, net: ShapeNet) -> list[Attributes]:
    """Attributes of each uint8 [B, H, W, 3] picture."""
    with torch.no_grad():
        shapes = net(to_unit(images)).argmax(dim=1).tolist()
    found = [foreground_colour(image) for image in images]
    return [Attributes(colour, SHAPES[shape], fraction) for (colour, fraction), shape in zip(found, shapes)]
