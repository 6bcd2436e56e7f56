"""DeepSpeed checkpoints in HF's layout: the engine's own ``global_step{N}/`` folder inside ``checkpoint-{N}``.

HF (``Trainer._save_optimizer_and_scheduler``) lets the DeepSpeed engine write the model and optimizer states:
under ZeRO every process holds one partition of the optimizer state (ZeRO-3: of the weights too), so every
process calls ``engine.save_checkpoint`` and writes its own file. A resume hands the folder back to
``engine.load_checkpoint`` (HF's ``deepspeed_load_checkpoint``), which restores the fp32 master weights and the
optimizer state exactly. Beside it, the checkpoint keeps HF's files: the full 16-bit weights through
``save_pretrained`` (ZeRO-3 gathers them from every process), so ``from_pretrained`` loads it like any other,
``scheduler.pt`` (the scheduler is HF's, stepped by Lightning, not DeepSpeed's), the RNG states and
``trainer_state.json``.

DeepSpeed opens its files with ``torch.load(weights_only=False)``, which would run any code pickled into them. Before it
does, hftrain reads every one with ``weights_only=True``, allowing only the plain data classes DeepSpeed itself
pickles, and refuses a file that needs anything else: nothing pickled runs unless the user allows it.

Example (every process of a DeepSpeed run):
    >>> engine = deepspeed_engine(lightning_trainer)  # doctest: +SKIP
    >>> save_engine_state(engine, "out/.tmp-checkpoint-4-1a2b", global_step=4)  # doctest: +SKIP
    >>> load_engine_state(engine, "out/checkpoint-4")  # doctest: +SKIP
"""

from __future__ import annotations

import glob
import importlib
import os
import pickle
from typing import Any

import torch

MODULE_PREFIX = "model."  # the engine wraps HFModule, which holds the HF model as ``.model``
# what DeepSpeed pickles beside tensors and builtins (found with torch.serialization.get_unsafe_globals_in_checkpoint
# on ZeRO-0..3 checkpoints, fp32 / bf16 / fp16): an enum, the loss scalers' attributes, bf16's fragment addresses
DEEPSPEED_DATA_CLASSES = (
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
    "deepspeed.utils.tensor_fragment.fragment_address",
)


def runs_deepspeed(lightning_trainer: Any) -> bool:
    return type(getattr(lightning_trainer, "strategy", None)).__name__ == "DeepSpeedStrategy"


def deepspeed_engine(lightning_trainer: Any) -> Any | None:
    """The ``DeepSpeedEngine`` of a Lightning trainer running ``DeepSpeedStrategy`` (None otherwise, or before its
    setup built the engine)."""
    if not runs_deepspeed(lightning_trainer):
        return None
    engine = getattr(lightning_trainer.strategy, "model", None)
    return engine if callable(getattr(engine, "save_checkpoint", None)) else None


def partitions_weights(engine: Any) -> bool:
    """ZeRO-3: each process holds a slice of every weight, so the HF model's own parameters are empty."""
    return bool(engine.zero_optimization_partition_weights())


def full_state_dict(engine: Any) -> dict[str, torch.Tensor] | None:
    """The HF model's whole weights as the first process writes them; every process must call this.

    ZeRO-3 gathers the 16-bit weights layer by layer (process 0 gets them, the others an empty dict), as HF's
    ``accelerator.get_state_dict`` does. ZeRO-0/1/2: None, since every process holds the whole model and
    ``save_pretrained`` reads it directly.
    """
    if not partitions_weights(engine):
        return None
    gathered = engine._zero3_consolidated_16bit_state_dict() or {}
    return {key.removeprefix(MODULE_PREFIX): value for key, value in gathered.items()}


def save_engine_state(engine: Any, checkpoint_dir: str, global_step: int) -> None:
    """The engine's partitioned model/optimizer states under ``checkpoint_dir/global_step{N}/`` (with DeepSpeed's
    ``latest`` file and ``zero_to_fp32.py``), HF's tag. Every process must call this with the same folder."""
    engine.save_checkpoint(checkpoint_dir, tag=f"global_step{global_step}")


