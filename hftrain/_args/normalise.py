"""Helpers of ``TrainingArguments.__post_init__``: user-given field values → HF's normalised form.

Each one mirrors a step of transformers 5.24's ``training_args.py`` without importing accelerate (its constants are
copied here; a unit test checks them against accelerate). The only hardware probes are the two ``torch.cuda``
checks HF's bf16/tf32 rules need.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import warnings
from enum import Enum
from typing import Any

import torch
from transformers.trainer_utils import FSDPOption

logger = logging.getLogger("hftrain.training_args")

# HF's `AcceleratorConfig` defaults, as its `to_dict()` returns them once device setup has popped
# `use_configured_state` (transformers' `trainer_pt_utils.AcceleratorConfig`). A unit test keeps this in step with transformers.
ACCELERATOR_CONFIG_DEFAULTS: dict[str, Any] = {
    "split_batches": False,
    "dispatch_batches": None,
    "even_batches": True,
    "use_seedable_sampler": True,
    "non_blocking": False,
    "gradient_accumulation_kwargs": None,
}
# accelerate.utils.constants.FSDP_SHARDING_STRATEGY / FSDP_AUTO_WRAP_POLICY (copied: importing accelerate is banned).
FSDP_SHARDING_STRATEGY = ["FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD", "HYBRID_SHARD_ZERO2"]
FSDP_AUTO_WRAP_POLICY = ["TRANSFORMER_BASED_WRAP", "SIZE_BASED_WRAP", "NO_WRAP"]


def convert_str_dict(value: dict[str, Any]) -> dict[str, Any]:
    """HF's `_convert_str_dict`: "true"/"false" → bool, digits → int, decimals → float (recursively, in place)."""
    for key, item in value.items():
        if isinstance(item, dict):
            value[key] = convert_str_dict(item)
        elif isinstance(item, str):
            if item.lower() in ("true", "false"):
                value[key] = item.lower() == "true"
            elif item.isdigit():
                value[key] = int(item)
            elif item.replace(".", "", 1).isdigit():
                value[key] = float(item)
    return value


def load_json_dict(value: str, name: str) -> dict[str, Any]:
    """A JSON string starting with '{' (parsed) or a path to a JSON file (read)."""
    if not value.startswith("{"):
        with open(value, encoding="utf-8") as f:
            return json.load(f)
    try:
        return convert_str_dict(json.loads(value))
    except json.JSONDecodeError as err:
        raise json.JSONDecodeError(f"`{name}` is not valid JSON: {err.msg}", err.doc, err.pos) from None


def to_enum(enum_cls: type[Enum], name: str, value: Any) -> Any:
    try:
        return enum_cls(value)
    except ValueError as err:  # HF's text, prefixed by the field as the user wrote it
        raise ValueError(f"`{name}={value!r}`: {err}") from None


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def kubeflow_job() -> bool:
    disabled = os.getenv("DISABLE_KUBEFLOW_INTEGRATION", "FALSE").upper() == "TRUE"
    return not disabled and os.getenv("KUBEFLOW_TRAINER_SERVER_URL") is not None


def installed_reporting_integrations() -> list[str]:
    """``report_to="all"``: HF's `get_available_reporting_integrations()` order, by package presence only (HF
    also drops comet_ml when no API key is configured)."""
    mlflow = _installed("mlflow") and os.getenv("DISABLE_MLFLOW_INTEGRATION", "FALSE").upper() != "TRUE"
    found = {
        "azure_ml": _installed("azureml.core.run") and not mlflow,
        "comet_ml": _installed("comet_ml"),
        "dagshub": _installed("dagshub") and _installed("mlflow"),
        "dvclive": _installed("dvclive"),
        "mlflow": mlflow,
        "neptune": _installed("neptune"),
        "tensorboard": _installed("tensorboard") or _installed("tensorboardX"),
        "wandb": _installed("wandb"),
        "codecarbon": _installed("codecarbon"),
        "clearml": _installed("clearml"),
        "swanlab": _installed("swanlab"),
        "trackio": _installed("trackio"),
        "kubeflow": kubeflow_job(),
    }
    return [name for name, present in found.items() if present]


def bf16_gpu_available() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def tf32_available() -> bool:
    if not torch.cuda.is_available() or torch.version.cuda is None:
        return False
    return torch.cuda.get_device_properties(torch.cuda.current_device()).major >= 8


def accelerator_config_dict(value: Any) -> dict[str, Any]:
    """``accelerator_config`` as a plain dict with HF's defaults filled in (no accelerate object is built)."""
    if value is None:
        config: dict[str, Any] = {}
    elif isinstance(value, type):
        raise NotImplementedError(
            "Tried passing in a callable to `accelerator_config`, but this is not supported. "
            "Please pass in a fully constructed `AcceleratorConfig` object instead."
        )
    elif isinstance(value, dict):
        config = dict(value)
    elif hasattr(value, "to_dict"):  # an HF AcceleratorConfig object
        config = value.to_dict()
    else:
        config = load_json_dict(str(value), "accelerator_config")
        known = {*ACCELERATOR_CONFIG_DEFAULTS, "use_configured_state"}
        extra_keys = sorted(key for key in config if key not in known)
        if extra_keys:
            raise ValueError(
                f"`accelerator_config`: The config file at {value} had unknown keys ({extra_keys}), please try "
                "upgrading your `transformers` version or fix (and potentially remove these keys) from your config "
                "file."
            )
    unknown = sorted(set(config) - set(ACCELERATOR_CONFIG_DEFAULTS) - {"use_configured_state"})
    if unknown:
        valid = list(ACCELERATOR_CONFIG_DEFAULTS)
        raise TypeError(f"`accelerator_config` got unknown keys {unknown}; valid keys: {valid}")
    if config.pop("use_configured_state", False):
        raise ValueError(
            "Passing `'use_configured_state':True` to the AcceleratorConfig requires a pre-configured "
            "`AcceleratorState` or `PartialState` to be defined before calling `TrainingArguments`. "
            "(hftrain does not use accelerate: remove `use_configured_state` from `accelerator_config`.)"
        )
    return {**ACCELERATOR_CONFIG_DEFAULTS, **config}


