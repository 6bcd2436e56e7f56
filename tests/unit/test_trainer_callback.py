"""`hftrain.trainer_callback` against `transformers.trainer_callback`, driven side by side.

Every scenario runs HF's classes and ours through the same scripted event sequence with the same
`transformers.TrainingArguments` (ours are duck-typed on attribute access) and asserts identical control flags after
each event, identical `TrainerState`s and identical output.
"""

from __future__ import annotations

import dataclasses
import doctest
import inspect
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import transformers
import transformers.trainer_callback as hf
from transformers import TrainingArguments

import hftrain._callbacks.base as ours_base
import hftrain.trainer_callback as ours

REPO_ROOT = Path(__file__).resolve().parents[2]
OUR_LOGGER = "hftrain.trainer_callback"


def make_args(tmp_path: Path, **kwargs: Any) -> TrainingArguments:
    return TrainingArguments(output_dir=str(tmp_path), report_to="none", **kwargs)


# --------------------------------------------------------------------------------------------------------------------
# A scripted training loop, following `Trainer._inner_training_loop` / `_maybe_log_save_evaluate` (trainer.py 5.24).
# --------------------------------------------------------------------------------------------------------------------


def simulate(
    mod: ModuleType,
    args: Any,
    callbacks: list[Any],
    *,
    max_steps: int,
    steps_per_epoch: int,
    num_train_epochs: int,
    eval_values: list[float] | None = None,
) -> tuple[list[tuple[str, int, dict[str, bool]]], Any]:
    """Drive `mod`'s CallbackHandler; return [(event, global_step, control flags after it)] and the final state."""
    handler = mod.CallbackHandler(callbacks, None, None, None, None)
    state = mod.TrainerState()
    state.compute_steps(args, max_steps)
    state.max_steps, state.num_train_epochs = max_steps, num_train_epochs
    control = mod.TrainerControl()
    trace: list[tuple[str, int, dict[str, bool]]] = []
    evals = iter(eval_values or [])

    def fire(event: str, **kwargs: Any) -> None:
        nonlocal control
        control = getattr(handler, event)(args, state, control, **kwargs)
        trace.append((event, state.global_step, dataclasses.asdict(control)))

    def maybe_log_save_evaluate() -> None:
        if control.should_log:
            logs = {"loss": 1.0 / state.global_step if state.global_step else 0.0, "epoch": state.epoch}
            state.log_history.append({**logs, "step": state.global_step})
            fire("on_log", logs=logs)
        if control.should_evaluate:
            metric = next(evals, 1.0)
            metrics = {"eval_loss": metric, "eval_accuracy": metric}
            fire("on_evaluate", metrics=metrics)
            if args.metric_for_best_model:  # `_determine_best_metric` runs after `on_evaluate`
                key = args.metric_for_best_model
                value = metrics[key if key.startswith("eval_") else f"eval_{key}"]
                better = (lambda a, b: a > b) if args.greater_is_better else (lambda a, b: a < b)
                if state.best_metric is None or better(value, state.best_metric):
                    state.best_metric, state.best_global_step = value, state.global_step
        if control.should_save:
            fire("on_save")

    fire("on_train_begin")
    for epoch in range(num_train_epochs):
        fire("on_epoch_begin")
        for step in range(steps_per_epoch):
            fire("on_step_begin")
            fire("on_pre_optimizer_step")
            fire("on_optimizer_step")
            state.global_step += 1
            state.epoch = epoch + (step + 1) / steps_per_epoch
            fire("on_step_end")
            maybe_log_save_evaluate()
            if control.should_epoch_stop or control.should_training_stop:
                break
        fire("on_epoch_end")
        maybe_log_save_evaluate()
        if control.should_training_stop:
            break
    fire("on_train_end")
    return trace, state


def steps_of(trace: list[tuple[str, int, dict[str, bool]]], event: str) -> list[int]:
    return [step for name, step, _ in trace if name == event]


