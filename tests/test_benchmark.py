"""scripts/benchmark.py --quick (SD 1 and --family sdxl) runs end to end and prints its table with every row (no
timing assertions)."""
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py"
TASKS = (
    "load, float32 checkpoint from page cache",
    "load with a kohya LoRA merged, float32, files from page cache",
    "SLD evaluation (3 branches), float32",
    "SLD evaluation (3 branches), bfloat16",
    "VAE decode, float32",
    "VAE decode, bfloat16",
)
ROWS = (
    *(f"{task} (s)" for task in TASKS),
    *(f"CPU time: {task} (s)" for task in TASKS),
    "peak RSS: load, float32 checkpoint from page cache (MB)",
    "peak RSS: load with a kohya LoRA merged, float32, files from page cache (MB)",
    "peak RSS: SLD evaluation (3 branches), float32 (MB)",
    "peak RSS: SLD evaluation (3 branches), bfloat16 (MB)",
    "peak RSS: VAE decode, float32 (MB)",
    "peak RSS: VAE decode, bfloat16 (MB)",
    "UNet GFLOP/s, float32",
    "UNet GFLOP/s, bfloat16",
)


def table_row(lines: list[str], label: str) -> list[str]:
    found = [line for line in lines if line.startswith(f"| {label}")]
    assert len(found) == 1, f"expected one table row starting with {label!r}, found {found}"
    return [cell.strip() for cell in found[0].strip("|").split("|")]


def test_quick_benchmark_prints_every_row():
    # one torch thread: the tiny model's ops are too small for two threads to help, and it keeps the run short
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--repeats", "1", "--threads", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert "| measurement (median) | ours | diffusers | ours/diffusers |" in lines
    for label in ROWS:
        cells = table_row(lines, label)
        assert len(cells) == 4, cells
        assert all(float(value) > 0 for value in cells[1:]), cells
    assert any(line.startswith("UNet evaluation:") and "GFLOP" in line for line in lines)
    assert any(line.startswith("LoRA: 1 MB kohya file") for line in lines)


SDXL_TASKS = (
    "load, float16 checkpoint from page cache as bfloat16",
    "load, float16 checkpoint from page cache as float32",
    *(task for task in TASKS if task.startswith(("SLD", "VAE"))),
)


def test_quick_sdxl_benchmark_prints_every_row():
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--family", "sdxl", "--repeats", "1", "--threads", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert any(line.startswith("## tiny SDXL topology") for line in lines)
    labels = (*(f"{task} (s)" for task in SDXL_TASKS), *(f"CPU time: {task} (s)" for task in SDXL_TASKS),
              *(f"peak RSS: {task} (MB)" for task in SDXL_TASKS), "UNet GFLOP/s, float32", "UNet GFLOP/s, bfloat16")
    for label in labels:
        cells = table_row(lines, label)
        assert len(cells) == 4 and all(float(value) > 0 for value in cells[1:]), cells
