"""Gathering one evaluation pass into HF's ``EvalLoopOutput`` (trainer.py:2904 ``evaluation_loop``).

Lightning runs the loop; ``EvalCollector`` receives each batch from the LightningModule's validation / predict
step and keeps HF's semantics: per-batch losses repeated by the batch size (so ``eval_loss`` is the
sample-weighted mean of batch means), predictions and labels right-padded with -100 and concatenated,
``preprocess_logits_for_metrics`` applied after padding, ``compute_metrics`` called once with an
``EvalPrediction``, and every metric key prefixed (``eval_``, ``test_``, ``eval_<name>_``).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers.trainer_pt_utils import EvalLoopContainer, find_batch_size, nested_truncate
from transformers.trainer_utils import EvalLoopOutput, EvalPrediction, denumpify_detensorize, has_length, speed_metrics


@dataclass
class EvalRequest:
    """What one evaluation pass over one dataset needs; ``prefix`` is ``eval``, ``test`` or ``eval_<name>``."""

    prefix: str
    dataset: Any
    prediction_loss_only: bool
    ignore_keys: list[str] | None = None
    is_prediction: bool = False  # predict() keeps every prediction even when metrics stream (HF does the same)
    slices: Any = None  # several processes: the sharded sampler's Slice per batch (where each piece belongs)


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
    firsts: list[int] = field(default_factory=list)  # several processes: first sample index of each piece
    loss_pieces: list[tuple[int, float, float, int]] = field(default_factory=list)  # (batch id, loss, weight, rows)
    losses_by_sample: bool = True

    def __post_init__(self) -> None:
        # across processes, pieces are kept apart until they are gathered and put back in dataset order
        concat = self.do_concat and self.request.slices is None
        self.losses, self.preds, self.labels, self.inputs = (
            EvalLoopContainer(concat, padding_index=-100) for _ in range(4)
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
        count_items: Callable[[list], Any] | None = None,
    ) -> None:
        self.requests = requests
        self.args = args
        self.prediction_step = prediction_step
        self.main_input_name = main_input_name
        self.compute_metrics = compute_metrics
        self.preprocess_logits_for_metrics = preprocess_logits_for_metrics
        self.on_batch = on_batch
        self.losses_by_sample = losses_by_sample
        self.count_items = count_items
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
        if run.request.slices is not None:
            piece = run.request.slices.popleft()
            run.firsts.append(piece.first_index)
            if loss is not None:  # the batch loss is rebuilt from every rank's sum and weight once gathered
                count = self.count_items([inputs]) if self.count_items is not None else None
                weight = float(count) if count is not None else float(piece.rows)
                run.loss_pieces.append((piece.batch_id, float(loss), weight, piece.rows))
        elif losses is not None:
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
        if (every is not None and run.steps % every == 0) or run.request.slices is not None:  # to CPU numpy
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
        if run.request.slices is not None:
            run.losses_by_sample = self.losses_by_sample
            _merge_processes(run, self.args.eval_do_concat_batches)
        losses, preds, labels, inputs = (c.get_arrays() for c in (run.losses, run.preds, run.labels, run.inputs))
        num_samples = len(dataset) if has_length(dataset) else run.observed
        if self.losses_by_sample and run.request.slices is None and isinstance(losses, np.ndarray) and has_length(
            dataset
        ):
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


def _merge_processes(run: _Pass, do_concat: bool) -> None:
    """Gather every process's pieces and rebuild the containers in dataset order, each sample once."""
    from hftrain._distributed import all_gather_objects

    local = [run.firsts, run.loss_pieces, *(c.get_arrays() or [] for c in (run.preds, run.labels, run.inputs))]
    pieces, loss_pieces = [], []
    for firsts, losses, *columns in all_gather_objects(local):
        loss_pieces.extend(zip(firsts, losses))
        for i, first in enumerate(firsts):
            pieces.append((first, [column[i] if column else None for column in columns]))
    pieces.sort(key=lambda piece: piece[0])
    run.preds, run.labels, run.inputs = (EvalLoopContainer(do_concat, padding_index=-100) for _ in range(3))
    for _, values in pieces:
        for container, value in zip((run.preds, run.labels, run.inputs), values):
            if value is not None:
                container.add(_as_tensors(value))
    run.losses = EvalLoopContainer(True, padding_index=-100)
    if loss_pieces:
        run.losses.add(torch.as_tensor(_batch_losses(loss_pieces, run.losses_by_sample)))


def _batch_losses(pieces: list, by_sample: bool) -> np.ndarray:
    """Per-sample losses in dataset order, each sample carrying the loss of its single-process global batch:
    Σ loss·weight / Σ weight over the batch's pieces (weight = label tokens, or rows for a mean loss)."""
    sums: dict[int, list[float]] = {}
    for _, (batch, loss, weight, rows) in pieces:
        total = sums.setdefault(batch, [0.0, 0.0, 0])
        if weight > 0:
            total[0] += loss * weight
            total[1] += weight
        total[2] += rows
    batch_loss = {b: (s / w if w else float("nan")) for b, (s, w, _) in sums.items()}
    if not by_sample:  # Seq2SeqTrainer: a plain mean over batches
        return np.array([batch_loss[b] for b in sorted(batch_loss)], dtype=np.float32)
    ordered = sorted(pieces, key=lambda piece: piece[0])
    return np.concatenate([np.full(rows, batch_loss[batch], dtype=np.float32)
                           for _, (batch, _, _, rows) in ordered if rows > 0])


def _as_tensors(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_as_tensors(v) for v in value)
    if isinstance(value, dict):
        return {k: _as_tensors(v) for k, v in value.items()}
    return value


def add_speed_metrics(result: EvalResult, total_batch_size: int) -> dict[str, Any]:
    """HF's ``<prefix>_runtime / _samples_per_second / _steps_per_second``. The pass's clock starts at its first
    batch, after any preparation, so (unlike HF's) it needs no preparation time subtracted."""
    metrics, n = result.output.metrics, result.output.num_samples
    metrics.update(speed_metrics(result.prefix, result.start_time, num_samples=n, num_steps=math.ceil(n / total_batch_size)))
    return metrics
