"""`sld coco score RUN_DIR`: per finished image, its features for FID and its alignment with its caption, cached in
RUN_DIR/scores/ as I2P caches verdicts (a rerun computes only new images; a kill loses at most one batch), and the
reference statistics the report compares against.

    real model  FID Inception pool features (--fid-weights, resize --fid-resize), reference statistics of the COCO
                images in --reference (cached as .npz in --stats-cache, computed once), CLIP score (--clip)
    toy model   toy FID features and reference statistics of real scenes from the generator, toy faithfulness
                (sld/eval/toy_fidelity.py): everything offline

    RUN_DIR/scores/<features>/          per-image features (sld/eval/feature_store.py), signature.json, reference.npz
    RUN_DIR/scores/<alignment>.jsonl    {"id", "score"} a line; <alignment>.json: what the scores depend on
Every input is checked (weights exist, the reference folder holds enough images of one size or a crop is given,
caches match) before any feature is computed.
"""
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sld.api import TOY
from sld.eval.feature_store import FeatureStore
from sld.eval.fid import (Statistics, image_files, minimum_images, read_images, reference_paths, reference_statistics,
                         write_npz)
from sld.eval.manifest import PROMPTS_FILE, RUN_FILE, check_run_dir, finished_entries, read_jsonl
from sld.eval.score import SCORES, check_signature, fill_cache, score_file
from sld.io.model_id import full_hash

REFERENCE = "reference.npz"


@dataclass(frozen=True)
class Measures:
    """Where a run's fidelity measures live and what the report calls them."""

    features: str  # folder under RUN_DIR/scores/
    alignment: str  # cache name under RUN_DIR/scores/
    fid_label: str
    alignment_label: str


TOY_MEASURES = Measures("toy-features", "toy-faithfulness", "toy FID", "faithfulness")
REAL_MEASURES = Measures("fid-inception", "clip-score", "FID", "CLIP score")


@dataclass(frozen=True)
class ScoreOptions:
    clip: str | None = None  # CLIP weights: a transformers folder or an OpenAI / open_clip file
    fid_weights: str | None = None  # the FID Inception weights file
    reference: str | None = None  # the real images (COCO val2014 or val2017)
    reference_crop: int | None = None  # centre-crop the reference images to this square first
    fid_resize: str = "tf1"
    stats_cache: str | None = None  # None: RUN_DIR/scores/
    toy_reference: int = 2000  # toy: real scenes drawn for the reference statistics
    device: str = "cpu"
    batch_size: int = 16


def is_toy(run_dir: Path) -> bool:
    return json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))["model"]["name"] == TOY


def measures_of(run_dir: Path) -> Measures:
    return TOY_MEASURES if is_toy(run_dir) else REAL_MEASURES


class ClipAlignment:
    """The CLIP score per (image, caption), with the weights' hash as its signature."""

    def __init__(self, path: str, device: str):
        from sld.eval.clip_score import CLIPScorer  # torch-heavy: built only for real runs
        from sld.eval.clip_vision import weight_file

        self.scorer = CLIPScorer(path, device)
        self.weights = weight_file(path)

    def signature(self) -> dict:
        return {"alignment": "clip score", "weights_sha256": full_hash(self.weights)}

    def scores(self, paths: list[Path], captions: list[str]) -> list[float]:
        return self.scorer.scores(paths, captions)


def _given(value: str | None, flag: str, allowed: str) -> str:
    if not value:
        raise ValueError(f"{flag} is required to score a run of a real model; allowed: {allowed}")
    if not Path(value).exists():
        raise ValueError(f"{flag} {value!r}: no such file or folder; allowed: {allowed}")
    return value


