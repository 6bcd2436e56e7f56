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
        raise FileNotFoundError(f"{path} is missing: cannot load the model weights of checkpoint {checkpoint_dir}.")
    result = model.load_state_dict(load_file(str(path)), strict=False)
    # tied weights (e.g. lm_head) are not stored twice by save_pretrained
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    del result
