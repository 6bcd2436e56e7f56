"""``auto_find_batch_size`` keeps the global batch: on out-of-memory the micro-batch shrinks, the accumulation grows,
and the run equals a plain run with that micro-batch and that accumulation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import (
    assert_histories_match,
    assert_same_parameters,
    classification_rows,
    step_logs,
    tiny_bert_classifier,
)

ROOT = Path(__file__).resolve().parents[2]


class Limited(torch.nn.Module):
    """A model that runs out of memory on batches above ``limit`` rows, from its ``after``-th forward on."""

    def __init__(self, model: torch.nn.Module, limit: int, after: int = 0) -> None:
        super().__init__()
        self.model, self.limit, self.after, self.calls = model, limit, after, 0
        self.config = model.config

    def forward(self, input_ids, attention_mask=None, labels=None):
        self.calls += 1
        if input_ids.shape[0] > self.limit and self.calls > self.after:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)


def _run(tmp_path, name, model, **kwargs):
    from hftrain import Trainer, TrainingArguments

    args = TrainingArguments(str(tmp_path / name), report_to="none", disable_tqdm=True, learning_rate=5e-3,
                             logging_steps=1, num_train_epochs=2, seed=4, **kwargs)
    trainer = Trainer(model, args, train_dataset=classification_rows(32))
    trainer.train()
    return trainer


@pytest.mark.parametrize("after", [0, 2])  # out of memory at the first step, or after a whole epoch
def test_the_run_equals_a_plain_run_with_the_micro_batch_found(tmp_path, after):
    found = _run(tmp_path, "found", Limited(tiny_bert_classifier(dropout=0.1), limit=4, after=after),
                 per_device_train_batch_size=16, auto_find_batch_size=True, save_strategy="no")
    plain = _run(tmp_path, "plain", Limited(tiny_bert_classifier(dropout=0.1), limit=4),
                 per_device_train_batch_size=4, gradient_accumulation_steps=4, save_strategy="no")
    assert found._train_batch_size == 4 and found.args.gradient_accumulation_steps == 4
    assert found.state.train_batch_size == 4
    assert_histories_match(step_logs(plain.state.log_history), step_logs(found.state.log_history),
                           ("loss", "grad_norm", "learning_rate", "epoch"))
    assert_same_parameters(plain.model, found.model)


def test_the_callers_arguments_are_left_as_they_were(tmp_path):
    from hftrain import Trainer, TrainingArguments

    args = TrainingArguments(str(tmp_path), report_to="none", disable_tqdm=True, per_device_train_batch_size=8,
                             max_steps=2, auto_find_batch_size=True, save_strategy="no")
    trainer = Trainer(Limited(tiny_bert_classifier(), limit=2), args, train_dataset=classification_rows(16))
    trainer.train()
    assert (trainer._train_batch_size, trainer.args.gradient_accumulation_steps) == (2, 4)
    assert args.gradient_accumulation_steps == 1 and args.per_device_train_batch_size == 8


def test_a_resumed_run_continues_with_the_micro_batch_found(tmp_path):
    from hftrain import Trainer, TrainingArguments

    def args():
        return TrainingArguments(str(tmp_path / "run"), report_to="none", disable_tqdm=True, learning_rate=5e-3,
                                 per_device_train_batch_size=8, max_steps=4, save_steps=2, logging_steps=1,
                                 auto_find_batch_size=True, seed=4)

    full = Trainer(Limited(tiny_bert_classifier(), limit=2), args(), train_dataset=classification_rows(32))
    full.train()
    resumed = Trainer(Limited(tiny_bert_classifier(), limit=2), args(), train_dataset=classification_rows(32))
    assert resumed._train_batch_size == 8
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))
    assert (resumed._train_batch_size, resumed.args.gradient_accumulation_steps) == (2, 4)
    assert resumed.model.model.bert.embeddings.word_embeddings.weight.equal(
        full.model.model.bert.embeddings.word_embeddings.weight)


def test_an_error_that_is_not_out_of_memory_is_raised(tmp_path):
    from hftrain import Trainer, TrainingArguments

    class Broken(Limited):
        def forward(self, input_ids, attention_mask=None, labels=None):
            raise RuntimeError("a bug")

    args = TrainingArguments(str(tmp_path), report_to="none", disable_tqdm=True, max_steps=1,
                             auto_find_batch_size=True, save_strategy="no")
    with pytest.raises(RuntimeError, match="a bug"):
        Trainer(Broken(tiny_bert_classifier(), limit=1), args, train_dataset=classification_rows(8)).train()


def test_one_process_out_of_memory_shrinks_every_process(tmp_path):
    """2 processes under torchrun; only rank 1's model runs out of memory above 2 rows: both agree on 2 before
    any step, and the run equals one process with the same global batch."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
         f"--master_port={port}", "-m", "tests.integration.auto_batch_script", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["micro_batch"], r["accumulation"]) for r in ranks] == [(2, 2), (2, 2)]
    one = _run(tmp_path, "one", tiny_bert_classifier(), per_device_train_batch_size=8, save_strategy="no",
               use_cpu=True)
    assert_histories_match(step_logs(one.state.log_history), ranks[0]["history"], ("loss", "grad_norm"))
