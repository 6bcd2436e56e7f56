"""Guards on the package's shape: small modules, cheap and accelerate-free imports, HF-mirroring module names."""

from __future__ import annotations

import os
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


def test_the_trainer_facade_stays_thin():
    """The Trainer's methods live by concern in hftrain/_loop; trainer.py only assembles them (issue 13's budget)."""
    assert (PACKAGE / "trainer.py").read_text().count("\n") <= 400


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


REPO = PACKAGE.parent
ONLY_FOR_A_RUN = ("lightning", "torchmetrics", "datasets")  # train() / evaluate() import them, not the import


def _run_fresh(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_importing_the_trainer_leaves_lightning_torchmetrics_and_datasets_to_the_run():
    """A script's ``from hftrain import Trainer, TrainingArguments`` line costs no Lightning (which brings
    torchmetrics, and with it scipy / matplotlib where installed): ``Trainer(...)`` and the run import it."""
    code = (
        "import sys, hftrain.trainer, hftrain.trainer_seq2seq\n"
        "from hftrain import Trainer, TrainingArguments, Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback\n"
        "assert Trainer is hftrain.trainer.Trainer and Trainer.__module__ == 'hftrain.trainer'\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {ONLY_FOR_A_RUN!r}))\n"
    )
    result = _run_fresh(["-c", code])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout


HF_STYLE_SCRIPT = f"""
import atexit, sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from hftrain import Trainer, TrainingArguments

atexit.register(lambda: print("LOADED", sorted(m for m in sys.modules if m.split(".")[0] in {ONLY_FOR_A_RUN!r})))


@dataclass
class ModelArguments:
    model_name_or_path: str = field(default="tiny", metadata={{"help": "a checkpoint directory"}})


@dataclass
class DataTrainingArguments:
    max_seq_length: int = field(default=128, metadata={{"help": "tokens per example"}})


parser = HfArgumentParser((ModelArguments, DataTrainingArguments, TrainingArguments))
model_args, data_args, training_args = parser.parse_args_into_dataclasses()
"""


def test_help_of_an_hf_style_script_imports_no_lightning(tmp_path):
    """``python train.py --help`` through ``HfArgumentParser((..., TrainingArguments))`` (transformers' example
    scripts' shape) prints every field and needs no Lightning, torchmetrics or datasets."""
    script = tmp_path / "train.py"
    script.write_text(HF_STYLE_SCRIPT)
    result = _run_fresh([str(script), "--help"])
    assert result.returncode == 0, result.stderr
    for flag in ("--model_name_or_path", "--max_seq_length", "--output_dir", "--learning_rate", "--strategy"):
        assert flag in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "LOADED []", result.stdout[-2000:]


def test_every_public_name_resolves_from_the_package():
    """``hftrain.__all__`` and ``dir(hftrain)`` list every public name, and each one resolves (lazily)."""
    code = (
        "import hftrain\n"
        "missing = [n for n in hftrain.__all__ if getattr(hftrain, n, None) is None or n not in dir(hftrain)]\n"
        "assert not missing, missing\n"
        "assert hftrain.Trainer.__module__ == 'hftrain.trainer'\n"
    )
    result = _run_fresh(["-c", code])
    assert result.returncode == 0, result.stderr


def _defined_names(module_name: str) -> set[str]:
    """The public names a module defines at top level (its classes, functions and constants)."""
    import ast
    import importlib
    import inspect

    tree = ast.parse(inspect.getsource(importlib.import_module(module_name)))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {name for name in names if not name.startswith("_")}


@pytest.mark.parametrize(
    "module",
    ["trainer", "trainer_seq2seq", "trainer_utils", "trainer_callback", "trainer_pt_utils", "training_args",
     "training_args_seq2seq"],
)
def test_modules_have_every_name_their_transformers_module_defines(module):
    """``from transformers.X import name`` ports to ``from hftrain.X import name`` (HF's tests import constants,
    loggers and helpers from these modules, not only the classes)."""
    import importlib

    ours = importlib.import_module(f"hftrain.{module}")
    missing = sorted(name for name in _defined_names(f"transformers.{module}") if not hasattr(ours, name))
    assert missing == [], f"hftrain.{module} lacks {missing}"
    assert hasattr(ours, "logger")

