"""Columnar batches in the Trainer (issue 17): a tokenized ``datasets.Dataset`` with a known HF collator trains
exactly as the rows → collator path does, the fast path is really taken, and overrides keep the original path.

The original path is forced by a subclass overriding ``_remove_unused_columns`` (calling super): an override of a
loader-building seam keeps transformers' rows → collator path (``hftrain._loop.data.LOADER_SEAMS``).
"""

from __future__ import annotations

import collections

import datasets
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, RandomSampler
from transformers import DataCollatorForLanguageModeling, DataCollatorWithPadding

from hftrain import Trainer, TrainingArguments
from hftrain._loop.data import LOADER_SEAMS, prepare_dataloader
from hftrain._loop.fast_collate import ColumnarDataset, columnar_batches
from tests.helpers import (
    accuracy, assert_histories_match, run_both, step_logs, tiny_bert_classifier, tiny_llama, tokenized_rows,
    word_tokenizer,
)

pytestmark = pytest.mark.integration


class RowsTrainer(Trainer):
    """The original path: rows → the collator, every batch."""

    def _remove_unused_columns(self, dataset, description=None):
        return super()._remove_unused_columns(dataset, description)


@pytest.fixture
def collator_calls(monkeypatch):
    """How often the (class of the) collators ran in this process, by class name."""
    calls: collections.Counter = collections.Counter()
    for cls in (DataCollatorWithPadding, DataCollatorForLanguageModeling):
        original = cls.__call__

        def counting(self, *args, _original=original, **kwargs):
            calls[type(self).__name__] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__call__", counting)
    return calls


def args(tmp_path, name: str, **kwargs) -> TrainingArguments:
    return TrainingArguments(str(tmp_path / name), **{**dict(
        report_to="none", disable_tqdm=True, per_device_train_batch_size=4, per_device_eval_batch_size=5,
        learning_rate=5e-3, logging_steps=1, seed=3, num_train_epochs=2, eval_strategy="steps", eval_steps=3,
        save_strategy="no", use_cpu=True), **kwargs})


def train(trainer_cls, tmp_path, name: str, model=None, **kwargs):
    trainer = trainer_cls(model or tiny_bert_classifier(dropout=0.1), args(tmp_path, name, **kwargs),
                          train_dataset=tokenized_rows(26, seed=1), eval_dataset=tokenized_rows(9, seed=2),
                          processing_class=word_tokenizer(), compute_metrics=accuracy)
    trainer.train()
    return trainer, trainer.predict(tokenized_rows(7, seed=4))


def assert_same_runs(fast, rows) -> None:
    """Bit for bit: the log history (losses, grad norms, eval metrics but the timings), predictions, weights."""
    (a, a_prediction), (b, b_prediction) = fast, rows
    history = [[{k: v for k, v in h.items() if "runtime" not in k and "per_second" not in k}  # the clock
                for h in t.state.log_history] for t in (a, b)]
    assert history[0] == history[1] and len(step_logs(history[0])) >= 6
    np.testing.assert_array_equal(a_prediction.predictions, b_prediction.predictions)
    np.testing.assert_array_equal(a_prediction.label_ids, b_prediction.label_ids)
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("options", [
    dict(),
    dict(train_sampling_strategy="group_by_length", dataloader_drop_last=True),
    dict(gradient_accumulation_steps=2, include_num_input_tokens_seen="non_padding"),
], ids=["plain", "group_by_length", "accumulation"])
def test_training_equals_the_rows_path_bit_for_bit(tmp_path, collator_calls, options):
    fast = train(Trainer, tmp_path, "fast", **options)
    assert collator_calls["DataCollatorWithPadding"] == 0  # no batch went through the collator: the columns built all
    assert isinstance(fast[0].get_train_dataloader().dataset, ColumnarDataset)
    rows = train(RowsTrainer, tmp_path, "rows", **options)
    assert collator_calls["DataCollatorWithPadding"] > 10
    assert_same_runs(fast, rows)
    if "include_num_input_tokens_seen" in options:
        assert fast[0].state.num_input_tokens_seen == rows[0].state.num_input_tokens_seen > 0


def test_worker_processes_give_the_same_run(tmp_path):
    options = dict(dataloader_num_workers=2, num_train_epochs=1, dataloader_persistent_workers=True)
    fast = train(Trainer, tmp_path, "fast", **options)
    assert isinstance(fast[0].get_train_dataloader().dataset, ColumnarDataset)
    assert_same_runs(fast, train(RowsTrainer, tmp_path, "rows", **options))


