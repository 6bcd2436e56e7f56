"""Nothing a subclass overrides is silently ignored: the transformers.Trainer methods hftrain does not call.

hftrain calls every other method of transformers' Trainer where transformers calls it. The methods below belong
to transformers' own loop machinery (accelerate's model wrapping, its epoch loop, tensor/context parallelism),
which Lightning replaces; a subclass overriding one of them gets a ``TypeError`` at ``Trainer(...)`` saying what
to override instead. ``create_optimizer_and_scheduler`` is not called by transformers 5.x either (it calls
``create_optimizer`` and ``create_scheduler``): overriding it only warns, as it changes nothing under either.
"""

from __future__ import annotations

import warnings

# method → what to override instead
NOT_CALLED: dict[str, str] = {
    "_inner_training_loop": "Lightning runs the epochs; override `training_step`, `get_batch_samples` or "
                            "`_maybe_log_save_evaluate` (the optimizer step is hftrain._loop.step)",
    "_run_epoch": "Lightning runs the epochs; override `training_step`, `get_batch_samples` or `_maybe_log_save_evaluate`",
    "_prepare_for_training": "Lightning prepares the model; override `create_optimizer` / `create_scheduler`",
    "_wrap_model": "Lightning wraps the model (strategy=...); pass a Lightning Strategy in TrainingArguments.strategy",
    "_build_accelerator_args": "there is no accelerate Accelerator; use TrainingArguments.strategy / precision",
    "_update_auto_batch_size": "hftrain's auto_find_batch_size shrinks the micro-batch itself and keeps the global "
                               "batch (hftrain._loop.batch_size); override `_train_finding_batch_size`",
    "_prepare_context_parallel_inputs": "context parallelism is not supported by hftrain",
    "_defer_fsdp_gradient_reduction": "hftrain's step skips the gradient sync itself (accelerator.no_sync)",
    "_sync_replicated_trainable_parameters": "models sharded at load time are not supported by hftrain",
    "_mixed_mesh_grad_norm": "override `_clip_grad_norm` / `_get_grad_norm`",
    "_has_mixed_mesh_grads": "override `_clip_grad_norm` / `_get_grad_norm`",
}

# transformers 5.x does not call these either
NOT_CALLED_BY_TRANSFORMERS: dict[str, str] = {
    "create_optimizer_and_scheduler": "override `create_optimizer` and/or `create_scheduler`",
}


def check_overrides(trainer_cls: type) -> None:
    """Raise ``TypeError`` naming a method of :data:`NOT_CALLED` that ``trainer_cls`` overrides.

    Example:
        >>> from hftrain import Trainer
        >>> class Custom(Trainer):
        ...     def _run_epoch(self, *args, **kwargs): ...
        >>> check_overrides(Custom)
        Traceback (most recent call last):
        ...
        TypeError: Custom overrides `_run_epoch`, which hftrain's Trainer never calls: Lightning runs the epochs; ...
    """
    from hftrain.trainer import Trainer

    for klass in trainer_cls.__mro__:
        if klass is Trainer or not issubclass(klass, Trainer):
            continue
        for name in NOT_CALLED:
            if name in vars(klass):
                raise TypeError(
                    f"{trainer_cls.__name__} overrides `{name}`, which hftrain's Trainer never calls: "
                    f"{NOT_CALLED[name]}."
                )
        for name in NOT_CALLED_BY_TRANSFORMERS:
            if name in vars(klass):
                warnings.warn(
                    f"{trainer_cls.__name__} overrides `{name}`, which neither transformers 5.x nor hftrain calls "
                    f"during train(): {NOT_CALLED_BY_TRANSFORMERS[name]}.", UserWarning, stacklevel=4,
                )


def overrides(trainer: object, name: str) -> bool:
    """Whether ``trainer``'s class defines method ``name`` itself (a user's subclass) rather than inherits hftrain's.

    Example:
        >>> from hftrain import Trainer
        >>> class Custom(Trainer):
        ...     def compute_loss(self, *args, **kwargs): ...
        >>> overrides(object.__new__(Custom), "compute_loss"), overrides(object.__new__(Trainer), "compute_loss")
        (True, False)
    """
    return not getattr(type(trainer), name).__module__.startswith("hftrain.")
