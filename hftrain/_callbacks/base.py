"""`TrainerState`, `TrainerControl`, `ExportableState` and the `TrainerCallback` base class.

A line-for-line port of `transformers/trainer_callback.py` (5.24) without importing it: that module imports
`transformers.training_args`, which imports `accelerate`. Public names are re-exported by `hftrain.trainer_callback`;
import them from there.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hftrain.training_args import TrainingArguments


__all__ = ["ExportableState", "TrainerCallback", "TrainerControl", "TrainerState"]


def _is_exportable(obj: Any) -> bool:
    """Duck-typed `isinstance(obj, ExportableState)`.

    HF's own `ExportableState` subclasses (for example `transformers.EarlyStoppingCallback`) count too, so a script
    that passes HF callbacks to hftrain keeps their state in `trainer_state.json`.
    """
    return callable(getattr(obj, "state", None)) and callable(getattr(obj, "from_state", None))


def _hp_params(trial: Any) -> dict[str, Any]:
    """`transformers.integrations.hp_params`, copied: importing `transformers.integrations` pulls in accelerate."""
    if importlib.util.find_spec("optuna") is not None:
        import optuna

        if isinstance(trial, optuna.trial.BaseTrial):
            return dict(trial.params)
    ray_tune = importlib.util.find_spec("ray") is not None and importlib.util.find_spec("ray.tune") is not None
    if ray_tune and isinstance(trial, dict):
        return trial
    if importlib.util.find_spec("wandb") is not None:
        import wandb

        # Same "is it really installed" probe as transformers' `is_wandb_available`.
        if hasattr(wandb, "run") and isinstance(trial, dict):
            return trial
    raise RuntimeError(f"Unknown type for trial {trial.__class__}")


@dataclass
class TrainerState:
    """The `Trainer`'s inner state, saved as `trainer_state.json` in every checkpoint and passed to each callback.

    One step is one optimizer update: with `gradient_accumulation_steps=n`, a step consumes `n` batches.

    Args:
        epoch: Float epoch progress during training; the decimal part is the fraction of the epoch done.
        global_step: Optimizer updates completed.
        max_steps: Optimizer updates this run will do.
        logging_steps / eval_steps / save_steps: Absolute intervals, resolved from ratios by `compute_steps`.
        train_batch_size: Batch size of the training dataloader (needed only with `auto_find_batch_size`).
        num_train_epochs: Number of epochs of the training loop.
        num_input_tokens_seen: Input tokens seen so far, when token counting is enabled.
        total_flos: Floating-point operations done since the start of training (a float, to avoid overflow).
        log_history: Every dict passed to `Trainer.log`, each with its `"step"`.
        best_metric / best_global_step / best_model_checkpoint: Best value of `metric_for_best_model`, the step
            it was reached at and that step's checkpoint folder.
        is_local_process_zero / is_world_process_zero: Whether this process is the main one on its machine /
            across all machines.
        is_hyper_param_search / trial_name / trial_params: Hyperparameter-search bookkeeping.
        stateful_callbacks: Callbacks whose state is saved. Given as a list of objects with `state()` and
            `from_state`, stored as `{class name: state dict, or a list of them for repeated classes}`.

    Example:
        >>> from types import SimpleNamespace
        >>> state = TrainerState()
        >>> args = SimpleNamespace(logging_steps=10, eval_steps=0.25, save_steps=None)  # a TrainingArguments
        >>> state.compute_steps(args, max_steps=10)  # ratios are rounded up: ceil(10 * 0.25)
        >>> (state.logging_steps, state.eval_steps, state.save_steps)
        (10, 3, 500)
    """

    epoch: float = 0
    global_step: int = 0
    max_steps: int = 0
    logging_steps: int = 500
    eval_steps: int = 500
    save_steps: int = 500
    train_batch_size: int | None = None
    num_train_epochs: int = 0
    num_input_tokens_seen: int = 0
    total_flos: float = 0
    log_history: list[dict[str, float]] = None  # type: ignore[assignment]  # None -> [] in __post_init__, as HF
    best_metric: float | None = None
    best_global_step: int | None = None
    best_model_checkpoint: str | None = None
    is_local_process_zero: bool = True
    is_world_process_zero: bool = True
    is_hyper_param_search: bool = False
    trial_name: str | None = None
    trial_params: dict[str, str | float | int | bool] | None = None
    stateful_callbacks: dict[str, Any] | list[Any] | None = None

    def __post_init__(self) -> None:
        if self.log_history is None:
            self.log_history = []
        if self.stateful_callbacks is None:
            self.stateful_callbacks = {}
        elif isinstance(self.stateful_callbacks, dict):
            pass  # loaded from a state file: already `{name: state}`
        else:
            # Saveable callbacks are stored as their exported state; repeated classes as a list of states.
            stateful_callbacks: dict[str, Any] = {}
            for callback in self.stateful_callbacks:
                if not _is_exportable(callback):
                    raise TypeError(
                        "All callbacks passed to be saved must inherit `ExportableState`, but received "
                        f"{type(callback)}"
                    )
                name = callback.__class__.__name__
                if name in stateful_callbacks:
                    if not isinstance(stateful_callbacks[name], list):
                        stateful_callbacks[name] = [stateful_callbacks[name]]
                    stateful_callbacks[name].append(callback.state())
                else:
                    stateful_callbacks[name] = callback.state()
            self.stateful_callbacks = stateful_callbacks

    def save_to_json(self, json_path: str) -> None:
        """Save the content of this instance in JSON format inside `json_path` (byte-identical to HF's)."""
        json_string = json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"
        with open(json_path, "w", encoding="utf-8") as f:
            f.write(json_string)

    @classmethod
    def load_from_json(cls, json_path: str) -> TrainerState:
        """Create an instance from the content of `json_path`."""
        with open(json_path, encoding="utf-8") as f:
            text = f.read()
        return cls(**json.loads(text))

    def compute_steps(self, args: TrainingArguments, max_steps: int) -> None:
        """Store absolute logging/eval/save intervals; a value below 1 is a ratio of `max_steps`, rounded up."""
        for step_kind in ("logging", "eval", "save"):
            num_steps = getattr(args, f"{step_kind}_steps")
            if num_steps is not None:
                if num_steps < 1:
                    num_steps = math.ceil(max_steps * num_steps)
                setattr(self, f"{step_kind}_steps", num_steps)

    def init_training_references(self, trainer: Any, max_steps: int, num_train_epochs: int, trial: Any) -> None:
        """Store the run's references: trial name/params, `max_steps`, `num_train_epochs` and the rank flags.

        `trainer` needs `hp_name`, `_trial`, `is_local_process_zero()` and `is_world_process_zero()`, as in HF.
        """
        if trainer.hp_name is not None and trainer._trial is not None:
            # `trainer._trial`, not `trial`: Optuna under DDP only calls `_hp_search_setup(trial)`.
            self.trial_name = trainer.hp_name(trainer._trial)
        self.trial_params = None
        if trial is not None:
            self.trial_params = _hp_params(trial)

        self.max_steps = max_steps
        self.num_train_epochs = num_train_epochs
        self.is_local_process_zero = trainer.is_local_process_zero()
        self.is_world_process_zero = trainer.is_world_process_zero()


class ExportableState:
    """Mix-in for objects whose state is saved in checkpoints (`trainer_state.json["stateful_callbacks"]`).

    `state()` returns only what `from_state` needs to rebuild the object: `{"args": init kwargs, "attributes":
    attributes to set afterwards}`, plain JSON, no pickles.

    Example:
        >>> class CountingCallback(ExportableState):  # usually (TrainerCallback, ExportableState)
        ...     def __init__(self, every: int = 1):
        ...         self.every, self.seen = every, 0
        ...     def state(self) -> dict:
        ...         return {"args": {"every": self.every}, "attributes": {"seen": self.seen}}
        >>> CountingCallback.from_state({"args": {"every": 2}, "attributes": {"seen": 5}}).seen
        5
    """

    def state(self) -> dict[str, Any]:
        raise NotImplementedError("You must implement a `state` function to utilize this class.")

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Any:
        instance = cls(**state["args"])
        for k, v in state["attributes"].items():
            setattr(instance, k, v)
        return instance


@dataclass
class TrainerControl(ExportableState):
    """Switches callbacks flip to steer the training loop.

    Args:
        should_training_stop: Stop training. Never set back to `False` during a run (only at `on_train_begin`).
        should_epoch_stop: Stop the current epoch. Reset at the beginning of the next epoch.
        should_save: Save a checkpoint at this step. Reset at the next step and by `on_save`.
        should_evaluate: Evaluate at this step. Reset at the next step and by `on_evaluate`.
        should_log: Log at this step. Reset at the next step and by `on_log`.

    Example:
        >>> class StopAtStep(TrainerCallback):
        ...     def on_step_end(self, args, state, control, **kwargs):
        ...         if state.global_step >= 100:
        ...             control.should_training_stop = True
        ...         return control
    """

    should_training_stop: bool = False
    should_epoch_stop: bool = False
    should_save: bool = False
    should_evaluate: bool = False
    should_log: bool = False

    def _new_training(self) -> None:
        """Internal method that resets the variable for a new training."""
        self.should_training_stop = False

    def _new_epoch(self) -> None:
        """Internal method that resets the variable for a new epoch."""
        self.should_epoch_stop = False

    def _new_step(self) -> None:
        """Internal method that resets the variable for a new step."""
        self.should_save = False
        self.should_evaluate = False
        self.should_log = False

    def state(self) -> dict[str, Any]:
        return {
            "args": {
                "should_training_stop": self.should_training_stop,
                "should_epoch_stop": self.should_epoch_stop,
                "should_save": self.should_save,
                "should_evaluate": self.should_evaluate,
                "should_log": self.should_log,
            },
            "attributes": {},
        }


class TrainerCallback:
    """Base class for objects that inspect the training loop at some events and take decisions.

    Every event receives `args` (the `TrainingArguments`), `state` (`TrainerState`) and `control`
    (`TrainerControl`) positionally, and these keyword arguments: `model`, `processing_class`, `optimizer`,
    `lr_scheduler`, `train_dataloader`, `eval_dataloader`; plus `metrics` for `on_evaluate`/`on_predict` and `logs`
    for `on_log`. Unpack the ones you need in the event's signature.

    `control` is the only object a callback may change; an event that changes it may return it. A non-`None`
    return value replaces `control` for the callbacks that follow.

    Example:
        >>> class LossPrinter(TrainerCallback):
        ...     def on_log(self, args, state, control, logs=None, **kwargs):
        ...         if state.is_local_process_zero and "loss" in logs:
        ...             print(state.global_step, logs["loss"])
    """

    def on_init_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> Any:
        """Event called at the end of the initialization of the `Trainer`."""

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> Any:
        """Event called at the beginning of training."""

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> Any:
        """Event called at the end of training."""

    def on_epoch_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> Any:
        """Event called at the beginning of an epoch."""

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> Any:
        """Event called at the end of an epoch."""

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> Any:
        """Event called at the beginning of a training step (one step may take several inputs under accumulation)."""

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> Any:
        """Event called before the optimizer step but after gradient clipping. Useful for monitoring gradients."""

    def on_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> Any:
        """Event called after the optimizer step but before gradients are zeroed out. Useful to monitor gradients."""

    def on_substep_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> Any:
        """Event called at the end of a substep during gradient accumulation."""

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> Any:
        """Event called at the end of a training step (one step may take several inputs under accumulation)."""

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> Any:
        """Event called after an evaluation phase."""

    def on_predict(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, metrics: Any, **kwargs: Any
    ) -> Any:
        """Event called after a successful prediction."""

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> Any:
        """Event called after a checkpoint save."""

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> Any:
        """Event called after logging the last logs."""

    def on_prediction_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> Any:
        """Event called after a prediction step."""

    def on_push_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> Any:
        """Event called before pushing the model to the Hub (`Trainer.push_to_hub`, `_push_from_checkpoint`)."""