def run_both(args: Any, make_callbacks: Any, **loop: Any) -> tuple[list[Any], Any, Any]:
    hf_trace, hf_state = simulate(hf, args, make_callbacks(hf), **loop)
    our_trace, our_state = simulate(ours, args, make_callbacks(ours), **loop)
    assert our_trace == hf_trace
    assert dataclasses.asdict(our_state) == dataclasses.asdict(hf_state)
    return our_trace, hf_state, our_state


# --------------------------------------------------------------------------------------------------------------------
# DefaultFlowCallback
# --------------------------------------------------------------------------------------------------------------------

FLOW_CASES = {
    # name: (TrainingArguments kwargs, loop, expected {event: steps})
    "steps_final_eval_off_grid": (
        {"eval_strategy": "steps", "eval_steps": 3, "logging_steps": 2, "save_steps": 2},
        {"max_steps": 7, "steps_per_epoch": 4, "num_train_epochs": 2},
        {"on_evaluate": [3, 6, 7], "on_log": [2, 4, 6], "on_save": [2, 4, 6, 7]},
    ),
    "steps_final_step_on_grid": (
        {"eval_strategy": "steps", "eval_steps": 3, "logging_steps": 3, "save_steps": 3},
        {"max_steps": 6, "steps_per_epoch": 3, "num_train_epochs": 2},
        {"on_evaluate": [3, 6], "on_log": [3, 6], "on_save": [3, 6]},
    ),
    "epoch": (
        {"eval_strategy": "epoch", "logging_strategy": "epoch", "save_strategy": "epoch"},
        {"max_steps": 9, "steps_per_epoch": 3, "num_train_epochs": 3},
        {"on_evaluate": [3, 6, 9], "on_log": [3, 6, 9], "on_save": [3, 6, 9]},
    ),
    "no": (
        {"eval_strategy": "no", "logging_strategy": "no", "save_strategy": "no"},
        {"max_steps": 4, "steps_per_epoch": 2, "num_train_epochs": 2},
        {"on_evaluate": [], "on_log": [], "on_save": []},
    ),
    "ratio_steps": (  # ceil(10 * 0.1) = 1, ceil(10 * 0.25) = 3, ceil(10 * 0.5) = 5
        {"eval_strategy": "steps", "logging_steps": 0.1, "eval_steps": 0.25, "save_steps": 0.5},
        {"max_steps": 10, "steps_per_epoch": 5, "num_train_epochs": 2},
        {"on_evaluate": [3, 6, 9, 10], "on_log": list(range(1, 11)), "on_save": [5, 10]},
    ),
    "logging_first_step": (
        {"logging_first_step": True, "logging_steps": 4, "save_strategy": "no"},
        {"max_steps": 8, "steps_per_epoch": 8, "num_train_epochs": 1},
        {"on_evaluate": [], "on_log": [1, 4, 8], "on_save": []},
    ),
    "eval_delay_steps": (
        {"eval_strategy": "steps", "eval_steps": 2, "eval_delay": 5, "save_strategy": "no"},
        {"max_steps": 9, "steps_per_epoch": 3, "num_train_epochs": 3},
        {"on_evaluate": [6, 8, 9], "on_log": [], "on_save": []},
    ),
    "eval_delay_epoch": (
        {"eval_strategy": "epoch", "eval_delay": 2, "save_strategy": "no"},
        {"max_steps": 8, "steps_per_epoch": 2, "num_train_epochs": 4},
        {"on_evaluate": [4, 6, 8], "on_log": [], "on_save": []},
    ),
    "save_best_is_not_a_flow_decision": (
        {"eval_strategy": "steps", "eval_steps": 2, "save_strategy": "best", "metric_for_best_model": "loss"},
        {"max_steps": 5, "steps_per_epoch": 5, "num_train_epochs": 1},
        {"on_evaluate": [2, 4, 5], "on_log": [], "on_save": []},
    ),
    "max_steps_cuts_epoch": (
        {"eval_strategy": "epoch", "logging_strategy": "epoch", "save_strategy": "steps", "save_steps": 100},
        {"max_steps": 5, "steps_per_epoch": 3, "num_train_epochs": 3},
        {"on_evaluate": [3, 5], "on_log": [3, 5], "on_save": [5]},
    ),
}


