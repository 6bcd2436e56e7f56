"""Callback states in checkpoints: refreshed at every save and restored on resume, as transformers does.

HF stores `state()` of each `ExportableState` callback and of the `TrainerControl` in `trainer_state.json` at every
save (`Trainer._save_checkpoint`) and, with `restore_callback_states_from_checkpoint=True`, rebuilds them when
resuming (`Trainer._load_callback_state`).
"""

from __future__ import annotations

import itertools
import json
import logging
from types import SimpleNamespace
from typing import Any

import pytest

import hftrain
from hftrain._callbacks import state as _callback_state
from hftrain.trainer_callback import (
    CallbackHandler,
    DefaultFlowCallback,
    EarlyStoppingCallback,
    ExportableState,
    PrinterCallback,
    TrainerCallback,
    TrainerControl,
)
from tests.helpers import classification_rows, tiny_bert_classifier

pytestmark = pytest.mark.integration

ES = "EarlyStoppingCallback"


def _worsening_metric(start: float = 1.0):
    """compute_metrics whose `bad` metric (lower is better) gets worse at every evaluation."""
    values = itertools.count(start)
    return lambda eval_pred: {"bad": float(next(values))}


def _args_kwargs(**kwargs: Any) -> dict[str, Any]:
    return {
        "report_to": "none", "disable_tqdm": True, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 8,
        "learning_rate": 1e-3, "max_steps": 8, "logging_steps": 1, "eval_strategy": "steps", "eval_steps": 1,
        "save_strategy": "steps", "save_steps": 1, "metric_for_best_model": "bad", "greater_is_better": False,
        "seed": 3, **kwargs,
    }


def _stateful(path) -> dict[str, Any]:
    return json.loads((path / "trainer_state.json").read_text())["stateful_callbacks"]


class StepCounter(TrainerCallback, ExportableState):
    """A user's stateful callback: counts the optimizer steps it has seen."""

    def __init__(self, tag: str = "") -> None:
        self.tag, self.steps_seen = tag, 0

    def on_step_end(self, args, state, control, **kwargs):
        self.steps_seen += 1

    def state(self) -> dict[str, Any]:
        return {"args": {"tag": self.tag}, "attributes": {"steps_seen": self.steps_seen}}


def _trainer(out, callbacks, compute_metrics, **kwargs) -> hftrain.Trainer:
    return hftrain.Trainer(
        tiny_bert_classifier(), hftrain.TrainingArguments(str(out), **_args_kwargs(**kwargs)),
        train_dataset=classification_rows(32), eval_dataset=classification_rows(8, seed=1),
        compute_metrics=compute_metrics, callbacks=callbacks,
    )


def _callback(trainer: hftrain.Trainer, cls: type) -> Any:
    (callback,) = [cb for cb in trainer.callback_handler.callbacks if type(cb) is cls]
    return callback


# ---- saving ----------------------------------------------------------------------------------------------------


def test_checkpoints_store_the_callback_states_of_their_step_as_transformers(tmp_path):
    import transformers

    stateful = {}
    for name, trainer_cls, args_cls, es_cls in (
        ("hf", transformers.Trainer, transformers.TrainingArguments, transformers.EarlyStoppingCallback),
        ("ours", hftrain.Trainer, hftrain.TrainingArguments, EarlyStoppingCallback),
    ):
        args = args_cls(output_dir=str(tmp_path / name), **_args_kwargs())
        trainer = trainer_cls(
            model=tiny_bert_classifier(), args=args, train_dataset=classification_rows(32),
            eval_dataset=classification_rows(8, seed=1), compute_metrics=_worsening_metric(),
            callbacks=[es_cls(early_stopping_patience=2)],
        )
        assert trainer.train().global_step == 3  # evals 2 and 3 fail to improve on the first: stop at 3
        stateful[name] = {step: _stateful(tmp_path / name / f"checkpoint-{step}") for step in range(1, 4)}

    for step, states in stateful["ours"].items():
        assert states[ES] == {
            "args": {"early_stopping_patience": 2, "early_stopping_threshold": 0.0},
            "attributes": {"early_stopping_patience_counter": step - 1},
        }
        assert states["TrainerControl"]["args"]["should_save"] is True
        assert states["TrainerControl"]["args"]["should_training_stop"] is (step == 3)
    assert stateful["ours"] == stateful["hf"]


def test_several_callbacks_of_one_class_are_saved_as_a_list_of_their_current_states(tmp_path):
    first, second = StepCounter("a"), StepCounter("b")
    trainer = _trainer(tmp_path, [first, second], None, eval_strategy="no", metric_for_best_model=None, max_steps=2)
    trainer.train()
    for step in (1, 2):
        states = _stateful(tmp_path / f"checkpoint-{step}")
        assert states["StepCounter"] == [  # one state per callback, not one more per save
            {"args": {"tag": "a"}, "attributes": {"steps_seen": step}},
            {"args": {"tag": "b"}, "attributes": {"steps_seen": step}},
        ]


# ---- resuming --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two steps, a checkpoint after each; checkpoint-2 has a patience counter of 1."""
    out = tmp_path_factory.mktemp("run")
    trainer = _trainer(out, [EarlyStoppingCallback(3), StepCounter("t")], _worsening_metric(), max_steps=2)
    trainer.train()
    assert _stateful(out / "checkpoint-2")[ES]["attributes"]["early_stopping_patience_counter"] == 1
    assert _stateful(out / "checkpoint-2")["StepCounter"]["attributes"]["steps_seen"] == 2
    return out


