"""``torch_compile``: the model is compiled where transformers compiles it (accelerate's ``prepare``), with its backend
and mode, and trains to transformers' compiled numbers."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import (
    assert_histories_match,
    assert_same_parameters,
    classification_rows,
    run_both,
    step_logs,
    tiny_bert_classifier,
)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("backend", ["inductor", "aot_eager"])
def test_compiled_training_equals_transformers_compiled_run(tmp_path, backend):
    kwargs = dict(per_device_train_batch_size=4, max_steps=4, logging_steps=1, torch_compile=True,
                  torch_compile_backend=backend, save_strategy="no", learning_rate=1e-3)
    runs = run_both(tiny_bert_classifier(), kwargs, str(tmp_path), train_dataset=classification_rows(20))
    hf, ours = runs["hf"], runs["ours"]
    assert_histories_match(step_logs(hf["history"]), step_logs(ours["history"]), ("loss", "grad_norm"))
    assert_same_parameters(hf["trainer"].model, ours["trainer"].model)
    assert isinstance(ours["trainer"].model_wrapped, torch._dynamo.eval_frame.OptimizedModule)
    assert not isinstance(ours["trainer"].model, torch._dynamo.eval_frame.OptimizedModule)  # saved uncompiled


def test_the_compile_really_happens(tmp_path):
    from hftrain import Trainer, TrainingArguments

    args = TrainingArguments(str(tmp_path), report_to="none", disable_tqdm=True, per_device_train_batch_size=4,
                             max_steps=2, torch_compile_backend="aot_eager", save_strategy="no")  # turns it on
    assert args.torch_compile
    Trainer(tiny_bert_classifier(), args, train_dataset=classification_rows(8)).train()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1


def test_without_torch_compile_nothing_is_compiled(tmp_path):
    from hftrain import Trainer, TrainingArguments

    args = TrainingArguments(str(tmp_path), report_to="none", disable_tqdm=True, max_steps=1, save_strategy="no")
    trainer = Trainer(tiny_bert_classifier(), args, train_dataset=classification_rows(8))
    trainer.train()
    assert trainer.model_wrapped is trainer.model and not torch._dynamo.utils.counters["stats"]["unique_graphs"]
