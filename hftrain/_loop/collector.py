"""Gathering one evaluation pass into HF's ``EvalLoopOutput`` (transformers' ``Trainer.evaluation_loop``).

Lightning runs the loop; ``EvalCollector`` receives each batch from the LightningModule's validation / predict
step and keeps HF's semantics: per-batch losses repeated by the batch size (so ``eval_loss`` is the
sample-weighted mean of batch means), predictions and labels right-padded with -100 and concatenated,
``preprocess_logits_for_metrics`` applied after padding, ``compute_metrics`` called once with an
``EvalPrediction``, and every metric key prefixed (``eval_``, ``test_``, ``eval_<name>_``).

``batch_eval_metrics``: ``compute_metrics(batch, compute_result=is_last_batch)`` right after each batch's forward
pass, holding no prediction (transformers knows the last batch from accelerate's ``end_of_dataloader``; here it is
the loader's length, which Lightning also stops at). Only a loader without a length makes the collector hold one
batch until it knows whether another follows. Across processes every process scores each gathered global batch,
in dataset order, as one process with the whole batch would.
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
from transformers.trainer_pt_utils import EvalLoopContainer, find_batch_size, nested_concat, nested_truncate
from transformers.trainer_utils import EvalLoopOutput, EvalPrediction, denumpify_detensorize, has_length, speed_metrics

from hftrain._logging import trainer_logger

logger = trainer_logger()


@dataclass
class EvalRequest:
    """What one evaluation pass over one dataset needs; ``prefix`` is ``eval``, ``test`` or ``eval_<name>``."""

    prefix: str
    dataset: Any
    prediction_loss_only: bool
    ignore_keys: list[str] | None = None
    is_prediction: bool = False  # predict() keeps every prediction even when metrics stream (HF does the same)
    slices: Any = None  # several processes: the sharded sampler's Slice per batch (where each piece belongs)
    num_batches: int | None = None  # len(loader) when it has one: batch_eval_metrics knows the last batch


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
    num_batches: int | None = None  # batch_eval_metrics: batches of the pass (global ones across processes), if known
    scored: int = 0  # batch_eval_metrics: compute_metrics calls so far
    last_scored: bool = False  # batch_eval_metrics: the latest call had compute_result=True
    pending: Any = None  # batch_eval_metrics, length unknown: the last batch, until we know if it is the final one
    device: Any = None  # several processes: where this process's batches are (gathered batches are put back there)
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
            self._close()
            self._close_empty(range(self._index + 1, dataloader_idx))
            self._index = dataloader_idx
            self._current = self._new_pass(dataloader_idx)
        run = self._current
        assert run is not None
        observed = find_batch_size(inputs)
        if observed is not None:
            run.observed += observed
        loss, logits, labels = self.prediction_step(
            model, inputs, run.request.prediction_loss_only, ignore_keys=run.request.ignore_keys
        )
        keep = run.request.is_prediction or not (self.metric is not None or self.batch_metrics)
        # transformers' gather_for_metrics keeps each sample once: a batch's loss counts for the rows it has (a short
        # last batch, of an IterableDataset too); Seq2SeqTrainer's plain gather counts every batch as a full one
        repeat = observed if self.losses_by_sample and observed else run.batch_size
        losses = loss.repeat(repeat) if loss is not None else None
        piece, loss_piece = None, None
        if run.request.slices is not None:
            piece = run.request.slices.popleft()
            run.firsts.append(piece.first_index)
            if loss is not None:  # the batch loss is rebuilt from every rank's sum and weight once gathered
                count = self.count_items([inputs]) if self.count_items is not None else None
                weight = float(count) if count is not None else float(piece.rows)
                loss_piece = (piece.batch_id, float(loss), weight, piece.rows)
                run.loss_pieces.append(loss_piece)
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
        if self.batch_metrics and piece is not None:  # every process takes part in every batch's gather
            run.device = _device_of(logits, labels, run.device)
            include = self.args.include_for_metrics
            self._score_gathered(run, (piece.first_index, piece.batch_id, _to_cpu(logits), _to_cpu(labels),
                                       loss_piece, _to_cpu(inputs) if "inputs" in include else None))
        elif logits is not None and labels is not None:
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
            include = self.args.include_for_metrics
            self._score(run, EvalPrediction(predictions=logits, label_ids=labels,
                                            losses=losses if "loss" in include else None,
                                            inputs=inputs if "inputs" in include else None), run.steps)

    def _num_batches(self, dataloader_idx: int) -> int | None:
        """How many batches the pass over dataloader ``dataloader_idx`` has (None: no length, or an iterable
        dataset, whose length may not be the number of batches it yields)."""
        request = self.requests[dataloader_idx]
        if isinstance(request.dataset, torch.utils.data.IterableDataset):
            return None
        return request.num_batches

    def _score(self, run: _Pass, batch: EvalPrediction, index: int) -> None:
        """HF's ``batch_eval_metrics``: ``compute_metrics(batch, compute_result=is_last_batch)``, last result kept.
        ``index`` is the batch's place in the pass; with a known number of batches the batch is scored at once,
        otherwise it waits until the next batch (or the end of the pass) shows whether it was the last."""
        if run.num_batches is not None:
            self._call_batch_metrics(run, batch, compute_result=index == run.num_batches - 1)
        else:
            self._score_pending(run, compute_result=False)
            run.pending = batch

    def _call_batch_metrics(self, run: _Pass, batch: EvalPrediction, compute_result: bool) -> None:
        run.metrics = self.compute_metrics(batch, compute_result=compute_result)
        run.scored += 1
        run.last_scored = compute_result

    def _score_pending(self, run: _Pass, compute_result: bool) -> None:
        if run.pending is not None:
            batch, run.pending = run.pending, None
            self._call_batch_metrics(run, batch, compute_result)

    def _score_gathered(self, run: _Pass, mine: tuple | None) -> bool:
        """Several processes: gather this process's piece of the current global batch (None: it has none left),
        and score the global batch on every process. False when no process had a piece (the pass is over)."""
        from hftrain._backends.ddp import all_gather_objects

        gathered = all_gather_objects(mine)
        pieces = sorted((p for p in gathered if p is not None), key=lambda p: p[0])
        if not pieces:
            return False
        batch_id = pieces[0][1]
        logits, labels = (_concat([p[i] for p in pieces], run.device) for i in (2, 3))
        if logits is None or labels is None:
            return True
        include = self.args.include_for_metrics
        losses = None
        if "loss" in include and any(p[4] is not None for p in pieces):  # the global batch's loss, repeated
            value = _batch_losses([(0, p[4]) for p in pieces if p[4] is not None], by_sample=False)[0]
            losses = torch.full((run.batch_size * len(gathered),), float(value), device=run.device)
        inputs = None
        if "inputs" in include:
            try:
                inputs = _concat([p[5] for p in pieces], run.device)
            except (TypeError, AssertionError):  # not only tensors: this process's own, as transformers passes them
                inputs = mine[5] if mine is not None else None
        self._score(run, EvalPrediction(predictions=logits, label_ids=labels, losses=losses, inputs=inputs),
                    batch_id)
        return True

    def finish(self) -> None:
        """Close the pass in progress, if any, at the end of the loop."""
        self._close()
        self._close_empty(range(self._index + 1, len(self.requests)))
        self._index = len(self.requests)

    def _new_pass(self, index: int) -> _Pass:
        return _Pass(self.requests[index], self.args.eval_batch_size, self.args.eval_do_concat_batches,
                     num_batches=self._num_batches(index) if self.batch_metrics else None)

    def _close(self) -> None:
        if self._current is not None:
            self.results.append(self._result(self._current))
            self._current = None

    def _close_empty(self, indices: range) -> None:
        """A process that got no batch of a sharded pass (e.g. 1 row on 2 processes) still joins its gathers."""
        for index in indices:
            if self.requests[index].slices is not None:
                self.results.append(self._result(self._new_pass(index)))

    def _result(self, run: _Pass) -> EvalResult:
        prefix, dataset = run.request.prefix, run.request.dataset
        if run.request.slices is not None:
            if self.batch_metrics:  # join the gathers of the global batches other processes still have pieces of
                while self._score_gathered(run, None):
                    pass
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
            if run.scored and not run.last_scored:
                logger.warning(
                    "batch_eval_metrics: the eval loader yielded fewer batches than its length (%s), so "
                    "compute_metrics was never called with compute_result=True for %s.", run.num_batches, prefix,
                )
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
    from hftrain._backends.ddp import all_gather_objects

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


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    return value


def _to_device(value: Any, device: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device) if device is not None else value
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value


def _device_of(*values: Any) -> Any:
    """The device of the first tensor among ``values`` (the last one is the fallback, returned as is)."""
    *tensors, fallback = values
    for value in tensors:
        while isinstance(value, (list, tuple)) and value:
            value = value[0]
        if isinstance(value, torch.Tensor):
            return value.device
    return fallback


def _concat(values: list, device: Any) -> Any:
    """Pieces of one global batch, in dataset order, as one batch (right-padded with -100 like HF's gather)."""
    if any(v is None for v in values):
        return None
    merged = values[0]
    for value in values[1:]:
        merged = nested_concat(merged, value, padding_index=-100)
    return _to_device(merged, device)


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
