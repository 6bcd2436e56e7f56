"""How a micro-batch's loss is scaled before its backward, and what a model's loss does with ``num_items_in_batch``.

Pure functions of what they read; :mod:`hftrain._loop.step` calls them from ``Trainer.training_step``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def scale_loss(
    loss: torch.Tensor, *, scaled_for_ga: bool, accumulation_steps: int, share: float, normalises_by_num_items: bool
) -> torch.Tensor:
    """The loss to backpropagate (and to log) for one micro-batch.

    transformers divides a per-batch mean by the number of micro-batches in the window, and leaves a loss already
    normalised for the window (``scaled_for_ga``) as it is. Across processes hftrain also weighs this process's
    part by its ``share`` of the global batch (``rows × processes / global rows``), so that the average the
    processes' gradients get is the one-process gradient: a mean over an uneven slice counts for its rows, a
    stand-in row (share 0) for nothing. A loss normalised by ``num_items_in_batch`` needs no share: the count is
    already the window's over every process.

    Example:
        >>> scale_loss(torch.tensor(2.0), scaled_for_ga=False, accumulation_steps=4, share=1.0,
        ...            normalises_by_num_items=False)
        tensor(0.5000)
        >>> scale_loss(torch.tensor(2.0), scaled_for_ga=True, accumulation_steps=4, share=0.5,
        ...            normalises_by_num_items=True)
        tensor(2.)
    """
    if not scaled_for_ga:
        loss = loss / accumulation_steps
        return loss * share if share != 1.0 else loss
    if share == 0.0:
        return loss * 0.0  # a stand-in row: takes part in the backward, contributes nothing
    if share != 1.0 and not normalises_by_num_items:
        return loss * share  # a mean that ignored num_items_in_batch: weigh it like any mean
    return loss


def normalises_by_num_items(model: nn.Module, inputs: dict[str, Any], num_items: torch.Tensor) -> bool | None:
    """Whether the model's loss really divides by ``num_items_in_batch`` (a causal LM's does; a classifier that
    accepts ``**kwargs`` but returns a mean does not): its loss for the count and for twice the count. None when this
    batch cannot tell (no loss, or a zero or non-finite one). Two forward passes in eval mode without gradients and
    with the RNG state put back, so the training run's random stream is untouched.

    Example:
        >>> class Mean(nn.Module):
        ...     def forward(self, x, **kwargs):
        ...         return {"loss": x.mean()}
        >>> normalises_by_num_items(Mean(), {"x": torch.ones(2)}, torch.tensor(2))
        False
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=_rng_devices()):
            one = model(**inputs, num_items_in_batch=num_items)
            two = model(**inputs, num_items_in_batch=num_items * 2)
    finally:
        model.train(was_training)
    first, second = (_loss_of(output) for output in (one, two))
    if first is None or second is None or not torch.isfinite(first) or first == 0:
        return None
    return not torch.allclose(first, second)


def _loss_of(output: Any) -> torch.Tensor | None:
    loss = output.get("loss") if isinstance(output, dict) else output[0] if isinstance(output, (tuple, list)) else None
    return loss.detach().float() if isinstance(loss, torch.Tensor) and loss.numel() == 1 else None


def _rng_devices() -> list[int]:
    return [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
