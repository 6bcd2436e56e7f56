"""Trainer subclasses, one per seam users override, run side by side under transformers.Trainer and hftrain.Trainer.

Each subclass is written once against a base class and built on both; the same data, model and seed must give the
same per-step losses, grad norms, learning rates, evaluation metrics and final weights, with the overridden method
called as often under both.
"""

from __future__ import annotations

import collections
import copy
import os

import numpy as np
import pytest
import torch
from torch.utils.data import Sampler

from tests.helpers import (
    accuracy,
    assert_histories_match,
    assert_same_parameters,
    classification_rows,
    for_transformers,
    lm_rows,
    pad_lm_batch,
    step_logs,
    tiny_bert_classifier,
    tiny_llama,
)

STEP_KEYS = ("loss", "grad_norm", "learning_rate", "epoch")
ARGS = dict(report_to="none", disable_tqdm=True, per_device_train_batch_size=4, per_device_eval_batch_size=3,
            gradient_accumulation_steps=2, learning_rate=5e-3, logging_steps=1, num_train_epochs=2, seed=5,
            save_strategy="no")


def side_by_side(make_subclass, tmp_path, model_fn=lambda: tiny_bert_classifier(dropout=0.1), args=None,
                 resume_from=None, **kwargs):
    """Build ``make_subclass(Trainer)`` on transformers and hftrain, train both on copies of one model. With
    ``resume_from`` (a checkpoint's folder name), the base Trainer trains first, and the subclass resumes from it."""
    import transformers

    import hftrain

    model = model_fn()
    runs = {}
    for name, base, args_cls in (("hf", transformers.Trainer, transformers.TrainingArguments),
                                 ("ours", hftrain.Trainer, hftrain.TrainingArguments)):
        subclass = make_subclass(base)
        subclass.calls = collections.Counter()
        for trainer_cls in (base, subclass) if resume_from else (subclass,):
            copied = for_transformers(model) if name == "hf" else copy.deepcopy(model)
            trainer = trainer_cls(copied, args_cls(str(tmp_path / name), **{**ARGS, **(args or {})}),
                                  **{key: copy.deepcopy(value) for key, value in kwargs.items()})
            trainer.train(resume_from_checkpoint=str(tmp_path / name / resume_from) if (
                resume_from and trainer_cls is subclass) else None)
        runs[name] = trainer
    hf, ours = runs["hf"], runs["ours"]
    assert_histories_match(step_logs(hf.state.log_history), step_logs(ours.state.log_history), STEP_KEYS)
    assert_same_parameters(hf.model, ours.model)
    assert ours.calls == hf.calls and sum(ours.calls.values()) > 0, (hf.calls, ours.calls)
    return hf, ours


def eval_logs(trainer) -> list[dict]:
    return [{k: v for k, v in log.items() if "runtime" not in k and "per_second" not in k}
            for log in trainer.state.log_history if any(k.startswith("eval_") for k in log)]


def test_training_step_with_two_backward_passes(tmp_path):
    """Adversarial training: super().training_step twice, around a perturbation of the embeddings."""

    def make(base):
        class Adversarial(base):
            def training_step(self, model, inputs, num_items_in_batch=None):
                self.calls["training_step"] += 1
                clean = super().training_step(model, inputs, num_items_in_batch)
                embeddings = model.get_input_embeddings().weight
                with torch.no_grad():
                    noise = 1e-2 * embeddings.grad.sign()
                    embeddings.add_(noise)
                adversarial = super().training_step(model, inputs, num_items_in_batch)
                with torch.no_grad():
                    embeddings.sub_(noise)
                return (clean + adversarial) / 2

        return Adversarial

    side_by_side(make, tmp_path, train_dataset=classification_rows(20))


def test_gradient_ascent_through_accelerator_backward(tmp_path):
    def make(base):
        class Ascent(base):
            def training_step(self, model, inputs, num_items_in_batch=None):
                self.calls["training_step"] += 1
                model.train()
                inputs = self._prepare_inputs(inputs)
                with self.compute_loss_context_manager():
                    loss = self.compute_loss(model, inputs) / self.current_gradient_accumulation_steps
                self.accelerator.backward(-loss)
                return loss.detach()

        return Ascent

    side_by_side(make, tmp_path, train_dataset=classification_rows(20))


class Reversed(Sampler):
    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        return iter(range(self.n - 1, -1, -1))

    def __len__(self) -> int:
        return self.n


