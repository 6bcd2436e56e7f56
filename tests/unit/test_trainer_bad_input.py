"""Bad input fails before any optimizer step, with a ValueError/TypeError naming the field and the fix."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hftrain import Trainer, TrainingArguments
from tests.helpers import ListDataset


class Regressor(nn.Module):
    """A plain module following HF's contract: with labels, the loss comes first."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, x, labels=None):
        out = self.linear(x).squeeze(-1)
        return (nn.functional.mse_loss(out, labels), out) if labels is not None else (out,)


class NoLoss(Regressor):
    def forward(self, x, labels=None):
        return (self.linear(x),)


def rows(n=8):
    return ListDataset([{"x": torch.randn(4), "labels": torch.tensor(1.0)} for _ in range(n)])


def args(tmp_path, **kwargs):
    defaults = dict(report_to="none", disable_tqdm=True, save_strategy="no")
    return TrainingArguments(str(tmp_path), **{**defaults, **kwargs})


def test_unknown_report_to_is_refused_at_construction(tmp_path):
    with pytest.raises(ValueError, match="foo is not supported.*report_to"):
        Trainer(Regressor(), args(tmp_path, report_to="foo"))


def test_eval_strategy_without_eval_dataset(tmp_path):
    with pytest.raises(ValueError, match="didn't pass an `eval_dataset`"):
        Trainer(Regressor(), args(tmp_path, eval_strategy="epoch"), train_dataset=rows())


def test_best_model_without_metric(tmp_path):
    a = args(tmp_path, eval_strategy="epoch", save_strategy="best", metric_for_best_model="loss")
    a.metric_for_best_model = None
    with pytest.raises(ValueError, match="metric_for_best_model` must be provided"):
        Trainer(Regressor(), a, train_dataset=rows(), eval_dataset=rows())


def test_model_and_model_init_together(tmp_path):
    with pytest.raises(ValueError, match="but not both"):
        Trainer(Regressor(), args(tmp_path), model_init=Regressor)
    with pytest.raises(RuntimeError, match="requires either a `model` or `model_init`"):
        Trainer(None, args(tmp_path))


def test_callbacks_of_the_wrong_kind(tmp_path):
    import lightning as L

    with pytest.raises(TypeError, match="neither a transformers-style TrainerCallback"):
        Trainer(Regressor(), args(tmp_path), callbacks=[object()])
    with pytest.raises(TypeError, match="Pass an instance of the Lightning callback"):
        Trainer(Regressor(), args(tmp_path), callbacks=[L.pytorch.callbacks.LearningRateMonitor])


def test_args_of_the_wrong_type(tmp_path):
    with pytest.raises(TypeError, match="`args` must be a hftrain.TrainingArguments"):
        Trainer(Regressor(), {"output_dir": str(tmp_path)})


def test_dataset_with_no_column_the_model_accepts(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({"text": ["a", "b"], "other": [1, 2]})
    trainer = Trainer(Regressor(), args(tmp_path, max_steps=1), train_dataset=ds)
    with pytest.raises(ValueError, match="No columns in the dataset match the model's forward method signature"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_model_that_returns_no_loss(tmp_path):
    trainer = Trainer(NoLoss(), args(tmp_path, max_steps=1), train_dataset=rows())
    with pytest.raises(ValueError, match="returned no loss.*Pass labels"):
        trainer.train()


@pytest.mark.parametrize("resume", [True, "does/not/exist"])
def test_resume_from_missing_checkpoint(tmp_path, resume):
    trainer = Trainer(Regressor(), args(tmp_path, max_steps=1), train_dataset=rows())
    with pytest.raises(ValueError, match="checkpoint"):
        trainer.train(resume_from_checkpoint=resume)
    assert trainer.state.global_step == 0


def test_unsupported_optimizer_names_the_package(tmp_path):
    trainer = Trainer(Regressor(), args(tmp_path, max_steps=1, optim="paged_adamw_8bit"), train_dataset=rows())
    with pytest.raises(ValueError, match="bitsandbytes"):
        trainer.train()


def test_plain_module_trains_evaluates_and_predicts(tmp_path):
    trainer = Trainer(Regressor(), args(tmp_path, max_steps=2, learning_rate=0.1), train_dataset=rows(),
                      eval_dataset=rows(4))
    assert trainer.train().global_step == 2
    assert trainer.evaluate()["eval_loss"] > 0
    assert trainer.predict(rows(4)).predictions.shape == (4,)


def test_liger_kernels_are_refused_with_the_reason_where_they_cannot_run(tmp_path):
    import importlib.util

    import torch

    if torch.cuda.is_available():
        pytest.skip("this check is for machines without CUDA")
    reason = "needs liger-kernel" if importlib.util.find_spec("liger_kernel") is None else "no CUDA device"
    with pytest.raises(ValueError, match=f"`use_liger_kernel=True`.*{reason}"):
        Trainer(torch.nn.Linear(2, 2), TrainingArguments(str(tmp_path), report_to="none", use_liger_kernel=True))