def has_engine_state(checkpoint_dir: str) -> bool:
    return bool(glob.glob(os.path.join(checkpoint_dir, "global_step*")))


def load_engine_state(engine: Any, checkpoint_dir: str) -> None:
    """HF's ``deepspeed_load_checkpoint``: the model and optimizer states back into a freshly set up engine.

    Raises:
        ValueError: the checkpoint has no ``global_step*`` folder (written with ``save_only_model=True`` or without
            DeepSpeed), one of its files would run pickled code (:func:`check_engine_files`), or DeepSpeed could not
            load it; the message names the folder or the file.
    """
    if not has_engine_state(checkpoint_dir):
        raise ValueError(
            f"Can't resume DeepSpeed training from {checkpoint_dir}: it has no `global_step*` folder with "
            "DeepSpeed's model and optimizer states (it was written with `save_only_model=True` or without "
            "DeepSpeed). Resume from a checkpoint this DeepSpeed setup wrote, or start without "
            "`resume_from_checkpoint` and load the weights with `from_pretrained`."
        )
    check_engine_files(checkpoint_dir)
    load_path, _ = engine.load_checkpoint(
        checkpoint_dir, load_module_strict=True, load_optimizer_states=True, load_lr_scheduler_states=False
    )
    if load_path is None:
        raise ValueError(f"[deepspeed] failed to resume from checkpoint {checkpoint_dir}")


def check_engine_files(checkpoint_dir: str) -> None:
    """Read every file of the engine's ``global_step*`` folders without executing pickled code (memory-mapped, so
    the tensors are not read), allowing only :data:`DEEPSPEED_DATA_CLASSES` and what
    ``torch.serialization.add_safe_globals`` allows.

    Raises:
        ValueError: a file would run other pickled code (the message names it, its classes, and the opt-in), or it
            is damaged.
    """
    from transformers.trainer_pt_utils import safe_globals

    allowed = [cls for cls in map(_import_class, DEEPSPEED_DATA_CLASSES) if cls is not None]
    for path in sorted(glob.glob(os.path.join(checkpoint_dir, "global_step*", "*.pt"))):
        try:
            with safe_globals(), torch.serialization.safe_globals(allowed):
                torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except pickle.UnpicklingError as exc:
            names = sorted(set(torch.serialization.get_unsafe_globals_in_checkpoint(path)) - set(DEEPSPEED_DATA_CLASSES))
            raise ValueError(
                f"Checkpoint file {path} holds pickled objects that would run code when loaded: "
                f"{', '.join(names) or exc}. hftrain loads only plain data from checkpoints. If you trust this file, "
                "allow these classes with `torch.serialization.add_safe_globals([...])` before resuming."
            ) from exc
        except Exception as exc:
            raise ValueError(f"Checkpoint file {path} is corrupt or was not written by DeepSpeed: {exc}") from exc


def _import_class(qualified_name: str) -> type | None:
    module, _, name = qualified_name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):  # another DeepSpeed version: it does not pickle this class
        return None


def load_best_weights(engine: Any, model: torch.nn.Module, checkpoint_dir: str) -> None:
    """``load_best_model_at_end`` inside a live engine.

    ZeRO-0/1/2: the engine reloads the best checkpoint's states (HF's way), so the fp32 master weights agree with the
    model. ZeRO-3 cannot reload into an engine that has trained (DeepSpeed wants a pristine model), so the best
    checkpoint's full weights are written into the partitions by process 0 under ``GatheredParameters``.
    """
    if not partitions_weights(engine):
        load_engine_state(engine, checkpoint_dir)
        return
    import deepspeed
    from safetensors.torch import load_file

    path = os.path.join(checkpoint_dir, "model.safetensors")
    if not os.path.isfile(path):
        raise ValueError(f"Checkpoint file {path} is missing: cannot load the best model of {checkpoint_dir}.")
    weights = load_file(path) if torch.distributed.get_rank() == 0 else None
    with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=0):
        if weights is not None:
            model.load_state_dict(weights, strict=False)
            if hasattr(model, "tie_weights"):
                model.tie_weights()