@pytest.mark.parametrize("case", list(FLOW_CASES), ids=list(FLOW_CASES))
def test_default_flow_matches_hf(tmp_path: Path, case: str) -> None:
    arg_kwargs, loop, expected = FLOW_CASES[case]
    args = make_args(tmp_path, **arg_kwargs)
    trace, _, _ = run_both(args, lambda mod: [mod.DefaultFlowCallback], **loop)
    for event, steps in expected.items():
        assert steps_of(trace, event) == steps, event
    assert trace[-1][0] == "on_train_end" and trace[-1][2]["should_training_stop"]


@pytest.mark.parametrize("case", ["steps_final_eval_off_grid", "epoch", "ratio_steps", "eval_delay_steps"])
def test_default_flow_with_hftrain_training_arguments(tmp_path: Path, case: str) -> None:
    # What the Trainer facade passes: hftrain's own TrainingArguments, against HF's arguments driving HF's classes.
    from hftrain.training_args import TrainingArguments as OurTrainingArguments

    arg_kwargs, loop, _ = FLOW_CASES[case]
    hf_trace, hf_state = simulate(hf, make_args(tmp_path, **arg_kwargs), [hf.DefaultFlowCallback], **loop)
    our_args = OurTrainingArguments(output_dir=str(tmp_path), report_to="none", **arg_kwargs)
    our_trace, our_state = simulate(ours, our_args, [ours.DefaultFlowCallback], **loop)
    assert our_trace == hf_trace
    assert dataclasses.asdict(our_state) == dataclasses.asdict(hf_state)


def test_default_flow_accepts_plain_string_strategies() -> None:
    # hftrain's own TrainingArguments hold `IntervalStrategy` enums; plain strings compare equal as in HF.
    args = SimpleNamespace(
        logging_first_step=False, logging_strategy="steps", eval_strategy="steps", save_strategy="steps", eval_delay=0
    )
    for mod in (hf, ours):
        state, control = (
            mod.TrainerState(global_step=7, max_steps=7, eval_steps=3, save_steps=100),
            mod.TrainerControl(),
        )
        control = mod.DefaultFlowCallback().on_step_end(args, state, control)
        assert (control.should_evaluate, control.should_save, control.should_training_stop) == (True, True, True)


# --------------------------------------------------------------------------------------------------------------------
# EarlyStoppingCallback
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "values", "patience", "threshold", "stop_step"),
    [
        ("accuracy", [0.5, 0.7, 0.6, 0.65, 0.66, 0.9, 0.9], 3, 0.0, 5),  # the documented sequence
        ("loss", [0.5, 0.7, 0.6, 0.65, 0.66, 0.1, 0.1], 3, 0.0, 4),  # same values, lower is better
        ("accuracy", [0.5, 0.55, 0.7, 0.75, 0.9], 1, 0.1, 2),  # +0.05 is within the threshold
        ("accuracy", [0.5, 0.65, 0.8, 0.95, 0.96, 0.97], 1, 0.1, 5),  # +0.15 beats it, +0.01 doesn't
        ("accuracy", [0.5, 0.6, 0.7, 0.8, 0.9, 1.0], 2, 0.0, None),  # always improving: runs to max_steps
    ],
)
def test_early_stopping_matches_hf(
    tmp_path: Path, metric: str, values: list[float], patience: int, threshold: float, stop_step: int | None
) -> None:
    args = make_args(
        tmp_path,
        eval_strategy="steps",
        eval_steps=1,
        save_steps=1,
        load_best_model_at_end=True,
        metric_for_best_model=metric,
    )

    def callbacks(mod: ModuleType) -> list[Any]:
        return [mod.DefaultFlowCallback, mod.EarlyStoppingCallback(patience, threshold)]

    trace, _, _ = run_both(args, callbacks, max_steps=6, steps_per_epoch=6, num_train_epochs=1, eval_values=values)
    first_stop = next((name, step) for name, step, control in trace if control["should_training_stop"])
    assert first_stop == (("on_evaluate", stop_step) if stop_step else ("on_step_end", 6))  # else: max_steps
    assert steps_of(trace, "on_evaluate")[-1] == (stop_step or 6)


