"""`sld coco report RUN_DIR [--i2p I2P_RUN_DIR]`: the paper's fidelity table per setting (FID or toy FID over all
images and over splits, CLIP score or toy faithfulness with a bootstrap 95% interval), written as report.md,
report.csv and report.png (RUN_DIR/report/ unless --out) and printed. With the I2P run of the same model beside it,
each setting's probability of inappropriate content joins the table: the trade-off of Schramowski et al., Sec. 5.
"""
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sld.eval.coco_score import Measures, measures_of, read_alignment, read_reference
from sld.eval.feature_store import SIGNATURE, FeatureStore
from sld.eval.fidelity import Fidelity, fidelity
from sld.eval.fidelity_table import FidelityRow, csv_text, table_lines
from sld.eval.manifest import RUN_FILE, check_run_dir, finished_entries, sampler_used
from sld.eval.metrics import probability
from sld.eval.report import combined_flags, prompt_counts
from sld.eval.score import SCORES, scored_classifiers
from sld.hooks.resolve import SETTING_NAMES
from sld.io.files import write_atomic


@dataclass(frozen=True)
class Spread:
    splits: int = 10  # FID over this many disjoint splits
    rounds: int = 1000  # bootstrap rounds of the alignment interval
    seed: int = 0

    def check(self) -> None:
        for flag, value in (("--splits", self.splits), ("--rounds", self.rounds)):
            if value < 1:
                raise ValueError(f"{flag} {value} is invalid; allowed: an integer >= 1")


def setting_order(name: str) -> int:
    return SETTING_NAMES.index(name) if name in SETTING_NAMES else len(SETTING_NAMES)


def stored_features(run_dir: Path, measures: Measures) -> dict[str, np.ndarray]:
    folder = run_dir / SCORES / measures.features
    if not (folder / SIGNATURE).is_file():
        raise ValueError(f"RUN_DIR {str(run_dir)!r} has no image features; run 'sld coco score {run_dir}' first")
    return FeatureStore(folder, json.loads((folder / SIGNATURE).read_text(encoding="utf-8"))).read()


def setting_fidelity(run_dir: Path, spread: Spread) -> dict[str, Fidelity]:
    """Per setting, its metrics over its finished images in row order; every image must be scored."""
    entries = finished_entries(run_dir)
    if not entries:
        raise ValueError(f"RUN_DIR {str(run_dir)!r} has no finished images; run 'sld coco generate' first")
    measures = measures_of(run_dir)
    reference, _ = read_reference(run_dir, measures)
    features, alignment = stored_features(run_dir, measures), read_alignment(run_dir, measures.alignment)
    unscored = [item for item in sorted(entries) if item not in features or item not in alignment]
    if unscored:
        raise ValueError(f"{len(unscored)} of {len(entries)} images are not scored yet (first: {unscored[0]}); run "
                         f"'sld coco score {run_dir}' first")
    by_setting: dict[str, list[str]] = {}
    for item in sorted(entries):
        by_setting.setdefault(entries[item]["setting"], []).append(item)
    return {setting: fidelity(np.stack([features[i] for i in ids]), reference, np.array([alignment[i] for i in ids]),
                              spread.splits, spread.rounds, spread.seed)
            for setting, ids in sorted(by_setting.items(), key=lambda pair: setting_order(pair[0]))}


def i2p_probabilities(i2p_dir: str, run_dir: Path) -> dict[str, float]:
    """Per setting, the overall probability of inappropriate content of an I2P run of the same model (an image is
    inappropriate when any classifier it was scored with flags it)."""
    i2p = check_run_dir(i2p_dir)
    ours, theirs = (json.loads((path / RUN_FILE).read_text(encoding="utf-8"))["model"] for path in (run_dir, i2p))
    same = ("name", "hash", "loras", "embeddings")
    if [ours.get(key) for key in same] != [theirs.get(key) for key in same]:
        raise ValueError(f"--i2p {i2p_dir!r} is a run of {theirs['name']} ({theirs['hash']}) but RUN_DIR of "
                         f"{ours['name']} ({ours['hash']}), or their LoRAs or embeddings differ; allowed: an I2P run "
                         "of the same model")
    names = scored_classifiers(i2p)
    if not names:
        raise ValueError(f"--i2p {i2p_dir!r} has no scores; run 'sld i2p score {i2p_dir} --classifiers ...' first")
    entries = finished_entries(i2p)
    counts = prompt_counts(entries, combined_flags(i2p, names, sorted(entries)))
    return {setting: probability(list(rows.values())) for setting, rows in counts.items()}


def markdown(run_dir: Path, rows: list[FidelityRow], measures: Measures, spread: Spread, i2p_dir: str | None) -> str:
    identity = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
    model, sampler, prompts = identity["model"], identity["sampler"], identity["prompts"]
    _, source = read_reference(run_dir, measures)
    lines = [f"# COCO fidelity report: {run_dir}", "",
             f"Model {model['name']} ({model['hash']}), {model['dtype']}; sampler {sampler_used(run_dir, identity)}, "
             f"{sampler['steps']} steps, guidance {sampler['cfg']}; {prompts['selected']} captions of "
             f"{prompts['images_in_file']} images in {prompts['file']} (seed {prompts['sample_seed']}), "
             f"{identity['images']['per_prompt']} image each.",
             f"{measures.fid_label} against {source}; over splits: mean ± std of {spread.splits} disjoint splits "
             f"(each biased upwards by its smaller sample). {measures.alignment_label}: mean with a "
             f"{spread.rounds}-round percentile bootstrap 95% interval over images (seed {spread.seed}).",
             "FID depends on the number of images: compare runs of the same sample size (the paper: 30,000)."
             + (f" I2P: the overall probability of inappropriate content of {i2p_dir}." if i2p_dir else ""), "",
             *table_lines(rows, measures.fid_label, measures.alignment_label)]
    return "\n".join(lines) + "\n"


def run_coco_report(run_dir: str, i2p_dir: str | None, spread: Spread, out: str | None) -> int:
    run = check_run_dir(run_dir, "coco")
    spread.check()
    measures = measures_of(run)
    metrics = setting_fidelity(run, spread)
    inappropriate = i2p_probabilities(i2p_dir, run) if i2p_dir else {}
    rows = [FidelityRow(setting, m, inappropriate.get(setting)) for setting, m in metrics.items()]
    folder = Path(out) if out else run / "report"
    folder.mkdir(parents=True, exist_ok=True)
    text = markdown(run, rows, measures, spread, i2p_dir)
    write_atomic(folder / "report.md", text)
    write_atomic(folder / "report.csv", csv_text(rows))
    print(text)
    try:
        from sld.eval.fidelity_chart import fidelity_chart
    except ImportError:
        print("sld coco: report.png skipped: the chart needs matplotlib (pip install matplotlib)", file=sys.stderr)
        return 0
    fidelity_chart(rows, measures.fid_label, measures.alignment_label, folder / "report.png")
    print(f"sld coco: wrote report.md, report.csv and report.png in {folder}", file=sys.stderr)
    return 0
