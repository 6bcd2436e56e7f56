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
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

TRAINER_STATE_NAME = "trainer_state.json"
TRAINING_ARGS_NAME = "training_args.bin"


def save_model_files(model: torch.nn.Module, output_dir: str, processing_class: Any, args: Any) -> None:
    """HF's ``Trainer._save``: weights (+ config) as safetensors, the tokenizer, ``training_args.bin``."""
    os.makedirs(output_dir, exist_ok=True)
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(output_dir)
    else:
        from safetensors.torch import save_file

        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, os.path.join(output_dir, "model.safetensors"), metadata={"format": "pt"})
    if processing_class is not None and hasattr(processing_class, "save_pretrained"):
        processing_class.save_pretrained(output_dir)
    torch.save(args, os.path.join(output_dir, TRAINING_ARGS_NAME))


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "cpu": torch.random.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.random.get_rng_state_all()
    return state


def write_atomically(final_dir: str, write: Callable[[str], None]) -> str:
    """Call ``write(tmp_dir)`` then rename ``tmp_dir`` to ``final_dir`` (replacing an older one of that name)."""
    parent = os.path.dirname(os.path.abspath(final_dir))
    os.makedirs(parent, exist_ok=True)
    tmp_dir = os.path.join(parent, f".tmp-{os.path.basename(final_dir)}-{uuid.uuid4().hex[:8]}")
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
) -> str:
    """Write ``checkpoint-{global_step}`` and rotate older ones (never the newest or the best)."""
    final_dir = os.path.join(output_dir, f"{PREFIX_CHECKPOINT_DIR}-{global_step}")

    def write(tmp_dir: str) -> None:
        save_model_files(model, tmp_dir, processing_class, args)
        if not args.save_only_model:
            if optimizer is not None:
                torch.save(optimizer.state_dict(), os.path.join(tmp_dir, "optimizer.pt"))
            if scheduler is not None:
                torch.save(scheduler.state_dict(), os.path.join(tmp_dir, "scheduler.pt"))
            torch.save(rng_state(), os.path.join(tmp_dir, "rng_state.pth"))
        state.save_to_json(os.path.join(tmp_dir, TRAINER_STATE_NAME))

    write_atomically(final_dir, write)
    rotate_checkpoints(
        output_dir, save_total_limit=args.save_total_limit,
        best_model_checkpoint=state.best_model_checkpoint, use_mtime=True,
    )
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


def load_trainer_state(checkpoint_dir: str, state_cls: Any) -> Any:
    path = os.path.join(checkpoint_dir, TRAINER_STATE_NAME)
    try:
        state = state_cls.load_from_json(path)
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"Checkpoint file {path} is corrupt: {exc}") from exc
    if state.best_model_checkpoint is not None and not os.path.isdir(state.best_model_checkpoint):
        state.best_model_checkpoint = None  # rotated away since: HF ignores it too
    return state


def load_optimizer_and_scheduler(checkpoint_dir: str, optimizer: Any, scheduler: Any) -> None:
    """HF loads both only when both files exist (a ``save_only_model`` checkpoint restarts them fresh)."""
    opt_file, sched_file = (os.path.join(checkpoint_dir, n) for n in ("optimizer.pt", "scheduler.pt"))
    if os.path.isfile(opt_file) and os.path.isfile(sched_file):
        optimizer.load_state_dict(torch_load(opt_file))
        scheduler.load_state_dict(torch_load(sched_file))


def load_rng_state(checkpoint_dir: str) -> None:
    path = os.path.join(checkpoint_dir, "rng_state.pth")
    if not os.path.isfile(path):
        return  # HF: reproducibility not guaranteed, training goes on
    state = torch_load(path)
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.random.set_rng_state(state["cpu"])
    if torch.cuda.is_available() and "cuda" in state:
        torch.cuda.random.set_rng_state_all(state["cuda"])
