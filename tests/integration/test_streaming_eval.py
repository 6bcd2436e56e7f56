"""Evaluation options: torchmetrics as compute_metrics (streamed), batch_eval_metrics, include_for_metrics,
eval_do_concat_batches, *_full_eval — each against what transformers.Trainer gives."""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

import hftrain
from tests.helpers import accuracy, classification_rows, tiny_bert_classifier

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _eval_trainer(cls, args_cls, tmp_path, name, model, **kwargs):
    extra = {k: kwargs.pop(k) for k in list(kwargs) if k in ("batch_eval_metrics", "include_for_metrics",
                                                             "eval_do_concat_batches", "bf16_full_eval")}
    args = args_cls(str(tmp_path / name), per_device_eval_batch_size=4, report_to="none", disable_tqdm=True,
                    use_cpu=True, **extra)
    return cls(model=copy.deepcopy(model), args=args, **kwargs)


def test_torchmetrics_collection_streams_and_matches_numpy_metrics(tmp_path):
    model = tiny_bert_classifier()
    data = classification_rows(22, seed=5)
    reference = _eval_trainer(hftrain.Trainer, hftrain.TrainingArguments, tmp_path, "ref", model,
                              compute_metrics=accuracy).evaluate(data)
    metrics = MetricCollection({"accuracy": MulticlassAccuracy(3, average="micro"),
                                "f1": MulticlassF1Score(3, average="macro")})
    trainer = _eval_trainer(hftrain.Trainer, hftrain.TrainingArguments, tmp_path, "tm", model,
                            compute_metrics=metrics)
    streamed = trainer.evaluate(data)
    assert streamed["eval_accuracy"] == pytest.approx(reference["eval_accuracy"])
    assert streamed["eval_loss"] == pytest.approx(reference["eval_loss"])
    assert 0.0 <= streamed["eval_f1"] <= 1.0
    assert trainer._eval_collector.results[0].output.predictions is None  # nothing was held
    again = trainer.evaluate(data)  # the metric was reset after compute()
    assert again["eval_accuracy"] == pytest.approx(streamed["eval_accuracy"])
    single = _eval_trainer(hftrain.Trainer, hftrain.TrainingArguments, tmp_path, "one", model,
                           compute_metrics=MulticlassAccuracy(3, average="micro")).evaluate(data)
    assert single["eval_multiclass_accuracy"] == pytest.approx(reference["eval_accuracy"])
    # predict() still returns every prediction
    out = trainer.predict(data)
    assert out.predictions.shape == (22, 3) and out.metrics["test_accuracy"] == pytest.approx(
        reference["eval_accuracy"])


def _batch_accuracy(calls=None, forwards=None):
    """batch_eval_metrics accuracy; ``calls`` records (rows, compute_result, forward passes so far, mean loss)."""
    state = {"correct": 0, "total": 0}

    def compute(eval_pred, compute_result):
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        if calls is not None:
            loss = None if eval_pred.losses is None else round(float(eval_pred.losses.float().mean()), 5)
            calls.append((int(labels.shape[0]), bool(compute_result), forwards[0] if forwards else None, loss))
        state["correct"] += int((logits.argmax(-1) == labels).sum())
        state["total"] += int(labels.numel())
        if compute_result:
            result = {"accuracy": state["correct"] / state["total"], "batches_seen": state["total"]}
            state.update(correct=0, total=0)
            return result
        return {}

    return compute


def _count_forwards(trainer) -> list[int]:
    forwards = [0]
    trainer.model.register_forward_hook(lambda *_: forwards.__setitem__(0, forwards[0] + 1))
    return forwards


def test_batch_eval_metrics_matches_transformers(tmp_path):
    model = tiny_bert_classifier()
    data = classification_rows(22, seed=5)  # 6 batches of 4, the last one of 2
    runs = {}
    for name, cls, args_cls in (("hf", transformers.Trainer, transformers.TrainingArguments),
                                ("ours", hftrain.Trainer, hftrain.TrainingArguments)):
        calls = []
        trainer = _eval_trainer(cls, args_cls, tmp_path, name, model, batch_eval_metrics=True)
        trainer.compute_metrics = _batch_accuracy(calls, _count_forwards(trainer))
        runs[name] = trainer.evaluate(data), calls
    (hf, hf_calls), (ours, our_calls) = runs["hf"], runs["ours"]
    for key in ("eval_loss", "eval_accuracy", "eval_batches_seen"):
        assert ours[key] == pytest.approx(hf[key])
    # each batch is scored right after its own forward pass (nothing held until the next batch), and
    # compute_result=True comes exactly with the last batch: one call per batch, as transformers does
    assert our_calls == hf_calls == [(4, False, k, None) for k in range(1, 6)] + [(2, True, 6, None)]
    with pytest.raises(ValueError, match="must take a `compute_result`"):
        _eval_trainer(hftrain.Trainer, hftrain.TrainingArguments, tmp_path, "bad", model,
                      compute_metrics=accuracy, batch_eval_metrics=True)


