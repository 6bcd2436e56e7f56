"""Guards on the package's shape: small modules, cheap and accelerate-free imports, HF-mirroring module names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "hftrain"
MAX_LINES = 600


def test_no_module_over_the_size_budget():
    too_long = {}
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if text.startswith("# GENERATED"):
            continue  # data written by scripts/, not code to read
        lines = text.count("\n")
        if lines > MAX_LINES:
            too_long[str(path.relative_to(PACKAGE))] = lines
    assert not too_long, f"split these modules (>{MAX_LINES} lines): {too_long}"


def test_importing_hftrain_pulls_in_neither_transformers_trainer_nor_accelerate():
    code = (
        "import sys; import hftrain; from hftrain import Trainer, TrainingArguments, Seq2SeqTrainingArguments; "
        "from hftrain.trainer_callback import EarlyStoppingCallback; "
        "bad = [m for m in sys.modules if m == 'transformers.trainer' or m.startswith('accelerate')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_bare_import_is_lazy():
    code = "import sys, hftrain; sys.exit(1 if 'lightning' in sys.modules or 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("hftrain.trainer_utils", ["get_last_checkpoint", "EvalPrediction", "PredictionOutput", "EvalLoopOutput",
                                   "TrainOutput", "speed_metrics", "IntervalStrategy", "SchedulerType", "set_seed"]),
        ("hftrain.trainer_callback", ["TrainerCallback", "TrainerState", "TrainerControl", "EarlyStoppingCallback",
                                      "DefaultFlowCallback", "PrinterCallback", "ProgressCallback"]),
        ("hftrain.training_args", ["TrainingArguments"]),
        ("hftrain.trainer", ["Trainer"]),
    ],
)
def test_modules_mirror_transformers_names(module, names):
    import importlib

    mod = importlib.import_module(module)
    assert all(hasattr(mod, n) for n in names)
