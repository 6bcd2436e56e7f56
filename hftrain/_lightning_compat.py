"""Every use of Lightning's private API in hftrain, in one place.

Each entry names what it touches and the Lightning version it was checked against. When Lightning changes, this is
the one file to read again: ``tests/unit/test_lightning_compat.py`` exercises each entry on the installed Lightning.

Checked against lightning 2.6.6 (the ``lightning>=2.6,<2.7`` range of ``pyproject.toml``).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from lightning.pytorch.strategies.launchers.xla import _XLALauncher
from typing_extensions import override

CHECKED_AGAINST = "2.6.6"


def is_interactive() -> bool:
    """Whether Lightning considers this process a notebook (``lightning.fabric.utilities.imports._IS_INTERACTIVE``):
    it then refuses script-only strategies such as ``"ddp"``."""
    from lightning.fabric.utilities.imports import _IS_INTERACTIVE

    return _IS_INTERACTIVE


# ---- evaluation where HF evaluates: synchronously, in optimizer steps, over the loader HF's seams returned ----------
def run_validation_now(trainer: L.Trainer, dataloader: Any) -> None:
    """Run Lightning's validation loop over ``dataloader`` in the middle of ``fit``.

    HF evaluates inside its step (``_maybe_log_save_evaluate``), over whatever ``get_eval_dataloader`` returned. The
    fit loop's validation loop is pointed at that loader (``_data_source``; ``_combined_loader`` cleared so that it is
    set up again) and run as the epoch loop runs it after a batch (``_TrainingEpochLoop.on_advance_end``), then the
    trainer is put back in its training state. Touches ``val_loop._data_source``, ``val_loop._combined_loader`` and
    ``trainer._logger_connector._first_loop_iter``.
    """
    val_loop = trainer.fit_loop.epoch_loop.val_loop
    val_loop._data_source.instance = dataloader
    val_loop._combined_loader = None
    first_loop_iter = trainer._logger_connector._first_loop_iter
    trainer.validating = True
    try:
        val_loop.run()
    finally:
        trainer.training = True
        trainer._logger_connector._first_loop_iter = first_loop_iter


def disable_validation_schedule(trainer: L.Trainer) -> None:
    """Validation runs only when HF's flow asks (``run_validation_now``), never on Lightning's batch schedule
    (``_TrainingEpochLoop._should_check_val_fx``)."""
    trainer.fit_loop.epoch_loop._should_check_val_fx = _never  # module level: ddp_spawn pickles the Trainer


def _never(*args: Any, **kwargs: Any) -> bool:
    return False


def check_on_every_validation(callbacks: list[L.Callback]) -> None:
    """``ModelCheckpoint`` / ``EarlyStopping`` left on their defaults check at every validation, not at the end of
    a training epoch: hftrain validates where HF does, mid-epoch too (``_save_on_train_epoch_end`` /
    ``_check_on_train_epoch_end``)."""
    for cb in callbacks:
        if isinstance(cb, ModelCheckpoint) and cb._save_on_train_epoch_end is None:
            cb._save_on_train_epoch_end = False
        if isinstance(cb, EarlyStopping) and cb._check_on_train_epoch_end is None:
            cb._check_on_train_epoch_end = False


# ---- processes Lightning starts itself (ddp_spawn / ddp_fork / ddp_notebook) -----------------------------------------
def is_multiprocessing_launcher(launcher: Any) -> bool:
    return isinstance(launcher, _MultiProcessingLauncher)


def carry_results_to_caller(trainer: L.Trainer) -> None:
    """Make a spawned / forked run send the hftrain Trainer's results back with the weights (see below). XLA's
    launcher (``xmp.spawn``) keeps its own ``launch``: it gets the carrying subclass of its own class."""
    launcher = trainer.strategy.launcher
    carrying = {_MultiProcessingLauncher: _ResultCarryingLauncher, _XLALauncher: _ResultCarryingXLALauncher}
    if type(launcher) in carrying:
        launcher.__class__ = carrying[type(launcher)]


def _get_extra_results(self: Any, trainer: L.Trainer) -> dict[str, Any]:
    results = trainer.lightning_module.loop.results_for_main_process()
    return {**_MultiProcessingLauncher.get_extra_results(self, trainer), "hftrain": results}


def _update_main_process_results(self: Any, trainer: L.Trainer, extra: dict[str, Any]) -> None:
    _MultiProcessingLauncher.update_main_process_results(self, trainer, extra)
    trainer.lightning_module.loop.receive_worker_results(extra["hftrain"])


class _ResultCarryingLauncher(_MultiProcessingLauncher):
    """Spawned / forked workers (ddp_spawn / ddp_fork / ddp_notebook) send the hftrain Trainer's results (state,
    train loss, evaluation outputs) back to the process that called ``train()`` / ``evaluate()``, with the weights
    Lightning already returns (``get_extra_results`` / ``update_main_process_results``). Module level, so that
    ``spawn`` can pickle it; single inheritance, so that a launcher's class can be swapped for it."""

    get_extra_results = _get_extra_results
    update_main_process_results = _update_main_process_results


