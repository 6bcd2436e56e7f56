"""Gradient accumulation right for every model: a loss that ignores ``num_items_in_batch`` is divided by the number
of micro-batches even when the model's ``forward`` takes ``**kwargs`` (transformers 5.24 skips the division for any
such model: transformers #47688), and ``batch × GA`` trains as ``(batch × GA) × 1``."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.helpers import (
    assert_histories_match,
    assert_same_parameters,
    classification_rows,
    lm_rows,
    pad_lm_batch,
    step_logs,
    tiny_bert_classifier,
    tiny_llama,
)

KEYS = ("loss", "grad_norm", "learning_rate")


def _train(model, out, per_device, accumulation, framework="hftrain", data=None, collator=None, **kwargs):
    import transformers

    import hftrain

    module = hftrain if framework == "hftrain" else transformers
    args = module.TrainingArguments(str(out), report_to="none", disable_tqdm=True, per_device_train_batch_size=per_device,
                                    gradient_accumulation_steps=accumulation, max_steps=4, logging_steps=1,
                                    save_strategy="no", learning_rate=5e-3, seed=0, max_grad_norm=0.5, **kwargs)
    trainer = module.Trainer(model, args, train_dataset=data if data is not None else classification_rows(32),
                             data_collator=collator)
    trainer.train()
    return trainer


def test_a_mean_loss_behind_kwargs_is_divided_bert_4x2_is_8x1(tmp_path):
    model = tiny_bert_classifier()
    accumulated = _train(copy.deepcopy(model), tmp_path / "a", 4, 2)
    whole = _train(copy.deepcopy(model), tmp_path / "b", 8, 1)
    assert_histories_match(step_logs(whole.state.log_history), step_logs(accumulated.state.log_history), KEYS, 1e-5)
    assert_same_parameters(whole.model, accumulated.model, rtol=1e-5)
    assert step_logs(accumulated.state.log_history)[0]["loss"] == pytest.approx(1.1, abs=0.05)  # ln 3, not 2 ln 3


def test_bert_matches_transformers_once_transformers_is_told_the_loss_ignores_the_count(tmp_path):
    model = tiny_bert_classifier()
    ours = _train(copy.deepcopy(model), tmp_path / "ours", 4, 2)
    told = copy.deepcopy(model)
    told.accepts_loss_kwargs = False  # transformers then divides by the accumulation steps, as hftrain decides alone
    theirs = _train(told, tmp_path / "hf", 4, 2, framework="transformers")
    assert_histories_match(step_logs(theirs.state.log_history), step_logs(ours.state.log_history), KEYS)
    assert_same_parameters(theirs.model, ours.model)
    untold = _train(copy.deepcopy(model), tmp_path / "hf-default", 4, 2, framework="transformers")
    doubled = [h["loss"] for h in step_logs(untold.state.log_history)]
    assert doubled[0] == pytest.approx(2 * step_logs(ours.state.log_history)[0]["loss"], rel=1e-4)  # HF's bug


def test_a_causal_lm_normalised_by_the_count_keeps_its_padded_token_mean(tmp_path):
    data = lm_rows(32, seed=3)  # rows of 3 to 9 tokens: the micro-batches hold different numbers of label tokens
    model = tiny_llama()
    accumulated = _train(copy.deepcopy(model), tmp_path / "a", 4, 2, data=data, collator=pad_lm_batch)
    whole = _train(copy.deepcopy(model), tmp_path / "b", 8, 1, data=data, collator=pad_lm_batch)
    assert_histories_match(step_logs(whole.state.log_history), step_logs(accumulated.state.log_history), KEYS, 1e-5)
    assert_same_parameters(whole.model, accumulated.model, rtol=1e-5)
    theirs = _train(copy.deepcopy(model), tmp_path / "hf", 4, 2, framework="transformers", data=data,
                    collator=pad_lm_batch)
    assert_histories_match(step_logs(theirs.state.log_history), step_logs(accumulated.state.log_history), KEYS)


class CountingForward(torch.nn.Module):
    """A mean loss behind ``**kwargs``; counts its forward calls."""

    def __init__(self, declares: bool | None = None):
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 3)
        self.calls = 0
        if declares is not None:
            self.accepts_loss_kwargs = declares

    def forward(self, x, labels=None, **kwargs):
        self.calls += 1
        logits = self.linear(x)
        return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}


def _rows(n=16):
    from tests.helpers import ListDataset

    generator = torch.Generator().manual_seed(0)
    return ListDataset([{"x": torch.randn(4, generator=generator), "labels": i % 3} for i in range(n)])


@pytest.mark.parametrize(("declares", "divided", "extra_forwards"), [(None, True, 2), (True, False, 0),
                                                                     (False, True, 0)])
def test_the_loss_is_probed_once_unless_the_model_declares_accepts_loss_kwargs(tmp_path, declares, divided,
                                                                                extra_forwards):
    model = CountingForward(declares)
    trainer = _train(model, tmp_path, 4, 2, data=_rows())
    assert model.calls == 4 * 2 + extra_forwards  # eight micro-batches, and the probe's two forwards once
    per_step = _train(CountingForward(), tmp_path / "whole", 8, 1, data=_rows())
    first, whole = step_logs(trainer.state.log_history)[0]["loss"], step_logs(per_step.state.log_history)[0]["loss"]
    assert first == pytest.approx(whole if divided else 2 * whole, rel=1e-5)  # declared True: trusted, as transformers


def test_no_probe_without_accumulation(tmp_path):
    model = CountingForward()
    _train(model, tmp_path, 8, 1, data=_rows())
    assert model.calls == 4


def test_the_probe_leaves_the_random_stream_and_the_mode_alone():
    from hftrain._loop.loss import normalises_by_num_items

    model, classifier = tiny_llama(), tiny_bert_classifier()
    batch = pad_lm_batch(lm_rows(2).rows)
    model.train()
    before = torch.random.get_rng_state()
    count = batch["labels"][..., 1:].ne(-100).sum()
    assert normalises_by_num_items(model, batch, count) is True
    sentence = {"input_ids": torch.tensor([[1, 2, 3]]), "labels": torch.tensor([1])}
    assert normalises_by_num_items(classifier, sentence, torch.tensor(1)) is False
    assert torch.equal(torch.random.get_rng_state(), before) and model.training
    zero = dict(batch, labels=torch.full_like(batch["labels"], -100))  # nothing to count: cannot tell
    assert normalises_by_num_items(model, zero, torch.tensor(0)) is None
