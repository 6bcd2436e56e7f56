"""Gathering one evaluation pass into HF's ``EvalLoopOutput`` (trainer.py:2904 ``evaluation_loop``).

Lightning runs the loop; ``EvalCollector`` receives each batch from the LightningModule's validation / predict
step and keeps HF's semantics: per-batch losses repeated by the batch size (so ``eval_loss`` is the
sample-weighted mean of batch means), predictions and labels right-padded with -100 and concatenated,
``preprocess_logits_for_metrics`` applied after padding, ``compute_metrics`` called once with an
``EvalPrediction``, and every metric key prefixed (``eval_``, ``test_``, ``eval_<name>_``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers.trainer_pt_utils import EvalLoopContainer, find_batch_size, nested_truncate
from transformers.trainer_utils import EvalLoopOutput, EvalPrediction, denumpify_detensorize, has_length


@dataclass
class EvalRequest:
    """What one evaluation pass over one dataset needs; ``prefix`` is ``eval``, ``test`` or ``eval_<name>``."""

    prefix: str
    dataset: Any
    prediction_loss_only: bool
    ignore_keys: list[str] | None = None


@dataclass
class _Pass:
    request: EvalRequest
    batch_size: int
    do_concat: bool
    start_time: float = field(default_factory=time.time)
    observed: int = 0
    steps: int = 0
    losses: EvalLoopContainer = None  # type: ignore[assignment]
    preds: EvalLoopContainer = None  # type: ignore[assignment]
    labels: EvalLoopContainer = None  # type: ignore[assignment]
    inputs: EvalLoopContainer = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.losses, self.preds, self.labels, self.inputs = (
            EvalLoopContainer(self.do_concat, padding_index=-100) for _ in range(4)
        )


@dataclass
class EvalResult:
    prefix: str
    output: EvalLoopOutput
    start_time: float


class EvalCollector:
    """Accumulates HF's eval outputs for a list of datasets evaluated one after another (Lightning's
    ``dataloader_idx``), and turns each into an :class:`EvalResult` when its last batch has been seen."""

    def __init__(
        self,
        requests: list[EvalRequest],
        *,
        args: Any,
        prediction_step: Callable[..., tuple[Any, Any, Any]],
        main_input_name: str,
        compute_metrics: Callable | None,
        preprocess_logits_for_metrics: Callable | None,
        on_batch: Callable[[], None],
        losses_by_sample: bool = True,
    ) -> None:
        self.requests = requests
        self.args = args
        self.prediction_step = prediction_step
        self.main_input_name = main_input_name
        self.compute_metrics = compute_metrics
        self.preprocess_logits_for_metrics = preprocess_logits_for_metrics
        self.on_batch = on_batch
        self.losses_by_sample = losses_by_sample
        self.results: list[EvalResult] = []
        self._current: _Pass | None = None
        self._index = -1

    def step(self, model: torch.nn.Module, inputs: Any, dataloader_idx: int = 0) -> None:
        if dataloader_idx != self._index:
            self.finish()
            self._index = dataloader_idx
            self._current = _Pass(self.requests[dataloader_idx], self.args.eval_batch_size,
                                  self.args.eval_do_concat_batches)
        run = self._current
        assert run is not None
        observed = find_batch_size(inputs)
        if observed is not None:
            run.observed += observed
        loss, logits, labels = self.prediction_step(
            model, inputs, run.request.prediction_loss_only, ignore_keys=run.request.ignore_keys
        )
        if "inputs" in self.args.include_for_metrics:
            run.inputs.add(inputs[self.main_input_name])
        if loss is not None:
            run.losses.add(loss.repeat(run.batch_size))
        if logits is not None:
            if self.preprocess_logits_for_metrics is not None:
                logits = self.preprocess_logits_for_metrics(logits, labels)
            run.preds.add(logits)
        if labels is not None:
            run.labels.add(labels)
        self.on_batch()
        run.steps += 1
        every = self.args.eval_accumulation_steps
        if every is not None and run.steps % every == 0:  # move to CPU numpy every N batches, as HF
            for container in (run.losses, run.preds, run.labels, run.inputs):
                container.to_cpu_and_numpy()

    def finish(self) -> None:
        """Close the pass in progress, if any (called on a dataloader change and at the end of the loop)."""
        if self._current is not None:
            self.results.append(self._result(self._current))
            self._current = None

    def _result(self, run: _Pass) -> EvalResult:
        prefix, dataset = run.request.prefix, run.request.dataset
        losses, preds, labels, inputs = (c.get_arrays() for c in (run.losses, run.preds, run.labels, run.inputs))
        num_samples = len(dataset) if has_length(dataset) else run.observed
        if self.losses_by_sample and isinstance(losses, np.ndarray) and has_length(dataset):
            # HF's gather_for_metrics truncates the last batch's repeated loss to the real number of samples
            losses = nested_truncate(losses, num_samples)
        metrics: dict[str, Any] = {}
        if self.compute_metrics is not None and preds is not None and labels is not None:
            metrics = self.compute_metrics(
                EvalPrediction(
                    predictions=preds,
                    label_ids=labels,
                    inputs=inputs if "inputs" in self.args.include_for_metrics else None,
                    losses=losses if "loss" in self.args.include_for_metrics else None,
                )
            )
        metrics = denumpify_detensorize(metrics or {})
        if isinstance(losses, list) and losses:
            losses = np.concatenate(losses)
        if isinstance(losses, np.ndarray):
            finite = np.isfinite(losses)
            if self.args.logging_nan_inf_filter and finite.any():
                losses = losses[finite]
            metrics[f"{prefix}_loss"] = losses.mean().item()
        for key in list(metrics):
            if not key.startswith(f"{prefix}_"):
                metrics[f"{prefix}_{key}"] = metrics.pop(key)
        output = EvalLoopOutput(predictions=preds, label_ids=labels, metrics=metrics, num_samples=num_samples)
        return EvalResult(prefix, output, run.start_time)
