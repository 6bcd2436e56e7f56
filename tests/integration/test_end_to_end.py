"""train → evaluate → predict on tiny models, end to end: outputs, keys, files, datasets and collators."""

from __future__ import annotations

import json
import os

import datasets
import numpy as np
import pytest
import torch
from torch.utils.data import IterableDataset

import hftrain
from hftrain import Trainer, TrainingArguments
from tests.helpers import accuracy, classification_rows, lm_rows, pad_lm_batch, tiny_bert_classifier, tiny_gpt2

pytestmark = pytest.mark.integration


def _args(tmp_path, **kwargs):
    defaults = dict(report_to="none", disable_tqdm=True, per_device_train_batch_size=4, per_device_eval_batch_size=4,
                    learning_rate=1e-3, logging_steps=1, save_strategy="no")
    return TrainingArguments(str(tmp_path / "out"), **{**defaults, **kwargs})


def test_train_evaluate_predict_outputs_and_files(tmp_path):
    train, evald = classification_rows(16), classification_rows(10, seed=1)
    trainer = Trainer(
        tiny_bert_classifier(), _args(tmp_path, num_train_epochs=2, eval_strategy="epoch", save_strategy="steps",
                                      save_steps=3, save_total_limit=2),
        train_dataset=train, eval_dataset=evald, compute_metrics=accuracy,
    )
    output = trainer.train()
    assert isinstance(output, hftrain.TrainOutput) and output.global_step == 8
    assert {"train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss", "epoch"} <= set(
        output.metrics
    )
    history = trainer.state.log_history
    assert [h["step"] for h in history if "loss" in h] == list(range(1, 9))
    assert [h["epoch"] for h in history if "eval_loss" in h] == [1.0, 2.0]
    # save_steps=3 on 8 steps: 3, 6 and HF's forced save at the last step; the limit keeps the newest two
    assert sorted(os.listdir(tmp_path / "out")) == ["checkpoint-6", "checkpoint-8"]
    files = set(os.listdir(tmp_path / "out" / "checkpoint-8"))
    assert {"model.safetensors", "config.json", "optimizer.pt", "scheduler.pt", "rng_state.pth",
            "trainer_state.json", "training_args.bin"} <= files
    state = json.loads((tmp_path / "out" / "checkpoint-8" / "trainer_state.json").read_text())
    assert state["global_step"] == 8 and state["log_history"][-1]["step"] == 8
    assert state["total_flos"] > 0
    assert hftrain.trainer_utils.get_last_checkpoint(str(tmp_path / "out")).endswith("checkpoint-8")

    metrics = trainer.evaluate()
    assert list(metrics)[:2] == ["eval_loss", "eval_accuracy"]
    assert metrics["eval_runtime"] >= 0 and trainer.evaluate()["eval_runtime"] >= 0
    assert {"eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "epoch"} <= set(metrics)
    prediction = trainer.predict(evald)
    assert prediction.predictions.shape == (10, 3) and prediction.label_ids.shape == (10,)
    assert "test_loss" in prediction.metrics and "epoch" not in prediction.metrics

    trainer.save_metrics("eval", metrics)
    trainer.save_metrics("train", output.metrics)
    combined = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert "eval_loss" in combined and "train_loss" in combined
    trainer.save_state()
    trainer.save_model(str(tmp_path / "final"))
    from transformers import AutoModelForSequenceClassification

    reloaded = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "final"))
    torch.testing.assert_close(reloaded.classifier.weight, trainer.model.classifier.weight)


