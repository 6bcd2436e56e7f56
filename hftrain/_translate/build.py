"""``TrainingArguments`` + ``Env`` → the run's step arithmetic and ``lightning.Trainer`` keyword arguments.

Pure functions, no side effects: every mapping is table-tested on a CPU with a faked ``Env``. The step arithmetic
is HF's (``Trainer.set_initial_training_values``); Lightning always gets an explicit ``max_steps`` with
``max_epochs=-1`` because its own defaults (1000 epochs, integer epochs only) would train for a different length.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

from hftrain._translate.env import Env
from hftrain._translate.strategy import accelerator, devices_and_nodes, lightning_strategy


@dataclass(frozen=True, slots=True)
class TrainingPlan:
    """How long a run is, in HF's units (optimizer steps; micro-batches for ``steps_in_epoch``).

    Example:
        >>> plan = training_plan(max_steps=-1, num_train_epochs=1.5, accumulation_steps=2,
        ...                      batches_per_epoch=5, num_examples=10, total_batch_size=4)
        >>> plan.max_steps, plan.num_train_epochs, plan.updates_per_epoch
        (5, 2, 3)
    """

    max_steps: int
    num_train_epochs: int
    updates_per_epoch: int
    steps_in_epoch: int
    num_examples: int
    num_train_samples: float


def training_plan(
    *,
    max_steps: int,
    num_train_epochs: float,
    accumulation_steps: int,
    batches_per_epoch: int | None,
    num_examples: int | None,
    total_batch_size: int,
) -> TrainingPlan:
    """HF's step arithmetic: ``max_steps = ceil(epochs · ceil(batches / GA))`` unless ``max_steps > 0``."""
    if batches_per_epoch is not None:
        updates = max(batches_per_epoch // accumulation_steps + int(batches_per_epoch % accumulation_steps > 0), 1)
        steps = math.ceil(num_train_epochs * updates) if max_steps < 0 else max_steps
        examples = num_examples if num_examples is not None else batches_per_epoch * total_batch_size
        if max_steps > 0:
            epochs, samples = steps // updates + int(steps % updates > 0), steps * total_batch_size
        else:
            epochs, samples = math.ceil(num_train_epochs), examples * num_train_epochs
        return TrainingPlan(steps, epochs, updates, batches_per_epoch, examples, samples)
    if max_steps > 0:
        return TrainingPlan(
            max_steps, sys.maxsize, max_steps, max_steps * accumulation_steps,
            total_batch_size * max_steps, max_steps * total_batch_size,
        )
    raise ValueError(
        f"The train_dataset does not implement __len__, so the number of training steps cannot be inferred; "
        f"`max_steps` has to be set to a positive value (got max_steps={max_steps}). The total number of steps must "
        "be known in advance to bound the training loop and to configure the learning rate scheduler."
    )


def precision(args: Any, env: Env) -> Any:
    """``precision`` as given (a Lightning string or plugin), else HF's flags as a Lightning precision string.

    ``fp16`` on a machine without CUDA trains in fp32, as HF does (Lightning would silently switch to bf16).
    """
    if getattr(args, "precision", None) is not None:
        return args.precision
    if args.bf16:
        return "bf16-mixed"
    if args.fp16:
        return "16-mixed" if env.has_cuda and not args.use_cpu else "32-true"
    return "32-true"


def lightning_trainer_kwargs(
    args: Any, env: Env, plan: TrainingPlan, interactive: bool = False, hidden_size: int | None = None
) -> dict[str, Any]:
    """Keyword arguments for ``lightning.Trainer`` (loggers and callbacks are added by the facade).

    Evaluation, logging and saving are decided by HF's flow in optimizer steps (the flow callback), never by
    Lightning's batch-counting ``val_check_interval`` / ``log_every_n_steps`` / ``ModelCheckpoint``.
    """
    devices, num_nodes = devices_and_nodes(args, env)
    strategy = lightning_strategy(args, env, interactive, plan.max_steps, hidden_size)
    kwargs = {
        "accelerator": accelerator(args, env),
        "devices": devices,
        "num_nodes": num_nodes,
        "strategy": strategy,
        "precision": precision(args, env),
        "accumulate_grad_batches": args.gradient_accumulation_steps,
        # clipping is done by the module (it also logs HF's pre-clip grad_norm); the value reaches strategies
        # such as DeepSpeed that clip on their own
        "gradient_clip_val": args.max_grad_norm if args.max_grad_norm > 0 else None,
        "gradient_clip_algorithm": "norm",
        "max_steps": plan.max_steps,
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
    return kwargs