@pytest.mark.parametrize(
    ("greater_is_better", "best_metric", "value", "threshold", "counter_after"),
    [
        (True, None, 0.1, 0.0, 0),  # no best yet: always an improvement
        (True, 0.5, 0.6, 0.0, 0),
        (True, 0.5, 0.5, 0.0, 2),  # equal is not better
        (True, 0.5, 0.55, 0.1, 2),  # better, but not by more than the threshold
        (True, 0.5, 0.75, 0.25, 2),  # improvement == threshold: not enough (strict `>`)
        (True, 0.5, 0.65, 0.1, 0),
        (False, 0.5, 0.4, 0.0, 0),
        (False, 0.5, 0.6, 0.0, 2),
        (False, 0.5, 0.45, 0.1, 2),
    ],
)
def test_early_stopping_counter_rules(
    greater_is_better: bool, best_metric: float | None, value: float, threshold: float, counter_after: int
) -> None:
    args = SimpleNamespace(greater_is_better=greater_is_better)
    for mod in (hf, ours):
        cb = mod.EarlyStoppingCallback(early_stopping_patience=2, early_stopping_threshold=threshold)
        cb.early_stopping_patience_counter = 1  # an improvement resets it to 0, anything else adds 1
        cb.check_metric_value(args, mod.TrainerState(best_metric=best_metric), mod.TrainerControl(), value)
        assert cb.early_stopping_patience_counter == counter_after, mod.__name__


def test_early_stopping_requires_metric_and_eval_strategy(tmp_path: Path) -> None:
    cb, state, control = ours.EarlyStoppingCallback(), ours.TrainerState(), ours.TrainerControl()
    no_metric = make_args(tmp_path, eval_strategy="steps", eval_steps=1)
    with pytest.raises(AssertionError, match="EarlyStoppingCallback requires metric_for_best_model to be defined"):
        cb.on_train_begin(no_metric, state, control)
    no_eval = make_args(tmp_path, metric_for_best_model="loss")
    with pytest.raises(AssertionError, match="EarlyStoppingCallback requires IntervalStrategy of steps or epoch"):
        cb.on_train_begin(no_eval, state, control)


def test_early_stopping_warnings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    args = make_args(tmp_path, eval_strategy="steps", eval_steps=1, metric_for_best_model="accuracy")
    cb, state, control = ours.EarlyStoppingCallback(), ours.TrainerState(), ours.TrainerControl()
    with caplog.at_level(logging.WARNING, logger=OUR_LOGGER):
        cb.on_train_begin(args, state, control)
        assert cb.on_evaluate(args, state, control, metrics={"eval_loss": 0.1}) is None
    assert "without load_best_model_at_end=True" in caplog.text
    assert "did not find eval_accuracy so early stopping is disabled" in caplog.text
    assert cb.early_stopping_patience_counter == 0 and not control.should_training_stop


def test_early_stopping_state_round_trips_between_hf_and_ours() -> None:
    theirs = hf.EarlyStoppingCallback(early_stopping_patience=4, early_stopping_threshold=0.25)
    theirs.early_stopping_patience_counter = 3
    mine = ours.EarlyStoppingCallback.from_state(theirs.state())
    assert mine.state() == theirs.state()
    assert vars(hf.EarlyStoppingCallback.from_state(mine.state())) == vars(mine)


# --------------------------------------------------------------------------------------------------------------------
# TrainerState, TrainerControl, ExportableState
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["TrainerState", "TrainerControl"])
def test_dataclass_fields_and_defaults_match_hf(name: str) -> None:
    def spec(cls: type) -> list[tuple[str, Any, Any]]:
        return [(f.name, f.default, f.default_factory) for f in dataclasses.fields(cls)]

    assert spec(getattr(ours, name)) == spec(getattr(hf, name))
    assert dataclasses.asdict(getattr(ours, name)()) == dataclasses.asdict(getattr(hf, name)())


