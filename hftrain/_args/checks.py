"""The checks HF's ``Trainer.__init__`` makes (transformers' ``Trainer._validate_args``), raised before any step."""

from __future__ import annotations

import dataclasses
import inspect
from typing import TYPE_CHECKING, Any

from transformers.trainer_utils import has_length

from hftrain.training_args import TrainingArguments

if TYPE_CHECKING:
    import lightning as L
    from lightning.pytorch.loggers import Logger

    from hftrain.trainer import Trainer


def coerce_args(args: Any) -> TrainingArguments:
    """hftrain's arguments from ``None`` (HF's ``tmp_trainer`` default), ours, or a ``transformers`` instance."""
    if args is None:
        return TrainingArguments(output_dir="tmp_trainer")
    if isinstance(args, TrainingArguments):
        return args
    if dataclasses.is_dataclass(args) and type(args).__module__.startswith("transformers."):
        return _hf_args_class(args).from_hf(args)
    raise TypeError(
        f"`args` must be a hftrain.TrainingArguments (or a transformers.TrainingArguments), got {type(args).__name__}."
    )


def _hf_args_class(args: Any) -> type[TrainingArguments]:
    if hasattr(args, "predict_with_generate"):
        from hftrain.training_args_seq2seq import Seq2SeqTrainingArguments

        return Seq2SeqTrainingArguments
    return TrainingArguments


def split_callbacks(callbacks: list[Any] | None) -> tuple[list[Any], list[L.Callback], list[Logger]]:
    """HF ``TrainerCallback``s (instances or classes) for the handler; Lightning ``Callback``s and ``Logger``s
    for the Lightning trainer."""
    import lightning as L
    from lightning.pytorch.loggers import Logger

    hf, lightning, loggers = [], [], []
    for cb in callbacks or []:
        if isinstance(cb, L.Callback):
            lightning.append(cb)
        elif isinstance(cb, Logger):
            loggers.append(cb)
        elif isinstance(cb, type) and issubclass(cb, L.Callback):
            raise TypeError(f"Pass an instance of the Lightning callback {cb.__name__}, e.g. {cb.__name__}().")
        elif any(callable(getattr(cb, name, None)) for name in ("on_train_begin", "on_log", "on_step_end",
                                                                 "on_evaluate", "on_init_end")):
            hf.append(cb)
        else:
            raise TypeError(
                f"{cb!r} in `callbacks` is neither a transformers-style TrainerCallback (an instance or class with "
                "on_* event methods) nor a lightning.pytorch Callback or Logger instance."
            )
    return hf, lightning, loggers