def test_datasets_dataset_with_unused_columns_and_tokenizer_padding(tmp_path):
    rows = classification_rows(12)
    ds = datasets.Dataset.from_list(
        [{"input_ids": r["input_ids"].tolist()[: 4 + i % 4], "label": r["labels"], "text": "unused"}
         for i, r in enumerate(rows.rows)]
    )

    class Pad:  # a stand-in tokenizer: HF picks DataCollatorWithPadding whenever processing_class can pad
        pad_token_id = 0
        model_input_names = ["input_ids", "attention_mask"]
        padding_side = "right"

        def pad(self, features, padding=True, max_length=None, pad_to_multiple_of=None, return_tensors="pt"):
            width = max(len(f["input_ids"]) for f in features)
            ids = torch.zeros(len(features), width, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, f in enumerate(features):
                ids[i, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
                mask[i, : len(f["input_ids"])] = 1
            out = {"input_ids": ids, "attention_mask": mask}
            for key in features[0]:
                if key not in ("input_ids",):
                    out[key] = torch.tensor([f[key] for f in features])
            return out

    trainer = Trainer(tiny_bert_classifier(), _args(tmp_path, max_steps=3), train_dataset=ds, eval_dataset=ds,
                      processing_class=Pad(), compute_metrics=accuracy)
    trainer.train()
    assert trainer.state.total_flos > 0  # counted on the tokenizer's BatchEncoding batches too
    assert "eval_accuracy" in trainer.evaluate()


def test_iterable_dataset_needs_max_steps_and_trains_with_it(tmp_path):
    rows = classification_rows(40).rows

    class Stream(IterableDataset):
        def __iter__(self):
            yield from rows

    with pytest.raises(ValueError, match="max_steps has to be specified"):
        Trainer(tiny_bert_classifier(), _args(tmp_path), train_dataset=Stream())
    trainer = Trainer(tiny_bert_classifier(), _args(tmp_path, max_steps=5), train_dataset=Stream())
    assert trainer.train().global_step == 5


def test_dict_of_eval_datasets_gets_one_prefix_each(tmp_path):
    a, b = classification_rows(8, seed=1), classification_rows(6, seed=2)
    trainer = Trainer(tiny_bert_classifier(), _args(tmp_path, max_steps=2, eval_strategy="steps", eval_steps=2),
                      train_dataset=classification_rows(8), eval_dataset={"a": a, "b": b}, compute_metrics=accuracy)
    trainer.train()
    logged = [h for h in trainer.state.log_history if any(k.startswith("eval_") for k in h)]
    assert {k for h in logged for k in h if k.endswith("_loss")} == {"eval_a_loss", "eval_b_loss"}
    metrics = trainer.evaluate()
    assert {"eval_a_loss", "eval_a_accuracy", "eval_b_loss", "eval_b_accuracy"} <= set(metrics)


def test_transformers_training_arguments_are_accepted(tmp_path):
    import transformers

    hf_args = transformers.TrainingArguments(str(tmp_path / "hf"), max_steps=2, report_to="none",
                                             disable_tqdm=True, save_strategy="no", per_device_train_batch_size=4)
    trainer = Trainer(tiny_bert_classifier(), hf_args, train_dataset=classification_rows(8))
    assert isinstance(trainer.args, TrainingArguments)
    assert trainer.train().global_step == 2


def test_predictions_of_variable_length_batches_are_padded_with_minus_100(tmp_path):
    trainer = Trainer(tiny_gpt2(dropout=0.0), _args(tmp_path, per_device_eval_batch_size=2),
                      data_collator=pad_lm_batch, compute_metrics=lambda p: {"n": float(len(p.predictions))})
    rows = lm_rows(5, min_len=2, max_len=8, seed=4)
    out = trainer.predict(rows)
    width = max(len(r["input_ids"]) for r in rows.rows)
    assert out.label_ids.shape == (5, width)
    assert out.predictions.shape[:2] == (5, width)
    first_batch_width = max(len(r["input_ids"]) for r in rows.rows[:2])
    if first_batch_width < width:
        assert np.all(out.label_ids[:2, first_batch_width:] == -100)
        assert np.all(out.predictions[:2, first_batch_width:] == -100)
    assert out.metrics["test_n"] == 5.0


def test_optimizers_override_and_model_init(tmp_path):
    model = tiny_bert_classifier()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    trainer = Trainer(model, _args(tmp_path, max_steps=2), train_dataset=classification_rows(8),
                      optimizers=(opt, sched))
    trainer.train()
    assert trainer.optimizer is opt
    assert [h["learning_rate"] for h in trainer.state.log_history if "loss" in h] == [0.1, 0.1]

    trainer = Trainer(model_init=lambda: tiny_bert_classifier(), args=_args(tmp_path, max_steps=1),
                      train_dataset=classification_rows(8))
    assert trainer.train().global_step == 1


def test_weights_and_optimizer_state_stay_where_they_trained(tmp_path):
    """Lightning's teardown would park the model and the optimizer state on the CPU after fit / validate (on a GPU:
    a copy of both each call, host memory to hold them); HF leaves them on the device, and so does hftrain.
    ``tests/gpu/gpu_check.py`` checks the devices themselves on a GPU."""
    model = tiny_bert_classifier()
    trainer = Trainer(model, _args(tmp_path, max_steps=2), train_dataset=classification_rows(16),
                      eval_dataset=classification_rows(8))
    moved = []
    original_cpu = torch.nn.Module.cpu

    def spy(module):
        moved.append(type(module).__name__)
        return original_cpu(module)

    torch.nn.Module.cpu = spy
    try:
        trainer.train()
        trainer.evaluate()
    finally:
        torch.nn.Module.cpu = original_cpu
    assert moved == []  # neither the fit's nor the validate's teardown moved the model
    assert trainer.optimizer.state  # the optimizer state is intact after train()
    trainer.lightning_module.cpu()  # a user's own .cpu() still moves the model
    assert moved == []  # (spy removed) and no flag left over to swallow it:
    assert trainer.lightning_module._stay_at_teardown is False


def test_a_strategy_object_serves_train_then_evaluate(tmp_path):
    """Lightning sets its accelerator on the strategy object of a run; the next run (evaluate after train) gets
    a fresh copy, not the used object (Lightning would refuse it: 'accelerator set through both...')."""
    from lightning.pytorch.strategies import SingleDeviceStrategy

    strategy = SingleDeviceStrategy("cpu")
    args = TrainingArguments(str(tmp_path), report_to="none", disable_tqdm=True, max_steps=2, strategy=strategy,
                             accelerator="cpu", per_device_train_batch_size=4)
    trainer = Trainer(tiny_bert_classifier(), args, train_dataset=classification_rows(8),
                      eval_dataset=classification_rows(4, seed=1))
    trainer.train()
    assert "eval_loss" in trainer.evaluate()
    assert strategy._accelerator is None  # the user's object is left as they made it
