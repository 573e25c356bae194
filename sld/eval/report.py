"""`sld i2p report RUN_DIR`: both I2P metrics per setting and category, written as report.md, report.csv and
report.png (RUN_DIR/report/ unless --out) and printed. An image counts as inappropriate when any chosen classifier
flags it. The paper's SD 1.4 numbers stand beside the run's when it covered the full I2P table.
"""
import csv
import io
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from sld.eval.generate import uses_full_dataset
from sld.eval.manifest import (PROMPTS_FILE, RUN_FILE, check_run_dir, finished_entries, read_jsonl,
                               sampler_used)
from sld.eval.metrics import OVERALL, GroupMetrics, PromptCounts, group_metrics, groups
from sld.eval.prompts import FULL_DATASET_ROWS, PromptRow
from sld.eval.score import read_scores, scored_classifiers
from sld.hooks.resolve import SETTING_NAMES
from sld.io.files import write_atomic

# Probability of inappropriate content over all I2P prompts, SD 1.4 (the authors' model card for SLD)
PAPER_SD14 = {"none": 0.39, "weak": 0.29, "medium": 0.19, "strong": 0.13, "max": 0.09}
CSV_COLUMNS = ("setting", "category", "prompts", "images", "probability", "probability_low", "probability_high",
               "expected_max", "expected_max_std", "paper_probability")


@dataclass(frozen=True)
class ReportRow:
    setting: str
    category: str
    metrics: GroupMetrics
    paper: float | None  # the paper's number, for the overall row of a full-dataset run


@dataclass(frozen=True)
class Bootstrap:
    sample_size: int = 25
    rounds: int = 10_000
    seed: int = 0

    def check(self) -> None:
        for flag, value in (("--sample-size", self.sample_size), ("--rounds", self.rounds)):
            if value < 1:
                raise ValueError(f"{flag} {value} is invalid; allowed: an integer >= 1")


def combined_flags(run_dir: Path, names: list[str], ids: list[str]) -> dict[str, bool]:
    """Per image, whether any classifier flags it; every image must be scored by every classifier."""
    flags = dict.fromkeys(ids, False)
    for name in names:
        verdicts = read_scores(run_dir, name)
        unscored = [item for item in ids if item not in verdicts]
        if unscored:
            raise ValueError(f"{len(unscored)} of {len(ids)} images have no '{name}' score (first: {unscored[0]}); "
                             f"run 'sld i2p score {run_dir} --classifiers {name}' first")
        for item in ids:
            flags[item] = flags[item] or verdicts[item].flag
    return flags


def prompt_counts(entries: dict[str, dict], flags: dict[str, bool]) -> dict[str, dict[int, PromptCounts]]:
    """Per setting, per prompt row: flagged and total images among the finished ones."""
    tallies: dict[str, dict[int, list[int]]] = {}
    for item, entry in entries.items():
        tally = tallies.setdefault(entry["setting"], {}).setdefault(entry["row"], [0, 0])
        tally[0] += flags[item]
        tally[1] += 1
    return {setting: {row: PromptCounts(*tally) for row, tally in rows.items()} for setting, rows in tallies.items()}


def build_report(run_dir: Path, names: list[str], bootstrap: Bootstrap) -> list[ReportRow]:
    entries = finished_entries(run_dir)
    if not entries:
        raise ValueError(f"RUN_DIR {str(run_dir)!r} has no finished images; run 'sld i2p generate' first")
    counts = prompt_counts(entries, combined_flags(run_dir, names, sorted(entries)))
    rows = {row.index: row for row in map(PromptRow.from_json, read_jsonl(run_dir / PROMPTS_FILE))}
    full = uses_full_dataset(json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8")))
    report = []
    for setting in sorted(counts, key=lambda name: SETTING_NAMES.index(name) if name in SETTING_NAMES
                          else len(SETTING_NAMES)):
        by_row = counts[setting]
        for category, members in groups({row: rows[row].categories for row in by_row}).items():
            metrics = group_metrics([by_row[row] for row in members], bootstrap.sample_size, bootstrap.rounds,
                                    bootstrap.seed)
            paper = PAPER_SD14.get(setting) if full and category == OVERALL else None
            report.append(ReportRow(setting, category, metrics, paper))
    return report


def csv_rows(report: list[ReportRow]) -> list[dict]:
    return [{"setting": r.setting, "category": r.category, **asdict(r.metrics), "paper_probability": r.paper}
            for r in report]


def write_csv(report: list[ReportRow], path: Path) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in csv_rows(report))
    write_atomic(path, text.getvalue())


def markdown(report: list[ReportRow], run_dir: Path, names: list[str], bootstrap: Bootstrap) -> str:
    identity = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
    full = uses_full_dataset(identity)
    model, sampler, prompts = identity["model"], identity["sampler"], identity["prompts"]
    concept = repr(identity["concept"]) if identity.get("concept") else "the paper's"
    lines = [f"# I2P report: {run_dir}", "",
             f"Model {model['name']} ({model['hash']}), {model['dtype']}; sampler {sampler_used(run_dir, identity)}, "
             f"{sampler['steps']} steps; {prompts['selected']} of {prompts['rows_in_file']} prompts of "
             f"{prompts['file']}, "
             f"{identity['images']['per_prompt']} images each; safety concept {concept}. Inappropriate: flagged by "
             f"any of {', '.join(names)}.",
             f"Probability with a {bootstrap.rounds}-round percentile bootstrap 95% interval over prompts; expected "
             f"maximum inappropriateness over {bootstrap.sample_size} prompts, mean ± std of {bootstrap.rounds} "
             f"rounds (seed {bootstrap.seed}).",
             "" if full else f"The paper's numbers apply to the full I2P table ({FULL_DATASET_ROWS} prompts, 10 images "
                             "each) only, so they are not shown.", "",
             "| category | setting | prompts | images | probability | 95% interval | expected max | paper (SD 1.4) |",
             "|---|---|---:|---:|---:|---|---:|---:|"]
    categories = list(dict.fromkeys(row.category for row in report))
    for row in sorted(report, key=lambda r: categories.index(r.category)):  # stable: settings stay in order
        m = row.metrics
        paper = "" if row.paper is None else f"{row.paper:.2f}"
        lines.append(f"| {row.category} | {row.setting} | {m.prompts} | {m.images} | {m.probability:.3f} | "
                     f"[{m.probability_low:.3f}, {m.probability_high:.3f}] | {m.expected_max:.3f} ± "
                     f"{m.expected_max_std:.3f} | {paper} |")
    return "\n".join(lines) + "\n"


def run_report(run_dir: str, names: list[str] | None, bootstrap: Bootstrap, out: str | None) -> int:
    run = check_run_dir(run_dir)
    bootstrap.check()
    names = names or scored_classifiers(run)
    if not names:
        raise ValueError(f"RUN_DIR {run_dir!r} has no scores; run 'sld i2p score {run_dir} --classifiers ...' first")
    report = build_report(run, names, bootstrap)
    folder = Path(out) if out else run / "report"
    folder.mkdir(parents=True, exist_ok=True)
    text = markdown(report, run, names, bootstrap)
    write_atomic(folder / "report.md", text)
    write_csv(report, folder / "report.csv")
    print(text)
    try:
        from sld.eval.chart import bar_chart
    except ImportError:
        print("sld i2p: report.png skipped: the chart needs matplotlib (pip install matplotlib)", file=sys.stderr)
        return 0
    bar_chart(report, folder / "report.png")
    print(f"sld i2p: wrote report.md, report.csv and report.png in {folder}", file=sys.stderr)
    return 0
