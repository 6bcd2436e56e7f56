"""Process and model switches HF's Trainer sets from the arguments: log verbosity, TF32, activation checkpointing."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from transformers.utils import logging as hf_logging


def apply_process_settings(args: Any) -> None:
    """``log_level`` (``passive`` leaves transformers' verbosity alone) and ``tf32`` (None leaves it alone)."""
    level = args.get_process_log_level()
    if level != -1 and args.log_level != "passive" or not args.should_log:
        hf_logging.set_verbosity(level)
    if args.tf32 is not None and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32


def enable_activation_checkpointing(model: torch.nn.Module, args: Any) -> None:
    """HF (trainer.py:1503): ``every_n_layers`` and ``offload`` are taken out, the rest goes to torch's checkpoint.

    ``fsdp_config["activation_checkpointing"]`` (FSDP's own switch in HF) checkpoints the same layers.
    """
    if not (args.activation_checkpointing or (args.fsdp_config or {}).get("activation_checkpointing")):
        return
    kwargs = dict(args.activation_checkpointing_kwargs or {})
    every_n_layers, offload = kwargs.pop("every_n_layers", 1), kwargs.pop("offload", False)
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(
            activation_checkpointing_kwargs=kwargs or None, every_n_layers=every_n_layers, offload=offload
        )
    elif hasattr(model, "gradient_checkpointing_enable"):
        warnings.warn(
            f"`{type(model).__name__}` only defines `gradient_checkpointing_enable`, which is deprecated; define "
            "`activation_checkpointing_enable` instead.", FutureWarning, stacklevel=3,
        )
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs or None)
    else:
        raise ValueError(
            f"`activation_checkpointing=True` but {type(model).__name__} has no activation_checkpointing_enable(): "
            "set activation_checkpointing=False or use a transformers PreTrainedModel."
        )