def full_state(mod: ModuleType) -> Any:
    es1 = mod.EarlyStoppingCallback(3, 0.01)
    es1.early_stopping_patience_counter = 2
    es2 = mod.EarlyStoppingCallback(5)
    return mod.TrainerState(
        epoch=1.5,
        global_step=12,
        max_steps=16,
        logging_steps=2,
        eval_steps=4,
        save_steps=4,
        train_batch_size=8,
        num_train_epochs=2,
        num_input_tokens_seen=1234,
        total_flos=3.5e12,
        log_history=[{"loss": 0.123456789, "step": 2}, {"eval_loss": 0.1, "epoch": 0.5, "step": 4}],
        best_metric=0.1,
        best_global_step=4,
        best_model_checkpoint="out/checkpoint-4",
        is_world_process_zero=False,
        trial_name="t0",
        trial_params={"lr": 0.001, "name": "x", "n": 3, "flag": True},
        stateful_callbacks=[mod.TrainerControl(should_save=True), es1, es2],
    )


def test_save_to_json_is_byte_identical_and_round_trips(tmp_path: Path) -> None:
    ours_state, hf_state = full_state(ours), full_state(hf)
    ours_state.save_to_json(str(tmp_path / "ours.json"))
    hf_state.save_to_json(str(tmp_path / "hf.json"))
    assert (tmp_path / "ours.json").read_bytes() == (tmp_path / "hf.json").read_bytes()
    stored = json.loads((tmp_path / "ours.json").read_text())["stateful_callbacks"]
    assert isinstance(stored["EarlyStoppingCallback"], list) and len(stored["EarlyStoppingCallback"]) == 2

    assert ours.TrainerState.load_from_json(str(tmp_path / "hf.json")) == ours_state
    assert dataclasses.asdict(hf.TrainerState.load_from_json(str(tmp_path / "ours.json"))) == dataclasses.asdict(
        ours_state
    )


def test_stateful_callbacks_are_duck_typed() -> None:
    state = ours.TrainerState(stateful_callbacks=[hf.EarlyStoppingCallback(2), ours.TrainerControl()])
    assert state.stateful_callbacks == {
        "EarlyStoppingCallback": hf.EarlyStoppingCallback(2).state(),
        "TrainerControl": ours.TrainerControl().state(),
    }
    with pytest.raises(TypeError, match="must inherit `ExportableState`, but received"):
        ours.TrainerState(stateful_callbacks=[ours.PrinterCallback()])


def test_compute_steps_matches_hf() -> None:
    for steps in [(10, 0.25, None), (0.1, 0.5, 0.999), (1, 1, 1), (None, None, None), (0.33, 7, 0.01)]:
        args = SimpleNamespace(logging_steps=steps[0], eval_steps=steps[1], save_steps=steps[2])
        results = []
        for mod in (hf, ours):
            state = mod.TrainerState()
            state.compute_steps(args, max_steps=37)
            results.append((state.logging_steps, state.eval_steps, state.save_steps))
        assert results[0] == results[1], steps


def test_init_training_references_matches_hf() -> None:
    trainer = SimpleNamespace(
        hp_name=lambda trial: f"trial-{trial}",
        _trial=3,
        is_local_process_zero=lambda: True,
        is_world_process_zero=lambda: False,
    )
    states = []
    for mod in (hf, ours):
        state = mod.TrainerState()
        state.init_training_references(trainer, max_steps=40, num_train_epochs=2, trial=None)
        states.append(dataclasses.asdict(state))
    assert states[0] == states[1]
    assert states[1]["trial_name"] == "trial-3" and states[1]["is_world_process_zero"] is False
    # No optuna / ray / wandb installed here: an unknown trial type raises like transformers' `hp_params`.
    with pytest.raises(RuntimeError, match="Unknown type for trial"):
        ours.TrainerState().init_training_references(trainer, 40, 2, trial=object())


