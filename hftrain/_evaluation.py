"""Gathering one evaluation pass into HF's ``EvalLoopOutput`` (trainer.py:2904 ``evaluation_loop``).

Lightning runs the loop; ``EvalCollector`` receives each batch from the LightningModule's validation / predict
step and keeps HF's semantics: per-batch losses repeated by the batch size (so ``eval_loss`` is the
sample-weighted mean of batch means), predictions and labels right-padded with -100 and concatenated,
``preprocess_logits_for_metrics`` applied after padding, ``compute_metrics`` called once with an
``EvalPrediction``, and every metric key prefixed (``eval_``, ``test_``, ``eval_<name>_``).
"""

from __future__ import annotations

import re
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
    is_prediction: bool = False  # predict() keeps every prediction even when metrics stream (HF does the same)


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
    pending: Any = None  # batch_eval_metrics: the last batch, scored once we know whether it is the final one
    metrics: dict[str, Any] | None = None

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
        # a torchmetrics Metric/MetricCollection is updated batch by batch: no prediction is kept for it
        self.metric = compute_metrics if _is_torchmetric(compute_metrics) else None
        self.batch_metrics = bool(args.batch_eval_metrics) and compute_metrics is not None and self.metric is None
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
        keep = run.request.is_prediction or not (self.metric is not None or self.batch_metrics)
        losses = loss.repeat(run.batch_size) if loss is not None else None
        if losses is not None:
            run.losses.add(losses)
        if logits is not None and self.preprocess_logits_for_metrics is not None:
            logits = self.preprocess_logits_for_metrics(logits, labels)
        if keep:
            if "inputs" in self.args.include_for_metrics:
                run.inputs.add(inputs[self.main_input_name])
            if logits is not None:
                run.preds.add(logits)
            if labels is not None:
                run.labels.add(labels)
        if logits is not None and labels is not None:
            self._stream(run, logits, labels, losses, inputs)
        self.on_batch()
        run.steps += 1
        every = self.args.eval_accumulation_steps
        if every is not None and run.steps % every == 0:  # move to CPU numpy every N batches, as HF
            for container in (run.losses, run.preds, run.labels, run.inputs):
                container.to_cpu_and_numpy()

    def _stream(self, run: _Pass, logits: Any, labels: Any, losses: Any, inputs: Any) -> None:
        if self.metric is not None:
            self.metric.to(labels.device if isinstance(labels, torch.Tensor) else "cpu")
            self.metric.update(logits, labels)
        elif self.batch_metrics:
            self._score_pending(run, compute_result=False)
            include = self.args.include_for_metrics
            run.pending = EvalPrediction(predictions=logits, label_ids=labels,
                                         losses=losses if "loss" in include else None,
                                         inputs=inputs if "inputs" in include else None)

    def _score_pending(self, run: _Pass, compute_result: bool) -> None:
        """HF's ``batch_eval_metrics``: ``compute_metrics(batch, compute_result=is_last_batch)``, last result kept."""
        if run.pending is not None:
            run.metrics = self.compute_metrics(run.pending, compute_result=compute_result)
            run.pending = None

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
        if self.metric is not None:
            metrics = _computed(self.metric)
        elif self.batch_metrics:
            self._score_pending(run, compute_result=True)
            metrics = run.metrics or {}
        elif self.compute_metrics is not None and preds is not None and labels is not None:
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


def _is_torchmetric(obj: Any) -> bool:
    if obj is None:
        return False
    try:
        from torchmetrics import Metric, MetricCollection
    except ImportError:  # pragma: no cover - torchmetrics is a dependency
        return False
    return isinstance(obj, (Metric, MetricCollection))


def _computed(metric: Any) -> dict[str, Any]:
    """``compute()`` then ``reset()``; a single Metric is named after its class (``MulticlassAccuracy`` →
    ``multiclass_accuracy``), a collection by its keys."""
    value = metric.compute()
    metric.reset()
    if isinstance(value, dict):
        return dict(value)
    name = re.sub(r"(?<!^)(?=[A-Z])", "_", type(metric).__name__).lower()
    return {name: value}
