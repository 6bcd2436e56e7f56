"""EvalCollector with batch_eval_metrics: when compute_metrics is called, with which compute_result, and what the
collector still holds (no Lightning, no model: a fake prediction_step; the loader's length comes in the request)."""

from __future__ import annotations

import collections
import logging
import math
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import IterableDataset

from hftrain._backends.ddp import Slice
from hftrain._loop.collector import EvalCollector, EvalRequest

ROWS = [2, 2, 1]  # three batches; the last one short


class _Owner:
    """Stands for hftrain.Trainer: prediction_step is its bound method; ``num_batches`` is the loader's length."""

    def __init__(self, num_batches: float, predicting: bool = False) -> None:
        self.num_batches = int(num_batches) if num_batches is not None and math.isfinite(num_batches) else None
        self.predicting = predicting
        self.forwards = 0
        self.collector: EvalCollector | None = None
        self.held: list[bool] = []  # at each forward pass: does the collector still hold an earlier batch?

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        self.forwards += 1
        run = self.collector._current
        self.held.append(run is not None and run.pending is not None)
        labels = inputs["labels"]
        logits = torch.nn.functional.one_hot(labels, 3).float()
        return torch.tensor(float(self.forwards)), logits, labels


def _args(**overrides):
    values = {"eval_batch_size": 2, "eval_do_concat_batches": True, "batch_eval_metrics": True,
              "include_for_metrics": [], "eval_accumulation_steps": None, "logging_nan_inf_filter": True}
    return SimpleNamespace(**{**values, **overrides})


def _batches():
    start = 0
    for rows in ROWS:
        yield {"labels": torch.arange(start, start + rows) % 3}
        start += rows


def _run(owner: _Owner, dataset=None, slices=None, **args):
    calls = []

    def compute(eval_pred, compute_result):
        losses = None if eval_pred.losses is None else eval_pred.losses.tolist()
        calls.append((owner.forwards, int(eval_pred.label_ids.shape[0]), compute_result, losses))
        return {"rows": sum(c[1] for c in calls)} if compute_result else {}

    request = EvalRequest("eval", dataset if dataset is not None else list(range(sum(ROWS))), False, slices=slices,
                          num_batches=owner.num_batches)
    collector = EvalCollector([request], args=_args(**args), prediction_step=owner.prediction_step,
                              main_input_name="input_ids", compute_metrics=compute,
                              preprocess_logits_for_metrics=None, on_batch=lambda: None)
    owner.collector = collector
    for batch in _batches():
        collector.step(None, batch)
    collector.finish()
    return calls, collector.results[0].output


@pytest.mark.parametrize("predicting", [False, True])
def test_a_known_length_scores_each_batch_right_after_its_forward(predicting):
    owner = _Owner(len(ROWS), predicting)
    calls, output = _run(owner)
    assert calls == [(1, 2, False, None), (2, 2, False, None), (3, 1, True, None)]
    assert owner.held == [False, False, False]
    assert output.metrics["eval_rows"] == 5 and output.predictions is None


@pytest.mark.parametrize("num_batches", [math.inf, None])  # a loader without len(); no Lightning trainer to ask
def test_an_unknown_length_holds_one_batch(num_batches):
    owner = _Owner(num_batches)
    if num_batches is None:
        owner.lightning_trainer = None
    calls, output = _run(owner)
    assert calls == [(2, 2, False, None), (3, 2, False, None), (3, 1, True, None)]
    assert owner.held == [False, True, True]
    assert output.metrics["eval_rows"] == 5


def test_an_iterable_dataset_does_not_trust_the_length():
    class Stream(IterableDataset):
        def __iter__(self):
            return iter(())

    calls, _ = _run(_Owner(len(ROWS)), dataset=Stream())
    assert [c[:3] for c in calls] == [(2, 2, False), (3, 2, False), (3, 1, True)]


def test_a_loader_shorter_than_its_length_is_reported(caplog):
    with caplog.at_level(logging.WARNING, logger="hftrain._loop.collector"):
        calls, _ = _run(_Owner(len(ROWS) + 1))
    assert [c[2] for c in calls] == [False, False, False]
    assert "never called with compute_result=True" in caplog.text


def test_sharded_pieces_are_scored_as_global_batches():
    """The several-processes path on one process: each piece is its own global batch, scored at once, with the
    batch loss rebuilt from the pieces and repeated over the global batch size."""
    slices = collections.deque(Slice(first, rows, rows, batch) for batch, (first, rows) in enumerate(
        [(0, 2), (2, 2), (4, 1)]))
    calls, output = _run(_Owner(len(ROWS)), slices=slices, include_for_metrics=["loss"])
    assert calls == [(1, 2, False, [1.0, 1.0]), (2, 2, False, [2.0, 2.0]), (3, 1, True, [3.0, 3.0])]
    assert output.metrics["eval_rows"] == 5 and output.metrics["eval_loss"] == pytest.approx((2 + 4 + 3) / 5)


@pytest.mark.parametrize("batch_metrics", [False, True])
def test_a_process_without_batches_still_closes_every_sharded_pass(batch_metrics):
    """1 eval row on 2 processes: rank 1 sees no batch, yet must join each pass's gathers (else rank 0 waits)."""
    requests = [EvalRequest(name, [0], False, slices=collections.deque()) for name in ("eval_a", "eval_b")]
    collector = EvalCollector(requests, args=_args(batch_eval_metrics=batch_metrics),
                              prediction_step=_Owner(1).prediction_step, main_input_name="input_ids",
                              compute_metrics=lambda pred, compute_result=False: {}, preprocess_logits_for_metrics=None,
                              on_batch=lambda: None)
    collector.finish()
    collector.finish()  # a second end-of-loop call adds nothing
    assert [r.prefix for r in collector.results] == ["eval_a", "eval_b"]