def test_trainer_control_helpers_match_hf() -> None:
    everything = dict.fromkeys(
        ["should_training_stop", "should_epoch_stop", "should_save", "should_evaluate", "should_log"], True
    )
    for method in ["_new_training", "_new_epoch", "_new_step"]:
        hf_control, our_control = hf.TrainerControl(**everything), ours.TrainerControl(**everything)
        getattr(hf_control, method)()
        getattr(our_control, method)()
        assert our_control.state() == hf_control.state(), method
    restored = ours.TrainerControl.from_state(hf.TrainerControl(should_log=True).state())
    assert restored == ours.TrainerControl(should_log=True)
    with pytest.raises(NotImplementedError, match="You must implement a `state` function"):
        ours.ExportableState().state()


# --------------------------------------------------------------------------------------------------------------------
# TrainerCallback and CallbackHandler
# --------------------------------------------------------------------------------------------------------------------

EVENTS = sorted(name for name in vars(hf.TrainerCallback) if name.startswith("on_"))


def test_same_sixteen_events_with_the_same_parameters() -> None:
    assert len(EVENTS) == 16
    assert sorted(name for name in vars(ours.TrainerCallback) if name.startswith("on_")) == EVENTS
    for event in EVENTS:
        for cls in ("TrainerCallback", "CallbackHandler"):
            hf_params = list(inspect.signature(getattr(getattr(hf, cls), event)).parameters)
            our_params = list(inspect.signature(getattr(getattr(ours, cls), event)).parameters)
            assert our_params == hf_params, (cls, event)


def event_kwargs(event: str) -> dict[str, Any]:
    if event in ("on_evaluate", "on_predict"):
        return {"metrics": {"eval_loss": 0.5}}
    if event == "on_log":
        return {"logs": {"loss": 0.5}}
    return {}


