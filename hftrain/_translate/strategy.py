"""Which Lightning strategy runs the job: the ``strategy`` field, or HF's ``fsdp`` / ``deepspeed`` / ``ddp_*`` options.

Pure translation (the objects are built, nothing is launched): a ``Strategy`` object passes through untouched; a
name picks Lightning's class with HF's options filled in; ``"auto"`` follows HF's own arguments. Names:

====================================  ===========================================================================
``"auto"``                            one process: Lightning's default; several (torchrun, ``devices=N``): DDP
``"ddp"`` / ``"ddp_spawn"``           ``DDPStrategy`` with HF's ``ddp_*`` options (re-launched script / spawn)
``"ddp_fork"`` / ``"ddp_notebook"``   the same, forked (the only multi-process choice inside a notebook)
``"fsdp"`` / ``fsdp=...``             FSDP2 (HF 5.x's default): ``ModelParallelStrategy`` + ``fully_shard`` per
                                      layer (:mod:`hftrain._backends.fsdp`); ``fsdp_config={"version": 1}``: FSDP1
``"deepspeed_stage_{1,2,3}[_offload]"``  ``DeepSpeedStrategy`` (``deepspeed=`` config: HF's "auto" values filled)
``"xla"`` / ``"xla_fsdp"``            ``XLAStrategy`` / ``XLAFSDPStrategy`` (TPUs)
====================================  ===========================================================================
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from hftrain._translate.env import Env, ModelFacts

_DDP_START_METHODS = {"ddp": "popen", "ddp_spawn": "spawn", "ddp_fork": "fork", "ddp_notebook": "fork"}
_DEEPSPEED_NAME = re.compile(r"^deepspeed(?:_stage_(?P<stage>[123]))?(?P<offload>_offload)?$")
_XLA_NAMES = ("xla", "xla_fsdp", "single_xla")
_FSDP_NAMES = ("fsdp", "fsdp2")


def accelerator(args: Any, env: Env) -> Any:
    """``accelerator`` as given; ``"auto"`` → CUDA when present and ``use_cpu`` is off, else the CPU (as HF)."""
    chosen = getattr(args, "accelerator", "auto")
    if chosen != "auto":
        return chosen
    return "cuda" if env.has_cuda and not args.use_cpu else "cpu"


def processes(args: Any, env: Env) -> int:
    """Processes of the run: started by a launcher (``env.world_size``) or by Lightning (``devices × num_nodes``)."""
    return env.world_size if env.world_size > 1 else getattr(args, "planned_processes", 1)


def lightning_strategy(
    args: Any, env: Env, interactive: bool = False, num_training_steps: int | None = None,
    model: ModelFacts = ModelFacts(),
) -> Any:
    """The ``strategy`` for ``lightning.Trainer``.

    Example:
        >>> from hftrain import TrainingArguments
        >>> args = TrainingArguments("out", strategy="ddp_notebook", devices=2, accelerator="cpu", report_to="none")
        >>> s = lightning_strategy(args, Env())
        >>> type(s).__name__, s._start_method, s._process_group_backend
        ('DDPStrategy', 'fork', 'gloo')
    """
    chosen = getattr(args, "strategy", "auto")
    if not isinstance(chosen, str):
        return fresh_copy(chosen)  # a Strategy object: the user's, as given
    name = chosen.lower()
    deepspeed = _DEEPSPEED_NAME.match(name)
    if args.deepspeed or deepspeed:
        from hftrain._backends.deepspeed_xla import deepspeed_strategy

        stage = int(deepspeed["stage"]) if deepspeed and deepspeed["stage"] else None
        return deepspeed_strategy(args, stage=stage, offload=bool(deepspeed and deepspeed["offload"]),
                                  num_training_steps=num_training_steps, hidden_size=model.hidden_size)
    if args.fsdp or name in _FSDP_NAMES:
        from hftrain._backends.fsdp import fsdp_strategy

        return fsdp_strategy(args, processes(args, env), ddp_options(args, env, model))
    if name in _XLA_NAMES or accelerator(args, env) == "tpu":
        from hftrain._backends.deepspeed_xla import xla_strategy

        return xla_strategy(args, name if name in _XLA_NAMES else "xla")
    if name in _DDP_START_METHODS or (name == "auto" and processes(args, env) > 1):
        start = _DDP_START_METHODS.get(name) or ("fork" if interactive else "popen")
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(start_method=start, **ddp_options(args, env, model))
    return chosen  # "auto", "single_device" or a name registered with Lightning's StrategyRegistry


def ddp_options(args: Any, env: Env, model: ModelFacts = ModelFacts()) -> dict[str, Any]:
    """HF's ``ddp_*`` arguments as ``DDPStrategy`` keywords (backend and timeout also serve FSDP)."""
    backend = args.ddp_backend or ("nccl" if accelerator(args, env) in ("cuda", "gpu") else "gloo")
    kwargs: dict[str, Any] = {"process_group_backend": backend, "timeout": timedelta(seconds=args.ddp_timeout)}
    # transformers' default (``Trainer._build_accelerator_args``): search for unused parameters (models whose used
    # parameters change from step to step, e.g. layerdrop or mixture-of-experts routing, need it), but not for a
    # PreTrainedModel under activation checkpointing, which the search breaks
    find_unused = args.ddp_find_unused_parameters
    if find_unused is None:
        find_unused = not (model.checkpointing or args.activation_checkpointing) if model.pretrained else True
    kwargs["find_unused_parameters"] = find_unused
    for field, name in (("ddp_bucket_cap_mb", "bucket_cap_mb"), ("ddp_broadcast_buffers", "broadcast_buffers"),
                        ("ddp_static_graph", "static_graph")):
        if getattr(args, field) is not None:
            kwargs[name] = getattr(args, field)
    return kwargs


def devices_and_nodes(args: Any, env: Env) -> tuple[Any, int]:
    """Under an external launcher the processes already exist: one device each, this node's share of them."""
    if env.world_size > 1:
        return env.local_world_size, max(env.world_size // env.local_world_size, 1)
    return getattr(args, "devices", "auto"), getattr(args, "num_nodes", 1)


def fresh_copy(strategy: Any) -> Any:
    """A copy of the user's ``Strategy`` object, for one ``lightning.Trainer``.

    A Lightning ``Trainer`` sets its accelerator, precision plugin and cluster environment on the strategy it is
    given, and the next ``Trainer`` (``evaluate()`` after ``train()``) refuses a strategy carrying them ("accelerator
    set through both strategy class and accelerator flag"). Each call gets a copy of the object as the user made it.
    """
    import copy

    try:
        return copy.deepcopy(strategy)
    except Exception:  # something in it cannot be copied: the object itself, as before
        return strategy
