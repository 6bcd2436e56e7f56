"""``TrainingArguments`` + ``Env`` → the ``lightning.Trainer`` of one hftrain call.

:func:`lightning_trainer_kwargs` is a pure function, table-tested on a CPU with a faked ``Env``. Lightning always
gets an explicit ``max_steps`` with ``max_epochs=-1``: its own defaults (1000 epochs, integer epochs only) would train
for a different length, and HF's ``DefaultFlowCallback`` ends the run at ``max_steps`` anyway.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary, ProgressBar

from hftrain._lightning_compat import (
    carry_results_to_caller,
    check_on_every_validation,
    is_interactive,
    unscale_once_precision,
    with_deepspeed_accumulation,
)
from hftrain._translate.env import Env, ModelFacts, detect_env
from hftrain._translate.precision import precision
from hftrain._translate.strategy import accelerator, devices_and_nodes, lightning_strategy


def build_lightning_trainer(
    args: Any, max_steps: int, callbacks: list[L.Callback], loggers: list, model: ModelFacts = ModelFacts()
) -> L.Trainer:
    """``lightning.Trainer`` from the translated arguments; a Lightning checkpoint, progress-bar or summary callback
    among ``callbacks`` switches the matching Lightning feature back on."""
    kwargs = lightning_trainer_kwargs(args, detect_env(), max_steps, is_interactive(), model)
    check_on_every_validation(callbacks)
    for flag, kind in (("enable_checkpointing", ModelCheckpoint), ("enable_progress_bar", ProgressBar),
                       ("enable_model_summary", ModelSummary)):
        kwargs[flag] = kwargs[flag] or any(isinstance(cb, kind) for cb in callbacks)
    trainer = L.Trainer(**kwargs, callbacks=callbacks, logger=loggers or False)
    unscale_once_precision(trainer.strategy.precision_plugin)  # the step clips (and so unscales) before stepping
    with_deepspeed_accumulation(trainer.strategy, args.gradient_accumulation_steps)
    carry_results_to_caller(trainer)
    return trainer


def lightning_trainer_kwargs(
    args: Any, env: Env, max_steps: int, interactive: bool = False, model: ModelFacts = ModelFacts()
) -> dict[str, Any]:
    """Keyword arguments for ``lightning.Trainer`` (loggers and callbacks are added by :func:`build_lightning_trainer`).

    The optimizer step is transformers' (manual optimization, :mod:`hftrain._loop.step`): Lightning accumulates and
    clips nothing itself. Evaluation, logging and saving are decided in optimizer steps by HF's flow, never by
    Lightning's batch-counting ``val_check_interval`` / ``log_every_n_steps`` / ``ModelCheckpoint``.
    ``max_steps``: the optimizer steps this ``fit`` runs (0 for evaluate / predict).
    """
    devices, num_nodes = devices_and_nodes(args, env)
    strategy = lightning_strategy(args, env, interactive, max_steps, model)
    kwargs = {
        "accelerator": accelerator(args, env),
        "devices": devices,
        "num_nodes": num_nodes,
        "strategy": strategy,
        "precision": precision(args, env),
        "max_steps": max_steps,
        "max_epochs": -1,
        "num_sanity_val_steps": 0,  # a sanity pass would draw from the RNG and shift dropout masks
        "deterministic": True if args.full_determinism else None,
        "default_root_dir": args.output_dir,
        "use_distributed_sampler": False,  # HF's own sampler keeps the order independent of the global RNG
        "inference_mode": False,  # HF evaluates under no_grad; inference tensors can't be reused by autograd
        "enable_checkpointing": False,  # HF-layout checkpoints are written by the flow
        "enable_progress_bar": False,  # HF's ProgressCallback / PrinterCallback report progress
        "enable_model_summary": False,
        "log_every_n_steps": 1,
    }
    if type(strategy).__name__ == "DeepSpeedStrategy" and isinstance(kwargs["precision"], str):
        from hftrain._backends.deepspeed_xla import deepspeed_precision

        kwargs["plugins"] = [deepspeed_precision(kwargs.pop("precision"))]
    if "XLA" in type(strategy).__name__ and isinstance(kwargs["precision"], str):
        from hftrain._backends.deepspeed_xla import xla_precision  # HF's TPU bf16 is bf16-true (XLA_USE_BF16)

        kwargs["plugins"] = [xla_precision(kwargs.pop("precision"))]
    if "precision" in kwargs and not isinstance(kwargs["precision"], (str, int)):
        kwargs["plugins"] = [kwargs.pop("precision")]  # a plugin object: Lightning takes it in `plugins`
    return kwargs