class _ResultCarryingXLALauncher(_XLALauncher):
    """Lightning's XLA launcher (``xmp.spawn``), carrying the results in the same way."""

    get_extra_results = _get_extra_results
    update_main_process_results = _update_main_process_results


# ---- the optimizer step of manual optimization -----------------------------------------------------------------------
class UnscaleOncePrecision(MixedPrecision):
    """Lightning's ``MixedPrecision`` that unscales the gradients only if nobody did yet.

    HF (accelerate) unscales inside ``clip_grad_norm_``, before ``on_pre_optimizer_step`` and the step; Lightning's
    plugin unscales inside ``optimizer.step()``, and ``GradScaler`` refuses a second ``unscale_``. hftrain's step
    clips first, as HF, so the plugin must not unscale again. Reads ``GradScaler._per_optimizer_states`` (torch).
    """

    @override
    def optimizer_step(self, optimizer: Any, model: Any, closure: Any, **kwargs: Any) -> Any:
        if self.scaler is None or not gradients_unscaled(self.scaler, optimizer):
            return super().optimizer_step(optimizer, model=model, closure=closure, **kwargs)
        closure()
        self._after_closure(model, optimizer)
        step_output = self.scaler.step(optimizer, **kwargs)
        self.scaler.update()
        return step_output


def unscale_once_precision(plugin: Any) -> Any:
    """A user's or Lightning's ``MixedPrecision`` as :class:`UnscaleOncePrecision` (same object, same settings)."""
    if type(plugin) is MixedPrecision:
        plugin.__class__ = UnscaleOncePrecision
    return plugin


def gradients_unscaled(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``scaler.unscale_(optimizer)`` already ran since the last ``update()``."""
    from torch.amp.grad_scaler import OptState

    state = scaler._per_optimizer_states.get(id(optimizer))
    return state is not None and state["stage"] is OptState.UNSCALED


def with_deepspeed_accumulation(strategy: Any, accumulation_steps: int) -> Any:
    """DeepSpeed's engine accumulates ``accumulation_steps`` micro-batches per update.

    Manual optimization requires ``Trainer(accumulate_grad_batches=1)``, and Lightning's ``DeepSpeedStrategy`` copies
    that into the engine config (``_format_batch_size_and_grad_accum_config``); the engine is told HF's value instead.
    """
    if type(strategy).__name__ != "DeepSpeedStrategy":
        return strategy
    original = strategy._format_batch_size_and_grad_accum_config

    def format_config() -> None:
        original()
        strategy.config["gradient_accumulation_steps"] = accumulation_steps

    strategy._format_batch_size_and_grad_accum_config = format_config
    return strategy


def compute_dtype(precision_plugin: Any) -> torch.dtype:
    """The dtype a precision plugin computes in (``lightning.pytorch.callbacks.throughput_monitor._plugin_to_compute_dtype``,
    what Lightning's ThroughputMonitor looks the device's peak FLOPs up with); float32 for a plugin it does not know."""
    from lightning.pytorch.callbacks.throughput_monitor import _plugin_to_compute_dtype

    try:
        return _plugin_to_compute_dtype(precision_plugin)
    except (NotImplementedError, RuntimeError):  # Lightning raises either for a plugin it does not know
        return torch.float32


# ---- quiet runs ------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's INFO banners ("GPU available", tips, "fit stopped", every process's "Initializing distributed")
    are not part of an HF run's output."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger, level in zip(loggers, levels):
        logger.setLevel(max(level, logging.WARNING))
    try:
        with warnings.catch_warnings():
            for message in _LIGHTNING_NOISE:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        for logger, level in zip(loggers, levels):
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
    ".*`training_step` returned `None`.*",  # manual optimization: the step runs HF's loop and returns nothing
    ".*torch.distributed.nn.functional.all_gather is deprecated.*",  # Lightning's own all_gather under torch 2.13
)
