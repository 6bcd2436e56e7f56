"""Optimizer and LR scheduler built from ``TrainingArguments`` exactly as HF's Trainer builds them.

Parity depends on three details (hf_trainer_semantics.md §4.4-4.5): the two parameter groups (decay /
no-decay, in ``named_parameters()`` order, both always present), the optimizer class and kwargs for each
``optim`` name (the default is *fused* AdamW), and ``transformers.get_scheduler`` with HF's warmup arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers.optimization import Adafactor, get_scheduler
from transformers.trainer_pt_utils import get_parameter_names

# HF's `get_decay_parameter_names`: no decay inside LayerNorm modules or for names matching these patterns.
NO_DECAY_PATTERNS = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]

# optim names whose optimizer lives in a package hftrain does not depend on, with the package to install
_PACKAGE_GATED = {
    "adamw_torch_xla": "torch_xla",
    "adamw_torch_npu_fused": "torch_npu",
    "adamw_anyprecision": "torchdistx",
    "adamw_torch_4bit": "torchao",
    "adamw_torch_8bit": "torchao",
    "stable_adamw": "torch-optimi",
    "grokadamw": "grokadamw",
    "lomo": "lomo-optim",
    "adalomo": "lomo-optim",
}


def decay_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters that get weight decay (HF ``Trainer.get_decay_parameter_names``)."""
    return get_parameter_names(model, [nn.LayerNorm], NO_DECAY_PATTERNS)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """HF's two groups: decayed parameters first, then the rest with ``weight_decay=0``; frozen ones left out."""
    decay = set(decay_parameter_names(model))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in named if n in decay], "weight_decay": weight_decay},
        {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
    ]


def parse_optim_args(optim_args: str | None) -> dict[str, str]:
    """``"momentum=0.9,nesterov=True"`` → ``{"momentum": "0.9", "nesterov": "True"}`` (HF ``_parse_optim_args``)."""
    if not optim_args:
        return {}
    return dict(pair.split("=", 1) for pair in optim_args.replace(" ", "").split(","))


def _floats(extra: dict[str, str], keys: tuple[str, ...], flags: tuple[str, ...] = ()) -> dict[str, Any]:
    kwargs: dict[str, Any] = {k: float(extra[k]) for k in keys if k in extra}
    kwargs.update({k: extra[k].lower() in ("true", "1", "yes") for k in flags if k in extra})
    return kwargs


def optimizer_cls_and_kwargs(args: Any) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
    """The optimizer class and keyword arguments for ``args.optim`` (HF ``Trainer.get_optimizer_cls_and_kwargs``).

    Example:
        >>> from hftrain import TrainingArguments
        >>> cls, kwargs = optimizer_cls_and_kwargs(TrainingArguments("out", optim="sgd", optim_args="momentum=0.9"))
        >>> cls.__name__, kwargs
        ('SGD', {'lr': 5e-05, 'momentum': 0.9})
    """
    name = str(getattr(args.optim, "value", args.optim))
    kwargs: dict[str, Any] = {"lr": args.learning_rate}
    adam = {"betas": (args.adam_beta1, args.adam_beta2), "eps": args.adam_epsilon}
    extra = parse_optim_args(args.optim_args)
    if name in ("adamw_torch", "adamw_torch_fused"):
        return torch.optim.AdamW, {**kwargs, **adam, **({"fused": True} if name == "adamw_torch_fused" else {})}
    if name == "adafactor":
        return Adafactor, {**kwargs, "scale_parameter": False, "relative_step": False}
    if name == "sgd":
        return torch.optim.SGD, {**kwargs, **_floats(extra, ("momentum", "dampening", "weight_decay"), ("nesterov",))}
    if name == "adagrad":
        return torch.optim.Adagrad, {**kwargs, **_floats(extra, ("lr_decay", "weight_decay", "eps"))}
    if name == "rmsprop":
        return torch.optim.RMSprop, {
            **kwargs,
            **_floats(extra, ("momentum", "alpha", "eps", "weight_decay"), ("centered",)),
        }
    package = _PACKAGE_GATED.get(name, "bitsandbytes" if "8bit" in name or "paged" in name or "lion" in name or
                                 "bnb" in name or "ademamix" in name else None)
    hint = f" It needs the `{package}` package, which hftrain does not integrate yet." if package else ""
    raise ValueError(
        f"`optim={name!r}` is not supported by hftrain.{hint} Use one of adamw_torch_fused (the default), "
        "adamw_torch, adafactor, sgd, adagrad, rmsprop, or pass your own `optimizers=(optimizer, scheduler)`."
    )


def create_optimizer(model: nn.Module, args: Any) -> torch.optim.Optimizer:
    """AdamW (or ``args.optim``) over HF's decay / no-decay groups."""
    cls, kwargs = optimizer_cls_and_kwargs(args)
    return cls(parameter_groups(model, args.weight_decay), **kwargs)


def create_scheduler(optimizer: torch.optim.Optimizer, args: Any, num_training_steps: int) -> Any:
    """``transformers.get_scheduler`` with HF's warmup (an int, or a ratio of the steps when below 1)."""
    return get_scheduler(
        str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
        optimizer=optimizer,
        num_warmup_steps=args.get_warmup_steps(num_training_steps),
        num_training_steps=num_training_steps,
        scheduler_specific_kwargs=args.lr_scheduler_kwargs or {},
    )


def is_metric_driven(scheduler: Any) -> bool:
    """Plateau-style schedulers step after an evaluation with a metric, never per optimizer step (HF)."""
    return isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) or type(scheduler).__name__ == "GreedyLR"