def _resume(checkpoints, tmp_path, restore: bool) -> hftrain.Trainer:
    trainer = _trainer(
        tmp_path, [EarlyStoppingCallback(3), StepCounter("t")], _worsening_metric(10.0),  # worse than the best, 1.0
        restore_callback_states_from_checkpoint=restore,
    )
    trainer.train(resume_from_checkpoint=str(checkpoints / "checkpoint-2"))
    return trainer


def test_resume_restores_callback_states_when_asked(checkpoints, tmp_path):
    trainer = _resume(checkpoints, tmp_path, restore=True)
    # the counter goes on from 1: 2 at step 3, 3 at step 4, which stops training there
    assert trainer.state.global_step == 4
    assert _callback(trainer, EarlyStoppingCallback).early_stopping_patience_counter == 3
    counter = _callback(trainer, StepCounter)
    assert (counter.tag, counter.steps_seen) == ("t", 4)
    states = _stateful(tmp_path / "checkpoint-3")
    assert states[ES]["attributes"]["early_stopping_patience_counter"] == 2
    assert states["StepCounter"] == {"args": {"tag": "t"}, "attributes": {"steps_seen": 3}}


def test_resume_starts_callbacks_afresh_by_default(checkpoints, tmp_path):
    trainer = _resume(checkpoints, tmp_path, restore=False)
    # HF: the counter restarts at 0 (1 at step 3, 2 at step 4, 3 at step 5, which stops training there)
    assert trainer.state.global_step == 5
    assert _callback(trainer, EarlyStoppingCallback).early_stopping_patience_counter == 3
    assert _callback(trainer, StepCounter).steps_seen == 3
    states = _stateful(tmp_path / "checkpoint-3")
    assert states[ES]["attributes"]["early_stopping_patience_counter"] == 1
    assert states["StepCounter"]["attributes"]["steps_seen"] == 1


def test_restore_warns_about_checkpointed_callbacks_this_run_lacks(checkpoints, tmp_path, caplog):
    trainer = _trainer(tmp_path, [EarlyStoppingCallback(3)], _worsening_metric(10.0),
                       restore_callback_states_from_checkpoint=True)
    with caplog.at_level(logging.WARNING, logger="hftrain._callbacks.state"):
        trainer.train(resume_from_checkpoint=str(checkpoints / "checkpoint-2"))
    assert "Checkpoint included callbacks not included in current configuration. Ignoring. (StepCounter)" in (
        caplog.text
    )
    assert trainer.state.global_step == 4
    # the absent callback's state is carried over unchanged, as HF does
    assert _stateful(tmp_path / "checkpoint-3")["StepCounter"]["attributes"]["steps_seen"] == 2


# ---- restore_callback_states against transformers' _load_callback_state ---------------------------------------


def _hf_restore(stored: dict[str, Any], callbacks: list[Any]) -> tuple[list[Any], Any]:
    import transformers

    fake = SimpleNamespace(
        args=SimpleNamespace(restore_callback_states_from_checkpoint=True),
        state=SimpleNamespace(stateful_callbacks=stored),
        callback_handler=transformers.trainer_callback.CallbackHandler(callbacks, None, None, None, None),
        control=transformers.TrainerControl(),
    )
    transformers.Trainer._load_callback_state(fake)
    return fake.callback_handler.callbacks, fake.control


def test_restore_matches_transformers_load_callback_state(caplog):
    import transformers

    stored = {
        ES: [
            {"args": {"early_stopping_patience": 2, "early_stopping_threshold": 0.5},
             "attributes": {"early_stopping_patience_counter": 1}},
            {"args": {"early_stopping_patience": 7}, "attributes": {"early_stopping_patience_counter": 4}},
        ],
        "TrainerControl": {"args": {"should_save": True, "should_training_stop": True}, "attributes": {}},
        "Missing": {"args": {}, "attributes": {}},
    }
    hf_callbacks, hf_control = _hf_restore(stored, [
        transformers.DefaultFlowCallback(), transformers.EarlyStoppingCallback(9), transformers.PrinterCallback(),
        transformers.EarlyStoppingCallback(8),
    ])
    handler = CallbackHandler(
        [DefaultFlowCallback(), EarlyStoppingCallback(9), PrinterCallback(), EarlyStoppingCallback(8)],
        None, None, None, None,
    )
    with caplog.at_level(logging.WARNING, logger="hftrain._callbacks.state"):
        control = _callback_state.restore_callback_states(stored, handler, TrainerControl())

    assert [type(cb).__name__ for cb in handler.callbacks] == [type(cb).__name__ for cb in hf_callbacks] == [
        "DefaultFlowCallback", "PrinterCallback", ES, ES]
    assert [vars(cb) for cb in handler.callbacks] == [vars(cb) for cb in hf_callbacks]
    assert [cb.early_stopping_patience_counter for cb in handler.callbacks[2:]] == [1, 4]
    assert isinstance(control, TrainerControl) and vars(control) == vars(hf_control)
    assert control.should_training_stop and control.should_save
    assert "Checkpoint included callbacks not included in current configuration. Ignoring. (Missing)" in caplog.text


def test_refresh_keeps_other_entries_and_replaces_repeated_classes():
    stored = {"Gone": {"args": {}, "attributes": {"x": 1}}, "StepCounter": [{"old": 1}, {"old": 2}]}
    first, second = StepCounter("a"), StepCounter("b")
    second.steps_seen = 5
    callbacks = [DefaultFlowCallback(), first, second]
    refreshed = _callback_state.refresh_callback_states(stored, callbacks, TrainerControl())
    assert refreshed == {
        "Gone": {"args": {}, "attributes": {"x": 1}},
        "StepCounter": [first.state(), second.state()],
        "TrainerControl": TrainerControl().state(),
    }
    assert stored["StepCounter"] == [{"old": 1}, {"old": 2}]  # the input is left alone
