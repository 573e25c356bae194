"""The run directory's bookkeeping: JSONL manifests of finished items, atomic JSON files, leftover cleanup.

    RUN_DIR/run.json                  what every image of the run shares (a rerun must match it)
    RUN_DIR/prompts.jsonl             the selected prompt rows
    RUN_DIR/images/<setting>/<row>-<image>.png
    RUN_DIR/manifest.jsonl            finished items, one JSON object a line, sorted by id (rank 0 merges)
    RUN_DIR/manifest.parts/rank-<r>.jsonl   what process r finished during a run, appended line by line

A line is appended only after its PNG was renamed into place, and flushed to disk, so a killed process loses at
most the items in flight; a line cut short by a kill is ignored when read.
"""
import json
import os
from pathlib import Path
from typing import IO

from sld.io.files import write_atomic
from sld.io.records import read_record

MANIFEST = "manifest.jsonl"
PARTS = "manifest.parts"
RUN_FILE = "run.json"
PROMPTS_FILE = "prompts.jsonl"


def jsonl_text(entries: list[dict]) -> str:
    return "".join(json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n" for entry in entries)


def read_jsonl(path: Path) -> list[dict]:
    """Every complete JSON object line of `path` (none when missing); a truncated or garbled line is skipped."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def open_for_append(path: Path) -> IO[str]:
    """Append handle on a JSONL file whose last line, if cut short by a kill, is closed off first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cut_short = False
    if path.is_file() and path.stat().st_size > 0:
        with open(path, "rb") as existing:
            existing.seek(-1, os.SEEK_END)
            cut_short = existing.read(1) != b"\n"
    handle = open(path, "a", encoding="utf-8")
    if cut_short:
        handle.write("\n")
    return handle


def append_lines(handle: IO[str], entries: list[dict]) -> None:
    """Append complete lines and flush them to disk before returning."""
    handle.write(jsonl_text(entries))
    handle.flush()
    os.fsync(handle.fileno())


def check_run_dir(path: str, benchmark: str = "i2p") -> Path:
    run_dir = Path(path)
    if not (run_dir / RUN_FILE).is_file():
        raise ValueError(f"RUN_DIR {path!r} is not an {benchmark.upper()} run (no {RUN_FILE}); allowed: the --out "
                         f"folder of 'sld {benchmark} generate'")
    return run_dir


def part_path(run_dir: Path, rank: int) -> Path:
    return run_dir / PARTS / f"rank-{rank}.jsonl"


def finished_entries(run_dir: Path) -> dict[str, dict]:
    """Finished items by id: every part a run left unmerged, then the merged manifest.

    Safe while rank 0 merges: it writes the manifest before removing the parts, so a part that vanishes while it
    is listed or read is already in the manifest read after it."""
    paths = [*_part_files(run_dir), run_dir / MANIFEST]
    return {entry["id"]: entry for path in paths for entry in read_jsonl(path) if "id" in entry}


def _part_files(run_dir: Path) -> list[Path]:
    try:
        return sorted((run_dir / PARTS).glob("rank-*.jsonl"))
    except FileNotFoundError:  # removed by rank 0 mid-listing
        return []


def merge_manifests(run_dir: Path) -> int:
    """Fold every part into manifest.jsonl (sorted by id, written atomically), then remove the parts."""
    entries = finished_entries(run_dir)
    write_atomic(run_dir / MANIFEST, jsonl_text([entries[key] for key in sorted(entries)]))
    parts = run_dir / PARTS
    for path in parts.glob("rank-*.jsonl"):
        path.unlink()
    if parts.is_dir():
        parts.rmdir()
    return len(entries)


def remove_temporaries(run_dir: Path) -> int:
    """Delete the hidden temporary files a killed process left (`.<name>.<pid>.tmp`); they are never results."""
    leftovers = [*run_dir.glob(".*.tmp"), *run_dir.glob("images/*/.*.tmp"), *run_dir.glob("scores/.*.tmp"),
                 *run_dir.glob("scores/*/.*.tmp")]
    for path in leftovers:
        path.unlink(missing_ok=True)
    return len(leftovers)


def sampler_used(run_dir: Path, identity: dict) -> str:
    """The run's sampler: the configured one, else (None: the model family's) the one a finished image records."""
    if identity["sampler"]["name"] is not None:
        return identity["sampler"]["name"]
    for entry in finished_entries(run_dir).values():
        record = read_record(run_dir / entry["file"])
        if record is not None:
            return record["sampler"]
    return "the model family's"
