"""notebooks/sld_ablation.ipynb runs headless, top to bottom, on the shipped toy model (so it cannot rot)."""
import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "sld_ablation.ipynb"


def test_ablation_notebook_executes_and_shows_grids_and_plots(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel's torch: the toy model gains nothing from more threads
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert any('MODEL = "toy"' in cell.source for cell in notebook.cells if cell.cell_type == "code")
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(images) == 1 + 1 + 5 + 1  # preset grid, preset telemetry, one grid per hyperparameter, sweep telemetry
    printed = "".join(output.get("text", "") for output in outputs if output.output_type == "stream")
    assert "generations of 50 steps at 64x64 on 'toy'" in printed
