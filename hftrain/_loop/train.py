"""``Trainer.train``: transformers' training entry point, with Lightning's ``fit`` as the loop.

transformers' ``train`` → ``_inner_training_loop`` → ``_run_epoch`` → (one optimizer step) becomes here ``train`` →
``_train_with_lightning`` → Lightning's ``fit``, whose epoch loop calls ``HFModule.training_step`` once per optimizer
step. The module hands each of Lightning's hooks to the Trainer methods below (``_lightning_*``): the epoch's
iterator and transformers' per-epoch state (:class:`EpochRun`) are made at ``on_train_epoch_start``, and each step
is :meth:`~hftrain._loop.step.TrainingStepMethods._run_update_step`. Lightning's batches are only step tokens
(:class:`UpdateSteps`); the micro-batches come from ``get_batch_samples``, as in transformers.
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.trainer_utils import (
    TrainOutput,
    compare_trainer_and_checkpoint_args,
    enable_full_determinism,
    get_last_checkpoint,
    has_length,
    set_seed,
    speed_metrics,
)

from hftrain._args.validate import check_intervals
from hftrain._backends import ddp
from hftrain._callbacks.base import TrainerState
from hftrain._logging import trainer_logger
from hftrain._loop.accelerator import HFAccelerator
from hftrain._loop.batch_size import (
    OutOfMemoryOnSomeProcess,
    Snapshot,
    fits_everywhere,
    is_out_of_memory,
    smaller_micro_batch,
)
from hftrain._loop.data import set_epoch
from hftrain._loop.model_setup import (
    activate_neftune,
    apply_liger,
    compiled,
    deactivate_neftune,
    enable_activation_checkpointing,
    watch_underflow_overflow,
)
from hftrain._loop.throughput import ThroughputMeter, device_peak_flops

logger = trainer_logger()

TRAINER_STATE_NAME = "trainer_state.json"


@dataclass
class TrainRun:
    """What one ``train()`` call decided before its first step (transformers' ``_inner_training_loop`` locals)."""

    train_dataloader: Any
    num_train_epochs: int
    num_update_steps_per_epoch: int
    num_train_samples: float
    steps_in_epoch: int
    max_steps: int
    epochs_trained: int
    steps_trained_in_current_epoch: int
    resume_from_checkpoint: str | None
    trial: Any
    ignore_keys_for_eval: list[str] | None
    start_time: float = field(default_factory=time.time)


@dataclass
class EpochRun:
    """One epoch in progress (transformers' ``_run_epoch`` locals)."""

    epoch: int
    iterator: EpochIterator
    num_update_steps_per_epoch: int
    steps_in_epoch: int
    remainder: int
    step_optimizer: Callable[[], None]
    deepspeed: bool
    trial: Any
    ignore_keys_for_eval: list[str] | None
    start_time: float
    resume_from_checkpoint: str | None = None
    update_step: int = 0
    step: int = -1
    rng_to_sync: bool = False
    grad_norm: Any = None
    learning_rate: float | None = None
    exhausted: bool = False
    ended: bool = False

    def last_update(self) -> bool:
        return self.update_step == self.num_update_steps_per_epoch - 1

    def is_over(self, control: Any) -> bool:
        return (
            control.should_epoch_stop or control.should_training_stop
            or self.update_step >= self.num_update_steps_per_epoch
        )

    def share_of(self, batch: Any) -> float:
        return self.iterator.share_of(batch)


class EpochIterator(Iterator[Any]):
    """The epoch's micro-batches as accelerate's ``DataLoaderShard`` hands them to transformers' loop: each on the
    device, and one batch collated ahead of the one yielded (so a collator drawing from the global RNG, e.g. MLM
    masking, draws in transformers' order). For hftrain's sharded loaders it also knows each batch's share of its
    global batch (``Slice``): the processes' results then equal one process's."""

    def __init__(self, loader: Any, to_device: Callable[[Any], Any]) -> None:
        self._batches = iter(loader)
        self._slices = getattr(getattr(loader, "batch_sampler", None), "slices", None)
        self._to_device = to_device
        self._shares: dict[int, float] = {}
        self._ahead: Any = _NOT_FETCHED

    def __next__(self) -> Any:
        if self._ahead is _NOT_FETCHED:
            self._ahead = self._fetch()
        current = self._ahead
        if current is _END:
            raise StopIteration
        self._ahead = self._fetch()
        return current

    def _fetch(self) -> Any:
        try:
            batch = next(self._batches)
        except StopIteration:
            return _END
        batch = self._to_device(batch)
        if self._slices is not None:
            part = self._slices.popleft()
            self._shares[id(batch)] = part.rows * ddp.world_size() / part.global_rows
        return batch

    def share_of(self, batch: Any) -> float:
        return self._shares.get(id(batch), 1.0)


_NOT_FETCHED, _END = object(), object()


class UpdateSteps:
    """What Lightning iterates in ``fit``: one token per optimizer step of the epoch (the micro-batches come from
    ``get_batch_samples``). Its length is a full epoch's; a resumed first epoch stops early. The count is read
    when the first token is drawn, after ``on_train_epoch_start`` made the epoch (Lightning creates the first
    epoch's iterator earlier, in its data setup)."""

    def __init__(self, steps_per_epoch: int, steps_left: Callable[[], int]) -> None:
        self._steps_per_epoch, self._steps_left = steps_per_epoch, steps_left

    def __len__(self) -> int:
        return self._steps_per_epoch

    def __iter__(self) -> Iterator[int]:
        return self._tokens()

    def _tokens(self) -> Iterator[int]:
        yield from range(self._steps_left())


class TrainMethods:
    """transformers.Trainer's ``train`` and the methods it calls to plan and finish a run."""

    def train(
        self, resume_from_checkpoint: str | bool | None = None, trial: Any = None,
        ignore_keys_for_eval: list[str] | None = None,
    ) -> TrainOutput:
        """Train the model; ``resume_from_checkpoint`` (a path, or True for the newest in ``output_dir``) resumes
        it exactly where that checkpoint left it."""
        if resume_from_checkpoint is False:
            resume_from_checkpoint = None
        self._memory_tracker.start()
        args = self.args
        self.is_in_train = True
        if self.model_init is not None:
            enable_full_determinism(args.seed) if args.full_determinism else set_seed(args.seed)
            self._set_model(self.call_model_init(trial))
            self.optimizer, self.lr_scheduler = None, None
        if args.use_liger_kernel:
            apply_liger(self.model, args)
        enable_activation_checkpointing(self.model, args)
        if self.neftune_noise_alpha is not None:
            self.neftune_hook_handle = activate_neftune(self.model, self.neftune_noise_alpha, self.accelerator)
        self._hp_search_setup(trial)
        watch_underflow_overflow(self.model, args)
        if isinstance(resume_from_checkpoint, bool) and resume_from_checkpoint:
            resume_from_checkpoint = get_last_checkpoint(args.output_dir) if os.path.isdir(args.output_dir) else None
            if resume_from_checkpoint is None:
                raise ValueError(f"No valid checkpoint found in output directory ({args.output_dir})")
        if resume_from_checkpoint is not None:
            from hftrain._loop.checkpoint import check_resumable

            check_resumable(resume_from_checkpoint, args.world_size)
            if not self._sharded:  # sharded models load their weights once the strategy has sharded them
                self._load_from_checkpoint(resume_from_checkpoint)
            state = TrainerState.load_from_json(os.path.join(resume_from_checkpoint, TRAINER_STATE_NAME))
            if state.train_batch_size is not None and args.auto_find_batch_size:
                self._train_batch_size = state.train_batch_size  # the micro-batch the checkpoint's run found
        if args.auto_find_batch_size:
            return self._train_finding_batch_size(resume_from_checkpoint, trial, ignore_keys_for_eval)
        return self._train_with_lightning(args, resume_from_checkpoint, trial, ignore_keys_for_eval)

    def _train_finding_batch_size(
        self, resume_from_checkpoint: str | None, trial: Any, ignore_keys_for_eval: list[str] | None
    ) -> TrainOutput:
        """``auto_find_batch_size``: on out-of-memory, train again from the same start with the next smaller
        micro-batch and the accumulation that keeps the global batch (:mod:`hftrain._loop.batch_size`)."""
        per_device = self.args.per_device_train_batch_size
        accumulation = self._requested_accumulation = getattr(
            self, "_requested_accumulation", self.args.gradient_accumulation_steps)
        fresh_optimizer, fresh_scheduler = self.optimizer is None, self.lr_scheduler is None
        snapshot = Snapshot.take(self.model, self.optimizer, self.lr_scheduler)
        self._use_micro_batch(self._train_batch_size, per_device, accumulation)
        while True:
            try:
                return self._train_with_lightning(self.args, resume_from_checkpoint, trial, ignore_keys_for_eval)
            except Exception as exc:
                smaller = smaller_micro_batch(per_device, self._train_batch_size) if is_out_of_memory(exc) else None
                if smaller is None:
                    raise
                logger.warning(
                    f"Out of memory with micro-batches of {self._train_batch_size}: training again from the start "
                    f"with {smaller} and gradient accumulation {accumulation * per_device // smaller} (the same "
                    f"global batch of {per_device * accumulation} per process)."
                )
                snapshot.restore(self.model, self.optimizer, self.lr_scheduler)
                if fresh_optimizer:
                    self.optimizer = None
                if fresh_scheduler:
                    self.lr_scheduler, self._created_lr_scheduler = None, False
                self.accelerator.free_memory()
                self._use_micro_batch(smaller, per_device, accumulation)

    def _use_micro_batch(self, micro_batch: int, per_device: int, accumulation: int) -> None:
        """Train with ``micro_batch`` rows per step of each process and the accumulation that keeps the global batch
        (on a copy of the arguments: the caller's object keeps what they asked for)."""
        self._train_batch_size = micro_batch
        steps = accumulation * per_device // micro_batch
        if steps != self.args.gradient_accumulation_steps:
            self.args = copy.copy(self.args)
            self.args.gradient_accumulation_steps = steps
            self.accelerator = HFAccelerator(self.args, self.accelerator.gradient_state.plugin_kwargs)

    def _train_with_lightning(
        self, args: Any, resume_from_checkpoint: str | None, trial: Any, ignore_keys_for_eval: list[str] | None
    ) -> TrainOutput:
        """transformers' ``_inner_training_loop``, with Lightning's ``fit`` running the epochs."""
        if torch.cuda.is_available():  # a previous run's cached device memory (on the CPU a full gc costs ~0.3 s)
            self.accelerator.free_memory()
        train_dataloader = self.get_train_dataloader()
        (num_train_epochs, num_update_steps_per_epoch, num_examples, num_train_samples, total_train_batch_size,
         steps_in_epoch, max_steps) = self.set_initial_training_values(args, train_dataloader)
        check_intervals(args, max_steps)
        epochs_trained, steps_trained_in_current_epoch = self._init_training_state(
            max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial
        )
        if self._created_lr_scheduler:  # transformers builds a new scheduler for every train() call
            self.lr_scheduler, self._created_lr_scheduler = None, False
        self.callback_handler.train_dataloader = train_dataloader
        if args.world_size > 1 and not hasattr(train_dataloader, "total_batch_size"):
            logger.warning(
                "get_train_dataloader returned a loader that self.accelerator.prepare did not prepare: every process "
                "iterates all of it (as under transformers), so the results depend on the number of processes. "
                "Return self.accelerator.prepare(DataLoader(...)) to give each process its slice of every batch."
            )
        logger.info("***** Running training *****")
        logger.info(f"  Num examples = {num_examples:,}")
        logger.info(f"  Num Epochs = {num_train_epochs:,}")
        logger.info(f"  Instantaneous batch size per device = {args.per_device_train_batch_size:,}")
        logger.info(f"  Total train batch size (w. parallel, distributed & accumulation) = {total_train_batch_size:,}")
        logger.info(f"  Gradient Accumulation steps = {args.gradient_accumulation_steps}")
        logger.info(f"  Total optimization steps = {max_steps:,}")
        self._train_run = run = TrainRun(
            train_dataloader, num_train_epochs, num_update_steps_per_epoch, num_train_samples, steps_in_epoch,
            max_steps, epochs_trained, steps_trained_in_current_epoch, resume_from_checkpoint, trial,
            ignore_keys_for_eval,
        )
        self._initial_num_input_tokens_seen = self.state.num_input_tokens_seen
        self._initial_global_step = self.state.global_step
        self._total_loss_scalar = 0.0
        self._globalstep_last_logged = self.state.global_step
        self._fit(run)
        return self._finalize_training(trial, num_train_samples, run.start_time)

    def set_initial_training_values(
        self, args: Any, dataloader: Any
    ) -> tuple[int, int, int, int, int, int | None, int]:
        """``(num_train_epochs, num_update_steps_per_epoch, num_examples, num_train_samples, total_train_batch_size,
        steps_in_epoch, max_steps)``, with transformers' arithmetic."""
        max_steps = args.max_steps
        epoch_based = max_steps < 0
        len_dataloader = len(dataloader) if has_length(dataloader) else None
        total_train_batch_size = self.get_total_train_batch_size(args)
        sp_size = self.get_sp_size()
        if sp_size > 1 and len_dataloader is not None:
            len_dataloader = len_dataloader * sp_size
        if len_dataloader is not None:
            num_update_steps_per_epoch = max(
                len_dataloader // args.gradient_accumulation_steps
                + int(len_dataloader % args.gradient_accumulation_steps > 0), 1,
            )
            if epoch_based:
                max_steps = math.ceil(args.num_train_epochs * num_update_steps_per_epoch)
        if len_dataloader:
            num_examples = self.num_examples(dataloader)
            if args.max_steps > 0:
                num_train_epochs = max_steps // num_update_steps_per_epoch + int(
                    max_steps % num_update_steps_per_epoch > 0
                )
                num_train_samples = max_steps * total_train_batch_size
            else:
                num_train_epochs = math.ceil(args.num_train_epochs)
                num_train_samples = self.num_examples(dataloader) * args.num_train_epochs
        elif args.max_steps > 0:  # no length: as many passes over the data as max_steps needs
            num_train_epochs = sys.maxsize
            num_update_steps_per_epoch = max_steps
            num_examples = total_train_batch_size * args.max_steps
            num_train_samples = args.max_steps * total_train_batch_size
        else:
            raise ValueError(
                "args.max_steps must be set to a positive value if dataloader does not have a length, was"
                f" {args.max_steps}"
            )
        steps_in_epoch = len_dataloader if len_dataloader is not None else max_steps * args.gradient_accumulation_steps
        return (num_train_epochs, num_update_steps_per_epoch, num_examples, num_train_samples, total_train_batch_size,
                steps_in_epoch, max_steps)

    def get_total_train_batch_size(self, args: Any) -> int:
        """Micro-batch × gradient accumulation × data-parallel processes."""
        dp_world_size = args.world_size // self.get_tp_size() // self.get_cp_size() // self.get_sp_size()
        return self._train_batch_size * args.gradient_accumulation_steps * dp_world_size

    def get_sp_size(self) -> int:
        """Sequence-parallel size: 1 (hftrain has no sequence parallelism)."""
        return 1

    def get_cp_size(self) -> int:
        """Context-parallel size: 1 (hftrain has no context parallelism)."""
        return 1

    def get_tp_size(self) -> int:
        """Tensor-parallel size: the model's ``_tp_size`` if it has one, else 1."""
        tp_size = getattr(self.model, "_tp_size", None)
        return tp_size if tp_size is not None else 1

    def _init_training_state(
        self, max_steps: int, num_update_steps_per_epoch: int, num_train_epochs: int,
        resume_from_checkpoint: str | None, trial: Any,
    ) -> tuple[int, int]:
        """A new ``TrainerState``, or the checkpoint's; ``(epochs_trained, steps_trained_in_current_epoch)``."""
        from hftrain._callbacks.state import refresh_callback_states
        from hftrain._loop.checkpoint import load_trainer_state
        self.state = TrainerState(stateful_callbacks=refresh_callback_states(
            {}, self.callback_handler.callbacks, self.control))
        self.state.is_hyper_param_search = trial is not None
        self.state.train_batch_size = self._train_batch_size
        self.state.compute_steps(self.args, max_steps)
        epochs_trained = steps_trained_in_current_epoch = 0
        if resume_from_checkpoint is not None and os.path.isfile(
            os.path.join(resume_from_checkpoint, TRAINER_STATE_NAME)
        ):
            self.state = load_trainer_state(resume_from_checkpoint, TrainerState)
            compare_trainer_and_checkpoint_args(self.args, self.state)
            self._load_callback_state()
            epochs_trained = int(self.state.global_step // num_update_steps_per_epoch)
            if not self.args.ignore_data_skip:
                steps_trained_in_current_epoch = self.state.global_step % num_update_steps_per_epoch
                steps_trained_in_current_epoch *= self.args.gradient_accumulation_steps
        self.state.init_training_references(self, max_steps, num_train_epochs, trial)
        return epochs_trained, steps_trained_in_current_epoch

    def _finalize_training(self, trial: Any, num_train_samples: float, start_time: float) -> TrainOutput:
        """The run's metrics (``train_loss``, speed, ``total_flos``), the best model, ``on_train_end``."""
        import shutil

        from transformers.trainer_utils import sort_checkpoints

        self._total_loss_scalar += self._tr_loss.item()
        self._tr_loss.zero_()
        num_steps_trained = self.state.global_step - self._initial_global_step
        train_loss = self._total_loss_scalar / max(num_steps_trained, 0.001)
        metrics = speed_metrics(
            "train", start_time, num_samples=num_train_samples * num_steps_trained / max(self.state.max_steps, 1),
            num_steps=num_steps_trained,
        )
        self.store_flos()
        metrics["total_flos"] = self.state.total_flos
        metrics["train_loss"] = train_loss
        self._memory_tracker.stop_and_update_metrics(metrics)
        self.log(metrics)
        if self.args.load_best_model_at_end and self.state.best_model_checkpoint is not None and not self._deepspeed:
            self._load_best_model()  # under DeepSpeed it was loaded while the engine lived (_lightning_train_end)
        best = self.state.best_model_checkpoint
        checkpoints_sorted = sort_checkpoints(output_dir=self._get_output_dir(trial), best_model_checkpoint=best)
        if self.args.should_save and best is not None and self.args.save_total_limit == 1:
            for checkpoint in checkpoints_sorted:
                if not os.path.samefile(checkpoint, best):
                    logger.info(f"Deleting older checkpoint [{checkpoint}] due to args.save_total_limit")
                    shutil.rmtree(checkpoint, ignore_errors=True)
        self.control = self.callback_handler.on_train_end(self.args, self.state, self.control)
        self._finish_current_push()
        if self.neftune_noise_alpha is not None:  # the embeddings' forward as it was
            deactivate_neftune(self.model, self.neftune_hook_handle, self.accelerator)
        self.is_in_train = False
        return TrainOutput(self.state.global_step, train_loss, metrics)

    # ---- Lightning's fit, and its hooks (called by HFModule) -------------------------------------------------------
    def _fit(self, run: TrainRun) -> None:
        from hftrain._lightning_compat import disable_validation_schedule, quiet_lightning
        from hftrain._tracebacks import loop_frames_hidden

        remaining = max(run.max_steps - self.state.global_step, 0)
        self.model_wrapped = compiled(self.model, self.args)  # transformers compiles where accelerate prepares
        self._model_prepared = True
        if remaining == 0:  # a run resumed at its end: transformers' events, no step (nothing for Lightning to fit)
            self._lightning_configure_optimizers()
            self._lightning_train_start(self.accelerator.device)
            return
        with quiet_lightning():
            trainer = self._build_lightning_trainer(max_steps=remaining, training=True)
            disable_validation_schedule(trainer)
            self.accelerator._attach(trainer)
            try:
                steps = UpdateSteps(run.num_update_steps_per_epoch, self._steps_left_in_epoch)
                trainer.fit(self.lightning_module, train_dataloaders=steps)
            except Exception as error:
                raise loop_frames_hidden(error)  # the user's frames, not Lightning's loop (HFTRAIN_FULL_TRACEBACK=1)
            finally:
                if self._jit_checkpoint is not None:
                    self._jit_checkpoint.disarm()
                self.accelerator._detach()
                self._epoch_run, self._fitting = None, False
        self.model.to(self.accelerator.device) if not self._sharded else None  # Lightning parks it on the CPU

    def _steps_left_in_epoch(self) -> int:
        epoch = self._epoch_run
        return epoch.num_update_steps_per_epoch - epoch.update_step if epoch is not None else 0

    def _lightning_configure_optimizers(self) -> Any:
        """The optimizer and the scheduler, built as transformers builds them (``create_optimizer`` then
        ``create_scheduler``), with a resumed run's states loaded into them."""
        run = self._train_run
        self.create_optimizer()
        self.create_scheduler(num_training_steps=run.max_steps)
        if run.resume_from_checkpoint is not None:
            if self._sharded:
                self._load_from_checkpoint(run.resume_from_checkpoint, self.model)
            self._load_optimizer_and_scheduler(run.resume_from_checkpoint)
        for attr in ("model", "optimizer", "lr_scheduler"):
            setattr(self.callback_handler, attr, getattr(self, attr))
        return {"optimizer": self.optimizer,
                "lr_scheduler": {"scheduler": self.lr_scheduler, "interval": "step", "frequency": 1}}

    def _lightning_train_start(self, device: torch.device) -> None:
        """transformers' start of training, in the process that trains: the loss accumulator, ``on_train_begin``,
        ``eval_on_start``."""
        run = self._train_run
        if self.args.auto_find_batch_size and ddp.world_size() > 1 and not fits_everywhere(self, self._train_batch_size):
            # every process raises here, before any step: one's out-of-memory shrinks all of them
            raise OutOfMemoryOnSomeProcess(f"A process ran out of memory with micro-batches of {self._train_batch_size}.")
        if run.resume_from_checkpoint is not None:
            self._load_scaler(run.resume_from_checkpoint)
        self._tr_loss = torch.zeros((), device=device)
        if run.resume_from_checkpoint is not None:
            self._load_unlogged_loss(run.resume_from_checkpoint)
        self.model.zero_grad()
        self.control = self.callback_handler.on_train_begin(self.args, self.state, self.control)
        if self.args.eval_on_start:
            self._evaluate(run.trial, run.ignore_keys_for_eval, skip_scheduler=True)
        if self._jit_checkpoint is not None:  # after Lightning's own handlers, which it installs in fit
            self._jit_checkpoint.arm(device)
        plugin = self.lightning_trainer.precision_plugin if self.lightning_trainer is not None else None
        peak = self.args.peak_flops or device_peak_flops(device, plugin)  # no Lightning run: resumed at its end
        self._throughput = ThroughputMeter(ddp.world_size(), peak)
        self._throughput.start(self.state.num_input_tokens_seen, self.state.total_flos)

    def _lightning_epoch_start(self, lightning_epoch: int, step_optimizer: Callable[[], None],
                               to_device: Callable[[Any], Any]) -> None:
        """transformers' start of an epoch: ``on_epoch_begin``, the data position of a resumed run, the epoch's
        order (``set_epoch``) and its iterator."""
        run, args = self._train_run, self.args
        epoch = run.epochs_trained + lightning_epoch
        self.control = self.callback_handler.on_epoch_begin(args, self.state, self.control)
        skip, step, updates_trained, rng_to_sync = 0, -1, 0, False
        if epoch == run.epochs_trained and run.resume_from_checkpoint is not None:
            if run.steps_trained_in_current_epoch > 0 and not args.ignore_data_skip:
                skip = run.steps_trained_in_current_epoch
                step, updates_trained, rng_to_sync = skip - 1, skip // args.gradient_accumulation_steps, True
            elif run.steps_trained_in_current_epoch == 0:
                self._load_rng_state(run.resume_from_checkpoint)
        loader = self.get_resumed_dataloader(run.train_dataloader, skip) if skip else run.train_dataloader
        set_epoch(run.train_dataloader, epoch)  # the epoch's order (a skipping iterator may not pass it on)
        if loader is not run.train_dataloader:
            set_epoch(loader, epoch)  # and a loader an override built, which may keep its own
        remainder = run.steps_in_epoch % args.gradient_accumulation_steps or args.gradient_accumulation_steps
        self._epoch_run = EpochRun(
            epoch=epoch, iterator=EpochIterator(loader, to_device),
            num_update_steps_per_epoch=run.num_update_steps_per_epoch, steps_in_epoch=run.steps_in_epoch,
            remainder=remainder, step_optimizer=step_optimizer, deepspeed=self._deepspeed, trial=run.trial,
            ignore_keys_for_eval=run.ignore_keys_for_eval, start_time=run.start_time,
            resume_from_checkpoint=run.resume_from_checkpoint, update_step=updates_trained, step=step,
            rng_to_sync=rng_to_sync,
        )

    def _lightning_training_step(self) -> None:
        self._run_update_step(self._epoch_run)

    def _lightning_epoch_over(self) -> bool:
        """Whether the epoch ended before Lightning's steps did (a callback's ``should_epoch_stop``, no data)."""
        epoch = self._epoch_run
        return epoch is not None and epoch.ended

    def _lightning_should_stop(self) -> bool:
        return self.control.should_training_stop

    def _lightning_epoch_end(self) -> None:
        epoch = self._epoch_run
        if epoch is not None and not epoch.ended:  # Lightning's max_steps ended it: transformers' end of epoch
            self._end_epoch(epoch)

    def _lightning_train_end(self) -> None:
        """The last hook in the training process (also a spawned worker): DeepSpeed loads the best model while
        its engine lives."""
        if self._deepspeed and self.args.load_best_model_at_end and self.state.best_model_checkpoint is not None:
            self._load_best_model()
