"""HF's loss and prediction contract for any model returning a ``ModelOutput`` or a tuple.

``compute_loss`` and ``prediction_step`` are HF's ``Trainer`` methods of the same names (trainer.py:2130, :3193)
as pure functions of what they read, so the facade's overridable methods stay one-liners.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
from transformers.trainer_pt_utils import nested_detach
from transformers.utils import can_return_loss, find_labels


@dataclass(frozen=True, slots=True)
class ModelContract:
    """What HF's Trainer learns about a model by inspecting it (trainer.py:505-560).

    Example:
        >>> from torch import nn
        >>> ModelContract.inspect(nn.Linear(2, 2), label_names=None).label_names
        []
    """

    accepts_loss_kwargs: bool  # forward(**kwargs): the model normalises by num_items_in_batch itself
    label_names: list[str]
    can_return_loss: bool
    shifts_labels: bool  # causal-LM loss: count labels[..., 1:] for num_items_in_batch
    is_causal_lm: bool  # the label smoother shifts labels for these classes

    @classmethod
    def inspect(cls, model: nn.Module, label_names: list[str] | None) -> ModelContract:
        if hasattr(model, "accepts_loss_kwargs"):
            accepts = bool(model.accepts_loss_kwargs)
        else:
            params = inspect.signature(model.forward).parameters.values()
            accepts = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params)
        config = getattr(model, "config", None)
        # transformers' loss module imports accelerate; any HF model has imported it already, a plain one needn't
        from transformers.loss.loss_utils import LOSS_MAPPING, ForCausalLMLoss

        shifts = LOSS_MAPPING.get(getattr(model, "loss_type", None)) is ForCausalLMLoss and not getattr(
            config, "is_encoder_decoder", False
        )
        return cls(
            accepts_loss_kwargs=accepts,
            label_names=find_labels(model.__class__) if label_names is None else list(label_names),
            can_return_loss=can_return_loss(model.__class__),
            shifts_labels=shifts,
            is_causal_lm=model._get_name() in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values(),
        )


def compute_loss(
    model: nn.Module,
    inputs: dict[str, Any],
    *,
    contract: ModelContract,
    label_smoother: Callable | None,
    compute_loss_func: Callable | None,
    num_items_in_batch: torch.Tensor | int | None,
    return_outputs: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, Any]:
    """The loss of one micro-batch, with HF's label smoothing, ``compute_loss_func`` and token normalisation."""
    labels = inputs.pop("labels") if (label_smoother or compute_loss_func) and "labels" in inputs else None
    if contract.accepts_loss_kwargs and num_items_in_batch is not None:
        inputs = {**inputs, "num_items_in_batch": num_items_in_batch}
    outputs = model(**inputs)
    if compute_loss_func is not None:
        loss = compute_loss_func(outputs, labels, num_items_in_batch=num_items_in_batch)
    elif labels is not None:
        loss = label_smoother(
            outputs, labels, shift_labels=contract.is_causal_lm, num_items_in_batch=num_items_in_batch
        )
    else:
        if isinstance(outputs, dict) and "loss" not in outputs:
            raise ValueError(
                "The model did not return a loss from the inputs, only the following keys: "
                f"{','.join(outputs.keys())}. For reference, the inputs it received are {','.join(inputs.keys())}. "
                "Pass the labels under a name listed in `label_names`, or return the loss first from forward()."
            )
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs[0]
        if loss is None or not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ValueError(
                f"{type(model).__name__} returned no loss for inputs {sorted(inputs)}: its first output is not a "
                "scalar loss. Pass labels (see `TrainingArguments.label_names`), return the loss first from "
                "forward(), or pass a `compute_loss_func` to the Trainer."
            )
    # HF multiplies by the world size here (its count is the sum over ranks); hftrain's count is already divided
    # by the world size (see hftrain._backends.ddp), so nothing to do: on one process the two are the same number.
    return (loss, outputs) if return_outputs else loss


def prediction_step(
    model: nn.Module,
    inputs: dict[str, Any],
    prediction_loss_only: bool,
    *,
    contract: ModelContract,
    ignore_keys: list[str] | None,
    loss_fn: Callable[..., tuple[torch.Tensor, Any]],
    count_items: Callable[[list], Any],
) -> tuple[torch.Tensor | None, Any, Any]:
    """``(loss, logits, labels)`` for one evaluation batch, as HF's ``Trainer.prediction_step``."""
    names = contract.label_names
    has_labels = bool(names) and all(inputs.get(k) is not None for k in names)
    return_loss = inputs.get("return_loss")
    loss_without_labels = not names and (contract.can_return_loss if return_loss is None else return_loss)
    if ignore_keys is None:
        config = getattr(model, "config", None)
        ignore_keys = getattr(config, "keys_to_ignore_at_inference", ["cache"]) if config is not None else []
    labels = None
    if has_labels or loss_without_labels:
        labels = nested_detach(tuple(inputs.get(name) for name in names))
        labels = labels[0] if len(labels) == 1 else labels
    with torch.no_grad():
        if has_labels or loss_without_labels:
            loss, outputs = loss_fn(model, inputs, return_outputs=True, num_items_in_batch=count_items([inputs]))
            loss = loss.detach().mean()
            skip = [*ignore_keys, "loss"]
            logits = tuple(v for k, v in outputs.items() if k not in skip) if isinstance(outputs, dict) else outputs[1:]
        else:
            loss = None
            outputs = model(**inputs)
            logits = tuple(v for k, v in outputs.items() if k not in ignore_keys) if isinstance(outputs, dict) else outputs
    if prediction_loss_only:
        return loss, None, None
    logits = nested_detach(logits)
    return loss, logits[0] if len(logits) == 1 else logits, labels


def normalises_by_num_items(model: nn.Module, inputs: dict[str, Any], num_items: torch.Tensor) -> bool:
    """Whether the model's loss really divides by ``num_items_in_batch`` (a causal LM's does; a classifier that
    accepts ``**kwargs`` but returns a mean does not). Two forward passes in eval mode with the RNG state put back,
    so the training run's random stream is untouched."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            one = model(**inputs, num_items_in_batch=num_items)
            two = model(**inputs, num_items_in_batch=num_items * 2)
    finally:
        model.train(was_training)
    first = one["loss"] if isinstance(one, dict) else one[0]
    second = two["loss"] if isinstance(two, dict) else two[0]
    return not torch.allclose(first, second)
