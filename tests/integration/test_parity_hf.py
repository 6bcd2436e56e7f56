"""Numerical parity with transformers.Trainer: same tiny model, data and seed → same numbers (rtol 1e-4).

Each test trains a copy of one model with transformers.Trainer and one with hftrain.Trainer and compares the
per-step `loss`, `grad_norm`, `learning_rate` and `epoch`, the evaluation metrics, the predictions and the final
parameters (hf_trainer_semantics.md §4 and §10 list what decides each of them).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import (
    accuracy,
    assert_histories_match,
    assert_same_parameters,
    classification_rows,
    lm_rows,
    pad_lm_batch,
    run_both,
    step_logs,
    tiny_bert_classifier,
    tiny_gpt2,
    tiny_llama,
)

pytestmark = pytest.mark.integration

STEP_KEYS = ("loss", "grad_norm", "learning_rate", "epoch")


def test_classifier_accumulation_warmup_cosine_decay_clipping(tmp_path):
    model = tiny_bert_classifier()
    train, evald = classification_rows(22, seed=0), classification_rows(10, seed=1)
    runs = run_both(
        model,
        dict(
            per_device_train_batch_size=4, gradient_accumulation_steps=4,  # 6 batches/epoch: a short last window
            num_train_epochs=2, learning_rate=1e-3, warmup_steps=2, lr_scheduler_type="cosine",
            weight_decay=0.1, max_grad_norm=0.5, logging_steps=1, eval_strategy="steps", eval_steps=2,
            per_device_eval_batch_size=4, save_strategy="no", seed=7,
        ),
        str(tmp_path), train_dataset=train, eval_dataset=evald, compute_metrics=accuracy,
    )
    hf, ours = runs["hf"], runs["ours"]
    assert_histories_match(step_logs(hf["history"]), step_logs(ours["history"]), STEP_KEYS)
    hf_evals = [h for h in hf["history"] if "eval_loss" in h]
    our_evals = [h for h in ours["history"] if "eval_loss" in h]
    assert_histories_match(hf_evals, our_evals, ("eval_loss", "eval_accuracy", "epoch"))
    assert ours["output"].global_step == hf["output"].global_step == 4
    assert ours["output"].training_loss == pytest.approx(hf["output"].training_loss, rel=1e-4)
    assert set(ours["output"].metrics) == set(hf["output"].metrics)
    assert ours["trainer"].state.total_flos == hf["trainer"].state.total_flos > 0
    assert_same_parameters(hf["trainer"].model, ours["trainer"].model)

    # the first update of a warmup runs at LR 0 and is logged as such (HF §4.4)
    assert step_logs(ours["history"])[0]["learning_rate"] == 0.0

    hf_pred = hf["trainer"].predict(evald)
    our_pred = ours["trainer"].predict(evald)
    np.testing.assert_allclose(our_pred.predictions, hf_pred.predictions, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(our_pred.label_ids, hf_pred.label_ids)
    assert our_pred.metrics["test_loss"] == pytest.approx(hf_pred.metrics["test_loss"], rel=1e-4)
    assert set(our_pred.metrics) == set(hf_pred.metrics)

    hf_eval = hf["trainer"].evaluate()
    our_eval = ours["trainer"].evaluate()
    assert list(our_eval) == list(hf_eval)
    for key in ("eval_loss", "eval_accuracy", "epoch"):
        assert our_eval[key] == pytest.approx(hf_eval[key], rel=1e-4)


def test_causal_lm_token_normalised_accumulation(tmp_path):
    """Padded variable-length rows, GA=3: each micro-batch loss is divided by the window's token count."""
    model = tiny_llama()
    runs = run_both(
        model,
        dict(
            per_device_train_batch_size=2, gradient_accumulation_steps=3, num_train_epochs=2, learning_rate=5e-3,
            logging_steps=1, save_strategy="no", seed=3, lr_scheduler_type="linear", warmup_steps=0.25,
        ),
        str(tmp_path), train_dataset=lm_rows(14), data_collator=pad_lm_batch,
    )
    hf, ours = runs["hf"], runs["ours"]
    assert ours["trainer"].model_accepts_loss_kwargs and ours["trainer"]._loss_shifts_labels
    assert_histories_match(step_logs(hf["history"]), step_logs(ours["history"]), STEP_KEYS)
    assert_same_parameters(hf["trainer"].model, ours["trainer"].model)