def test_custom_train_sampler(tmp_path):
    def make(base):
        class ReversedOrder(base):
            def _get_train_sampler(self, train_dataset=None):
                self.calls["_get_train_sampler"] += 1
                return Reversed(len(train_dataset if train_dataset is not None else self.train_dataset))

        return ReversedOrder

    hf, ours = side_by_side(make, tmp_path, train_dataset=classification_rows(20))
    assert ours.calls["_get_train_sampler"] == 1


def test_evaluation_loop_override_runs_in_and_after_training(tmp_path):
    from transformers.trainer_utils import EvalLoopOutput

    def make(base):
        class OwnLoop(base):
            def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                                metric_key_prefix="eval"):
                self.calls["evaluation_loop"] += 1
                self.model.eval()
                losses, correct = [], 0
                for inputs in dataloader:
                    loss, logits, labels = self.prediction_step(self.model, inputs, False)
                    losses.append(float(loss))
                    correct += int((logits.argmax(-1) == labels).sum())
                metrics = {f"{metric_key_prefix}_loss": float(np.mean(losses)),
                           f"{metric_key_prefix}_correct": correct}
                return EvalLoopOutput(None, None, metrics, len(dataloader.dataset))

        return OwnLoop

    hf, ours = side_by_side(make, tmp_path, args={"eval_strategy": "steps", "eval_steps": 2},
                            train_dataset=classification_rows(20), eval_dataset=classification_rows(7, seed=1))
    assert eval_logs(ours) == eval_logs(hf) and [log["step"] for log in eval_logs(ours)] == [2, 4, 6]
    assert ours.evaluate()["eval_correct"] == hf.evaluate()["eval_correct"]


def test_evaluate_with_post_processing(tmp_path):
    """transformers' QuestionAnsweringTrainer shape: metrics off, the loop, post-processing, log, on_evaluate."""

    def make(base):
        class PostProcessing(base):
            def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
                self.calls["evaluate"] += 1
                compute_metrics, self.compute_metrics = self.compute_metrics, None
                try:
                    output = self.evaluation_loop(self.get_eval_dataloader(eval_dataset), description="Evaluation",
                                                  prediction_loss_only=None, ignore_keys=ignore_keys,
                                                  metric_key_prefix=metric_key_prefix)
                finally:
                    self.compute_metrics = compute_metrics
                predicted = output.predictions.argmax(-1)  # "post-processing": logits to answers
                metrics = {f"{metric_key_prefix}_exact": float((predicted == output.label_ids).mean())}
                self.log(metrics)
                self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
                return metrics

        return PostProcessing

    hf, ours = side_by_side(make, tmp_path, args={"eval_strategy": "epoch"}, train_dataset=classification_rows(20),
                            eval_dataset=classification_rows(7, seed=1), compute_metrics=accuracy)
    assert eval_logs(ours) == eval_logs(hf) and [set(log) for log in eval_logs(ours)][0] == {"eval_exact", "epoch",
                                                                                              "step"}


def test_save_override_writes_only_the_trainable_weights(tmp_path):
    from safetensors.torch import load_file, save_file

    def make(base):
        class TrainableOnly(base):
            def _save(self, output_dir=None, state_dict=None):
                self.calls["_save"] += 1
                output_dir = output_dir or self.args.output_dir
                os.makedirs(output_dir, exist_ok=True)
                weights = {n: p.detach().contiguous() for n, p in self.model.named_parameters() if p.requires_grad}
                save_file(weights, os.path.join(output_dir, "trainable.safetensors"))

        return TrainableOnly

    def frozen_embeddings():
        model = tiny_bert_classifier(dropout=0.1)
        model.bert.embeddings.requires_grad_(False)
        return model

    hf, ours = side_by_side(make, tmp_path, model_fn=frozen_embeddings, args={"save_strategy": "epoch"},
                            train_dataset=classification_rows(20))
    for step in (3, 6):
        names = sorted(os.listdir(tmp_path / "ours" / f"checkpoint-{step}"))
        assert names == sorted(os.listdir(tmp_path / "hf" / f"checkpoint-{step}"))
        assert "trainable.safetensors" in names and "model.safetensors" not in names
        saved = load_file(str(tmp_path / "ours" / f"checkpoint-{step}" / "trainable.safetensors"))
        assert not any("embeddings" in name for name in saved)