def apply_legacy_fsdp_to_config(fsdp: str | list[str], config: dict[str, Any]) -> None:
    """HF's translation of a legacy ``fsdp="full_shard offload ..."`` string/list into ``fsdp_config`` keys."""
    kind = "string" if isinstance(fsdp, str) else "list"
    logger.warning(
        f"Passing `fsdp` as a {kind} is deprecated and will be removed in Transformers v5.20. "
        "Use `fsdp=True` and configure everything via `fsdp_config` instead."
    )
    version = int(config.get("version", 2))
    for item in fsdp.split() if isinstance(fsdp, str) else list(fsdp):
        if item.upper() in FSDP_SHARDING_STRATEGY:
            if version != 2:
                config.setdefault("reshard_after_forward", item)
            elif item in (FSDPOption.FULL_SHARD, FSDPOption.SHARD_GRAD_OP):
                config.setdefault("reshard_after_forward", item == FSDPOption.FULL_SHARD)
            else:
                raise ValueError(
                    f"`fsdp={item}` is only available with FSDP1. Set `fsdp_config['version'] = 1` to "
                    f"use it, but note that FSDP1 is deprecated and will be removed in Transformers v5.20."
                )
        elif item == FSDPOption.OFFLOAD:
            config.setdefault("cpu_offload", True)
        elif item != FSDPOption.AUTO_WRAP:
            raise ValueError(f"Unknown `fsdp` option: {item}")


def fsdp_config_dict(fsdp: Any, fsdp_config: Any, activation_checkpointing: bool) -> dict[str, Any]:
    """``fsdp_config`` normalised as HF's `_process_fsdp_args` does (a copy; the user's dict is left alone)."""
    config = fsdp_config or {}
    config = load_json_dict(config, "fsdp_config") if isinstance(config, str) else dict(config)
    for key in list(config):  # pop and re-insert, as HF does (keeps HF's key order in to_json_string)
        if key.startswith("fsdp_"):
            config[key[5:]] = config.pop(key)
    if isinstance(fsdp, (str, list)):
        apply_legacy_fsdp_to_config(fsdp, config)
    if activation_checkpointing:
        logger.warning(
            "When using FSDP, prefer `fsdp_config['activation_checkpointing']` (FSDP's own activation "
            "checkpointing) over the `activation_checkpointing` training argument."
        )
    config["min_num_params"] = config.get("min_num_params", 0)
    if isinstance(config.get("transformer_layer_cls_to_wrap"), str):
        config["transformer_layer_cls_to_wrap"] = [config["transformer_layer_cls_to_wrap"]]
    for key in ("xla", "xla_fsdp_v2", "xla_fsdp_grad_ckpt"):
        config.setdefault(key, False)
    if config["xla"]:
        return config
    if config["xla_fsdp_grad_ckpt"]:
        warnings.warn("`--xla_fsdp_grad_ckpt` is useful only when `--xla` is set to true.", stacklevel=4)
    policy = config.get("auto_wrap_policy", FSDP_AUTO_WRAP_POLICY[0])
    if policy not in FSDP_AUTO_WRAP_POLICY:
        raise ValueError(f"`fsdp_config`: `auto_wrap_policy` must be one of {FSDP_AUTO_WRAP_POLICY}, got {policy}.")
    return config


def dict_dtype_to_str(d: dict[str, Any]) -> None:
    """HF's `_dict_dtype_to_str`: a ``dtype`` key holding a torch dtype becomes e.g. ``"float32"`` (in place)."""
    if d.get("dtype") is not None and not isinstance(d["dtype"], str):
        d["dtype"] = str(d["dtype"]).split(".")[1]
    for value in d.values():
        if isinstance(value, dict):
            dict_dtype_to_str(value)


def preemption_signals(names: str | list[str] | tuple[str, ...]) -> list[signal.Signals]:
    """The signals named by ``jit_checkpoint_signals`` ("SIGTERM", "SIGTERM,SIGUSR1", or a list of names).

    Raises:
        ValueError: a name that is not a signal of this platform, or SIGKILL / SIGSTOP (which cannot be caught).
    """
    parts = names.split(",") if isinstance(names, str) else list(names)
    found = []
    for part in parts:
        name = str(part).strip().upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
        number = getattr(signal.Signals, name, None) if name.isidentifier() else None
        if number is None or number in (getattr(signal, "SIGKILL", None), getattr(signal, "SIGSTOP", None)):
            raise ValueError(
                f"`jit_checkpoint_signals` names signals to checkpoint on, e.g. 'SIGTERM' or 'SIGTERM,SIGUSR1' (SLURM "
                f"sends SIGUSR1 before a kill when asked with `--signal`); {part!r} is not a signal that can be caught."
            )
        if number not in found:
            found.append(number)
    return found
