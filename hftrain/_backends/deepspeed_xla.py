"""HF's DeepSpeed and TPU arguments as Lightning strategy objects.

DeepSpeed: HF's ``deepspeed=`` config (a JSON path or a dict) may hold ``"auto"`` values that HF's Trainer fills
from ``TrainingArguments`` (transformers ``integrations/deepspeed.py``, ``HfTrainerDeepSpeedConfig``
``trainer_config_process`` / ``trainer_config_finalize``); a value that is set and contradicts the arguments is an
error. :func:`deepspeed_config` does the same, with no model and no package, then makes the dict acceptable to
Lightning's ``DeepSpeedStrategy``:

* ``gradient_accumulation_steps`` is removed: Lightning raises if it is present and sets it from
  ``accumulate_grad_batches`` (``lightning/pytorch/strategies/deepspeed.py``,
  ``_format_batch_size_and_grad_accum_config``).
* ``train_batch_size`` is removed: DeepSpeed derives it as micro batch × accumulation × world size, which is what
  HF's check guarantees, and the derived value stays right when the number of processes is only known at launch.

Values that need the run's length or the model stay ``"auto"`` until given: ``num_training_steps`` fills
``scheduler.params.total_num_steps`` and ``warmup_num_steps``; ``hidden_size`` fills the ZeRO bucket sizes. HF
fills these when training starts; :func:`deepspeed_strategy` refuses a config that still has them, because
DeepSpeed cannot read ``"auto"``.

TPUs: :func:`xla_strategy` and :func:`xla_precision` build Lightning's XLA objects. Without ``deepspeed`` or
``torch_xla`` installed, every builder raises ``ModuleNotFoundError`` naming the package and the argument that
asked for it.
"""

from __future__ import annotations

import copy
import json
import os
from datetime import timedelta
from typing import Any, Literal

__all__ = ["deepspeed_config", "deepspeed_strategy", "unresolved_keys", "xla_precision", "xla_strategy"]

_AUTO = "auto"
# filled from the model's hidden size (HF trainer_config_finalize); the last two only under ZeRO-3
_HIDDEN_SIZE_KEYS = (
    "zero_optimization.reduce_bucket_size",
    "zero_optimization.stage3_prefetch_bucket_size",
    "zero_optimization.stage3_param_persistence_threshold",
)
_STEP_KEYS = ("scheduler.params.total_num_steps", "scheduler.params.warmup_num_steps")


