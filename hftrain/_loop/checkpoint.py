"""HF-layout checkpoints, written atomically, through transformers' saving and loading methods.

``_save_checkpoint`` → ``save_model`` → ``_save``, ``_save_optimizer_and_scheduler``, ``_save_scaler``,
``_save_rng_state`` are the Trainer's methods, as in transformers (so a ``_save`` override, e.g. one that keeps
only the trainable weights, is what writes the model). hftrain adds one thing: the checkpoint is assembled in a
hidden temporary folder beside its final place, which every process writes into, and renamed into place once
complete. A crash while saving never leaves a half-written ``checkpoint-N`` for ``get_last_checkpoint`` or rotation
to pick up. Files and formats are transformers': the model through ``save_pretrained`` (``model.safetensors`` for a
plain module), ``optimizer.pt``, ``scheduler.pt``, ``scaler.pt`` (fp16), ``rng_state.pth``
(``rng_state_{rank}.pth`` with several processes), ``trainer_state.json``, ``training_args.bin``; DeepSpeed adds its
engine's ``global_stepN/`` folder.

Loading reads only tensors and plain containers (``weights_only``); a missing or damaged file is named.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from hftrain._backends import deepspeed_checkpoint as ds
from hftrain._backends import fsdp
from hftrain._backends.ddp import all_gather_objects, barrier, rank, world_size
from hftrain._logging import trainer_logger

logger = trainer_logger()

TRAINER_STATE_NAME = "trainer_state.json"
TRAINING_ARGS_NAME = "training_args.bin"
OPTIMIZER_NAME = "optimizer.pt"
SCHEDULER_NAME = "scheduler.pt"
SCALER_NAME = "scaler.pt"
SAFE_WEIGHTS_NAME = "model.safetensors"
WEIGHTS_NAME = "pytorch_model.bin"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
WEIGHTS_INDEX_NAME = "pytorch_model.bin.index.json"


class CheckpointMethods:
    """transformers.Trainer's checkpoint methods."""

    def _get_output_dir(self, trial: Any) -> str:
        """``output_dir``, or its ``run-<id>`` folder for a hyperparameter-search trial."""
        if self.hp_search_backend is not None and trial is not None:
            run_id = trial.number if hasattr(trial, "number") else id(trial)
            run_name = self.hp_name(trial) if self.hp_name is not None else f"run-{run_id}"
            return os.path.join(self.args.output_dir, run_name)
        return self.args.output_dir

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        """``checkpoint-{global_step}``: the model, the optimizer, scheduler, scaler and RNG states, the state."""
        if self.hp_search_backend is None and trial is None:
            self.store_flos()
        run_dir = self._get_output_dir(trial=trial)
        final_dir = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        with atomic_directory(final_dir, writer=self.args.should_save) as output_dir:
            self.save_model(output_dir, _internal_call=True)
            if self.args.save_strategy in ("steps", "epoch", "best") and self.state.best_global_step:
                best_dir = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.best_global_step}")
                if os.path.exists(best_dir) or self.state.best_global_step == self.state.global_step:
                    self.state.best_model_checkpoint = best_dir
            if not self.args.save_only_model:
                self._save_optimizer_and_scheduler(output_dir)
                self._save_scaler(output_dir)
                self._save_rng_state(output_dir)
            if self.args.should_save:
                from hftrain._callbacks.state import refresh_callback_states

                self.state.stateful_callbacks = refresh_callback_states(
                    self.state.stateful_callbacks, self.callback_handler.callbacks, self.control
                )
                self.state.save_to_json(os.path.join(output_dir, TRAINER_STATE_NAME))
        if self.args.push_to_hub:
            self._push_from_checkpoint(final_dir)
        if self.args.should_save:
            rotate_checkpoints(
                output_dir=run_dir, save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True,
            )
        barrier()

    def _save_rng_state(self, output_dir: str) -> None:
        """Every process's RNG states (Python, NumPy, torch CPU and CUDA), written by the writing process(es), with
        the training loss it has not logged yet (keys transformers does not read), so the first log after a resume
        from a step between two logs is the uninterrupted run's."""
        unlogged = {"loss_since_last_log": float(self._tr_loss),
                    "steps_since_last_log": self.state.global_step - self._globalstep_last_logged}
        states = all_gather_objects({**rng_state(), **unlogged})
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        if len(states) == 1:
            torch.save(states[0], os.path.join(output_dir, "rng_state.pth"))
        else:
            for index, state in enumerate(states):
                torch.save(state, os.path.join(output_dir, f"rng_state_{index}.pth"))

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        """``optimizer.pt`` (whole, keyed by parameter name, for a sharded model) and ``scheduler.pt``; under
        DeepSpeed the engine writes its partitioned states (every process) and only the scheduler is HF's."""
        engine = self._deepspeed_engine()
        if engine is not None:
            ds.save_engine_state(engine, output_dir, self.state.global_step)
        elif self._sharded:
            state = fsdp.full_optimizer_state(self.model, self.optimizer)  # a collective
            if self.args.should_save:
                torch.save(state, os.path.join(output_dir, OPTIMIZER_NAME))
        elif self.args.should_save:
            torch.save(self.optimizer.state_dict(), os.path.join(output_dir, OPTIMIZER_NAME))
        if self.args.should_save and self.lr_scheduler is not None:
            torch.save(self.lr_scheduler.state_dict(), os.path.join(output_dir, SCHEDULER_NAME))

    def _save_scaler(self, output_dir: str) -> None:
        """``scaler.pt``: the fp16 GradScaler's state, when there is one."""
        scaler = self.accelerator.scaler
        if scaler is not None and self.args.should_save:
            torch.save(scaler.state_dict(), os.path.join(output_dir, SCALER_NAME))

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the model so that ``from_pretrained`` loads it (sharded weights are gathered first: every process
        must call this)."""
        if output_dir is None:
            output_dir = self.args.output_dir
        engine = self._deepspeed_engine()
        state_dict = ds.full_state_dict(engine) if engine is not None else fsdp.full_state_dict(self.model)
        self._save(output_dir, state_dict=state_dict)
        if self.args.push_to_hub and not _internal_call:
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """The weights (+ config) through ``save_pretrained``, the tokenizer, ``training_args.bin``."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        logger.info(f"Saving model checkpoint to {output_dir}")
        save_model_files(self.model, output_dir, state_dict)
        if self.processing_class is not None and hasattr(self.processing_class, "save_pretrained"):
            self.processing_class.save_pretrained(output_dir)
        elif getattr(self.data_collator, "tokenizer", None) is not None:
            logger.info("Saving Trainer.data_collator.tokenizer by default as Trainer.processing_class is `None`")
            self.data_collator.tokenizer.save_pretrained(output_dir)
        torch.save(self.args.for_saving() if hasattr(self.args, "for_saving") else self.args,
                   os.path.join(output_dir, TRAINING_ARGS_NAME))

    # ---- loading ---------------------------------------------------------------------------------------------------
    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        """The checkpoint's weights into ``model`` (``model.safetensors``, ``pytorch_model.bin`` or their sharded
        index), non-strict, as transformers loads them."""
        model = self.model if model is None else model
        if self._deepspeed:
            return  # the engine loads its own states (_lightning_engine_ready)
        logger.info(f"Loading model from {resume_from_checkpoint}.")
        load_result = load_weights(model, resume_from_checkpoint)
        if load_result is not None:
            self._issue_warnings_after_load(load_result)

    def _load_best_model(self) -> None:
        """``load_best_model_at_end``: the best checkpoint's weights (inside the live engine under DeepSpeed)."""
        best = self.state.best_model_checkpoint
        logger.info(f"Loading best model from {best} (score: {self.state.best_metric}).")
        engine = self._deepspeed_engine()
        if engine is not None:
            ds.load_best_weights(engine, self.model, best)
            return
        if not has_weights(best):
            logger.warning(
                f"Could not locate the best model at {best}, if you are running a distributed training on multiple "
                "nodes, you should activate `--save_on_each_node`."
            )
            return
        load_result = load_weights(self.model, best)
        if load_result is not None:
            self._issue_warnings_after_load(load_result)

    def _issue_warnings_after_load(self, load_result: Any) -> None:
        if len(load_result.missing_keys) != 0:
            ignored = getattr(self.model, "_keys_to_ignore_on_save", None)
            if ignored and set(load_result.missing_keys) == set(ignored):
                self.model.tie_weights()
            else:
                logger.warning(f"There were missing keys in the checkpoint model loaded: {load_result.missing_keys}.")
        if len(load_result.unexpected_keys) != 0:
            logger.warning(f"There were unexpected keys in the checkpoint model loaded: {load_result.unexpected_keys}.")

    def _load_rng_state(self, checkpoint: str | None) -> None:
        """This process's RNG states from ``checkpoint`` (nothing when its file is absent, as transformers)."""
        if checkpoint is None:
            return
        name = f"rng_state_{rank()}.pth" if world_size() > 1 else "rng_state.pth"
        path = os.path.join(checkpoint, name)
        if not os.path.isfile(path):
            logger.info(f"Didn't find an RNG file ({name}): reproducibility is not guaranteed.")
            return
        state = torch_load(path)
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        torch.random.set_rng_state(state["cpu"])
        if torch.cuda.is_available() and "cuda" in state:
            torch.cuda.random.set_rng_state_all(state["cuda"])

    def _load_unlogged_loss(self, checkpoint: str) -> None:
        """The loss this process had accumulated since the last log when ``checkpoint`` was written (hftrain's
        checkpoints; transformers' have none and the next log starts from zero, as in transformers)."""
        name = f"rng_state_{rank()}.pth" if world_size() > 1 else "rng_state.pth"
        path = os.path.join(checkpoint, name)
        state = torch_load(path) if os.path.isfile(path) else {}
        if "loss_since_last_log" in state:
            self._tr_loss += state["loss_since_last_log"]
            self._globalstep_last_logged = self.state.global_step - state["steps_since_last_log"]

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        """Both states, when both files exist (a ``save_only_model`` checkpoint restarts them fresh). A sharded
        model's optimizer state was saved whole: each process takes its shard. Under DeepSpeed the engine restores
        the optimizer and only the scheduler is read here."""
        if checkpoint is None:
            return
        opt_file, sched_file = (os.path.join(checkpoint, n) for n in (OPTIMIZER_NAME, SCHEDULER_NAME))
        if self._deepspeed:
            if os.path.isfile(sched_file) and ds.has_engine_state(checkpoint):
                self.lr_scheduler.load_state_dict(torch_load(sched_file))
            return
        if os.path.isfile(opt_file) and os.path.isfile(sched_file):
            if fsdp.is_sharded(self.model):
                fsdp.load_full_optimizer_state(self.model, self.optimizer, torch_load(opt_file))
            else:
                self.optimizer.load_state_dict(torch_load(opt_file))
            self.lr_scheduler.load_state_dict(torch_load(sched_file))

    def _load_scaler(self, checkpoint: str | None) -> None:
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, SCALER_NAME)
        if os.path.isfile(path) and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(torch_load(path))

    def _load_callback_state(self) -> None:
        """``restore_callback_states_from_checkpoint``: rebuild the callbacks (and the control) a checkpoint saved."""
        if not self.args.restore_callback_states_from_checkpoint:
            return
        from hftrain._callbacks.state import restore_callback_states

        self.control = restore_callback_states(self.state.stateful_callbacks, self.callback_handler, self.control)

    def _lightning_engine_ready(self, engine: Any) -> None:
        """DeepSpeed's engine exists: a resumed run loads its states now (transformers' ``deepspeed_load_checkpoint``)."""
        if self._train_run is not None and self._train_run.resume_from_checkpoint is not None and self._fitting:
            ds.load_engine_state(engine, self._train_run.resume_from_checkpoint)

    def _deepspeed_engine(self) -> Any:
        return ds.deepspeed_engine(self.lightning_trainer)


