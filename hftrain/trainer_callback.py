"""Hugging Face's callback machinery, behaviour-identical to `transformers/trainer_callback.py` (5.24).

Porting is an import change: `from hftrain.trainer_callback import EarlyStoppingCallback` works as the
`transformers` import does. Callbacks written for HF (subclasses of `transformers.TrainerCallback`) run unchanged:
`CallbackHandler` duck-types callbacks (anything with `on_*` methods) and never checks their base class.

This module deliberately does not import `transformers.trainer_callback`: that module imports
`transformers.training_args`, which imports `accelerate`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm
from transformers.trainer_utils import IntervalStrategy, SaveStrategy, has_length
from transformers.utils import logging

from hftrain._callbacks.base import ExportableState, TrainerCallback, TrainerControl, TrainerState

if TYPE_CHECKING:
    from hftrain.training_args import TrainingArguments


__all__ = [
    "CallbackHandler",
    "DefaultFlowCallback",
    "EarlyStoppingCallback",
    "ExportableState",
    "PrinterCallback",
    "ProgressCallback",
    "TrainerCallback",
    "TrainerControl",
    "TrainerState",
]

logger = logging.get_logger(__name__)


def _is_default_flow(callback: Any) -> bool:
    """Whether `callback` is a `DefaultFlowCallback`, ours or transformers' (matched by class name in the MRO)."""
    return any(klass.__name__ == "DefaultFlowCallback" for klass in type(callback).__mro__)