def test_batch_eval_metrics_scores_each_batch_at_once_everywhere(tmp_path):
    """In-training evaluation, several eval datasets and predict(): every pass knows its number of batches."""
    model = tiny_bert_classifier()
    a, b = classification_rows(10, seed=1), classification_rows(5, seed=2)  # 3 and 2 batches of 4
    calls = []
    trainer = hftrain.Trainer(
        model=copy.deepcopy(model), train_dataset=classification_rows(8, seed=3), eval_dataset={"a": a, "b": b},
        args=hftrain.TrainingArguments(str(tmp_path / "train"), per_device_eval_batch_size=4, report_to="none",
                                       disable_tqdm=True, use_cpu=True, batch_eval_metrics=True, max_steps=1,
                                       eval_strategy="steps", eval_steps=1, save_strategy="no"),
    )
    forwards = _count_forwards(trainer)
    trainer.compute_metrics = _batch_accuracy(calls, forwards)

    def expected(first, *sizes):
        out, k = [], first
        for size in sizes:
            out += [(min(4, size - i), i + 4 >= size, k + i // 4 + 1, None) for i in range(0, size, 4)]
            k += (size + 3) // 4
        return out

    trainer.train()  # one training forward, then the in-training evaluation of a and b
    assert calls == expected(1, 10, 5)
    done = forwards[0]
    calls.clear()
    metrics = trainer.evaluate()
    assert calls == expected(done, 10, 5)
    assert metrics["eval_a_batches_seen"] == 10 and metrics["eval_b_batches_seen"] == 5
    calls.clear()
    out = trainer.predict(a)
    assert calls == expected(forwards[0] - 3, 10)
    assert out.metrics["test_batches_seen"] == 10 and out.predictions.shape == (10, 3)


def test_batch_eval_metrics_without_a_length_waits_for_the_next_batch(tmp_path):
    """A loader without a length: the last batch is only known at the end, so each batch is scored one batch late
    (the same calls and results otherwise)."""
    model = tiny_bert_classifier()
    rows = classification_rows(10, seed=1)

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield from rows.rows

    results = {}
    for name, data in (("sized", rows), ("stream", Stream())):
        calls = []
        trainer = _eval_trainer(hftrain.Trainer, hftrain.TrainingArguments, tmp_path, name, model,
                                batch_eval_metrics=True, include_for_metrics=["loss"])
        trainer.compute_metrics = _batch_accuracy(calls, _count_forwards(trainer))
        results[name] = trainer.evaluate(data), calls
    (sized, sized_calls), (stream, stream_calls) = results["sized"], results["stream"]
    assert [c[2] for c in sized_calls] == [1, 2, 3] and [c[2] for c in stream_calls] == [2, 3, 3]
    assert [c[:2] + c[3:] for c in stream_calls] == [c[:2] + c[3:] for c in sized_calls]
    assert [c[1] for c in sized_calls] == [False, False, True]
    assert stream["eval_accuracy"] == sized["eval_accuracy"] and stream["eval_batches_seen"] == 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_batch_metrics(out: str, per_device: int) -> dict:
    """One process's batch_eval_metrics run (under torchrun, or in the test's own process)."""
    calls = []
    args = hftrain.TrainingArguments(out, per_device_eval_batch_size=per_device, report_to="none", disable_tqdm=True,
                                     use_cpu=True, batch_eval_metrics=True, include_for_metrics=["loss"])
    trainer = hftrain.Trainer(model=tiny_bert_classifier(), args=args, compute_metrics=_batch_accuracy(calls))
    metrics = trainer.evaluate(classification_rows(9, seed=4))
    return {"calls": calls, "metrics": {k: v for k, v in metrics.items() if not k.endswith(
        ("runtime", "per_second", "preparation_time"))}}


def test_batch_eval_metrics_two_processes_match_one(tmp_path):
    """Each process scores every gathered global batch, in dataset order, with compute_result=True on the last;
    9 rows in global batches of 2 × 4: the second process has no piece of the last batch and joins its gather
    when its own batches are over."""
    one = json.loads(json.dumps(_ddp_batch_metrics(str(tmp_path / "one"), 8)))
    assert [c[:2] for c in one["calls"]] == [[8, False], [1, True]]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
               "--master_addr=127.0.0.1", "-m", "tests.integration.test_streaming_eval", str(tmp_path / "two")]
    done = subprocess.run(command, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    for rank in (0, 1):
        two = json.loads((tmp_path / "two" / f"rank{rank}.json").read_text())
        assert [c[:3] for c in two["calls"]] == [c[:3] for c in one["calls"]], rank
        assert [c[3] for c in two["calls"]] == pytest.approx([c[3] for c in one["calls"]], rel=1e-4), rank
        assert two["metrics"] == pytest.approx(one["metrics"], rel=1e-5), rank


@pytest.mark.parametrize("options", [
    {"include_for_metrics": ["inputs", "loss"]},
    {"eval_do_concat_batches": False},
    {"bf16_full_eval": True},
])
def test_eval_options_match_transformers(tmp_path, options):
    model = tiny_bert_classifier()
    data = classification_rows(10, seed=6)
    seen = {}

    def record(name):
        def compute(eval_pred):
            seen[name] = eval_pred
            preds = eval_pred.predictions
            preds = np.concatenate(preds) if isinstance(preds, list) else preds
            return {"mean_logit": float(np.asarray(preds, dtype=np.float64).mean())}
        return compute

    hf = _eval_trainer(transformers.Trainer, transformers.TrainingArguments, tmp_path, "hf", model,
                       compute_metrics=record("hf"), **options).evaluate(data)
    ours = _eval_trainer(hftrain.Trainer, hftrain.TrainingArguments, tmp_path, "ours", model,
                         compute_metrics=record("ours"), **options).evaluate(data)
    assert ours["eval_mean_logit"] == pytest.approx(hf["eval_mean_logit"], rel=1e-3)
    assert ours["eval_loss"] == pytest.approx(hf["eval_loss"], rel=1e-3)
    a, b = seen["hf"], seen["ours"]
    assert len(tuple(a)) == len(tuple(b))
    for x, y in zip(a, b):
        if isinstance(x, list):
            assert len(x) == len(y)
            for u, v in zip(x, y):
                np.testing.assert_allclose(np.asarray(v, dtype=np.float64), np.asarray(u, dtype=np.float64),
                                           rtol=1e-3)
        else:
            np.testing.assert_allclose(np.asarray(y, dtype=np.float64), np.asarray(x, dtype=np.float64), rtol=1e-3)


if __name__ == "__main__":  # one rank of test_batch_eval_metrics_two_processes_match_one, under torchrun
    _out = sys.argv[1]
    _result = _ddp_batch_metrics(_out, 4)
    with open(os.path.join(_out, f"rank{os.environ['RANK']}.json"), "w") as _f:
        json.dump(_result, _f)


class _Line(torch.nn.Module):
    """y = a·x + b with a mean squared error: a batch's loss is the mean over its rows."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Parameter(torch.tensor(0.7)), torch.nn.Parameter(torch.tensor(-0.2))

    def forward(self, x, labels=None):
        y = self.a * x + self.b
        return {"loss": torch.nn.functional.mse_loss(y, labels), "logits": y}


class _Rows(torch.utils.data.IterableDataset):
    def __init__(self, n=10):
        generator = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, generator=generator), torch.randn(n, generator=generator)

    def __iter__(self):
        return iter([{"x": x, "labels": y} for x, y in zip(self.x, self.y)])


@pytest.mark.parametrize("method", ["evaluate", "predict"])
def test_a_partial_last_batch_of_an_iterable_dataset_counts_its_rows(tmp_path, method):
    """10 rows in batches of 4, 4 and 2: the loss is the mean over the 10 rows (each batch weighted by its rows),
    as transformers computes it, not the mean of the three batch means."""
    data, model = _Rows(), _Line()
    with torch.no_grad():
        rows_mean = float(((model.a * data.x + model.b - data.y) ** 2).mean())
    losses = {}
    for name, cls, args_cls in (("hf", transformers.Trainer, transformers.TrainingArguments),
                                ("ours", hftrain.Trainer, hftrain.TrainingArguments)):
        trainer = _eval_trainer(cls, args_cls, tmp_path, name, model)
        prefix = "eval" if method == "evaluate" else "test"
        result = trainer.evaluate(data) if method == "evaluate" else trainer.predict(data).metrics
        losses[name] = result[f"{prefix}_loss"]
    assert losses["ours"] == pytest.approx(losses["hf"], rel=1e-6)
    assert losses["ours"] == pytest.approx(rows_mean, rel=1e-6)
