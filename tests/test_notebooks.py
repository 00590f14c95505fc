"""The worked-example notebooks run top to bottom (so they never rot) and are committed without outputs.

Each runs in a fresh kernel with its working folder in notebooks/ and an MLflow store in tmp_path, so
executing them never writes into the repository. Same check from the command line:
`pytest --nbmake notebooks` (nbmake is in the `dev` extra).
"""

import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = ("timing_cdnow", "uplift_hillstrom", "credit_german")
TIMEOUT_S = 300  # per cell; each notebook takes well under a minute on an idle 2-core machine


def read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_clean(name):
    cells = [c for c in read(name).cells if c.cell_type == "code"]
    assert cells and all(not c.outputs and c.execution_count is None for c in cells)


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes(name, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = read(name)
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=TIMEOUT_S, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK_DIR)}}).execute()
    print(f"{name}: {time.perf_counter() - t0:.1f}s")
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert f"sqlite:///{tmp_path / 'mlflow.db'}" in text  # the run link points at the test's store
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert images >= 2