# -- DeepSpeed config ------------------------------------------------------------------------------------------------
def deepspeed_config(
    config: str | os.PathLike[str] | dict[str, Any],
    args: Any,
    *,
    num_training_steps: int | None = None,
    hidden_size: int | None = None,
) -> dict[str, Any]:
    """HF's DeepSpeed config with its ``"auto"`` values filled from ``args``, ready for ``DeepSpeedStrategy``.

    Pure: the input dict is deep-copied, nothing is imported or launched. Calling it again on its own result gives
    the same dict, so a caller may fill ``num_training_steps`` / ``hidden_size`` in a second pass.

    Args:
        config: a path to a JSON file, a JSON object as text, or a dict (HF's ``deepspeed`` argument).
        args: hftrain's (or HF's) ``TrainingArguments``.
        num_training_steps: optimizer steps of the run; fills ``scheduler.params.total_num_steps`` and
            ``warmup_num_steps`` (``max(1, args.get_warmup_steps(n))``, as HF). ``None``: they stay as given.
        hidden_size: the model's hidden size; fills the ``"auto"`` ZeRO bucket sizes as HF does. ``None``: they
            stay as given.

    Returns:
        The config without ``gradient_accumulation_steps`` and ``train_batch_size`` (Lightning and DeepSpeed set
        them), with ``zero_allow_untested_optimizer=True`` when it has no ``optimizer`` section (HF's optimizer is
        used then, as in HF's ``deepspeed_optim_sched``).

    Raises:
        ValueError: the path does not exist or is not a JSON object, or set values contradict ``args`` (one message
            listing every mismatch, HF's wording).

    Example:
        >>> from hftrain import TrainingArguments
        >>> args = TrainingArguments("out", per_device_train_batch_size=4, gradient_accumulation_steps=2,
        ...                          learning_rate=3e-4, report_to="none")
        >>> cfg = deepspeed_config({"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
        ...                         "optimizer": {"type": "AdamW", "params": {"lr": "auto"}}}, args)
        >>> cfg["train_micro_batch_size_per_gpu"], cfg["optimizer"]["params"]["lr"]
        (4, 0.0003)
        >>> "gradient_accumulation_steps" in cfg  # Lightning sets it from accumulate_grad_batches
        False
        >>> deepspeed_config({"gradient_accumulation_steps": 8}, args)
        Traceback (most recent call last):
        ...
        ValueError: Please correct the following DeepSpeed config values that mismatch TrainingArguments values:
        - ds gradient_accumulation_steps=8 vs hf gradient_accumulation_steps=2
        The easiest method is to set these DeepSpeed config values to 'auto'.
    """
    cfg = _load(config)
    mismatches: list[str] = []

    def fill(key: str, value: Any, hf_name: str = "", must_match: bool = True) -> None:
        _fill(cfg, key, value, hf_name, mismatches if must_match else None)

    # trainer_config_process: values known from the arguments alone
    exact_batch = not getattr(args, "auto_find_batch_size", False)  # HF lets the batch-size search change them
    micro, ga = args.per_device_train_batch_size, args.gradient_accumulation_steps
    fill("train_micro_batch_size_per_gpu", micro, "per_device_train_batch_size", exact_batch)
    fill("gradient_accumulation_steps", ga, "gradient_accumulation_steps")
    fill("train_batch_size", args.world_size * micro * ga, "train_batch_size (calculated)", exact_batch)
    fill("gradient_clipping", args.max_grad_norm, "max_grad_norm")
    fill("optimizer.params.lr", args.learning_rate, "learning_rate")
    fill("optimizer.params.betas", [args.adam_beta1, args.adam_beta2], "adam_beta1+adam_beta2")
    fill("optimizer.params.eps", args.adam_epsilon, "adam_epsilon")
    fill("optimizer.params.weight_decay", args.weight_decay, "weight_decay")
    fill("scheduler.params.warmup_min_lr", 0, must_match=False)  # not a TrainingArguments value
    fill("scheduler.params.warmup_max_lr", args.learning_rate, "learning_rate")
    if args.save_on_each_node:  # DeepSpeed assumes shared storage unless told otherwise
        cfg["checkpoint"] = {**cfg.get("checkpoint", {}), "use_node_local_storage": True}
    fill("fp16.enabled", bool(args.fp16 or args.fp16_full_eval), "fp16|fp16_full_eval")
    fill("bf16.enabled", bool(args.bf16 or args.bf16_full_eval), "bf16|bf16_full_eval")

    # trainer_config_finalize: values that need the model or the run's length
    if hidden_size is not None and any(_get(cfg, key) == _AUTO for key in _HIDDEN_SIZE_KEYS):
        fill("zero_optimization.reduce_bucket_size", hidden_size * hidden_size, must_match=False)
        if _get(cfg, "zero_optimization.stage") == 3:
            fill("zero_optimization.stage3_prefetch_bucket_size", int(0.9 * hidden_size * hidden_size),
                 must_match=False)
            fill("zero_optimization.stage3_param_persistence_threshold", 10 * hidden_size, must_match=False)
    if num_training_steps is not None:
        fill("scheduler.params.total_num_steps", num_training_steps, "num_training_steps (calculated)")
        # deepspeed>=0.19.6 rejects warmup_num_steps <= 0; HF keeps the filled value positive
        fill("scheduler.params.warmup_num_steps", max(1, args.get_warmup_steps(num_training_steps)), "warmup_steps")

    if mismatches:
        raise ValueError(
            "Please correct the following DeepSpeed config values that mismatch TrainingArguments values:\n"
            + "\n".join(mismatches)
            + "\nThe easiest method is to set these DeepSpeed config values to 'auto'."
        )
    # checked above; Lightning sets the first (and raises if present), DeepSpeed derives the second
    cfg.pop("gradient_accumulation_steps", None)
    cfg.pop("train_batch_size", None)
    if "optimizer" not in cfg:
        cfg["zero_allow_untested_optimizer"] = True  # HF's own optimizer is handed to DeepSpeed
    return cfg


