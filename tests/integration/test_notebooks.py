"""The notebooks in notebooks/ are committed without outputs and execute top to bottom in smoke mode.

Each notebook runs in a fresh ``python3`` kernel (nbclient) with ``HFTRAIN_NOTEBOOK_SMOKE=1`` (tiny sizes), its
working directory a temporary directory and ``HFTRAIN_NOTEBOOK_OUTPUT`` pointing there, so nothing is written next
to the committed notebooks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = {
    "01_port_hf_finetune.ipynb",
    "02_seq2seq_generate.ipynb",
    "03_strategies_and_precision.ipynb",
    "04_callbacks_and_loggers.ipynb",
}


def test_the_notebooks_are_there():
    assert EXPECTED <= {path.name for path in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{path.name} cell {index} has outputs: strip them before committing"
            assert cell.get("execution_count") is None, f"{path.name} cell {index} has an execution count"
    source = "".join("".join(cell["source"]) for cell in notebook["cells"])
    assert "HFTRAIN_NOTEBOOK_SMOKE" in source, f"{path.name} must read HFTRAIN_NOTEBOOK_SMOKE"
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"


def _snapshot(directory: Path) -> dict[str, float]:
    return {str(p.relative_to(directory)): p.stat().st_mtime for p in directory.rglob("*")}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_executes_in_smoke_mode(path, tmp_path):
    for module in ("nbclient", "nbformat", "ipykernel"):
        pytest.importorskip(module, reason=f"executing the notebooks needs {module}: pip install nbclient nbformat "
                                           "ipykernel")
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    env = {
        **os.environ,
        "HFTRAIN_NOTEBOOK_SMOKE": "1",
        "HFTRAIN_NOTEBOOK_OUTPUT": str(tmp_path / "out"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    before = _snapshot(NOTEBOOK_DIR)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=env)  # raises CellExecutionError, with the cell and its traceback, if a cell fails
    assert _snapshot(NOTEBOOK_DIR) == before, "the notebook wrote next to the committed notebooks"
    assert any((tmp_path / "out").iterdir()), "the notebook wrote nothing under HFTRAIN_NOTEBOOK_OUTPUT"
