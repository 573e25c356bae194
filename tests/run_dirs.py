"""What the `sld i2p` and `sld coco` run tests share: generation in subprocesses on one thread (in process: the
`one_thread` fixture of conftest.py), and snapshots of a run directory's files."""
import os
import subprocess
import sys
import time
from pathlib import Path

from sld.eval.manifest import finished_entries

REPO = Path(__file__).resolve().parents[1]


def environment(tmp: Path) -> dict[str, str]:
    """The repo importable, a private hash cache, one thread per process (same kernels in every run)."""
    return {**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(tmp / "cache"), "OMP_NUM_THREADS": "1"}


def generate_command(benchmark: str, run_args: list[str], out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sld", benchmark, "generate", *run_args, "--out", str(out), *extra]


def generate(benchmark: str, run_args: list[str], out: Path, *extra: str) -> subprocess.CompletedProcess:
    result = subprocess.run(generate_command(benchmark, run_args, out, *extra), env=environment(out.parent),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def run_files(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run but its scores and report."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.relative_to(run_dir).parts[0] not in ("scores", "report")}


def wait_for_finished(run_dir: Path, count: int, process: subprocess.Popen) -> None:
    """Until `count` items are finished (rank 0 may be merging its parts meanwhile), the run still going."""
    deadline = time.monotonic() + 240
    while len(finished_entries(run_dir)) < count:
        assert process.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.02)
