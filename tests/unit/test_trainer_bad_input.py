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


def test_optimizer_whose_package_is_missing_names_the_package(tmp_path, monkeypatch):
    from transformers import trainer_optimizer

    def missing(context):
        raise ImportError("bitsandbytes is not installed")

    monkeypatch.setitem(trainer_optimizer._OPTIMIZER_HANDLERS, "paged_adamw_8bit", missing)
    trainer = Trainer(Regressor(), args(tmp_path, max_steps=1, optim="paged_adamw_8bit"), train_dataset=rows())
    with pytest.raises(ImportError, match="`pip install bitsandbytes`"):  # transformers raises an ImportError too
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


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"learning_rate": "1e-4"}, TypeError, "`learning_rate` takes a number, got the string '1e-4': pass "
                                               "learning_rate=1e-4, not a string"),
        ({"per_device_train_batch_size": "8"}, TypeError, "`per_device_train_batch_size` takes a number"),
        ({"weight_decay": "heavy"}, TypeError, "`weight_decay` takes a number, got the string 'heavy': pass a number"),
        ({"seed": 1.5}, TypeError, "`seed` takes an integer, got 1.5"),
        ({"gradient_accumulation_steps": 2.0}, TypeError, "pass gradient_accumulation_steps=2"),
        ({"max_grad_norm": True}, TypeError, "`max_grad_norm` takes a number, got bool"),
        ({"learning_rate": float("nan")}, ValueError, "`learning_rate` must be a finite number"),
        ({"per_device_train_batch_size": 0}, ValueError, "`per_device_train_batch_size` must be a positive number"),
        ({"per_device_eval_batch_size": -1}, ValueError, "`per_device_eval_batch_size` must be a positive number"),
        ({"gradient_accumulation_steps": 0}, ValueError, "`gradient_accumulation_steps` must be a positive number"),
        ({"num_train_epochs": -1}, ValueError, "`num_train_epochs` must be zero or more"),
        ({"num_train_epochs": 0}, ValueError, "`num_train_epochs=0` with `max_steps=-1` trains no step"),
        ({"max_steps": 0}, ValueError, r"`max_steps` must be -1 \(train for num_train_epochs\)"),
        ({"max_steps": -5}, ValueError, "`max_steps` must be -1"),
        ({"learning_rate": -1e-3}, ValueError, "`learning_rate` must be zero or more"),
        ({"adam_beta2": 1.0}, ValueError, r"`adam_beta2` must be in \[0, 1\)"),
        ({"label_smoothing_factor": 1.5}, ValueError, r"`label_smoothing_factor` must be in \[0, 1\)"),
        ({"save_steps": -3}, ValueError, "`save_steps` must be zero or more"),
        ({"save_steps": 0}, ValueError, "`save_steps=0` with `save_strategy='steps'` never saves"),
        ({"logging_steps": 0}, ValueError, "`logging_steps=0` never logs"),
        ({"eval_steps": -2}, ValueError, "`eval_steps` must be zero or more"),
        ({"eval_accumulation_steps": 0}, ValueError, "`eval_accumulation_steps` must be a positive number"),
        ({"dataloader_num_workers": -1}, ValueError, "`dataloader_num_workers` must be zero or more"),
        ({"seed": -1}, ValueError, r"`seed` must be in \[0, 2\*\*32\)"),
    ],
)
def test_a_bad_value_is_refused_at_construction_naming_the_field(tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        TrainingArguments(str(tmp_path), report_to="none", **kwargs)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"eval_strategy": "steps", "eval_steps": 50}, "`eval_steps=50` with `eval_strategy='steps'` would never "
                                                   "evaluate: this run has 4 optimizer steps"),
    ({"logging_steps": 10}, "`logging_steps=10` with `logging_strategy='steps'` would never log"),
    ({"save_strategy": "steps", "save_steps": 5}, "`save_steps=5` with `save_strategy='steps'` would never save"),
])
def test_an_interval_that_can_never_fire_is_refused_before_lightning_starts(tmp_path, kwargs, message, monkeypatch):
    import lightning

    def never(*args, **kwargs):
        raise AssertionError("Lightning started")

    monkeypatch.setattr(lightning.Trainer, "fit", never)
    trainer = Trainer(Regressor(), args(tmp_path, max_steps=4, **kwargs), train_dataset=rows(), eval_dataset=rows(4))
    with pytest.raises(ValueError, match=message):
        trainer.train()


def test_default_intervals_and_ratios_longer_than_the_run_are_fine(tmp_path):
    # transformers' defaults (logging_steps=500, save_steps=500) and ratios fire or are the user's silence
    trainer = Trainer(Regressor(), args(tmp_path, max_steps=2, eval_strategy="steps", eval_steps=0.5,
                                        save_strategy="steps"), train_dataset=rows(), eval_dataset=rows(4))
    assert trainer.train().global_step == 2


@pytest.mark.parametrize("which", ["train", "eval", "eval_dict"])
def test_an_empty_dataset_is_refused_at_trainer_init(tmp_path, which):
    data = {"train": dict(train_dataset=ListDataset([])), "eval": dict(eval_dataset=ListDataset([])),
            "eval_dict": dict(eval_dataset={"a": rows(2), "b": ListDataset([])})}[which]
    name = {"train": "`train_dataset`", "eval": "`eval_dataset`", "eval_dict": r"`eval_dataset\['b'\]`"}[which]
    with pytest.raises(ValueError, match=f"{name} is empty"):
        Trainer(Regressor(), args(tmp_path), **data)


def test_label_names_naming_a_missing_column_are_refused(tmp_path):
    import datasets

    table = datasets.Dataset.from_dict({"x": [[0.0] * 4] * 4, "label": [1.0] * 4})
    Trainer(Regressor(), args(tmp_path, label_names=["labels"]), train_dataset=table)  # collated as "labels"
    with pytest.raises(ValueError, match=r"`label_names=\['target'\]` names \['target'\], which `train_dataset` "
                                         r"does not have \(its columns: \['label', 'x'\]\)"):
        Trainer(Regressor(), args(tmp_path, label_names=["target"]), train_dataset=table)
    # a collator of the user's may make the labels (as language-modelling collators do): nothing to check then
    Trainer(Regressor(), args(tmp_path, label_names=["target"]), train_dataset=table, data_collator=lambda f: f)


class Payload:
    """Unpickling this runs code: it writes a file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rng_state.pth"])
def test_a_checkpoint_file_that_would_run_code_is_refused_and_nothing_runs(tmp_path, name):
    trainer = Trainer(Regressor(), args(tmp_path / "run", max_steps=2, save_strategy="steps", save_steps=2),
                      train_dataset=rows())
    trainer.train()
    checkpoint = tmp_path / "run" / "checkpoint-2"
    ran = tmp_path / "payload-ran"
    torch.save({"state": Payload(str(ran))}, checkpoint / name)  # torch's format, with a pickled object inside
    resumed = Trainer(Regressor(), args(tmp_path / "run", max_steps=4), train_dataset=rows())
    with pytest.raises(ValueError, match=f"{name} is corrupt or was not written by a Trainer"):
        resumed.train(resume_from_checkpoint=str(checkpoint))
    assert not ran.exists()