def check_trainer_inputs(trainer: Trainer) -> None:
    args = trainer.args
    metric_fn = trainer.compute_metrics
    if args.batch_eval_metrics and (inspect.isfunction(metric_fn) or inspect.ismethod(metric_fn)):
        if "compute_result" not in inspect.signature(metric_fn).parameters:
            raise ValueError(
                "When using `batch_eval_metrics`, your `compute_metrics` function must take a `compute_result` "
                "boolean argument which will be triggered after the last batch of the eval set to signal that the "
                "summary statistics should be returned by the function."
            )
    if args.eval_strategy != "no" and trainer.eval_dataset is None:
        raise ValueError(
            f"You have set `args.eval_strategy` to {args.eval_strategy} but you didn't pass an `eval_dataset` to "
            "`Trainer`. Either set `args.eval_strategy` to `no` or pass an `eval_dataset`. "
        )
    if (args.save_strategy == "best" or args.load_best_model_at_end) and args.metric_for_best_model is None:
        raise ValueError(
            "`args.metric_for_best_model` must be provided when using 'best' save_strategy or if "
            "`args.load_best_model_at_end` is set to `True`."
        )
    if trainer.optimizer_cls_and_kwargs is not None and trainer.optimizer is not None:
        raise RuntimeError("Passing both `optimizers` and `optimizer_cls_and_kwargs` arguments is incompatible.")
    if trainer.model_init is not None and (trainer.optimizer is not None or trainer.lr_scheduler is not None):
        raise RuntimeError(
            "Passing a `model_init` is incompatible with providing the `optimizers` argument. You should subclass "
            "`Trainer` and override the `create_optimizer_and_scheduler` method."
        )
    sharded = args.fsdp or args.deepspeed or (isinstance(args.strategy, str) and args.strategy.startswith(("fsdp", "deepspeed")))
    if sharded and trainer.optimizer is not None:
        raise RuntimeError(  # HF's rule: the optimizer must be built over the sharded parameters
            "Passing `optimizers` is not allowed if PyTorch FSDP or DeepSpeed is enabled (`fsdp` / `deepspeed` / "
            "`strategy`). You should subclass `Trainer` and override the `create_optimizer_and_scheduler` method, "
            "or pass `optimizer_cls_and_kwargs`."
        )
    uses_deepspeed = bool(args.deepspeed) or type(args.strategy).__name__ == "DeepSpeedStrategy" or (
        isinstance(args.strategy, str) and args.strategy.startswith("deepspeed"))
    if uses_deepspeed and args.save_only_model and args.load_best_model_at_end:  # HF's Trainer.create_accelerator_and_postprocess
        raise ValueError(
            "DeepSpeed can't be used with `save_only_model` along with `load_best_model_at_end`: a model-only "
            "checkpoint has no DeepSpeed states to load the best model from. Set `save_only_model=False`."
        )
    collator = trainer.data_collator
    if not callable(collator) and callable(getattr(collator, "collate_batch", None)):
        raise TypeError("The `data_collator` should be a simple callable (function, class with `__call__`).")
    if trainer.train_dataset is not None and not has_length(trainer.train_dataset) and args.max_steps <= 0:
        raise ValueError(
            "The train_dataset does not implement __len__, so the number of training steps cannot be inferred; "
            "max_steps has to be specified. The total number of steps must be known in advance to bound the "
            "training loop and to configure the learning rate scheduler."
        )
    for name, dataset in _named_datasets(trainer):
        if has_length(dataset) and len(dataset) == 0:
            raise ValueError(f"`{name}` is empty (0 rows): pass a dataset with rows, or None"
                             + (" and eval_strategy='no'." if name.startswith("eval_dataset") else "."))
    _check_label_names(args.label_names, trainer.data_collator, _named_datasets(trainer))


def _named_datasets(trainer: Trainer) -> list[tuple[str, Any]]:
    found = [("train_dataset", trainer.train_dataset)]
    if isinstance(trainer.eval_dataset, dict):
        found += [(f"eval_dataset[{key!r}]", value) for key, value in trainer.eval_dataset.items()]
    else:
        found.append(("eval_dataset", trainer.eval_dataset))
    return [(name, dataset) for name, dataset in found if dataset is not None]


def _check_label_names(label_names: list[str] | None, collator: Any, datasets: list[tuple[str, Any]]) -> None:
    """``label_names`` that name no column of a dataset, where the collator cannot make them (the default collators
    only rename ``label`` / ``label_ids`` to ``labels``; others, e.g. language-modelling ones, create labels)."""
    from transformers.data.data_collator import DataCollatorWithPadding, DefaultDataCollator, default_data_collator

    if not label_names or not (collator is default_data_collator
                               or isinstance(collator, (DefaultDataCollator, DataCollatorWithPadding))):
        return
    for name, dataset in datasets:
        columns = _columns(dataset)
        if columns is None:
            continue
        renamed = columns | ({"labels"} if columns & {"label", "label_ids"} else set())
        missing = [label for label in label_names if label not in renamed]
        if missing:
            raise ValueError(
                f"`label_names={label_names}` names {missing}, which `{name}` does not have (its columns: "
                f"{sorted(columns)}): name its label column(s) in label_names, or leave label_names=None for the "
                "model's own."
            )


def _columns(dataset: Any) -> set[str] | None:
    names = getattr(dataset, "column_names", None)
    if isinstance(names, list):
        return set(names)
    if isinstance(dataset, dict) or not has_length(dataset) or not hasattr(dataset, "__getitem__"):
        return None
    try:
        first = dataset[0]
    except Exception:  # a dataset that cannot be indexed by position: nothing to check here
        return None
    return set(first) if isinstance(first, dict) else None