def make_recorder(base: type) -> type:
    """A `base` subclass that records every event with its sorted kwarg names and its `metrics`/`logs`."""

    def make_event(event: str) -> Any:
        def on_event(self: Any, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.calls.append((event, sorted(kwargs), {k: kwargs[k] for k in ("metrics", "logs") if k in kwargs}))

        return on_event

    def __init__(self: Any) -> None:
        self.calls = []

    return type("Recorder", (base,), {"__init__": __init__, **{event: make_event(event) for event in EVENTS}})


def test_hf_subclassed_callback_gets_the_same_events_and_kwargs(tmp_path: Path) -> None:
    args = make_args(tmp_path)
    hf_recorder, our_recorder = (
        make_recorder(transformers.TrainerCallback)(),
        make_recorder(transformers.TrainerCallback)(),
    )
    hf_handler = hf.CallbackHandler([hf.DefaultFlowCallback, hf_recorder], "model", "tok", "opt", "sched")
    our_handler = ours.CallbackHandler([ours.DefaultFlowCallback, our_recorder], "model", "tok", "opt", "sched")
    for handler in (hf_handler, our_handler):
        handler.train_dataloader, handler.eval_dataloader = "train_dl", "eval_dl"
    for event in EVENTS:
        for mod, handler in ((hf, hf_handler), (ours, our_handler)):
            getattr(handler, event)(args, mod.TrainerState(), mod.TrainerControl(), **event_kwargs(event))
    assert our_recorder.calls == hf_recorder.calls
    assert [name for name, _, _ in our_recorder.calls] == EVENTS
    base = ["eval_dataloader", "lr_scheduler", "model", "optimizer", "processing_class", "train_dataloader"]
    assert {name: keys for name, keys, _ in our_recorder.calls}["on_log"] == sorted([*base, "logs"])
    assert {name: keys for name, keys, _ in our_recorder.calls}["on_step_end"] == base


def test_handler_passes_its_references_and_a_returned_control_replaces_it(tmp_path: Path) -> None:
    seen: list[Any] = []
    replacement = ours.TrainerControl(should_save=True)

    class Replacer(transformers.TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            return replacement

    class Watcher(ours.TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            seen.extend([control, model, kwargs["eval_dataloader"]])

    handler = ours.CallbackHandler([ours.DefaultFlowCallback(), Replacer(), Watcher()], "m", None, None, None)
    handler.eval_dataloader = [1, 2]
    state = ours.TrainerState(global_step=1, max_steps=10)
    assert handler.on_step_end(make_args(tmp_path), state, ours.TrainerControl()) is replacement
    assert seen == [replacement, "m", [1, 2]]


@pytest.mark.parametrize(
    ("event", "flag"),
    [
        ("on_train_begin", "should_training_stop"),
        ("on_epoch_begin", "should_epoch_stop"),
        ("on_step_begin", "should_log"),
        ("on_step_begin", "should_evaluate"),
        ("on_step_begin", "should_save"),
        ("on_evaluate", "should_evaluate"),
        ("on_save", "should_save"),
        ("on_log", "should_log"),
    ],
)
def test_handler_resets_flags_like_hf(tmp_path: Path, event: str, flag: str) -> None:
    args, results = make_args(tmp_path), []
    for mod in (hf, ours):
        handler = mod.CallbackHandler([mod.DefaultFlowCallback], None, None, None, None)
        control = mod.TrainerControl(**{flag: True})
        control = getattr(handler, event)(args, mod.TrainerState(max_steps=5), control, **event_kwargs(event))
        results.append(control.state())
    assert results[0] == results[1]
    assert results[1]["args"][flag] is False


def test_add_pop_remove_match_hf(caplog: pytest.LogCaptureFixture) -> None:
    handlers = {}
    for mod in (hf, ours):
        printer = mod.PrinterCallback()
        handler = mod.CallbackHandler([mod.DefaultFlowCallback, printer], None, None, None, None)
        log = [handler.callback_list]
        handler.add_callback(mod.EarlyStoppingCallback)
        handler.add_callback(mod.PrinterCallback())  # a duplicate: warns, still added
        log.append(handler.callback_list)
        log.append(type(handler.pop_callback(mod.PrinterCallback)).__name__)  # first of the class
        log.append(handler.pop_callback(printer))  # already popped: None
        log.append(handler.pop_callback(mod.ProgressCallback))  # absent class: None
        handler.remove_callback(mod.EarlyStoppingCallback)
        log.append(handler.callback_list)
        handler.remove_callback(mod.ProgressCallback)  # absent class: silently nothing
        handler.remove_callback(handler.callbacks[-1])
        log.append(handler.callback_list)
        with pytest.raises(ValueError):
            handler.remove_callback(mod.PrinterCallback())  # absent instance
        handlers[mod.__name__] = log
    assert handlers[ours.__name__] == handlers[hf.__name__]
    assert handlers[ours.__name__][1] == "DefaultFlowCallback\nPrinterCallback\nEarlyStoppingCallback\nPrinterCallback"

    with caplog.at_level(logging.WARNING, logger=OUR_LOGGER):
        ours.CallbackHandler([ours.PrinterCallback, ours.PrinterCallback], None, None, None, None)
    assert "but there is already one" in caplog.text
    assert "will not work properly if you don't have a `DefaultFlowCallback`" in caplog.text


def test_hf_default_flow_callback_satisfies_the_handler(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=OUR_LOGGER):
        handler = ours.CallbackHandler([hf.DefaultFlowCallback], None, None, None, None)
    assert caplog.text == ""
    assert handler.callback_list == "DefaultFlowCallback"


# --------------------------------------------------------------------------------------------------------------------
# PrinterCallback and ProgressCallback
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("local_zero", [True, False])
def test_printer_pops_total_flos_in_place_like_hf(capsys: pytest.CaptureFixture[str], local_zero: bool) -> None:
    outputs, logs_after = [], []
    for mod in (hf, ours):
        logs = {"loss": 0.123456789, "learning_rate": 5e-05, "epoch": 1, "total_flos": 1.0e15, "note": "x"}
        state = mod.TrainerState(is_local_process_zero=local_zero)
        handler = mod.CallbackHandler([mod.DefaultFlowCallback, mod.PrinterCallback], None, None, None, None)
        handler.on_log(None, state, mod.TrainerControl(), logs=logs)
        outputs.append(capsys.readouterr().out)
        logs_after.append(logs)
    assert outputs[0] == outputs[1]
    assert logs_after[0] == logs_after[1] == {"loss": 0.123456789, "learning_rate": 5e-05, "epoch": 1, "note": "x"}
    assert outputs[1] == (
        "{'loss': '0.1235', 'learning_rate': '5e-05', 'epoch': 1, 'note': 'x'}\n" if local_zero else ""
    )


def drive_progress(mod: ModuleType, args: Any, world_zero: bool) -> list[dict[str, Any]]:
    """train (3 steps, 2 logs, an eval of 3 batches) -> evaluate (2 batches) -> predict (2 batches)."""
    handler = mod.CallbackHandler(
        [mod.DefaultFlowCallback, mod.ProgressCallback(max_str_len=10)], None, None, None, None
    )
    state, control = mod.TrainerState(max_steps=3, is_world_process_zero=world_zero), mod.TrainerControl()
    all_logs = []

    def log(values: dict[str, Any]) -> None:
        all_logs.append(values)
        handler.on_log(args, state, control, logs=values)

    handler.on_train_begin(args, state, control)
    handler.eval_dataloader = [0, 1, 2]
    for step in range(1, 4):
        handler.on_step_begin(args, state, control)
        state.global_step = step
        handler.on_step_end(args, state, control)
        log({"loss": 1 / step, "grad_norm": 2.0, "learning_rate": 1e-3, "epoch": step / 3, "total_flos": 1e9})
        if step == 2:
            for _ in handler.eval_dataloader:
                handler.on_prediction_step(args, state, control)
            log({"eval_loss": 0.25, "eval_note": "a long string value", "step": step})
            handler.on_evaluate(args, state, control, metrics={"eval_loss": 0.25})
    handler.on_train_end(args, state, control)
    handler.eval_dataloader = [0, 1]
    for event in ("on_evaluate", "on_predict"):
        for _ in handler.eval_dataloader:
            handler.on_prediction_step(args, state, control)
        getattr(handler, event)(args, state, control, metrics={"test_loss": 0.5})
    return all_logs


@pytest.mark.parametrize("world_zero", [True, False])
def test_progress_callback_train_eval_predict_like_hf(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], world_zero: bool
) -> None:
    args, outputs, logs = make_args(tmp_path), [], []
    for mod in (hf, ours):
        logs.append(drive_progress(mod, args, world_zero))
        outputs.append(capsys.readouterr())
    assert outputs[1].out == outputs[0].out  # the log lines; the bars (stderr) carry timings
    assert logs[1] == logs[0] and logs[1][0]["total_flos"] == 1e9  # logs are not mutated
    if world_zero:
        lines = outputs[1].out.splitlines()
        assert lines[0] == "{'loss': '1', 'grad_norm': '2', 'learning_rate': '0.001', 'epoch': '0.3333'}"
        assert "String too long to display, length: 19 > 10" in lines[2]
        assert len(lines) == 4 and "it/s" in outputs[1].err
    else:
        assert outputs[1].out == "" and outputs[1].err == ""


# --------------------------------------------------------------------------------------------------------------------
# Module hygiene
# --------------------------------------------------------------------------------------------------------------------


def test_public_names_match_hf() -> None:
    for name in ours.__all__:
        assert hasattr(hf, name), name
        assert getattr(ours, name).__doc__, name
    from hftrain.trainer_callback import EarlyStoppingCallback, TrainerCallback  # noqa: F401  # the ported import


@pytest.mark.parametrize(
    "obj",
    [
        ours.TrainerState,
        ours.ExportableState,
        ours.TrainerControl,
        ours.TrainerCallback,
        ours.CallbackHandler,
        ours.PrinterCallback,
    ],
    ids=lambda obj: obj.__name__,
)
def test_docstring_examples_run(obj: type) -> None:
    module = sys.modules[obj.__module__]
    assert module in (ours, ours_base)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder(recurse=False).find(obj, globs=vars(ours).copy()):
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
    assert runner.summarize(verbose=False).attempted > 0


def test_import_does_not_pull_accelerate_training_args_or_lightning() -> None:
    code = textwrap.dedent(
        """
        import sys
        import hftrain.trainer_callback
        banned = ("accelerate", "transformers.training_args", "transformers.trainer_callback", "lightning")
        print([m for m in sys.modules if m.startswith(banned) or m == "transformers.trainer"])
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", result.stderr
