"""HF's training flow on Lightning's hooks: callbacks events, logging, evaluation and saving in optimizer steps.

Lightning's own schedules count batches (``val_check_interval``, ``log_every_n_steps``) and checkpoint before
validation; HF decides after every optimizer step through ``DefaultFlowCallback`` and then logs → evaluates →
saves (trainer.py:2238). ``HFFlow`` reproduces that: it fires HF's events from Lightning's hooks, accumulates the
logged loss exactly as HF does, runs Lightning's validation loop synchronously when HF's control asks for an
evaluation, and writes HF-layout checkpoints.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from typing_extensions import override

from hftrain._backends.deepspeed_checkpoint import deepspeed_engine, load_best_weights
from hftrain._backends.ddp import all_reduce_sum, world_size
from hftrain._translate.build import TrainingPlan

if TYPE_CHECKING:
    from hftrain.trainer import Trainer


class HFFlow(L.Callback):
    """One ``train()`` call's flow state (HF's ``_tr_loss``, ``_globalstep_last_logged``, last grad norm / LR)."""

    def __init__(self, hf: Trainer, plan: TrainingPlan, start_epoch: int = 0, skipped_batches: int = 0) -> None:
        self.hf = hf
        self.plan = plan
        self.start_epoch = start_epoch
        self.skipped_batches = skipped_batches  # micro-batches of the first epoch already trained before a resume
        self._offset = 0
        self.start_time = time.time()
        self.tr_loss = torch.tensor(0.0)
        self.total_loss = 0.0
        self.last_logged = hf.state.global_step
        self.initial_global_step = hf.state.global_step
        self.grad_norm: torch.Tensor | None = None  # read (.item(), a device sync) only when logged, as HF
        self.learning_rate: float | None = None
        self.epoch_stopped = False
        self._epoch = 0
        self._steps_seen = 0
        self.final_train_loss: float | None = None

    # ---- called by HFModule ------------------------------------------------------------------------------------
    def record_loss(self, loss: torch.Tensor) -> None:
        """Add one micro-batch's (GA-scaled) loss; a NaN/Inf adds the running mean instead (logging_nan_inf_filter)."""
        if self.tr_loss.device != loss.device:
            self.tr_loss = self.tr_loss.to(loss.device)
        if self.hf.args.logging_nan_inf_filter and not torch.isfinite(loss):
            self.tr_loss += self.tr_loss / (1 + self.hf.state.global_step - self.last_logged)
        else:
            self.tr_loss += loss

    def record_step(self, grad_norm: torch.Tensor | None, learning_rate: float) -> None:
        """The pre-clip norm and the LR of the optimizer step about to happen; fires ``on_pre_optimizer_step``."""
        self.grad_norm = grad_norm.detach() if grad_norm is not None else None
        self.learning_rate = learning_rate
        self._event("on_pre_optimizer_step")

    def on_optimizer_step(self) -> None:
        self._event("on_optimizer_step")

    # ---- Lightning hooks ---------------------------------------------------------------------------------------
    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a fresh tensor in this process: under ddp_spawn the pickled one lives in memory shared by every rank
        self.tr_loss = torch.zeros((), device=pl_module.device)
        self._steps_seen = trainer.global_step
        self._event("on_train_begin")
        if self.hf.args.eval_on_start:  # HF: a full evaluation before the first step; plateau schedulers not stepped
            self.hf.evaluate_during_training(trainer, skip_scheduler=True)

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch = self.start_epoch + trainer.current_epoch
        self._offset = self.skipped_batches if trainer.current_epoch == 0 else 0
        self.epoch_stopped = False
        self._event("on_epoch_begin")

    @override
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if (self._offset + batch_idx) % self.hf.args.gradient_accumulation_steps == 0:
            self._event("on_step_begin")

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        hf, state = self.hf, self.hf.state
        step = self._offset + batch_idx  # HF's micro-batch index in the epoch, skipped batches included
        hf.current_flos += float(hf.floating_point_ops(batch))
        if trainer.global_step == self._steps_seen:
            self._event("on_substep_end")
        else:
            self._steps_seen = trainer.global_step
            state.global_step += 1
            state.epoch = self._epoch + (step + 1) / self.plan.steps_in_epoch
            self._event("on_step_end")
            self.maybe_log_save_evaluate(trainer)
        control = hf.control
        epoch_over = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch or step + 1 >= self.plan.steps_in_epoch
        if control.should_epoch_stop or control.should_training_stop or epoch_over:
            self._event("on_epoch_end")
            self.maybe_log_save_evaluate(trainer)
            self.epoch_stopped = True
        if hf.control.should_training_stop:
            trainer.should_stop = True

    # ---- HF's _maybe_log_save_evaluate -------------------------------------------------------------------------
    def maybe_log_save_evaluate(self, trainer: L.Trainer) -> None:
        hf, state = self.hf, self.hf.state
        if hf.control.should_log and state.global_step > self.last_logged:
            tr_loss = (all_reduce_sum(self.tr_loss) / world_size()).item()  # HF: the mean over processes
            self.tr_loss.zero_()
            logs: dict[str, float] = {"loss": tr_loss / (state.global_step - self.last_logged)}
            if self.grad_norm is not None:
                logs["grad_norm"] = self.grad_norm.item()
            logs["learning_rate"] = self.learning_rate if self.learning_rate is not None else hf.current_learning_rate()
            self.total_loss += tr_loss
            self.last_logged = state.global_step
            hf.store_flos()
            hf.log(logs, self.start_time)
        if hf.control.should_evaluate:
            metrics = hf.evaluate_during_training(trainer)
            is_new_best = hf.determine_best_metric(metrics)
            if hf.args.save_strategy == "best":
                hf.control.should_save = is_new_best
        if hf.control.should_save:
            hf.save_checkpoint()
            self._event("on_save")

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # in every worker process: a spawned / forked worker's loss goes back to the caller with its state
        self.final_train_loss = self.train_loss()
        engine = deepspeed_engine(trainer)
        best = self.hf.state.best_model_checkpoint
        if engine is not None and self.hf.args.load_best_model_at_end and best is not None:
            load_best_weights(engine, self.hf.model, best)  # while the engine lives (Trainer._finish_training)

    def train_loss(self) -> float:
        """HF's ``train_loss``: the mean step loss of this ``train()`` call."""
        self.total_loss += self.tr_loss.item()
        return self.total_loss / max(self.hf.state.global_step - self.initial_global_step, 0.001)

    def _event(self, name: str) -> None:
        hf = self.hf
        hf.control = getattr(hf.callback_handler, name)(hf.args, hf.state, hf.control)


def run_validation_now(trainer: L.Trainer) -> None:
    """Run Lightning's validation loop in the middle of a training epoch, as its epoch loop does after a batch
    (``_TrainingEpochLoop.on_advance_end``), so evaluation happens when HF's flow asks for it."""
    epoch_loop = trainer.fit_loop.epoch_loop
    first_loop_iter = trainer._logger_connector._first_loop_iter
    trainer.validating = True
    epoch_loop.val_loop.run()
    trainer.training = True
    trainer._logger_connector._first_loop_iter = first_loop_iter


def disable_lightning_val_schedule(trainer: L.Trainer) -> None:
    """Validation runs only when HF's flow asks (``run_validation_now``), never on Lightning's batch schedule."""
    trainer.fit_loop.epoch_loop._should_check_val_fx = _never  # module level: ddp_spawn pickles the Trainer


def _never(*args: Any, **kwargs: Any) -> bool:
    return False
