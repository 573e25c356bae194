"""`sld i2p score RUN_DIR --classifiers nudenet,q16`: a verdict per finished image and classifier, cached in
RUN_DIR/scores/<classifier>.jsonl ({"id", "score", "flag"} a line, appended batch by batch and flushed), so a rerun
scores only new images and a killed run loses at most one batch. RUN_DIR/scores/<classifier>.json holds what the
verdicts depend on (thresholds, weight hashes): scoring again with other settings is refused, not mixed in.
"""
import json
import sys
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from sld.eval.classifiers import ClassifierOptions, build_classifiers
from sld.eval.manifest import append_lines, check_run_dir, finished_entries, open_for_append, read_jsonl
from sld.eval.verdict import Classifier, Verdict
from sld.io.files import write_atomic
from sld.io.records import canonical

SCORES = "scores"


def score_file(run_dir: Path, name: str) -> Path:
    return run_dir / SCORES / f"{name}.jsonl"


def signature_file(run_dir: Path, name: str) -> Path:
    return run_dir / SCORES / f"{name}.json"


def read_scores(run_dir: Path, name: str) -> dict[str, Verdict]:
    return {entry["id"]: Verdict(float(entry["score"]), bool(entry["flag"]))
            for entry in read_jsonl(score_file(run_dir, name)) if {"id", "score", "flag"} <= set(entry)}


def scored_classifiers(run_dir: Path) -> list[str]:
    """Names of the classifiers with a score cache in the run, sorted."""
    return sorted(path.stem for path in (run_dir / SCORES).glob("*.jsonl"))


def check_signature(run_dir: Path, name: str, signature: dict, kind: str = "classifier") -> None:
    """Record what a cache's scores depend on; refuse a cache made with different settings."""
    path = signature_file(run_dir, name)
    current = canonical({kind: name, "signature": signature})
    if path.is_file():
        recorded = json.loads(path.read_text(encoding="utf-8"))
        if recorded != current:
            raise ValueError(f"{path} records {recorded['signature']} but this run asks for {current['signature']}; "
                             f"allowed: the same settings, or delete {score_file(run_dir, name)} and "
                             f"{path.name} to score again")
        return
    path.parent.mkdir(exist_ok=True)
    write_atomic(path, json.dumps(current, indent=1, sort_keys=True) + "\n")


def fill_cache(run_dir: Path, name: str, pending: list[str], compute: Callable[[list[str]], list[dict]],
               batch_size: int) -> None:
    """Append compute(chunk) (one JSON object per id) to the cache `name`, `batch_size` ids at a time, each chunk
    flushed to disk before the next starts."""
    with open_for_append(score_file(run_dir, name)) as handle, \
            tqdm(total=len(pending), desc=f"score {name}", unit="image", dynamic_ncols=True) as bar:
        for start in range(0, len(pending), batch_size):
            chunk = pending[start:start + batch_size]
            append_lines(handle, [{"id": item, **entry} for item, entry in zip(chunk, compute(chunk))])
            bar.update(len(chunk))


def score_with(run_dir: Path, classifier: Classifier, files: dict[str, str], batch_size: int) -> int:
    """Score every image not yet in the classifier's cache; returns how many were scored now."""
    check_signature(run_dir, classifier.name, classifier.signature())
    cached = read_scores(run_dir, classifier.name)
    pending = [item for item in sorted(files) if item not in cached]

    def verdicts(chunk: list[str]) -> list[dict]:
        return [{"score": v.score, "flag": v.flag} for v in classifier.classify([run_dir / files[i] for i in chunk])]

    fill_cache(run_dir, classifier.name, pending, verdicts, batch_size)
    return len(pending)


def run_score(run_dir: str, names: list[str], options: ClassifierOptions, batch_size: int) -> int:
    run = check_run_dir(run_dir)
    if batch_size < 1:
        raise ValueError(f"--batch-size {batch_size} is invalid; allowed: an integer >= 1")
    files = {item: entry["file"] for item, entry in finished_entries(run).items()}
    if not files:
        raise ValueError(f"RUN_DIR {run_dir!r} has no finished images yet; run 'sld i2p generate --out {run_dir}'")
    for classifier in build_classifiers(names, options):
        scored = score_with(run, classifier, files, batch_size)
        print(f"sld i2p: {classifier.name}: scored {scored}, {len(files) - scored} cached, in "
              f"{score_file(run, classifier.name)}", file=sys.stderr)
    return 0