def test_prepare_inputs_override(tmp_path):
    def make(base):
        class MaskLast(base):
            def _prepare_inputs(self, inputs):
                self.calls["_prepare_inputs"] += 1
                inputs = super()._prepare_inputs(inputs)
                mask = inputs["attention_mask"].clone()
                mask[:, -2:] = 0  # the model never sees the last two tokens
                return {**inputs, "attention_mask": mask}

        return MaskLast

    hf, ours = side_by_side(make, tmp_path, args={"eval_strategy": "epoch"}, train_dataset=classification_rows(20),
                            eval_dataset=classification_rows(7, seed=1))
    assert [log["step"] for log in eval_logs(ours)] == [log["step"] for log in eval_logs(hf)] == [3, 6]
    for ours_log, hf_log in zip(eval_logs(ours), eval_logs(hf)):
        assert ours_log == pytest.approx(hf_log)


def test_get_batch_samples_override(tmp_path):
    """A window in reverse order, counted with twice the tokens: the token-normalised loss halves."""

    def make(base):
        class Reversing(base):
            def get_batch_samples(self, epoch_iterator, num_batches, device):
                self.calls["get_batch_samples"] += 1
                batches, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
                return batches[::-1], None if num_items is None else num_items * 2

        return Reversing

    side_by_side(make, tmp_path, model_fn=tiny_llama, args={"gradient_accumulation_steps": 3},
                 train_dataset=lm_rows(14), data_collator=pad_lm_batch)


def test_create_optimizer_with_get_optimizer_cls_and_kwargs(tmp_path):
    def make(base):
        class HeadLearnsFaster(base):
            def create_optimizer(self, model=None):
                self.calls["create_optimizer"] += 1
                if self.optimizer is None:
                    cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
                    head = [p for n, p in self.model.named_parameters() if n.startswith("classifier")]
                    rest = [p for n, p in self.model.named_parameters() if not n.startswith("classifier")]
                    self.optimizer = cls([{"params": head, "lr": self.args.learning_rate * 10}, {"params": rest}],
                                         **kwargs)
                return self.optimizer

        return HeadLearnsFaster

    hf, ours = side_by_side(make, tmp_path, args={"optim": "adamw_torch"}, train_dataset=classification_rows(20))
    assert [g["lr"] for g in ours.optimizer.param_groups] == [g["lr"] for g in hf.optimizer.param_groups]


def test_log_override(tmp_path):
    def make(base):
        class ExtraKey(base):
            def log(self, logs, start_time=None):
                self.calls["log"] += 1
                if "loss" in logs:
                    logs["loss_x100"] = logs["loss"] * 100
                super().log(logs, start_time)

        return ExtraKey

    hf, ours = side_by_side(make, tmp_path, train_dataset=classification_rows(20))
    assert_histories_match(step_logs(hf.state.log_history), step_logs(ours.state.log_history), ("loss_x100",))


@pytest.mark.parametrize("sized", [True, False])
def test_get_train_dataloader_returning_a_plain_iterable(tmp_path, sized):
    from transformers import default_data_collator

    class Batches:
        """Batches of 4 rows in order; no DataLoader, no sampler."""

        def __init__(self, rows):
            self.rows = rows

        def __iter__(self):
            return (default_data_collator([self.rows[j] for j in range(i, min(i + 4, len(self.rows)))])
                    for i in range(0, len(self.rows), 4))

    class SizedBatches(Batches):
        def __len__(self):
            return (len(self.rows) + 3) // 4

    def make(base):
        class OwnLoader(base):
            def get_train_dataloader(self):
                self.calls["get_train_dataloader"] += 1
                return (SizedBatches if sized else Batches)(self.train_dataset)

        return OwnLoader

    args = {} if sized else {"max_steps": 5}
    side_by_side(make, tmp_path, args=args, train_dataset=classification_rows(20))


def test_get_resumed_dataloader_override_on_a_mid_epoch_resume(tmp_path):
    """transformers 5.25's seam for a resume mid-epoch: the override gets the loader and the batches to skip, and
    the loader it returns is the one the resumed epoch runs over (here: the whole epoch again, not skipping)."""
    import transformers

    if not hasattr(transformers.Trainer, "get_resumed_dataloader"):
        pytest.skip("transformers before 5.25 has no get_resumed_dataloader to compare with")

    def make(base):
        class Replaying(base):
            def get_resumed_dataloader(self, dataloader, num_batches):
                self.calls[f"get_resumed_dataloader(num_batches={num_batches})"] += 1
                return dataloader  # replay the epoch from its start instead of skipping the trained batches

        return Replaying

    # 24 rows: 3 steps an epoch, checkpoint-2 in the middle of the first; the subclass resumes from it
    hf, ours = side_by_side(make, tmp_path, args={"save_strategy": "steps", "save_steps": 2}, resume_from="checkpoint-2",
                            train_dataset=classification_rows(24))
    assert ours.calls == hf.calls == {"get_resumed_dataloader(num_batches=4)": 1}