def unresolved_keys(config: dict[str, Any]) -> list[str]:
    """The values HF fills at train time that are still ``"auto"`` in ``config`` (dotted keys).

    Example:
        >>> unresolved_keys({"scheduler": {"params": {"total_num_steps": "auto", "warmup_num_steps": 10}}})
        ['scheduler.params.total_num_steps']
    """
    return [key for key in (*_STEP_KEYS, *_HIDDEN_SIZE_KEYS) if _get(config, key) == _AUTO]


def _load(config: str | os.PathLike[str] | dict[str, Any]) -> dict[str, Any]:
    """HF's inputs (accelerate ``HfDeepSpeedConfig``): a dict (copied), a path to a JSON file, or JSON text."""
    if isinstance(config, dict):
        return copy.deepcopy(config)  # the caller may reuse its dict with "auto" values
    if not isinstance(config, (str, os.PathLike)):
        raise TypeError(f"`deepspeed` must be a path to a JSON file or a dict, got {type(config).__name__}.")
    text, source = None, f"`deepspeed={os.fspath(config)!r}`"
    if os.path.isfile(config):
        with open(config, encoding="utf-8") as f:
            text = f.read()
    elif isinstance(config, str) and config.lstrip().startswith("{"):
        text, source = config, "`deepspeed` (JSON text)"
    if text is None:
        raise ValueError(f"{source}: no such file. Pass the path to a DeepSpeed JSON config, or a dict.")
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{source} is not valid JSON: {err}.") from err
    if not isinstance(loaded, dict):  # valid JSON of the wrong shape: a bad value, not a bad type
        raise ValueError(  # noqa: TRY004
            f"{source} must hold a JSON object (a dict of DeepSpeed settings), got a {type(loaded).__name__}."
        )
    return loaded