def test_dropout_same_data_order_and_rng_stream(tmp_path):
    """Dropout on: identical only if the data order, the seeding points and every RNG draw match HF's,
    including the draws of in-training evaluations (no sanity-check pass)."""
    model = tiny_gpt2(dropout=0.1)
    model.eval()  # as `from_pretrained` returns it: HF switches to train mode at every step, so must we
    runs = run_both(
        model,
        dict(
            per_device_train_batch_size=2, gradient_accumulation_steps=2, num_train_epochs=2, learning_rate=5e-3,
            logging_steps=1, eval_strategy="epoch", per_device_eval_batch_size=3, save_strategy="no", seed=11,
        ),
        str(tmp_path), train_dataset=lm_rows(10, seed=2), eval_dataset=lm_rows(5, seed=3),
        data_collator=pad_lm_batch,
    )
    hf, ours = runs["hf"], runs["ours"]
    assert_histories_match(step_logs(hf["history"]), step_logs(ours["history"]), STEP_KEYS)
    hf_evals = [h for h in hf["history"] if "eval_loss" in h]
    our_evals = [h for h in ours["history"] if "eval_loss" in h]
    assert len(our_evals) == 2
    assert_histories_match(hf_evals, our_evals, ("eval_loss", "epoch"))
    assert_same_parameters(hf["trainer"].model, ours["trainer"].model)


def test_eval_on_start_and_eval_delay_match_transformers(tmp_path):
    model = tiny_bert_classifier()
    runs = run_both(
        model,
        dict(per_device_train_batch_size=4, max_steps=6, learning_rate=1e-3, logging_steps=2, eval_strategy="steps",
             eval_steps=2, eval_delay=3, eval_on_start=True, save_strategy="no", seed=2),
        str(tmp_path), train_dataset=classification_rows(16), eval_dataset=classification_rows(8, seed=1),
        compute_metrics=accuracy,
    )
    hf_evals = [h for h in runs["hf"]["history"] if "eval_loss" in h]
    our_evals = [h for h in runs["ours"]["history"] if "eval_loss" in h]
    assert [h["step"] for h in our_evals] == [h["step"] for h in hf_evals] == [0, 4, 6]
    assert_histories_match(hf_evals, our_evals, ("eval_loss", "eval_accuracy", "epoch"))
    assert_histories_match(step_logs(runs["hf"]["history"]), step_logs(runs["ours"]["history"]), STEP_KEYS)


@pytest.mark.parametrize("strategy", ["group_by_length", "batch_rebalance"])
def test_length_grouped_orders_are_transformers(tmp_path, strategy):
    """transformers' LengthGroupedSampler (global RNG) and BatchRebalanceSampler (seeded): the same batches, so the
    same numbers; the evaluation of group_by_length runs in transformers' grouped order too."""
    runs = run_both(
        tiny_gpt2(dropout=0.1),
        dict(per_device_train_batch_size=2, gradient_accumulation_steps=2, num_train_epochs=2, learning_rate=5e-3,
             logging_steps=1, train_sampling_strategy=strategy, eval_strategy="epoch", per_device_eval_batch_size=3,
             save_strategy="no", seed=5),
        str(tmp_path), train_dataset=lm_rows(24, seed=6), eval_dataset=lm_rows(7, seed=7), data_collator=pad_lm_batch,
    )
    hf, ours = runs["hf"], runs["ours"]
    assert_histories_match(step_logs(hf["history"]), step_logs(ours["history"]), STEP_KEYS)
    evals = [([h for h in run["history"] if "eval_loss" in h]) for run in (hf, ours)]
    assert [h["eval_loss"] for h in evals[1]] == pytest.approx([h["eval_loss"] for h in evals[0]], rel=1e-4)
    assert_same_parameters(hf["trainer"].model, ours["trainer"].model)


class NonFiniteLoss(torch.nn.Module):
    """A classifier whose logged loss is nan at step 3 and inf at step 5 (a constant added: the gradients stay
    finite), as a loss blowing up for one batch would be logged."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(8, 3)
        self.calls = 0

    def forward(self, input_ids, attention_mask=None, labels=None):
        self.calls += 1
        logits = self.linear(input_ids.float() / 64)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        if self.calls in (3, 5):
            loss = loss + torch.tensor(float("nan") if self.calls == 3 else float("inf"))
        return {"loss": loss, "logits": logits}


@pytest.mark.parametrize("nan_inf_filter", [True, False])
@pytest.mark.parametrize("logging_steps", [1, 2])
def test_logging_nan_inf_filter_logs_the_average_for_a_non_finite_loss(tmp_path, nan_inf_filter, logging_steps):
    runs = run_both(NonFiniteLoss(), dict(per_device_train_batch_size=4, max_steps=6, logging_steps=logging_steps,
                                          learning_rate=1e-2, save_strategy="no", use_cpu=True,
                                          logging_nan_inf_filter=nan_inf_filter),
                    str(tmp_path), train_dataset=classification_rows(24))
    hf, ours = (step_logs(runs[name]["history"]) for name in ("hf", "ours"))
    assert [h["step"] for h in ours] == [h["step"] for h in hf]
    for a, b in zip(hf, ours):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, nan_ok=True), (a["step"], a["loss"], b["loss"])
    assert all(np.isfinite(h["loss"]) for h in ours) == nan_inf_filter
    assert_same_parameters(runs["hf"]["trainer"].model, runs["ours"]["trainer"].model)