def test_causal_lm_collator_trains_as_the_rows_path(tmp_path, collator_calls):
    def run(trainer_cls, name):
        tok = word_tokenizer()
        trainer = trainer_cls(tiny_llama(), args(tmp_path, name, eval_strategy="no", max_steps=6),
                              train_dataset=tokenized_rows(26, seed=1, labels=False).remove_columns("text"),
                              data_collator=DataCollatorForLanguageModeling(tok, mlm=False, pad_to_multiple_of=8))
        trainer.train()
        return trainer

    fast = run(Trainer, "fast")
    assert collator_calls["DataCollatorForLanguageModeling"] == 0
    rows = run(RowsTrainer, "rows")
    assert collator_calls["DataCollatorForLanguageModeling"] > 0
    assert fast.state.log_history[:-1] == rows.state.log_history[:-1]  # the last entry has timings


def test_resume_from_a_mid_epoch_checkpoint_equals_the_uninterrupted_run(tmp_path):
    common = dict(max_steps=9, save_strategy="steps", save_steps=4, eval_strategy="no")
    whole, _ = train(Trainer, tmp_path, "whole", **common)
    resumed = Trainer(tiny_bert_classifier(dropout=0.1), args(tmp_path, "whole", **common),
                      train_dataset=tokenized_rows(26, seed=1), processing_class=word_tokenizer())
    resumed.train(resume_from_checkpoint=str(tmp_path / "whole" / "checkpoint-4"))  # skips the epoch's first 4
    for (name, p), q in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("seam", LOADER_SEAMS)
def test_a_loader_seam_override_keeps_the_rows_path(tmp_path, collator_calls, seam):
    def passthrough(self, *args, **kwargs):
        return getattr(super(subclass, self), seam)(*args, **kwargs)

    subclass = type("Custom", (Trainer,), {seam: passthrough})
    trainer = subclass(tiny_bert_classifier(), args(tmp_path, "custom"), train_dataset=tokenized_rows(8, seed=1),
                       eval_dataset=tokenized_rows(5, seed=2), processing_class=word_tokenizer())
    for loader in (trainer.get_train_dataloader(), trainer.get_eval_dataloader(),
                   trainer.get_test_dataloader(tokenized_rows(5, seed=3))):
        assert isinstance(loader.dataset, datasets.Dataset)
        next(iter(loader))
    assert collator_calls["DataCollatorWithPadding"] == 3


def test_every_process_gets_its_slice_of_the_same_batches():
    """``ShardedBatchSampler`` (2 processes, as hftrain prepares a loader): each rank's batches from the columns
    equal its batches through the collator, the short last global batch and an empty slice's stand-in row too."""
    from types import SimpleNamespace

    dataset, collator = tokenized_rows(27, seed=5), DataCollatorWithPadding(word_tokenizer())
    dataset = dataset.remove_columns("text")
    for rank in (0, 1):
        prepared = SimpleNamespace(world_size=2, process_index=rank, data_seed=11)
        loaders = [prepare_dataloader(DataLoader(data, batch_size=4, sampler=RandomSampler(dataset),
                                                 collate_fn=collate, worker_init_fn=lambda _: None), prepared)
                   for data, collate in (columnar_batches(dataset, collator), (dataset, collator))]
        assert isinstance(loaders[0].dataset, ColumnarDataset)
        fast, rows = (list(loader) for loader in loaders)
        assert len(fast) == len(rows) == 4
        for a, b in zip(fast, rows):
            assert type(a) is type(b) and list(a) == list(b)
            assert all(torch.equal(a[k], b[k]) for k in a)


def test_parity_with_transformers_on_the_fast_path(tmp_path):
    """The README's contract (rtol 1e-4 against transformers.Trainer) holds with the columns building the batches."""
    runs = run_both(tiny_bert_classifier(), dict(per_device_train_batch_size=4, learning_rate=5e-3, logging_steps=1,
                                                 seed=3, num_train_epochs=2, save_strategy="no", use_cpu=True),
                    str(tmp_path), train_dataset=tokenized_rows(26, seed=1), processing_class=word_tokenizer())
    assert isinstance(runs["ours"]["trainer"].get_train_dataloader().dataset, ColumnarDataset)
    assert_histories_match(step_logs(runs["hf"]["history"]), step_logs(runs["ours"]["history"]),
                           ("loss", "grad_norm", "learning_rate", "epoch"))
