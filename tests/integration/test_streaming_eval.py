"""Evaluation options: torchmetrics as compute_metrics (streamed), batch_eval_metrics, include_for_metrics,
eval_do_concat_batches, *_full_eval — each against what transformers.Trainer gives."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import transformers
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

import hftrain
from tests.helpers import accuracy, classification_rows, tiny_bert_classifier

pytestmark = pytest.mark.integration


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
    assert trainer.lightning_module.collector.results[0].output.predictions is None  # nothing was held
    again = trainer.evaluate(data)  # the metric was reset after compute()
    assert again["eval_accuracy"] == pytest.approx(streamed["eval_accuracy"])
    single = _eval_trainer(hftrain.Trainer, hftrain.TrainingArguments, tmp_path, "one", model,
                           compute_metrics=MulticlassAccuracy(3, average="micro")).evaluate(data)
    assert single["eval_multiclass_accuracy"] == pytest.approx(reference["eval_accuracy"])
    # predict() still returns every prediction
    out = trainer.predict(data)
    assert out.predictions.shape == (22, 3) and out.metrics["test_accuracy"] == pytest.approx(
        reference["eval_accuracy"])


def _batch_accuracy():
    state = {"correct": 0, "total": 0}

    def compute(eval_pred, compute_result):
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        state["correct"] += int((logits.argmax(-1) == labels).sum())
        state["total"] += int(labels.numel())
        if compute_result:
            result = {"accuracy": state["correct"] / state["total"], "batches_seen": state["total"]}
            state.update(correct=0, total=0)
            return result
        return {}

    return compute


def test_batch_eval_metrics_matches_transformers(tmp_path):
    model = tiny_bert_classifier()
    data = classification_rows(22, seed=5)
    hf = _eval_trainer(transformers.Trainer, transformers.TrainingArguments, tmp_path, "hf", model,
                       compute_metrics=_batch_accuracy(), batch_eval_metrics=True).evaluate(data)
    ours = _eval_trainer(hftrain.Trainer, hftrain.TrainingArguments, tmp_path, "ours", model,
                         compute_metrics=_batch_accuracy(), batch_eval_metrics=True).evaluate(data)
    for key in ("eval_loss", "eval_accuracy", "eval_batches_seen"):
        assert ours[key] == pytest.approx(hf[key])
    with pytest.raises(ValueError, match="must take a `compute_result`"):
        _eval_trainer(hftrain.Trainer, hftrain.TrainingArguments, tmp_path, "bad", model,
                      compute_metrics=accuracy, batch_eval_metrics=True)


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
