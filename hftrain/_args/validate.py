"""The types and ranges of ``TrainingArguments``' numeric fields, checked when the arguments are built.

transformers checks few of them: ``learning_rate="1e-4"`` is accepted and fails inside ``torch.optim`` during the
first step, a batch size of 0 inside the ``DataLoader``. Here each bad value is a ``TypeError`` (a string, a bool or
a float where the field takes a number or an integer) or a ``ValueError`` (out of range) that names the field, the
value and the fix, raised by the constructor. The numeric fields are read from the dataclass annotations, so a new
upstream field is type-checked without an entry here; the ranges below are those the Trainer's arithmetic needs.

Example:
    >>> check_field_values({"learning_rate": "1e-4"}, {"learning_rate": "float"})
    Traceback (most recent call last):
    ...
    TypeError: `learning_rate` takes a number, got the string '1e-4': pass learning_rate=1e-4, not a string.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

# field → (the rule, its wording in an error). Optional fields (``| None``) accept None besides.
_POSITIVE = (lambda v: v > 0, "a positive number")
_AT_LEAST_ZERO = (lambda v: v >= 0, "zero or more")
_UNIT_OPEN = (lambda v: 0 <= v < 1, "in [0, 1)")
# transformers checks these itself (type and range), with messages its tests expect
_TRANSFORMERS_CHECKS = frozenset({"torch_empty_cache_steps"})
# (warmup_steps and the generation fields have transformers' own range checks and messages)
RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "per_device_train_batch_size": _POSITIVE,
    "per_device_eval_batch_size": _POSITIVE,
    "gradient_accumulation_steps": _POSITIVE,
    "num_train_epochs": _AT_LEAST_ZERO,  # 0 with max_steps=-1 is caught below: it trains nothing
    "max_steps": (lambda v: v == -1 or v > 0, "-1 (train for num_train_epochs) or a positive number of steps"),
    "learning_rate": _AT_LEAST_ZERO,
    "weight_decay": _AT_LEAST_ZERO,
    "adam_beta1": _UNIT_OPEN,
    "adam_beta2": _UNIT_OPEN,
    "adam_epsilon": _AT_LEAST_ZERO,
    "max_grad_norm": _AT_LEAST_ZERO,  # 0 turns clipping off, as in transformers
    "label_smoothing_factor": _UNIT_OPEN,
    "neftune_noise_alpha": _AT_LEAST_ZERO,
    "logging_steps": _AT_LEAST_ZERO,  # 0 with logging_strategy="steps" is transformers' own error
    "eval_steps": _AT_LEAST_ZERO,  # 0: transformers falls back to logging_steps
    "eval_delay": _AT_LEAST_ZERO,
    "eval_accumulation_steps": _POSITIVE,
    "save_steps": _AT_LEAST_ZERO,  # 0 with save_strategy="steps" is refused below: it never saves
    "seed": (lambda v: 0 <= v < 2**32, "in [0, 2**32) (NumPy's seed range)"),
    "data_seed": (lambda v: 0 <= v < 2**32, "in [0, 2**32) (NumPy's seed range)"),
    "dataloader_num_workers": _AT_LEAST_ZERO,
    "dataloader_prefetch_factor": _POSITIVE,
    "ddp_timeout": _POSITIVE,
}


def numeric_fields(cls: type) -> dict[str, str]:
    """``{field: "int" | "float"}`` for the dataclass fields annotated as numbers (optional or not)."""
    kinds = {}
    for f in dataclasses.fields(cls):
        annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        parts = {part.strip() for part in str(annotation).replace("Optional[", "").rstrip("]").split("|")}
        if parts - {"None"} == {"int"}:
            kinds[f.name] = "int"
        elif parts - {"None"} == {"float"}:
            kinds[f.name] = "float"
    return kinds


def check_field_values(values: Mapping[str, Any], kinds: Mapping[str, str]) -> None:
    """Raise for the first numeric field whose value has the wrong type or lies outside its range.

    ``values``: field → value as given; ``kinds``: :func:`numeric_fields`. None passes (an optional field unset,
    or a default transformers fills in later)."""
    for name, kind in kinds.items():
        value = values.get(name)
        if value is None:
            continue
        if name in _TRANSFORMERS_CHECKS:
            continue  # transformers checks these itself, with its own messages
        _check_type(name, value, kind)
        rule = RANGES.get(name)
        if rule is not None and not rule[0](value):
            raise ValueError(f"`{name}` must be {rule[1]}, got {value!r}.")
    if values.get("max_steps") == -1 and values.get("num_train_epochs") == 0:
        raise ValueError("`num_train_epochs=0` with `max_steps=-1` trains no step: give a positive num_train_epochs "
                         "or max_steps.")
    if str(getattr(values.get("save_strategy"), "value", values.get("save_strategy"))) == "steps" and \
            values.get("save_steps") == 0:
        raise ValueError("`save_steps=0` with `save_strategy='steps'` never saves: give a positive save_steps (a "
                         "count, or a ratio of the run below 1), or save_strategy='no'.")


def _check_type(name: str, value: Any, kind: str) -> None:
    if isinstance(value, str):
        fix = f"pass {name}={value}, not a string" if _is_number(value) else "pass a number"
        raise TypeError(f"`{name}` takes a number, got the string {value!r}: {fix}.")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` takes a number, got {type(value).__name__} {value!r}.")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number, got {value!r}.")
    if kind == "int" and not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` takes an integer, got {value!r}: pass {name}={int(value)}." if float(value)
                        .is_integer() else f"`{name}` takes an integer, got {value!r}.")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


_INTERVALS = (("logging_steps", "logging_strategy", "log"), ("eval_steps", "eval_strategy", "evaluate"),
              ("save_steps", "save_strategy", "save"))
_INTERVAL_DEFAULTS = {"logging_steps": 500, "eval_steps": None, "save_steps": 500}


def intervals_given(values: Mapping[str, Any]) -> frozenset[str]:
    """The interval fields the user set (those differing from their defaults), before transformers' filling in
    (``eval_steps`` from ``logging_steps``)."""
    return frozenset(name for name, default in _INTERVAL_DEFAULTS.items() if values.get(name) != default)


def check_intervals(args: Any, max_steps: int) -> None:
    """Refuse an interval the user set that cannot fire in a run of ``max_steps`` optimizer steps (checked by
    ``train()`` once the run's length is known, before Lightning starts). A ratio (below 1) always fires."""
    for name, strategy_name, verb in _INTERVALS:
        value, strategy = getattr(args, name), getattr(args, strategy_name)
        if (name in getattr(args, "_intervals_given", ()) and str(getattr(strategy, "value", strategy)) == "steps"
                and value is not None and value >= 1 and value > max_steps):
            raise ValueError(
                f"`{name}={value:g}` with `{strategy_name}='steps'` would never {verb}: this run has {max_steps} "
                f"optimizer steps. Give {name} <= {max_steps}, a ratio of the run below 1 (e.g. {name}=0.25), or "
                f"another {strategy_name}."
            )
