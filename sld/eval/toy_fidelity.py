"""The fidelity evaluation in miniature, on the toy model where everything is available offline:

    toy FID      Fréchet distance in the feature space of the shipped toy shape classifier (its pooled
                 convolutional features), between the generated pictures and real synthetic scenes drawn by the
                 scene generator (sld/toy/shapes.py: the true data distribution the toy model was trained on)
    faithfulness per picture, 1 when the toy classifier sees both the colour and the shape its caption asks for
                 (the first colour and shape words of the caption), else 0: the toy's text alignment

The shipped toy captions file (sld/data/toy_captions.json, COCO's annotation format) holds single-object captions
"a <colour> <shape> on a <colour> background", so `sld coco` runs end to end on the CPU in minutes.
"""
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sld.eval.clip_vision import center_crop
from sld.eval.fid import Statistics, statistics
from sld.io.model_id import full_hash
from sld.toy.classifier import CLASSIFIER_WEIGHTS, classify, load_scene_net, to_unit
from sld.toy.shapes import COLOURS, PLURALS, SHAPES, SIZE, dataset

REFERENCE_SEED = 2  # the toy model trains on seed 0's scenes; the reference draws new ones from the same generator


def toy_captions_path() -> Path:
    return Path(str(files("sld") / "data" / "toy_captions.json"))


def pictures(images: list[Image.Image]) -> np.ndarray:
    """uint8 [B, 64, 64, 3]: each image centre-cropped and resized to the toy size (a no-op for toy pictures)."""
    return np.stack([np.asarray(center_crop(image, SIZE)) for image in images])


class ToyFeatures:
    """Images -> [N, 64] float64 pooled features of the toy shape classifier."""

    def __init__(self):
        self.net = load_scene_net()
        self.dim = self.net.shape_head.in_features

    def signature(self) -> dict:
        return {"network": "toy-shape-classifier", "weights_sha256": full_hash(CLASSIFIER_WEIGHTS), "size": SIZE}

    @torch.inference_mode()
    def __call__(self, images: list[Image.Image]) -> np.ndarray:
        return self.net.pooled(to_unit(pictures(images))).double().numpy()


def toy_reference_statistics(features: ToyFeatures, count: int, seed: int = REFERENCE_SEED) -> Statistics:
    """Statistics of `count` real scenes from the generator."""
    _, real = dataset(seed, count)
    return statistics(features([Image.fromarray(picture) for picture in real]))


SINGULARS = {**{shape: shape for shape in SHAPES}, **{plural: shape for shape, plural in PLURALS.items()}}


def asked(caption: str) -> tuple[str | None, str | None]:
    """The first colour word and the first shape word (singular or plural) of a caption (None where none)."""
    words = caption.lower().replace(",", " ").split()
    colour = next((word for word in words if word in COLOURS), None)
    shape = next((SINGULARS[word] for word in words if word in SINGULARS), None)
    return colour, shape


class ToyFaithfulness:
    """Per picture, 1.0 when the toy classifier finds the caption's colour and shape, else 0.0."""

    name = "toy"

    def __init__(self):
        self.net = load_scene_net()

    def signature(self) -> dict:
        return {"alignment": "toy faithfulness", "weights_sha256": full_hash(CLASSIFIER_WEIGHTS)}

    def scores(self, paths: list[Path], captions: list[str]) -> list[float]:
        images = []
        for path in paths:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        found = classify(pictures(images), self.net)
        return [float((seen.colour, seen.shape) == asked(caption)) for seen, caption in zip(found, captions)]