class CallbackHandler(TrainerCallback):
    """Calls a list of callbacks in order; the `Trainer` drives its events.

    Callbacks may be instances or classes (instantiated without arguments), and may subclass this module's
    `TrainerCallback` or transformers'. Each event applies HF's control resets, then calls every callback with the
    handler's `model`, `processing_class`, `optimizer`, `lr_scheduler`, `train_dataloader` and `eval_dataloader`.

    Example:
        >>> handler = CallbackHandler([DefaultFlowCallback, PrinterCallback], None, None, None, None)
        >>> handler.callback_list
        'DefaultFlowCallback\\nPrinterCallback'
        >>> control = handler.on_log(None, TrainerState(), TrainerControl(should_log=True), logs={"loss": 0.123456})
        {'loss': '0.1235'}
        >>> control.should_log
        False
    """

    def __init__(
        self, callbacks: Iterable[Any], model: Any, processing_class: Any, optimizer: Any, lr_scheduler: Any
    ) -> None:
        self.callbacks: list[Any] = []
        for cb in callbacks:
            self.add_callback(cb)
        self.model = model
        self.processing_class = processing_class
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.train_dataloader: Any = None
        self.eval_dataloader: Any = None

        if not any(_is_default_flow(cb) for cb in self.callbacks):
            logger.warning(
                "The Trainer will not work properly if you don't have a `DefaultFlowCallback` in its callbacks. You\n"
                + "should add one before training with `trainer.add_callback(DefaultFlowCallback). The current list of"
                + "callbacks is\n:"
                + self.callback_list
            )

    def add_callback(self, callback: Any) -> None:
        """Append `callback` (a class is instantiated); warns if one of the same class is already there."""
        cb = callback() if isinstance(callback, type) else callback
        cb_class = callback if isinstance(callback, type) else callback.__class__
        if cb_class in [c.__class__ for c in self.callbacks]:
            logger.warning(
                f"You are adding a {cb_class} to the callbacks of this Trainer, but there is already one. The current"
                + "list of callbacks is\n:"
                + self.callback_list
            )
        self.callbacks.append(cb)

    def pop_callback(self, callback: Any) -> Any:
        """Remove and return the first callback of class `callback` (or equal to it); `None` if there is none."""
        if isinstance(callback, type):
            for cb in self.callbacks:
                if isinstance(cb, callback):
                    self.callbacks.remove(cb)
                    return cb
        else:
            for cb in self.callbacks:
                if cb == callback:
                    self.callbacks.remove(cb)
                    return cb
        return None

    def remove_callback(self, callback: Any) -> None:
        """Remove the first callback of class `callback`, or the instance `callback` (`ValueError` if absent)."""
        if isinstance(callback, type):
            for cb in self.callbacks:
                if isinstance(cb, callback):
                    self.callbacks.remove(cb)
                    return
        else:
            self.callbacks.remove(callback)

    @property
    def callback_list(self) -> str:
        return "\n".join(cb.__class__.__name__ for cb in self.callbacks)

    def on_init_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        return self.call_event("on_init_end", args, state, control, **kwargs)

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        control.should_training_stop = False
        return self.call_event("on_train_begin", args, state, control, **kwargs)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        return self.call_event("on_train_end", args, state, control, **kwargs)

    def on_epoch_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        control.should_epoch_stop = False
        return self.call_event("on_epoch_begin", args, state, control, **kwargs)

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        return self.call_event("on_epoch_end", args, state, control, **kwargs)

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        control.should_log = False
        control.should_evaluate = False
        control.should_save = False
        return self.call_event("on_step_begin", args, state, control, **kwargs)

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        return self.call_event("on_pre_optimizer_step", args, state, control, **kwargs)

    def on_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        return self.call_event("on_optimizer_step", args, state, control, **kwargs)

    def on_substep_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        return self.call_event("on_substep_end", args, state, control, **kwargs)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        return self.call_event("on_step_end", args, state, control, **kwargs)

    def on_evaluate(  # type: ignore[override]  # `metrics` is positional here, as in HF
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, metrics: Any, **kwargs: Any
    ) -> TrainerControl:
        control.should_evaluate = False
        return self.call_event("on_evaluate", args, state, control, metrics=metrics, **kwargs)

    def on_predict(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, metrics: Any, **kwargs: Any
    ) -> TrainerControl:
        return self.call_event("on_predict", args, state, control, metrics=metrics, **kwargs)

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        control.should_save = False
        return self.call_event("on_save", args, state, control, **kwargs)

    def on_log(  # type: ignore[override]  # `logs` is positional here, as in HF
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs: Any, **kwargs: Any
    ) -> TrainerControl:
        control.should_log = False
        return self.call_event("on_log", args, state, control, logs=logs, **kwargs)

    def on_prediction_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        return self.call_event("on_prediction_step", args, state, control, **kwargs)

    def on_push_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        return self.call_event("on_push_begin", args, state, control, **kwargs)

    def call_event(
        self,
        event: str,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> TrainerControl:
        """Call `event` on every callback in order; a non-`None` return value replaces `control`."""
        for callback in self.callbacks:
            result = getattr(callback, event)(
                args,
                state,
                control,
                model=self.model,
                processing_class=self.processing_class,
                optimizer=self.optimizer,
                lr_scheduler=self.lr_scheduler,
                train_dataloader=self.train_dataloader,
                eval_dataloader=self.eval_dataloader,
                **kwargs,
            )
            # A callback may skip returning `control` if it doesn't change it.
            if result is not None:
                control = result
        return control


class DefaultFlowCallback(TrainerCallback):
    """Decides when the loop logs, evaluates, saves and stops, from the `*_strategy`/`*_steps` arguments.

    `on_step_end`: log at step 1 with `logging_first_step` and every `state.logging_steps`; evaluate every
    `state.eval_steps` once `eval_delay` is reached; save every `state.save_steps`. At `max_steps` training stops,
    a step-based eval also runs if the last step is off the `eval_steps` grid, and a step-based save always runs.
    `on_epoch_end` does the same for the `"epoch"` strategies. The `Trainer` adds it first, always.

    Example:
        >>> state, control = TrainerState(global_step=7, max_steps=7, eval_steps=3), TrainerControl()
        >>> args = TrainingArguments(output_dir="out", eval_strategy="steps", eval_steps=3)
        >>> DefaultFlowCallback().on_step_end(args, state, control).should_evaluate  # 7 % 3 != 0, but last step
        True
    """

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        # Log
        if state.global_step == 1 and args.logging_first_step:
            control.should_log = True
        if args.logging_strategy == IntervalStrategy.STEPS and state.global_step % state.logging_steps == 0:
            control.should_log = True

        # Evaluate
        if (
            args.eval_strategy == IntervalStrategy.STEPS
            and state.global_step % state.eval_steps == 0
            and args.eval_delay <= state.global_step
        ):
            control.should_evaluate = True

        # Save
        if (
            args.save_strategy == SaveStrategy.STEPS
            and state.save_steps > 0
            and state.global_step % state.save_steps == 0
        ):
            control.should_save = True

        # End training
        if state.global_step >= state.max_steps:
            control.should_training_stop = True
            # Evaluate at the end with a step-based eval strategy, unless this step was already evaluated.
            if (
                args.eval_strategy == IntervalStrategy.STEPS
                and state.global_step % state.eval_steps != 0
                and args.eval_delay <= state.global_step
            ):
                control.should_evaluate = True
            # Always checkpoint the final step with a step-based save strategy.
            if args.save_strategy == SaveStrategy.STEPS:
                control.should_save = True

        return control

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        # Log
        if args.logging_strategy == IntervalStrategy.EPOCH:
            control.should_log = True

        # Evaluate
        if args.eval_strategy == IntervalStrategy.EPOCH and args.eval_delay <= state.epoch:
            control.should_evaluate = True

        # Save
        if args.save_strategy == SaveStrategy.EPOCH:
            control.should_save = True

        return control


class ProgressCallback(TrainerCallback):
    """Shows a tqdm bar over training steps and over evaluation batches, and writes each log dict under it.

    Logged floats are shown as `"{v:.4g}"`, strings longer than `max_str_len` are replaced by a notice, and
    `total_flos` is left out; `logs` itself is not changed. Only the world process zero displays anything.
    In a notebook the Trainer uses transformers' `NotebookProgressCallback` instead (an HTML table), as transformers
    does (`hftrain.trainer.DEFAULT_PROGRESS_CALLBACK`).

    Args:
        max_str_len: Maximum length of strings to display in logs; longer ones are replaced by a notice.

    Example:
        >>> trainer = Trainer(model, args, callbacks=[ProgressCallback(max_str_len=200)])
    """

    def __init__(self, max_str_len: int = 100) -> None:
        self.training_bar: Any = None
        self.prediction_bar: Any = None
        self.max_str_len = max_str_len

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if state.is_world_process_zero:
            self.training_bar = tqdm(total=state.max_steps, dynamic_ncols=True)
        self.current_step = 0

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self.training_bar.update(state.global_step - self.current_step)
            self.current_step = state.global_step

    def on_prediction_step(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        eval_dataloader: Any = None,
        **kwargs: Any,
    ) -> None:
        if state.is_world_process_zero and has_length(eval_dataloader):
            if self.prediction_bar is None:
                self.prediction_bar = tqdm(
                    total=len(eval_dataloader), leave=self.training_bar is None, dynamic_ncols=True
                )
            self.prediction_bar.update(1)

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            if self.prediction_bar is not None:
                self.prediction_bar.close()
            self.prediction_bar = None

    def on_predict(  # type: ignore[override]  # HF's ProgressCallback takes `metrics` through **kwargs
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if state.is_world_process_zero:
            if self.prediction_bar is not None:
                self.prediction_bar.close()
            self.prediction_bar = None

    def on_log(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs: Any = None, **kwargs: Any
    ) -> None:
        if state.is_world_process_zero and self.training_bar is not None:
            # A shallow copy, so the fields can be reformatted without touching (or pickling) the values.
            shallow_logs: dict[str, Any] = {}
            for k, v in logs.items():
                if isinstance(v, str) and len(v) > self.max_str_len:
                    shallow_logs[k] = (
                        f"[String too long to display, length: {len(v)} > {self.max_str_len}. "
                        "Consider increasing `max_str_len` if needed.]"
                    )
                elif isinstance(v, float):
                    shallow_logs[k] = f"{v:.4g}"  # floats are easier to read this way
                else:
                    shallow_logs[k] = v
            _ = shallow_logs.pop("total_flos", None)
            self.training_bar.write(str(shallow_logs))

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if state.is_world_process_zero:
            self.training_bar.close()
            self.training_bar = None


class PrinterCallback(TrainerCallback):
    """Prints each log dict, floats as `"{v:.4g}"`; used instead of `ProgressCallback` when `disable_tqdm=True`.

    As in HF, it pops `total_flos` from the `logs` dict it receives, in place, on every process.

    Example:
        >>> logs = {"loss": 0.123456, "total_flos": 1e12}
        >>> PrinterCallback().on_log(None, TrainerState(), TrainerControl(), logs=logs)
        {'loss': '0.1235'}
        >>> logs
        {'loss': 0.123456}
    """

    def on_log(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs: Any = None, **kwargs: Any
    ) -> None:
        _ = logs.pop("total_flos", None)
        if state.is_local_process_zero:
            if logs is not None:
                logs = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in logs.items()}
            print(logs)


class EarlyStoppingCallback(TrainerCallback, ExportableState):
    """Stops training when `metric_for_best_model` fails to improve for `early_stopping_patience` evaluations.

    An evaluation counts as an improvement when there is no `state.best_metric` yet, or when it is strictly better
    (per `greater_is_better`) by more than `early_stopping_threshold`; an improvement resets the counter, anything
    else increments it. `state.best_metric` is updated by the `Trainer` after this callback has run, so each
    evaluation is compared with the best before it. Requires `metric_for_best_model` and an `eval_strategy` other
    than `"no"` (asserted at `on_train_begin`); warns without `load_best_model_at_end=True`.

    Args:
        early_stopping_patience: Evaluations without improvement after which training stops.
        early_stopping_threshold: How much the metric must improve to count as an improvement.

    Example:
        >>> args = TrainingArguments(output_dir="out", eval_strategy="steps", eval_steps=50,
        ...                          metric_for_best_model="loss", load_best_model_at_end=True)
        >>> trainer = Trainer(model, args, callbacks=[EarlyStoppingCallback(early_stopping_patience=3)])
    """

    def __init__(self, early_stopping_patience: int = 1, early_stopping_threshold: float | None = 0.0) -> None:
        self.early_stopping_patience = early_stopping_patience
        self.early_stopping_threshold = early_stopping_threshold
        # Number of times in a row the validation metric failed to improve.
        self.early_stopping_patience_counter = 0

    def check_metric_value(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, metric_value: float
    ) -> None:
        # `state.best_metric` is maintained by the Trainer (the load_best_model_at_end machinery).
        operator = np.greater if args.greater_is_better else np.less
        if state.best_metric is None or (
            operator(metric_value, state.best_metric)
            and abs(metric_value - state.best_metric) > self.early_stopping_threshold  # type: ignore[operator]
        ):
            self.early_stopping_patience_counter = 0
        else:
            self.early_stopping_patience_counter += 1

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not args.load_best_model_at_end:
            logger.warning(
                "Using EarlyStoppingCallback without load_best_model_at_end=True. "
                "Once training is finished, the best model will not be loaded automatically."
            )
        # Asserts, not ValueErrors: HF raises AssertionError here and user code may rely on it.
        assert args.metric_for_best_model is not None, (
            "EarlyStoppingCallback requires metric_for_best_model to be defined"
        )
        assert args.eval_strategy != IntervalStrategy.NO, (
            "EarlyStoppingCallback requires IntervalStrategy of steps or epoch"
        )

    def on_evaluate(  # type: ignore[override]  # `metrics` is positional here, as in HF
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, metrics: Any, **kwargs: Any
    ) -> None:
        metric_to_check: str = args.metric_for_best_model  # type: ignore[assignment]  # asserted at on_train_begin
        if not metric_to_check.startswith("eval_"):
            metric_to_check = f"eval_{metric_to_check}"
        metric_value = metrics.get(metric_to_check)

        if metric_value is None:
            logger.warning(
                f"early stopping required metric_for_best_model, but did not find {metric_to_check} so early stopping"
                " is disabled"
            )
            return

        self.check_metric_value(args, state, control, metric_value)
        if self.early_stopping_patience_counter >= self.early_stopping_patience:
            control.should_training_stop = True

    def state(self) -> dict[str, Any]:
        return {
            "args": {
                "early_stopping_patience": self.early_stopping_patience,
                "early_stopping_threshold": self.early_stopping_threshold,
            },
            "attributes": {
                "early_stopping_patience_counter": self.early_stopping_patience_counter,
            },
        }
