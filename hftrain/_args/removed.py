"""The 4.x ``TrainingArguments`` keywords that transformers 5.x removed (reference §1.13).

HF 5.x raises ``TypeError`` for them. hftrain accepts each one with a ``FutureWarning`` that gives the 5.x spelling
and carries the value over where 5.x has an equivalent; they never become fields, so ``HfArgumentParser`` and
``to_dict()`` stay HF's. ``accept_removed_names`` wraps a dataclass ``__init__`` to do this.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from transformers.debug_utils import DebugOption

from hftrain._args.normalise import load_json_dict
from hftrain._args.fields import _TrainingArgumentsFields

_ArgsT = TypeVar("_ArgsT")

# Field defaults (`optim`'s included); a new name given at its default does not conflict with the old one.
_DEFAULTS = {f.name: f.default for f in fields(_TrainingArgumentsFields)}


@dataclass(frozen=True)
class _RemovedName:
    """A 4.x keyword that 5.x no longer accepts: how to say it now, and how to carry its value over."""

    hint: str  # the 5.x spelling (a format string of `value`), or why it has no effect
    old_default: Any = None  # passing 4.x's default changes nothing
    apply: Callable[[dict[str, Any], str, Any], None] | None = None  # writes the value onto 5.x names


def _set_new_name(kwargs: dict[str, Any], old: str, new: str, value: Any) -> None:
    given = kwargs.get(new, _DEFAULTS[new])
    if given != _DEFAULTS[new] and given != value:
        shown = "<HUB_TOKEN>" if new.endswith("_token") else f"{value!r} and {given!r}"
        raise ValueError(
            f"`{old}` (removed in transformers 5.x) and `{new}` are both set, to conflicting values ({shown}). "
            f"Pass only `{new}`."
        )
    kwargs[new] = value


def _rename(new: str, convert: Callable[[Any], Any] = lambda value: value) -> Callable[..., None]:
    return lambda kwargs, old, value: _set_new_name(kwargs, old, new, convert(value))


def _add_fsdp_config_key(key: str) -> Callable[..., None]:
    def apply(kwargs: dict[str, Any], old: str, value: Any) -> None:
        config = kwargs.get("fsdp_config") or {}
        if isinstance(config, str):
            config = load_json_dict(config, "fsdp_config")
        if key in config and config[key] != value:
            raise ValueError(f"`{old}` and `fsdp_config['{key}']` are both set, to {value!r} and {config[key]!r}.")
        kwargs["fsdp_config"] = {**config, key: value}

    return apply


def _add_debug_option(kwargs: dict[str, Any], old: str, value: Any) -> None:
    debug = kwargs.get("debug") or ""
    option = DebugOption.TPU_METRICS_DEBUG.value
    kwargs["debug"] = f"{debug} {option}".strip() if isinstance(debug, str) else [*debug, option]


def _add_metrics_input(kwargs: dict[str, Any], old: str, value: Any) -> None:
    include = list(kwargs.get("include_for_metrics") or [])
    kwargs["include_for_metrics"] = include if "inputs" in include else [*include, "inputs"]


def _count_input_tokens(kwargs: dict[str, Any], old: str, value: Any) -> None:
    if kwargs.get("include_num_input_tokens_seen", "no") in ("no", False):
        kwargs["include_num_input_tokens_seen"] = "all"


def _warmup_ratio(ratio: float) -> float:
    if ratio >= 1:
        raise ValueError(
            f"`warmup_ratio={ratio!r}` cannot be carried over: in 5.x `warmup_steps` below 1 is a ratio and 1 or more "
            "is a step count. Pass `warmup_steps=<total training steps>` instead."
        )
    return ratio


_NO_EFFECT = "was removed in transformers 5.x and has no effect"
REMOVED: dict[str, _RemovedName] = {
    "warmup_ratio": _RemovedName(
        "use `warmup_steps={value!r}` (a float below 1 is a ratio of the total steps)",
        0.0,
        _rename("warmup_steps", _warmup_ratio),
    ),
    "evaluation_strategy": _RemovedName("use `eval_strategy={value!r}`", "no", _rename("eval_strategy")),
    "per_gpu_train_batch_size": _RemovedName(
        "use `per_device_train_batch_size={value!r}`", None, _rename("per_device_train_batch_size")
    ),
    "per_gpu_eval_batch_size": _RemovedName(
        "use `per_device_eval_batch_size={value!r}`", None, _rename("per_device_eval_batch_size")
    ),
    "no_cuda": _RemovedName("use `use_cpu=True`", False, _rename("use_cpu", bool)),
    "group_by_length": _RemovedName(
        'use `train_sampling_strategy="group_by_length"`',
        False,
        _rename("train_sampling_strategy", lambda on: "group_by_length"),
    ),
    "include_inputs_for_metrics": _RemovedName('use `include_for_metrics=["inputs"]`', False, _add_metrics_input),
    "push_to_hub_model_id": _RemovedName("use `hub_model_id={value!r}`", None, _rename("hub_model_id")),
    "push_to_hub_token": _RemovedName("use `hub_token`", None, _rename("hub_token")),
    "torchdynamo": _RemovedName("use `torch_compile_backend={value!r}`", None, _rename("torch_compile_backend")),
    "adafactor": _RemovedName('use `optim="adafactor"`', False, _rename("optim", lambda on: "adafactor")),
    "tpu_metrics_debug": _RemovedName('use `debug="tpu_metrics_debug"`', False, _add_debug_option),
    "fsdp_min_num_params": _RemovedName(
        'use `fsdp_config={{"min_num_params": {value!r}}}`', 0, _add_fsdp_config_key("min_num_params")
    ),
    "fsdp_transformer_layer_cls_to_wrap": _RemovedName(
        'use `fsdp_config={{"transformer_layer_cls_to_wrap": {value!r}}}`',
        None,
        _add_fsdp_config_key("transformer_layer_cls_to_wrap"),
    ),
    "include_tokens_per_second": _RemovedName(
        '`train_tokens_per_second` is logged whenever `include_num_input_tokens_seen` is not "no"; use '
        '`include_num_input_tokens_seen="all"`',
        False,
        _count_input_tokens,
    ),
    "overwrite_output_dir": _RemovedName(f"{_NO_EFFECT}: `output_dir` is always reused"),
    "logging_dir": _RemovedName(
        f"{_NO_EFFECT}: TensorBoard writes to $TENSORBOARD_LOGGING_DIR, else to `<output_dir>/runs`"
    ),
    "save_safetensors": _RemovedName(f"{_NO_EFFECT}: weights are always saved as safetensors"),
    "use_mps_device": _RemovedName(f"{_NO_EFFECT}: MPS is used when available; `use_cpu=True` forces the CPU"),
    "jit_mode_eval": _RemovedName(_NO_EFFECT),
    "fp16_opt_level": _RemovedName(f"{_NO_EFFECT}: apex is gone, `fp16=True` uses torch AMP"),
    "half_precision_backend": _RemovedName(f"{_NO_EFFECT}: apex is gone, `fp16=True`/`bf16=True` use torch AMP"),
    "fp16_backend": _RemovedName(f"{_NO_EFFECT}: apex is gone, `fp16=True` uses torch AMP"),
    "past_index": _RemovedName(f"{_NO_EFFECT}: past states are not fed back to the model"),
    "mp_parameters": _RemovedName(f"{_NO_EFFECT} (SageMaker model parallelism)"),
    "ray_scope": _RemovedName(_NO_EFFECT),
    "use_legacy_prediction_loop": _RemovedName(_NO_EFFECT),
    "tpu_num_cores": _RemovedName(f"{_NO_EFFECT}: the launcher decides the number of TPU cores"),
    "push_to_hub_organization": _RemovedName(f'{_NO_EFFECT}: put the organization in `hub_model_id="org/name"`'),
}


def translate_removed_names(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Warn once per removed 4.x keyword and carry its value over to the 5.x field(s)."""
    if not REMOVED.keys() & kwargs.keys():
        return kwargs
    kwargs = dict(kwargs)
    for old in [name for name in kwargs if name in REMOVED]:
        value, removed = kwargs.pop(old), REMOVED[old]
        hint = removed.hint.format(value=value)
        message = hint if hint.startswith(_NO_EFFECT) else f"was removed in transformers 5.x; {hint}"
        warnings.warn(f"`{old}` {message}.", FutureWarning, stacklevel=3)
        if removed.apply is not None and value != removed.old_default:
            removed.apply(kwargs, old, value)
    return kwargs


def accept_removed_names(cls: type[_ArgsT]) -> type[_ArgsT]:
    """Wrap the dataclass ``__init__`` so 4.x keywords warn instead of raising ``TypeError`` (fields stay HF's)."""
    dataclass_init = cls.__init__

    @functools.wraps(dataclass_init)
    def __init__(self: _ArgsT, *args: Any, **kwargs: Any) -> None:
        dataclass_init(self, *args, **translate_removed_names(kwargs))

    cls.__init__ = __init__  # type: ignore[method-assign]
    return cls
