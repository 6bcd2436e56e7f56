"""HF-layout checkpoints written atomically: ``output_dir/checkpoint-{step}/``.

A checkpoint is assembled in a hidden temporary folder next to its final place and renamed into place, so a crash
while saving never leaves a half-written ``checkpoint-N`` for ``get_last_checkpoint`` or rotation to pick up.
Files and formats are HF's (trainer.py:3363): the model through ``save_pretrained`` (or ``model.safetensors`` for a
plain module), ``optimizer.pt``, ``scheduler.pt``, ``rng_state.pth``, ``trainer_state.json``, ``training_args.bin``.
"""

from __future__ import annotations

import os
import random
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint, rotate_checkpoints

from hftrain._backends import deepspeed_checkpoint as _deepspeed_checkpoint, fsdp as _sharding
from hftrain._backends.ddp import all_gather_objects, barrier, rank, world_size

TRAINER_STATE_NAME = "trainer_state.json"
TRAINING_ARGS_NAME = "training_args.bin"


def save_model_files(
    model: torch.nn.Module, output_dir: str, processing_class: Any, args: Any,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> None:
    """HF's ``Trainer._save``: weights (+ config) as safetensors, the tokenizer, ``training_args.bin``.

    ``state_dict``: the weights to write instead of ``model.state_dict()`` (the gathered weights of a sharded model).
    """
    os.makedirs(output_dir, exist_ok=True)
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(output_dir, state_dict=state_dict)
    else:
        from safetensors.torch import save_file

        state = {k: v.contiguous() for k, v in (state_dict or model.state_dict()).items()}
        save_file(state, os.path.join(output_dir, "model.safetensors"), metadata={"format": "pt"})
    if processing_class is not None and hasattr(processing_class, "save_pretrained"):
        processing_class.save_pretrained(output_dir)
    torch.save(args.for_saving() if hasattr(args, "for_saving") else args, os.path.join(output_dir, TRAINING_ARGS_NAME))


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "cpu": torch.random.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.random.get_rng_state_all()
    return state


def temporary_dir(final_dir: str) -> str:
    """A hidden folder beside ``final_dir`` that no other save uses (``get_last_checkpoint`` and rotation skip it)."""
    parent = os.path.dirname(os.path.abspath(final_dir))
    return os.path.join(parent, f".tmp-{os.path.basename(final_dir)}-{uuid.uuid4().hex[:8]}")


def write_atomically(final_dir: str, write: Callable[[str], None], tmp_dir: str | None = None) -> str:
    """Call ``write(tmp_dir)`` then rename ``tmp_dir`` to ``final_dir`` (replacing an older one of that name).

    ``tmp_dir``: a folder other processes already wrote into (DeepSpeed's partitions); a fresh one by default."""
    parent = os.path.dirname(os.path.abspath(final_dir))
    os.makedirs(parent, exist_ok=True)
    tmp_dir = tmp_dir or temporary_dir(final_dir)
    try:
        write(tmp_dir)
        if os.path.isdir(final_dir):
            shutil.rmtree(final_dir)
        os.replace(tmp_dir, final_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return final_dir


def save_checkpoint(
    *,
    output_dir: str,
    global_step: int,
    model: torch.nn.Module,
    processing_class: Any,
    args: Any,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
    state: Any,
    deepspeed_engine: Any = None,
) -> str:
    """Write ``checkpoint-{global_step}`` and rotate older ones (never the newest or the best).

    Every process calls this. With a ``deepspeed_engine``, every process first writes its partition of the
    engine's states into one shared temporary folder (``_deepspeed_checkpoint``), which the first process then
    completes with HF's files and renames into place."""
    final_dir = os.path.join(output_dir, f"{PREFIX_CHECKPOINT_DIR}-{global_step}")
    rng_states = all_gather_objects(rng_state())  # every process's RNG, written by the first one
    tmp_dir = None
    if deepspeed_engine is not None:
        weights = _deepspeed_checkpoint.full_state_dict(deepspeed_engine)  # ZeRO-3: gathered from every process
        tmp_dir = all_gather_objects(temporary_dir(final_dir))[0]  # the first process's name, for all
        if not args.save_only_model:
            try:
                _deepspeed_checkpoint.save_engine_state(deepspeed_engine, tmp_dir, global_step)
            except BaseException:
                shutil.rmtree(tmp_dir, ignore_errors=True)  # the previous checkpoints stay as they were
                raise
        barrier()
    else:
        weights = _sharding.full_state_dict(model)  # FSDP: gathered from every process (None: not sharded)
    optimizer_state = None
    if optimizer is not None and not args.save_only_model and deepspeed_engine is None:
        sharded = weights is not None
        optimizer_state = _sharding.full_optimizer_state(model, optimizer) if sharded else optimizer.state_dict()
    if not args.should_save:
        barrier()
        return final_dir

    def write(tmp_dir: str) -> None:
        save_model_files(model, tmp_dir, processing_class, args, state_dict=weights)
        if not args.save_only_model:
            if optimizer_state is not None:
                torch.save(optimizer_state, os.path.join(tmp_dir, "optimizer.pt"))
            if scheduler is not None:
                torch.save(scheduler.state_dict(), os.path.join(tmp_dir, "scheduler.pt"))
            if len(rng_states) == 1:
                torch.save(rng_states[0], os.path.join(tmp_dir, "rng_state.pth"))
            for index, states in enumerate(rng_states if len(rng_states) > 1 else []):
                torch.save(states, os.path.join(tmp_dir, f"rng_state_{index}.pth"))
        state.save_to_json(os.path.join(tmp_dir, TRAINER_STATE_NAME))

    write_atomically(final_dir, write, tmp_dir)
    rotate_checkpoints(
        output_dir, save_total_limit=args.save_total_limit,
        best_model_checkpoint=state.best_model_checkpoint, use_mtime=True,
    )
    barrier()
    return final_dir


def load_model_weights(model: torch.nn.Module, checkpoint_dir: str) -> None:
    """Load ``model.safetensors`` from a checkpoint into ``model`` (HF's best-model reload, ``strict=False``)."""
    from safetensors.torch import load_file

    path = Path(checkpoint_dir) / "model.safetensors"
    if not path.is_file():
        raise ValueError(f"Checkpoint file {path} is missing: cannot load the model weights of {checkpoint_dir}.")
    try:
        state_dict = load_file(str(path))
    except Exception as exc:
        raise ValueError(f"Checkpoint file {path} is corrupt: {exc}") from exc
    if _sharding.is_sharded(model):
        _sharding.load_full_model_state(model, state_dict)
    else:
        model.load_state_dict(state_dict, strict=False)
    if hasattr(model, "tie_weights"):  # tied weights (e.g. lm_head) are stored once by save_pretrained
        model.tie_weights()


def torch_load(path: str) -> Any:
    """``torch.load`` that executes no pickled code (``weights_only``); a damaged file names itself."""
    from transformers.trainer_pt_utils import safe_globals

    if not os.path.isfile(path):
        raise ValueError(f"Checkpoint file {path} is missing.")
    try:
        with safe_globals():
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated zip, a foreign pickle...
        raise ValueError(f"Checkpoint file {path} is corrupt or was not written by a Trainer: {exc}") from exc


def check_resumable(checkpoint_dir: str) -> None:
    """Refuse a checkpoint whose files are missing (naming them) before anything is loaded."""
    missing = [name for name in (TRAINER_STATE_NAME, "model.safetensors") if not os.path.isfile(
        os.path.join(checkpoint_dir, name))]
    if missing:
        raise ValueError(
            f"Cannot resume from {checkpoint_dir}: missing {', '.join(missing)}. It is not a complete checkpoint "
            "written by hftrain/transformers (an interrupted save never leaves one under this name)."
        )
    written_by = saved_world_size(checkpoint_dir)
    if written_by is not None and written_by != world_size():
        raise ValueError(
            f"{checkpoint_dir} was written by {written_by} process(es) and this run has {world_size()}: the data "
            "position carries over, but each process's random state cannot, so the resume would not be exact. "
            f"Resume with {written_by} process(es), or delete its rng_state*.pth files to accept a non-exact resume."
        )


def saved_world_size(checkpoint_dir: str) -> int | None:
    """How many processes wrote a checkpoint, read from its RNG files (None when it has none)."""
    names = os.listdir(checkpoint_dir)
    if "rng_state.pth" in names:
        return 1
    per_rank = [n for n in names if n.startswith("rng_state_") and n.endswith(".pth")]
    return len(per_rank) or None


def load_trainer_state(checkpoint_dir: str, state_cls: Any) -> Any:
    path = os.path.join(checkpoint_dir, TRAINER_STATE_NAME)
    try:
        state = state_cls.load_from_json(path)
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"Checkpoint file {path} is corrupt: {exc}") from exc
    if state.best_model_checkpoint is not None and not os.path.isdir(state.best_model_checkpoint):
        state.best_model_checkpoint = None  # rotated away since: HF ignores it too
    return state


def load_optimizer_and_scheduler(
    checkpoint_dir: str, optimizer: Any, scheduler: Any, model: Any = None, deepspeed: bool = False
) -> None:
    """HF loads both only when both files exist (a ``save_only_model`` checkpoint restarts them fresh).

    A sharded (FSDP) ``model``'s optimizer state was saved whole, keyed by parameter name: each process takes its
    shard of it. Under ``deepspeed`` the engine restores the optimizer (``_deepspeed_checkpoint.load_engine_state``,
    once it exists) and only the scheduler is read here."""
    opt_file, sched_file = (os.path.join(checkpoint_dir, n) for n in ("optimizer.pt", "scheduler.pt"))
    if deepspeed:
        if os.path.isfile(sched_file) and _deepspeed_checkpoint.has_engine_state(checkpoint_dir):
            scheduler.load_state_dict(torch_load(sched_file))
        return
    if os.path.isfile(opt_file) and os.path.isfile(sched_file):
        if model is not None and _sharding.is_sharded(model):
            _sharding.load_full_optimizer_state(model, optimizer, torch_load(opt_file))
        else:
            optimizer.load_state_dict(torch_load(opt_file))
        scheduler.load_state_dict(torch_load(sched_file))


def load_rng_state(checkpoint_dir: str) -> None:
    name = f"rng_state_{rank()}.pth" if world_size() > 1 else "rng_state.pth"
    path = os.path.join(checkpoint_dir, name)
    if not os.path.isfile(path):
        return  # HF: reproducibility not guaranteed, training goes on
    state = torch_load(path)
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.random.set_rng_state(state["cpu"])
    if torch.cuda.is_available() and "cuda" in state:
        torch.cuda.random.set_rng_state_all(state["cuda"])


def resolve_checkpoint(resume_from_checkpoint: str | bool | None, output_dir: str) -> str | None:
    """HF's rules: ``True`` → the newest ``checkpoint-N`` in ``output_dir``; a path must exist."""
    if resume_from_checkpoint is None or resume_from_checkpoint is False:
        return None
    if resume_from_checkpoint is True:
        last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if last is None:
            raise ValueError(f"No valid checkpoint found in output directory ({output_dir})")
        return last
    if not os.path.isdir(resume_from_checkpoint):
        raise ValueError(
            f"Can't find a valid checkpoint at {resume_from_checkpoint}: `resume_from_checkpoint` must be a "
            "checkpoint-N folder written by a Trainer, or True for the newest one in output_dir."
        )
    return str(resume_from_checkpoint)


def metric_key(name: str) -> str:
    """``metric_for_best_model`` as an eval metric key (HF adds the ``eval_`` prefix when missing)."""
    return name if name.startswith("eval_") else f"eval_{name}"


def update_best_metric(state: Any, args: Any, metrics: dict[str, float]) -> bool:
    """HF ``_determine_best_metric``: a strict improvement of ``eval_<metric_for_best_model>`` becomes the best."""
    name = args.metric_for_best_model
    if name is None:
        return False
    key = metric_key(name)
    if key not in metrics:
        raise KeyError(
            f"The `metric_for_best_model` training argument is set to '{key}', which is not found in the "
            f"evaluation metrics. The available evaluation metrics are: {list(metrics.keys())}. Consider "
            "changing the `metric_for_best_model` via the TrainingArguments."
        )
    value = metrics[key]
    better = np.greater if args.greater_is_better else np.less
    best = state.best_metric
    if best is None:
        best = float("-inf") if args.greater_is_better else float("inf")
    if not better(value, best):
        return False
    state.best_metric = value
    if args.save_strategy != "no":
        state.best_global_step = state.global_step
    return True
