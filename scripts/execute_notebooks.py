#!/usr/bin/env python
"""Execute the notebooks at full size and write them back with their outputs: the committed notebooks.

    python scripts/execute_notebooks.py                                   # every notebooks/*.ipynb
    python scripts/execute_notebooks.py notebooks/02_seq2seq_generate.ipynb

Each notebook runs top to bottom in a fresh ``python3`` kernel (nbclient), at full size
(``HFTRAIN_NOTEBOOK_SMOKE=0``), offline, with this repository's hftrain first on ``PYTHONPATH``, in a temporary
working directory that ``HFTRAIN_NOTEBOOK_OUTPUT`` also points at (so nothing lands next to the notebooks), with
``OMP_NUM_THREADS=1`` unless ``--threads`` says otherwise (the notebooks' models are small: on a 2-core machine
that other jobs share, one thread trains them several times faster than two). It is written back only when every
cell ran without an error, with its outputs and, in ``metadata["hftrain"]``:

* ``code_sha256``: the hash of its code cells' sources (:func:`code_sha256`).
  ``tests/integration/test_notebooks.py`` recomputes it, so CI fails when a code cell changed after the outputs
  were made;
* ``executed``, ``machine``, ``threads``, ``load_average``, ``wall_time_s``: when, on what, with how many threads,
  how busy the machine was when the run started (its 1-minute load average), and how long the whole notebook took.

What would make every re-run a noisy diff is left out: per-cell timing metadata, the carriage-return redraws of
text progress bars (a stream keeps what a notebook shows after them), the text progress bars of datasets (``Map``)
and of transformers / huggingface_hub (loading and writing weights), whose rates change every run, and tqdm's
warning that ipywidgets is not installed (it names the local site-packages).
Training progress is transformers' HTML table, which a saved notebook shows as it ended. A run whose outputs mention its temporary
directory fails instead of being written: the notebooks print paths relative to their ``OUT``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
TEMP_PREFIX = "hftrain_notebook_run_"  # the tests look for it in the outputs: no run's temporary path is committed
TIMEOUT_S = 1800  # per cell


def code_sha256(notebook: dict) -> str:
    """sha256 of the sources of a notebook's code cells, in order (markdown and outputs do not count).

    Works on the notebook as JSON (``source`` a string or a list of lines) and as an ``nbformat`` node.

    Example:
        >>> code_sha256({"cells": [{"cell_type": "code", "source": ["x = 1\\n", "x"]}]}) == code_sha256(
        ...     {"cells": [{"cell_type": "markdown", "source": "# hi"}, {"cell_type": "code", "source": "x = 1\\nx"}]})
        True
    """
    sources = ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]
    return hashlib.sha256(json.dumps(sources, ensure_ascii=False).encode("utf-8")).hexdigest()


def machine() -> str:
    """The machine in words: CPU, cores, GPU, OS and the versions that decide the numbers."""
    import lightning
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} CPU cores, {gpu}, {platform.system()} {platform.machine()}; Python "
            f"{platform.python_version()}, torch {torch.__version__}, lightning {lightning.__version__}, "
            f"transformers {transformers.__version__}")


_PROGRESS_REDRAW = re.compile(r"[^\n]*\r(?!\n)")


def tidy_streams(outputs: list) -> list:
    """Merge consecutive stream outputs of the same name and keep what a notebook shows of their text after
    carriage-return redraws (text progress bars), so that re-runs do not differ by every intermediate frame."""
    tidied: list = []
    for output in outputs:
        if output["output_type"] == "stream":
            if tidied and tidied[-1]["output_type"] == "stream" and tidied[-1]["name"] == output["name"]:
                tidied[-1]["text"] += output["text"]
                continue
            output["text"] = "".join(output["text"])
        tidied.append(output)
    for output in tidied:
        if output["output_type"] == "stream":
            output["text"] = _PROGRESS_REDRAW.sub("", output["text"].replace("\r\n", "\n"))
    return [output for output in tidied if output["output_type"] != "stream" or output["text"].strip()]


def kernel_env(out: Path, threads: int, smoke: bool = False) -> dict[str, str]:
    """The kernel's environment: offline, quiet bars, ``threads`` torch threads, writing under ``out``; ``smoke``:
    the tiny sizes the tests execute (``HFTRAIN_NOTEBOOK_SMOKE=1``)."""
    python_warnings = ",".join(w for w in (os.environ.get("PYTHONWARNINGS"), "ignore:IProgress not found") if w)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' own bars follow huggingface_hub's switch
        "PYTHONWARNINGS": python_warnings,  # tqdm.auto without ipywidgets
        "HFTRAIN_NOTEBOOK_SMOKE": "1" if smoke else "0",
        "HFTRAIN_NOTEBOOK_OUTPUT": str(out),
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def execute(path: Path, threads: int = 1) -> dict:
    """Execute one notebook at full size and write it back; returns its ``metadata["hftrain"]``."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix=TEMP_PREFIX) as workdir:
        client = NotebookClient(notebook, timeout=TIMEOUT_S, kernel_name="python3", record_timing=False,
                                resources={"metadata": {"path": workdir}})
        load, start = os.getloadavg()[0], time.perf_counter()
        client.execute(env=kernel_env(Path(workdir) / "out", threads))  # raises CellExecutionError if a cell fails
        wall = time.perf_counter() - start
        for cell in notebook.cells:
            if cell.cell_type == "code":
                cell.outputs = tidy_streams(cell.outputs)
        text = json.dumps([cell.get("outputs", []) for cell in notebook.cells])
        for leaked in {workdir, os.path.realpath(workdir)}:
            if leaked in text:
                raise SystemExit(f"{path.name}: its outputs mention the temporary directory {leaked}; print paths "
                                 f"relative to OUT. Not written.")
    record = {"code_sha256": code_sha256(notebook), "executed": dt.date.today().isoformat(), "machine": machine(),
              "threads": threads, "load_average": round(load, 1), "wall_time_s": round(wall, 1)}
    notebook.metadata["hftrain"] = record
    nbformat.write(notebook, path)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="the notebooks to execute (default: every notebooks/*.ipynb)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the kernel")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(NOTEBOOK_DIR.glob("*.ipynb"))
    for path in paths:
        print(f"executing {path} ...", flush=True)
        record = execute(path, args.threads)
        size = path.stat().st_size
        print(f"  {record['wall_time_s']:.0f} s, {size / 1024:.0f} KB written, code_sha256 {record['code_sha256'][:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