# ---- files ---------------------------------------------------------------------------------------------------------
def save_model_files(model: nn.Module, output_dir: str, state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """The weights (+ config): ``save_pretrained``, or ``model.safetensors`` for a plain module.

    ``state_dict``: the weights to write instead of ``model.state_dict()`` (the gathered weights of a sharded model).
    """
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(output_dir, state_dict=state_dict)
        return
    from safetensors.torch import save_file

    logger.info("Trainer.model is not a `PreTrainedModel`, only saving its state dict.")
    state = {k: v.contiguous() for k, v in (state_dict or model.state_dict()).items()}
    save_file(state, os.path.join(output_dir, SAFE_WEIGHTS_NAME), metadata={"format": "pt"})


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.random.get_rng_state_all()
    return state


@contextlib.contextmanager
def atomic_directory(final_dir: str, writer: bool = True) -> Iterator[str]:
    """A hidden folder beside ``final_dir`` for every process to write into, renamed to ``final_dir`` (replacing an
    older one of that name) once the block completed on every process; removed if it raised.

    The first process names the folder; ``writer`` is whether this process renames it (the one that saves)."""
    parent = os.path.dirname(os.path.abspath(final_dir))
    os.makedirs(parent, exist_ok=True)
    tmp_dir = all_gather_objects(
        os.path.join(parent, f".tmp-{os.path.basename(final_dir)}-{uuid.uuid4().hex[:8]}")
    )[0]
    try:
        yield tmp_dir
        barrier()
        if writer:
            os.makedirs(tmp_dir, exist_ok=True)
            if os.path.isdir(final_dir):
                shutil.rmtree(final_dir)
            os.replace(tmp_dir, final_dir)
    finally:
        if writer:
            shutil.rmtree(tmp_dir, ignore_errors=True)


def has_weights(checkpoint_dir: str) -> bool:
    return any(os.path.isfile(os.path.join(checkpoint_dir, name)) for name in (
        SAFE_WEIGHTS_NAME, WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_INDEX_NAME))


def load_weights(model: nn.Module, checkpoint_dir: str) -> Any:
    """A checkpoint's weights into ``model``, non-strict: ``model.safetensors`` / ``pytorch_model.bin``, or the
    shards of their index (transformers' ``load_sharded_checkpoint``). A sharded (FSDP) model takes its shard of
    the full weights (then None is returned: the load result is per shard)."""
    safe, bin_file = os.path.join(checkpoint_dir, SAFE_WEIGHTS_NAME), os.path.join(checkpoint_dir, WEIGHTS_NAME)
    if not has_weights(checkpoint_dir):
        raise ValueError(
            f"Can't find a valid checkpoint at {checkpoint_dir}: none of {SAFE_WEIGHTS_NAME}, {WEIGHTS_NAME} or "
            "their .index.json is there."
        )
    if not (os.path.isfile(safe) or os.path.isfile(bin_file)):
        from transformers.trainer_utils import load_sharded_checkpoint

        try:
            return load_sharded_checkpoint(model, checkpoint_dir, strict=False)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ValueError(f"The sharded weights of {checkpoint_dir} could not be loaded: {exc}") from exc
    if os.path.isfile(safe):
        from safetensors.torch import load_file

        try:
            state_dict = load_file(safe)
        except Exception as exc:
            raise ValueError(f"Checkpoint file {safe} is corrupt: {exc}") from exc
    else:
        state_dict = torch_load(bin_file)
    if fsdp.is_sharded(model):
        fsdp.load_full_model_state(model, state_dict)
        return None
    result = model.load_state_dict(state_dict, strict=False)
    if hasattr(model, "tie_weights"):  # tied weights (e.g. lm_head) are stored once by save_pretrained
        model.tie_weights()
    return result


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


def check_resumable(checkpoint_dir: str, processes: int) -> None:
    """Refuse a checkpoint whose files are missing (naming them), or that ``processes`` processes cannot resume
    exactly, before anything is loaded (and before the process group exists: ``processes`` is the run's)."""
    if not os.path.isdir(checkpoint_dir):
        raise ValueError(
            f"Can't find a valid checkpoint at {checkpoint_dir}: `resume_from_checkpoint` must be a checkpoint-N "
            "folder written by a Trainer, or True for the newest one in output_dir."
        )
    missing = [] if os.path.isfile(os.path.join(checkpoint_dir, TRAINER_STATE_NAME)) else [TRAINER_STATE_NAME]
    if not has_weights(checkpoint_dir) and not ds.has_engine_state(checkpoint_dir):
        missing.append(SAFE_WEIGHTS_NAME)
    if missing:
        raise ValueError(
            f"Cannot resume from {checkpoint_dir}: missing {', '.join(missing)}. It is not a complete checkpoint "
            "written by hftrain/transformers (an interrupted save never leaves one under this name)."
        )
    written_by = saved_world_size(checkpoint_dir)
    if written_by is not None and written_by != processes:
        raise ValueError(
            f"{checkpoint_dir} was written by {written_by} process(es) and this run has {processes}: the data "
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
        logger.warning(
            f"The best checkpoint {state.best_model_checkpoint} recorded in the resumed state does not exist "
            "anymore. Ignoring it for this run."
        )
        state.best_model_checkpoint = None
    return state
