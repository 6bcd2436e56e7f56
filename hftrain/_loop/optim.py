"""Optimizer and LR scheduler built from ``TrainingArguments`` exactly as HF's Trainer builds them.

Parity depends on three details (hf_trainer_semantics.md §4.4-4.5): the two parameter groups (decay /
no-decay, in ``named_parameters()`` order, both always present), the optimizer class and kwargs for each
``optim`` name (the default is *fused* AdamW), and ``transformers.get_scheduler`` with HF's warmup arithmetic.
"""

from __future__ import annotations

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
    hint = f" It needs the `{package}` package: `pip install {package}`." if package else ""
    raise ValueError(
        f"`optim={name!r}` is not supported by hftrain.{hint} Use one of adamw_torch_fused (the default), "
        "adamw_torch, adafactor, sgd, adagrad, rmsprop, or pass your own `optimizers=(optimizer, scheduler)` or "
        "`optimizer_cls_and_kwargs=(cls, kwargs)`."
    )


def create_optimizer(model: nn.Module, args: Any) -> torch.optim.Optimizer:
    """AdamW (or ``args.optim``) over HF's decay / no-decay groups."""
    cls, kwargs = optimizer_cls_and_kwargs(args)
    return cls(parameter_groups(model, args.weight_decay), **kwargs)


def create_scheduler(optimizer: torch.optim.Optimizer, args: Any, num_training_steps: int) -> Any:
    """``transformers.get_scheduler`` with HF's warmup (an int, or a ratio of the steps when below 1).

    A layer-wise optimizer (GaLore / APOLLO ``*_layerwise``: one optimizer per parameter, stepped by a hook after its
    gradient) gets one scheduler per parameter, stepped by the same hook, and the schedule over its placeholder
    optimizer, which is what ``learning_rate`` logs. transformers 5.24 hands ``get_scheduler`` the accelerate-wrapped
    optimizer, so its layer-wise branch never runs: the log shows the decaying rate while every layer trains at the
    initial one (and that branch fails under torch >= 2.13, whose schedulers check one rate per parameter group).
    """
    from transformers.trainer_pt_utils import LayerWiseDummyOptimizer

    def scheduler(optimizer: torch.optim.Optimizer) -> Any:
        return get_scheduler(
            str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
            optimizer=optimizer,
            num_warmup_steps=args.get_warmup_steps(num_training_steps),
            num_training_steps=num_training_steps,
            scheduler_specific_kwargs=args.lr_scheduler_kwargs or {},
        )

    if not (isinstance(optimizer, LayerWiseDummyOptimizer) and optimizer.optimizer_dict):
        return scheduler(optimizer)
    for param, layer in optimizer.optimizer_dict.items():
        if param.requires_grad:
            param.register_post_accumulate_grad_hook(lambda _, step=scheduler(layer).step: step())
    optimizer.__class__ = _Placeholder  # the placeholder's own schedule, not get_scheduler's layer-wise branch
    try:
        return scheduler(optimizer)
    finally:
        optimizer.__class__ = LayerWiseDummyOptimizer


class _Placeholder(torch.optim.Optimizer):
    """A layer-wise optimizer's placeholder, as a plain optimizer while its schedule is built (``create_scheduler``)."""

    def step(self, closure: Any = None) -> None:
        return None


def is_metric_driven(scheduler: Any) -> bool:
    """Plateau-style schedulers step after an evaluation with a metric, never per optimizer step (HF)."""
    return isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) or type(scheduler).__name__ == "GreedyLR"




def is_optimizer_factory(optimizer_cls: Any) -> bool:
    """transformers' rule: anything but a ``torch.optim.Optimizer`` class builds the optimizer from the model."""
    return not (isinstance(optimizer_cls, type) and issubclass(optimizer_cls, torch.optim.Optimizer))


class OptimizerMethods:
    """transformers.Trainer's optimizer and scheduler methods."""

    def create_optimizer_and_scheduler(self, num_training_steps: int) -> None:
        """``create_optimizer()`` then ``create_scheduler(num_training_steps)`` (transformers' own ``train`` calls
        the two separately, and so does hftrain's)."""
        self.create_optimizer()
        self.create_scheduler(num_training_steps=num_training_steps)

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """AdamW (or ``args.optim``, or ``optimizer_cls_and_kwargs``) over the decay / no-decay groups, unless an
        optimizer was given."""
        opt_model = self.model if model is None else model
        if self.optimizer is None:
            decay_parameters = self.get_decay_parameter_names(opt_model)
            named = [(n, p) for n, p in opt_model.named_parameters() if p.requires_grad]
            groups: Any = [
                {"params": [p for n, p in named if n in decay_parameters], "weight_decay": self.args.weight_decay},
                {"params": [p for n, p in named if n not in decay_parameters], "weight_decay": 0.0},
            ]
            if self.optimizer_cls_and_kwargs is not None:
                optimizer_cls, optimizer_kwargs = self.optimizer_cls_and_kwargs
            else:
                optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            optimizer_kwargs = dict(optimizer_kwargs)
            if is_optimizer_factory(optimizer_cls):
                self.optimizer = optimizer_cls()(opt_model, **optimizer_kwargs)
            else:
                for key in ("params", "model", "optimizer_dict"):  # handlers that group the parameters themselves
                    if key in optimizer_kwargs:
                        groups = optimizer_kwargs.pop(key)
                self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
            if "bitsandbytes" in str(optimizer_cls) and optimizer_kwargs.get("optim_bits") == 8:
                keep_embeddings_in_fp32(opt_model)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None) -> Any:
        """``lr_scheduler_type`` with HF's warmup, unless a scheduler was given."""
        if self.lr_scheduler is None:
            self.lr_scheduler = create_scheduler(optimizer if optimizer is not None else self.optimizer, self.args,
                                                 num_training_steps)
            self._created_lr_scheduler = True
        return self.lr_scheduler

    @staticmethod
    def get_optimizer_cls_and_kwargs(args: Any, model: nn.Module | None = None) -> tuple[Any, Any]:
        """The optimizer class and keyword arguments for ``args.optim`` / ``args.optim_args``.

        hftrain builds the torch and transformers optimizers itself; for the others (bitsandbytes, GaLore,
        LOMO…) transformers' own table is used, and needs their packages."""
        try:
            return optimizer_cls_and_kwargs(args)
        except ValueError as unsupported:
            from transformers.trainer_optimizer import _OPTIMIZER_HANDLERS, OptimizerContext, _parse_optim_args

            handler = _OPTIMIZER_HANDLERS.get(args.optim)
            if handler is None:
                raise
            context = OptimizerContext(
                args=args, model=model, optimizer_kwargs={"lr": args.learning_rate},
                adam_kwargs={"betas": (args.adam_beta1, args.adam_beta2), "eps": args.adam_epsilon},
                optim_args=_parse_optim_args(args.optim_args),
            )
            try:
                return handler(context)
            except ImportError as missing:  # an ImportError, as transformers raises it, naming the package
                raise ImportError(str(unsupported)) from missing

    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        """The parameters that get weight decay: not in a LayerNorm, not a bias or a norm by name."""
        return decay_parameter_names(model)


def keep_embeddings_in_fp32(model: nn.Module) -> None:
    """bitsandbytes' 8-bit optimizers: the embeddings keep 32-bit optimizer states, as transformers registers them
    (8-bit states for embeddings are unstable, bitsandbytes' own advice)."""
    import bitsandbytes

    manager = bitsandbytes.optim.GlobalOptimManager.get_instance()
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            manager.register_module_override(module, "weight", {"optim_bits": 32})
