"""COCO captions as FID-30k prompts: the user's `captions_val2014.json` or `captions_val2017.json` (the COCO
annotation format: `annotations`, a list of {"image_id", "id", "caption"}), one caption per image id.

The sample is nested: the image ids, sorted, are shuffled once with the sample seed and the first N taken, so a
smaller sample is the start of a larger one and a row keeps its index whatever N is. Each image's caption is drawn
from its captions (in annotation id order) with numpy's generator seeded by (sample seed, image id); the image id
also seeds the row's x_T, so a row's picture does not depend on N either.
"""
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FULL_SAMPLE = 30_000  # FID-30k
FORMAT = ("a COCO captions file (captions_val2014.json or captions_val2017.json): a JSON object whose "
          "'annotations' list holds {'image_id': int, 'id': int, 'caption': str} entries")


@dataclass(frozen=True)
class CaptionRow:
    index: int  # position in the shuffled image ids: part of every work item's id
    image_id: int
    annotation_id: int
    caption: str

    def to_json(self) -> dict:
        return {"index": self.index, "image_id": self.image_id, "annotation_id": self.annotation_id,
                "caption": self.caption}

    @classmethod
    def from_json(cls, data: dict) -> "CaptionRow":
        return cls(**data)


def _annotations(path: Path) -> list:
    if not path.is_file():
        raise ValueError(f"captions file {str(path)!r}: no such file; allowed: {FORMAT}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"captions file {str(path)!r} is not readable JSON ({error}); allowed: {FORMAT}") from None
    annotations = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(annotations, list) or not annotations:
        found = "no 'annotations' list" if annotations is None else "an empty or malformed 'annotations' entry"
        raise ValueError(f"captions file {str(path)!r} has {found}; allowed: {FORMAT}")
    return annotations


def _is_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_captions(path: str | Path) -> dict[int, list[tuple[int, str]]]:
    """Per image id, its (annotation id, caption) pairs in annotation id order; captions with whitespace collapsed."""
    by_image: dict[int, list[tuple[int, str]]] = {}
    for position, entry in enumerate(_annotations(Path(path))):
        ok = isinstance(entry, dict) and _is_id(entry.get("image_id")) and _is_id(entry.get("id")) \
            and isinstance(entry.get("caption"), str) and entry["caption"].strip()
        if not ok:
            raise ValueError(f"captions file {str(path)!r}: annotations[{position}] = {str(entry)[:120]} is not "
                             f"{{'image_id': int, 'id': int, 'caption': non-empty str}}; allowed: {FORMAT}")
        by_image.setdefault(entry["image_id"], []).append((entry["id"], " ".join(entry["caption"].split())))
    return {image: sorted(pairs) for image, pairs in by_image.items()}


def sample_captions(by_image: dict[int, list[tuple[int, str]]], sample: int = FULL_SAMPLE,
                    seed: int = 0) -> list[CaptionRow]:
    """The first `sample` image ids of the seeded shuffle, one seeded caption each, in row order."""
    if isinstance(sample, bool) or not isinstance(sample, int) or not 1 <= sample <= len(by_image):
        raise ValueError(f"sample={sample!r} is invalid; allowed: 1..{len(by_image)} (the captioned images of the "
                         "file)")
    order = sorted(by_image)
    random.Random(seed).shuffle(order)
    rows = []
    for index, image in enumerate(order[:sample]):
        annotation, caption = by_image[image][np.random.default_rng((seed, image)).integers(len(by_image[image]))]
        rows.append(CaptionRow(index, image, annotation, caption))
    return rows
