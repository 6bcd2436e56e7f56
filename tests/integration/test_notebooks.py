"""The notebooks in notebooks/ are committed executed, with current outputs, and execute in smoke mode in CI.

The committed outputs come from a full-size CPU run of ``scripts/execute_notebooks.py``, which stores in each
notebook's ``metadata["hftrain"]`` the sha256 of its code cells' sources. A code cell changed since then makes
``test_notebook_is_committed_executed_and_current`` fail, naming the command that re-executes it.

The smoke test executes a copy of each notebook in a fresh ``python3`` kernel (nbclient) with
``HFTRAIN_NOTEBOOK_SMOKE=1`` (tiny sizes), its working directory a temporary directory and
``HFTRAIN_NOTEBOOK_OUTPUT`` pointing there, so nothing is written next to the committed notebooks.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.helpers import notebook_executor

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
MAX_PNG_BYTES = 100_000  # each image in a committed notebook
MAX_NOTEBOOK_BYTES = 500_000
EXPECTED = {
    "01_port_hf_finetune.ipynb",
    "02_seq2seq_generate.ipynb",
    "03_strategies_and_precision.ipynb",
    "04_callbacks_and_loggers.ipynb",
}


def test_the_notebooks_are_there():
    assert EXPECTED <= {path.name for path in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_is_committed_executed_and_current(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    rerun = f"re-run: python scripts/execute_notebooks.py notebooks/{path.name}"
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    counts = [cell.get("execution_count") for cell in code]
    assert counts == list(range(1, len(code) + 1)), f"{path.name} was not executed top to bottom ({counts}); {rerun}"

    record = notebook["metadata"].get("hftrain", {})
    assert record.get("code_sha256") == notebook_executor().code_sha256(notebook), (
        f"{path.name}: its code cells changed since its outputs were made; {rerun}"
    )
    assert {"executed", "machine", "wall_time_s"} <= set(record), record

    outputs = [output for cell in code for output in cell.get("outputs", [])]
    errors = [f"{output.get('ename')}: {output.get('evalue')}" for output in outputs
              if output["output_type"] == "error"]
    assert not errors, f"{path.name} was committed with errors {errors}"
    text = json.dumps(outputs)
    assert notebook_executor().TEMP_PREFIX not in text, f"{path.name}'s outputs name a temporary directory of the run"
    assert "site-packages" not in text, f"{path.name}'s outputs name a local install path (a warning?)"
    pngs = [base64.b64decode("".join(output["data"]["image/png"])) for output in outputs
            if "image/png" in output.get("data", {})]
    assert all(len(png) < MAX_PNG_BYTES for png in pngs), (
        f"{path.name} has an image of {max(map(len, pngs)) // 1024} KB: make the figure smaller (figsize, dpi)"
    )
    assert path.stat().st_size < MAX_NOTEBOOK_BYTES, f"{path.name} is {path.stat().st_size // 1024} KB"

    source = "".join("".join(cell["source"]) for cell in notebook["cells"])
    assert "HFTRAIN_NOTEBOOK_SMOKE" in source, f"{path.name} must read HFTRAIN_NOTEBOOK_SMOKE"
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"


def test_the_staleness_check_sees_a_changed_code_cell_and_nothing_else():
    code_sha256 = notebook_executor().code_sha256
    notebook = {"cells": [{"cell_type": "markdown", "source": ["# a title\n"]},
                          {"cell_type": "code", "source": ["x = 1\n", "print(x)"], "outputs": []}]}
    stored = code_sha256(notebook)
    notebook["cells"][0]["source"] = ["# another title\n"]
    notebook["cells"][1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "1\n"}]
    assert code_sha256(notebook) == stored  # markdown and outputs are not code
    notebook["cells"][1]["source"] = "x = 1\nprint(x)"
    assert code_sha256(notebook) == stored  # a list of lines or one string: the same source
    notebook["cells"][1]["source"] = "x = 2\nprint(x)"
    assert code_sha256(notebook) != stored


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
    env = notebook_executor().kernel_env(tmp_path / "out", threads=1, smoke=True)  # the committed run's, tiny sizes
    before = _snapshot(NOTEBOOK_DIR)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=env)  # raises CellExecutionError, with the cell and its traceback, if a cell fails
    assert _snapshot(NOTEBOOK_DIR) == before, "the notebook wrote next to the committed notebooks"
    assert any((tmp_path / "out").iterdir()), "the notebook wrote nothing under HFTRAIN_NOTEBOOK_OUTPUT"