def _get(config: dict[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _fill(config: dict[str, Any], key: str, value: Any, hf_name: str, mismatches: list[str] | None) -> None:
    """HF's ``fill_match``: ``"auto"`` → ``value``; a set value that differs is a mismatch (when checked).

    A key whose section is absent is left absent, as HF does.
    """
    *path, leaf = key.split(".")
    node = _get(config, ".".join(path)) if path else config
    if not isinstance(node, dict):
        return
    current = node.get(leaf)
    if current == _AUTO:
        node[leaf] = value
        return
    if mismatches is None or current is None:
        return
    if (list(current) if isinstance(current, tuple) else current) != value:  # a tuple of betas = JSON's list
        mismatches.append(f"- ds {key}={current} vs hf {hf_name}={value}")


# -- DeepSpeed strategy ----------------------------------------------------------------------------------------------
def deepspeed_strategy(
    args: Any,
    stage: int | None = None,
    offload: bool = False,
    num_training_steps: int | None = None,
    *,
    hidden_size: int | None = None,
) -> Any:
    """Lightning's ``DeepSpeedStrategy`` for HF's ``deepspeed=`` config, or for a ``deepspeed_stage_N`` name.

    With ``args.deepspeed`` set, the strategy gets :func:`deepspeed_config` of it (``stage`` and ``offload`` are
    ignored: the config says). Otherwise Lightning builds its config from ``stage`` (Lightning's default, 2, when
    ``None``) and ``offload`` (optimizer state; parameters too under ZeRO-3). ``ddp_timeout`` and ``ddp_backend``
    reach the process group, and DeepSpeed logs at ``args.get_process_log_level()``, as in HF.

    Raises:
        ModuleNotFoundError: ``deepspeed`` is not installed; the message names the argument that asked for it.
        ValueError: the config is invalid or contradicts ``args`` (see :func:`deepspeed_config`), or keeps
            ``"auto"`` values that need ``num_training_steps`` / ``hidden_size`` and these were not given.

    Example:
        >>> from hftrain import TrainingArguments
        >>> args = TrainingArguments("out", strategy="deepspeed_stage_3", report_to="none")
        >>> deepspeed_strategy(args, stage=3)  # doctest: +SKIP
        <lightning.pytorch.strategies.deepspeed.DeepSpeedStrategy object at ...>
    """
    kwargs: dict[str, Any] = {
        "timeout": timedelta(seconds=args.ddp_timeout),
        "process_group_backend": args.ddp_backend,
        "logging_level": args.get_process_log_level(),
    }
    if args.deepspeed:  # the config decides; its errors come first, they need no package to be found
        config = deepspeed_config(args.deepspeed, args, num_training_steps=num_training_steps, hidden_size=hidden_size)
        missing = unresolved_keys(config)
        if missing:
            raise ValueError(
                f"{_deepspeed_asked_by(args, stage, offload)}: these config values are \"auto\" and are filled from "
                f"the number of training steps or the model's hidden size, which were not known when the DeepSpeed "
                f"strategy was built: {', '.join(missing)}. Replace \"auto\" with numbers in the config."
            )
        kwargs["config"] = config
    else:
        kwargs.update(offload_optimizer=offload, offload_parameters=offload and stage == 3)
        if stage is not None:
            kwargs["stage"] = stage
    _require_deepspeed(args, stage, offload)
    from lightning.pytorch.strategies import DeepSpeedStrategy

    return DeepSpeedStrategy(**kwargs)


def _deepspeed_asked_by(args: Any, stage: int | None, offload: bool) -> str:
    """The argument, as the user wrote it, that asked for DeepSpeed."""
    if args.deepspeed:
        shown = repr(os.fspath(args.deepspeed)) if isinstance(args.deepspeed, (str, os.PathLike)) else "{...}"
        return f"`deepspeed={shown}`"
    chosen = getattr(args, "strategy", None)
    if isinstance(chosen, str) and chosen.lower().startswith("deepspeed"):
        return f'`strategy="{chosen}"`'
    name = "deepspeed" + (f"_stage_{stage}" if stage is not None else "") + ("_offload" if offload else "")
    return f'`strategy="{name}"`'


def _require_deepspeed(args: Any, stage: int | None, offload: bool) -> None:
    # read at call time, from Lightning's module, so that tests can patch it
    from lightning.pytorch.strategies import deepspeed as lightning_deepspeed

    if not lightning_deepspeed._DEEPSPEED_AVAILABLE:
        raise ModuleNotFoundError(
            f"{_deepspeed_asked_by(args, stage, offload)} needs DeepSpeed, which is not installed. Install it with "
            "`pip install deepspeed`, or train without DeepSpeed (e.g. `strategy=\"fsdp\"`).",
            name="deepspeed",
        )


# -- TPU (XLA) -------------------------------------------------------------------------------------------------------
XLAName = Literal["xla", "xla_fsdp", "single_xla"]


def xla_strategy(args: Any, name: XLAName) -> Any:
    """Lightning's XLA strategy for ``name``: ``"xla"`` → ``XLAStrategy`` (one process per TPU core, spawned by
    torch_xla), ``"single_xla"`` → ``SingleDeviceXLAStrategy`` on device 0 (Lightning's own choice for one device).

    ``"xla_fsdp"`` is refused: Lightning 2.6.6 has ``XLAFSDPStrategy`` for Fabric only, and ``lightning.Trainer``
    takes no Fabric strategy.

    Raises:
        ValueError: ``name`` is ``"xla_fsdp"`` or not an XLA strategy name.
        ModuleNotFoundError: ``torch_xla`` is not installed; the message names the argument that asked for it.

    Example:
        >>> from hftrain import TrainingArguments
        >>> xla_strategy(TrainingArguments("out", report_to="none"), "xla_fsdp")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: `strategy="xla_fsdp"`: Lightning's Trainer has no XLA FSDP strategy ... Use `strategy="xla"` ...
    """
    asked_by = _xla_asked_by(args, name)
    if name == "xla_fsdp":
        raise ValueError(
            f"{asked_by}: Lightning's Trainer has no XLA FSDP strategy (Lightning 2.6.6 offers `XLAFSDPStrategy` "
            'to Fabric only). Use `strategy="xla"` for data parallelism over the TPU cores.'
        )
    if name not in ("xla", "single_xla"):
        raise ValueError(f'{asked_by}: not an XLA strategy; choose "xla" or "single_xla".')
    from lightning.pytorch.strategies import single_xla, xla

    _require_xla(asked_by, (xla if name == "xla" else single_xla)._XLA_AVAILABLE)
    if name == "xla":
        return xla.XLAStrategy(sync_module_states=True)  # every process starts from rank 0's weights, as HF
    return single_xla.SingleDeviceXLAStrategy(device=0)


def xla_precision(precision: str) -> Any:
    """Lightning's ``XLAPrecision`` for hftrain's precision string, as HF trains on TPUs.

    HF (accelerate) runs ``bf16=True`` on TPUs with ``XLA_USE_BF16=1`` (accelerate ``state.py``), which is what
    ``XLAPrecision("bf16-true")`` sets, so ``"bf16-mixed"`` becomes ``"bf16-true"``. HF refuses fp16 mixed
    precision on TPUs, so ``"16-mixed"`` is refused too; ``"16-true"`` (asked for explicitly) is kept.

    Raises:
        ValueError: ``"16-mixed"``, or a precision XLA does not offer.
        ModuleNotFoundError: ``torch_xla`` is not installed.

    Example:
        >>> xla_precision("16-mixed")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: `precision="16-mixed"` (`fp16=True`): fp16 mixed precision is not supported on TPUs, ...
    """
    mapping = {"bf16-mixed": "bf16-true", "bf16": "bf16-true", "bf16-true": "bf16-true", "16-true": "16-true",
               "32-true": "32-true", "32": "32-true"}
    if precision in ("16-mixed", "16"):
        raise ValueError(
            f'`precision="{precision}"` (`fp16=True`): fp16 mixed precision is not supported on TPUs, as in HF. '
            'Use `bf16=True` (precision "bf16-true" on XLA).'
        )
    if precision not in mapping:
        raise ValueError(f'`precision="{precision}"` is not available on TPUs; choose one of {sorted(mapping)}.')
    from lightning.pytorch.plugins.precision import xla as xla_plugin

    _require_xla(f'`precision="{precision}"` on TPUs', xla_plugin._XLA_AVAILABLE)
    return xla_plugin.XLAPrecision(mapping[precision])


def _xla_asked_by(args: Any, name: str) -> str:
    if getattr(args, "strategy", None) == name:
        return f'`strategy="{name}"`'
    if getattr(args, "accelerator", None) == "tpu":
        return '`accelerator="tpu"`'
    if name == "xla_fsdp" and isinstance(args.fsdp_config, dict) and args.fsdp_config.get("xla"):
        return '`fsdp_config={"xla": True}`'
    return f'`strategy="{name}"`'


def _require_xla(asked_by: str, available: Any) -> None:
    if not available:
        raise ModuleNotFoundError(
            f"{asked_by} needs torch_xla, which is not installed. Install it on a TPU machine with "
            "`pip install torch_xla` (see https://github.com/pytorch/xla for the TPU wheels).",
            name="torch_xla",
        )


def deepspeed_precision(precision: str) -> Any:
    """Lightning's ``DeepSpeedPrecision`` whose backward leaves gradient accumulation to Lightning.

    Lightning divides each micro-batch loss by ``accumulate_grad_batches`` (``loops/optimization/automatic.py``) and
    DeepSpeed's ``engine.backward`` would divide it again (``scale_wrt_gas=True``), leaving gradients 1/GA too small;
    HF switches DeepSpeed's division off the same way (transformers' ``Trainer.training_step``).

    Example:
        >>> type(deepspeed_precision("bf16-mixed")).__name__
        'AccumulatingDeepSpeedPrecision'
    """
    from lightning.pytorch.plugins.precision import DeepSpeedPrecision

    class AccumulatingDeepSpeedPrecision(DeepSpeedPrecision):
        def backward(self, tensor: Any, model: Any, optimizer: Any, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("scale_wrt_gas", False)
            super().backward(tensor, model, optimizer, *args, **kwargs)

    return AccumulatingDeepSpeedPrecision(precision)
