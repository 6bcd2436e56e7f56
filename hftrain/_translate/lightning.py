"""Building the ``lightning.Trainer`` for one hftrain call, and keeping Lightning's own chatter out of HF output."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, ModelSummary, ProgressBar
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from typing_extensions import override

from hftrain._translate.env import detect_env
from hftrain._translate.build import TrainingPlan, lightning_trainer_kwargs

# evaluate()/predict() runs have no training length
_NO_TRAINING = TrainingPlan(1, 1, 1, 1, 0, 0)


def build_lightning_trainer(
    args: Any, plan: TrainingPlan | None, callbacks: list[L.Callback], loggers: list, hidden_size: int | None = None
) -> L.Trainer:
    """``lightning.Trainer`` from the translated arguments; a Lightning checkpoint, progress-bar or summary callback
    among ``callbacks`` switches the matching Lightning feature back on."""
    from lightning.fabric.utilities.imports import _IS_INTERACTIVE

    kwargs = lightning_trainer_kwargs(args, detect_env(), plan or _NO_TRAINING, _IS_INTERACTIVE, hidden_size)
    for cb in callbacks:
        # hftrain evaluates where HF does (mid-epoch too): check on every validation, not at train-epoch end
        if isinstance(cb, ModelCheckpoint) and cb._save_on_train_epoch_end is None:
            cb._save_on_train_epoch_end = False
        if isinstance(cb, EarlyStopping) and cb._check_on_train_epoch_end is None:
            cb._check_on_train_epoch_end = False
    for flag, kind in (("enable_checkpointing", ModelCheckpoint), ("enable_progress_bar", ProgressBar),
                       ("enable_model_summary", ModelSummary)):
        kwargs[flag] = kwargs[flag] or any(isinstance(cb, kind) for cb in callbacks)
    trainer = L.Trainer(**kwargs, callbacks=callbacks, logger=loggers or False)
    if isinstance(trainer.strategy.launcher, _MultiProcessingLauncher):
        trainer.strategy.launcher.__class__ = _ResultCarryingLauncher
    return trainer


class _ResultCarryingLauncher(_MultiProcessingLauncher):
    """Spawned / forked workers (``ddp_spawn``, ``ddp_notebook``) send the hftrain Trainer's results (state,
    train loss, evaluation outputs) back to the process that called ``train()``/``evaluate()``, with the weights
    Lightning already returns. Defined at module level so that ``spawn`` can pickle it."""

    @override
    def get_extra_results(self, trainer: L.Trainer) -> dict[str, Any]:
        return {**super().get_extra_results(trainer), "hftrain": trainer.lightning_module.hf.results_for_main_process()}

    @override
    def update_main_process_results(self, trainer: L.Trainer, extra: dict[str, Any]) -> None:
        super().update_main_process_results(trainer, extra)
        trainer.lightning_module.hf.receive_worker_results(extra["hftrain"])


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
    ".*LeafSpec.*is deprecated.*",  # Lightning's own pytree helper under torch >= 2.10
    ".*sync_dist=True.*when logging on epoch level.*",  # eval metrics are gathered over every process already
)


