"""hftrain: Hugging Face's Trainer API, run by PyTorch Lightning.

Porting an HF script is an import change::

    from hftrain import Trainer, TrainingArguments

Public names are imported on first use, so ``import hftrain`` stays cheap (no Lightning, no torch kernels).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Trainer": "hftrain.trainer",
    "TrainingArguments": "hftrain.training_args",
    "Seq2SeqTrainingArguments": "hftrain.training_args_seq2seq",
    "Seq2SeqTrainer": "hftrain.trainer_seq2seq",
    "TrainerCallback": "hftrain.trainer_callback",
    "TrainerControl": "hftrain.trainer_callback",
    "TrainerState": "hftrain.trainer_callback",
    "DefaultFlowCallback": "hftrain.trainer_callback",
    "EarlyStoppingCallback": "hftrain.trainer_callback",
    "PrinterCallback": "hftrain.trainer_callback",
    "ProgressCallback": "hftrain.trainer_callback",
    "EvalPrediction": "hftrain.trainer_utils",
    "PredictionOutput": "hftrain.trainer_utils",
    "TrainOutput": "hftrain.trainer_utils",
    "IntervalStrategy": "hftrain.trainer_utils",
    "SchedulerType": "hftrain.trainer_utils",
    "set_seed": "hftrain.trainer_utils",
    "HFModule": "hftrain._loop.module",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from hftrain._loop.module import HFModule
    from hftrain.trainer import Trainer
    from hftrain.trainer_seq2seq import Seq2SeqTrainer
    from hftrain.trainer_callback import (
        DefaultFlowCallback,
        EarlyStoppingCallback,
        PrinterCallback,
        ProgressCallback,
        TrainerCallback,
        TrainerControl,
        TrainerState,
    )
    from hftrain.trainer_utils import EvalPrediction, IntervalStrategy, PredictionOutput, SchedulerType, TrainOutput, set_seed
    from hftrain.training_args import TrainingArguments
    from hftrain.training_args_seq2seq import Seq2SeqTrainingArguments


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hftrain' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
