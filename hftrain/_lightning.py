"""Building the ``lightning.Trainer`` for one hftrain call, and keeping Lightning's own chatter out of HF output."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, ModelSummary, ProgressBar

from hftrain._env import detect_env
from hftrain._translate import TrainingPlan, lightning_trainer_kwargs

# evaluate()/predict() runs have no training length
_NO_TRAINING = TrainingPlan(1, 1, 1, 1, 0, 0)


def build_lightning_trainer(args: Any, plan: TrainingPlan | None, callbacks: list[L.Callback], loggers: list) -> L.Trainer:
    """``lightning.Trainer`` from the translated arguments; a Lightning checkpoint, progress-bar or summary callback
    among ``callbacks`` switches the matching Lightning feature back on."""
    kwargs = lightning_trainer_kwargs(args, detect_env(), plan or _NO_TRAINING)
    for cb in callbacks:
        # hftrain evaluates where HF does (mid-epoch too): check on every validation, not at train-epoch end
        if isinstance(cb, ModelCheckpoint) and cb._save_on_train_epoch_end is None:
            cb._save_on_train_epoch_end = False
        if isinstance(cb, EarlyStopping) and cb._check_on_train_epoch_end is None:
            cb._check_on_train_epoch_end = False
    for flag, kind in (("enable_checkpointing", ModelCheckpoint), ("enable_progress_bar", ProgressBar),
                       ("enable_model_summary", ModelSummary)):
        kwargs[flag] = kwargs[flag] or any(isinstance(cb, kind) for cb in callbacks)
    return L.Trainer(**kwargs, callbacks=callbacks, logger=loggers or False)


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's INFO banners ("GPU available", tips, "fit stopped") are not part of an HF run's output."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        with warnings.catch_warnings():
            for message in _LIGHTNING_NOISE:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        logger.setLevel(level)


# Lightning warnings about choices hftrain makes on purpose (HF semantics), not about the user's code
_LIGHTNING_NOISE = (
    ".*predict returned None.*",  # predictions are collected HF-style, not returned per step
    ".*does not have many workers.*",  # HF's dataloader_num_workers default is 0
    ".*You defined a `validation_step` but have no `val_dataloader`.*",
    ".*module\\(s\\) in eval mode.*",  # HF switches the model to train mode at every step
    ".*custom batch sampler `ShardedBatchSampler` for prediction.*",  # it returns every sample (no drop_last)
)


