"""The CSV files of `sld sweep`, written atomically and rebuilt from the images on every run (so a resumed sweep's
tables cover every image, finished before or now):

    runs.csv       one row per image: run_id, the swept keys, prompt_index, image_index, prompt, seed, file
    telemetry.csv  one row per model evaluation per image: run_id, the swept keys, prompt_index, image_index, seed,
                   index, t, then every hook's telemetry flattened to <hook>.<field> (sld.active_fraction, ...);
                   a field a run's hooks do not report is empty
"""
import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from sld.io.files import write_atomic

RUNS_FILE = "runs.csv"
TELEMETRY_FILE = "telemetry.csv"


def cell(value) -> object:
    """What a CSV cell holds: numbers, booleans and strings as they are, None empty, lists and mappings as JSON."""
    if value is None:
        return ""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def flatten_dotted(mapping: dict, prefix: str = "") -> dict[str, object]:
    """Nested mappings as dotted keys: {"index": 3, "sld": {"active_fraction": 0.1}} -> {"index": 3,
    "sld.active_fraction": 0.1} (telemetry records, sweep grids)."""
    flat: dict[str, object] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        flat.update(flatten_dotted(value, f"{name}.") if isinstance(value, dict) else {name: value})
    return flat


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: cell(row.get(key)) for key in columns} for row in rows)
    write_atomic(path, text.getvalue())


def telemetry_rows(image_row: dict, telemetry: list[dict]) -> list[dict]:
    """The image's identifying columns (without prompt and file) joined to each of its evaluations."""
    identity = {key: value for key, value in image_row.items() if key not in ("prompt", "file")}
    return [{**identity, **flatten_dotted(entry)} for entry in telemetry]


def write_tables(out: Path, keys: Sequence[str], image_rows: list[dict], telemetry: list[list[dict]]) -> None:
    """runs.csv from `image_rows` (one dict per image, the runs.csv columns) and telemetry.csv from each image's
    telemetry, in the same order."""
    write_csv(out / RUNS_FILE, ["run_id", *keys, "prompt_index", "image_index", "prompt", "seed", "file"], image_rows)
    rows = [row for image_row, entries in zip(image_rows, telemetry) for row in telemetry_rows(image_row, entries)]
    fixed = ["run_id", *keys, "prompt_index", "image_index", "seed", "index", "t"]
    hooks = dict.fromkeys(key for row in rows for key in row if key not in fixed)
    write_csv(out / TELEMETRY_FILE, fixed + list(hooks), rows)