def real_measures(run_dir: Path, options: ScoreOptions):
    """(features, alignment, reference statistics, where they came from) of a real model's run; the inputs are
    checked before any network is loaded, the reference statistics read from the cache or computed."""
    from sld.eval.fid_features import InceptionFeatures, check_resize
    from sld.eval.inception import WEIGHTS

    clip = _given(options.clip, "--clip", "CLIP weights: a transformers CLIP folder or an OpenAI / open_clip file")
    weights = _given(options.fid_weights, "--fid-weights", WEIGHTS)
    folder = _given(options.reference, "--reference", "the folder of COCO's real images (val2014 or val2017)")
    check_resize(options.fid_resize)
    reference_paths(folder, InceptionFeatures.dim, options.reference_crop)
    features = InceptionFeatures(weights, options.fid_resize, options.device)
    alignment = ClipAlignment(clip, options.device)
    cache = Path(options.stats_cache) if options.stats_cache else run_dir / SCORES
    reference, path, cached = reference_statistics(folder, features, cache, options.batch_size,
                                                   options.reference_crop)
    print(f"sld coco: reference statistics {'read from' if cached else 'written to'} {path}", file=sys.stderr)
    crop = f", centre-cropped to {options.reference_crop}" if options.reference_crop else ""
    return features, alignment, reference, f"{len(image_files(folder))} images of {folder}{crop}"


def toy_measures(options: ScoreOptions):
    from sld.eval.toy_fidelity import REFERENCE_SEED, ToyFaithfulness, ToyFeatures, toy_reference_statistics

    features = ToyFeatures()
    if options.toy_reference < minimum_images(features.dim):
        raise ValueError(f"--toy-reference {options.toy_reference} is too small; allowed: at least "
                         f"{minimum_images(features.dim)} scenes (a full-rank covariance)")
    reference = toy_reference_statistics(features, options.toy_reference)
    return features, ToyFaithfulness(), reference, f"{options.toy_reference} scenes of the toy scene generator " \
                                                   f"(seed {REFERENCE_SEED})"


def read_alignment(run_dir: Path, name: str) -> dict[str, float]:
    return {entry["id"]: float(entry["score"]) for entry in read_jsonl(score_file(run_dir, name))
            if {"id", "score"} <= set(entry)}


def read_reference(run_dir: Path, measures: Measures) -> tuple[Statistics, str]:
    path = run_dir / SCORES / measures.features / REFERENCE
    if not path.is_file():
        raise ValueError(f"RUN_DIR {str(run_dir)!r} has no reference statistics; run 'sld coco score {run_dir}' first")
    with np.load(path, allow_pickle=False) as stored:
        return Statistics(stored["mean"], stored["covariance"], int(stored["count"])), str(stored["source"])


def run_coco_score(run_dir: str, options: ScoreOptions) -> int:
    run = check_run_dir(run_dir, "coco")
    if options.batch_size < 1:
        raise ValueError(f"--batch-size {options.batch_size} is invalid; allowed: an integer >= 1")
    entries = finished_entries(run)
    if not entries:
        raise ValueError(f"RUN_DIR {run_dir!r} has no finished images yet; run 'sld coco generate --out {run_dir}'")
    captions = {row["index"]: row["caption"] for row in read_jsonl(run / PROMPTS_FILE)}
    measures = measures_of(run)
    features, alignment, reference, source = toy_measures(options) if measures is TOY_MEASURES \
        else real_measures(run, options)
    store = FeatureStore(run / SCORES / measures.features, features.signature())
    check_signature(run, measures.alignment, alignment.signature(), kind="alignment")
    write_npz(store.folder / REFERENCE, mean=reference.mean, covariance=reference.covariance, count=reference.count,
              source=np.array(source))
    ids = sorted(entries)
    done = store.read()
    pending = [item for item in ids if item not in done]
    for start in range(0, len(pending), options.batch_size):
        chunk = pending[start:start + options.batch_size]
        store.write(chunk, features(read_images([run / entries[item]["file"] for item in chunk])))
    scored = read_alignment(run, measures.alignment)
    unscored = [item for item in ids if item not in scored]

    def align(chunk: list[str]) -> list[dict]:
        paths = [run / entries[item]["file"] for item in chunk]
        return [{"score": score} for score in alignment.scores(paths, [captions[entries[i]["row"]] for i in chunk])]

    fill_cache(run, measures.alignment, unscored, align, options.batch_size)
    print(f"sld coco: features of {len(pending)} images computed, {len(ids) - len(pending)} cached; "
          f"{measures.alignment_label} of {len(unscored)} scored, {len(ids) - len(unscored)} cached; in "
          f"{run / SCORES}", file=sys.stderr)
    return 0
