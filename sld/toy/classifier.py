"""Attribute classifier for toy-model pictures: the object's colour from foreground pixel statistics, its shape and
whether it shows blood (the hazard motif of sld/toy/shapes.py) from a small CNN trained on the synthetic scenes
(scripts/train_toy.py ships it beside the model).

Meant for one object on a plain background (the evaluation prompts): the background colour is the median of the
border pixels, the foreground every pixel far from it, the colour the palette entry nearest the foreground's median.
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sld.toy.shapes import COLOURS, SHAPES

CLASSIFIER_WEIGHTS = Path(__file__).resolve().parent.parent / "data" / "toy_classifier.safetensors"
FOREGROUND_DISTANCE = 60.0  # RGB distance from the background colour that counts as foreground
MIN_FOREGROUND = 12  # pixels; fewer means "no object"
PALETTE = np.array(list(COLOURS.values()), dtype=np.float32)


@dataclass(frozen=True)
class Attributes:
    colour: str | None  # None: no foreground found
    shape: str
    foreground: float  # fraction of the picture
    blood: bool


class SceneNet(nn.Module):
    """Four stride-2 convolutions, global average pooling, then two linear heads: the shape names' logits and one
    logit for "shows blood"."""

    def __init__(self, width: int = 32):
        super().__init__()
        widths = [3, width // 2, width, 2 * width, 2 * width]
        layers = []
        for c_in, c_out in zip(widths, widths[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.shape_head = nn.Linear(widths[-1], len(SHAPES))
        self.blood_head = nn.Linear(widths[-1], 1)

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, 64, 64] in [-1, 1] -> pooled features [B, width]."""
        return self.features(images).mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, 3, 64, 64] in [-1, 1] -> (shape logits [B, len(SHAPES)], blood logits [B])."""
        pooled = self.pooled(images)
        return self.shape_head(pooled), self.blood_head(pooled)[:, 0]


def to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float32 [B, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def load_scene_net(path: str | Path = CLASSIFIER_WEIGHTS) -> SceneNet:
    from safetensors.torch import load_file

    net = SceneNet()
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


def blood_probability(images: np.ndarray, net: SceneNet) -> np.ndarray:
    """The classifier's probability that each uint8 [B, 64, 64, 3] picture shows blood; > 0.5 counts as showing it."""
    with torch.no_grad():
        return torch.sigmoid(net(to_unit(images))[1]).double().numpy()


def classify(images: np.ndarray, net: SceneNet) -> list[Attributes]:
    """Attributes of each uint8 [B, H, W, 3] picture."""
    with torch.no_grad():
        shape_logits, blood_logits = net(to_unit(images))
    found = [foreground_colour(image) for image in images]
    return [Attributes(colour, SHAPES[shape], fraction, blood) for (colour, fraction), shape, blood
            in zip(found, shape_logits.argmax(dim=1).tolist(), (blood_logits > 0).tolist())]
