"""``HFModule``: one generic LightningModule for any model that returns a ``ModelOutput`` or a tuple.

It owns no policy: the loss, the prediction step, the optimizer and the scheduler come from the hftrain
``Trainer`` (so subclasses overriding ``compute_loss`` or ``create_optimizer`` keep working, as in HF), and the
HF flow (logging, evaluation, saving, callbacks) lives in :mod:`hftrain._loop.flow`. What it adds at Lightning's seams
is what HF's numbers depend on: the accumulation-window loss normalisation, ``model.train()`` at every step,
the pre-clip ``grad_norm`` and the learning rate the step used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from lightning.pytorch.strategies import DeepSpeedStrategy, ModelParallelStrategy
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from typing_extensions import Self, override

from hftrain._backends.deepspeed_checkpoint import deepspeed_engine, load_engine_state
from hftrain._backends.ddp import destroy_process_group_at_exit
from hftrain._loop.loss import normalises_by_num_items
from hftrain._backends.fsdp import fsdp_plan, is_sharded, plain_tensor, shard_model
from hftrain._loop.data import WindowInfo

if TYPE_CHECKING:
    from hftrain._loop.evaluation import EvalCollector
    from hftrain.trainer import Trainer


class HFModule(L.LightningModule):
    """Wraps ``model`` for Lightning, taking HF's behaviour from ``hf_trainer``.

    Example:
        >>> import torch
        >>> from hftrain import Trainer, TrainingArguments
        >>> model = torch.nn.Linear(4, 2)
        >>> trainer = Trainer(model, TrainingArguments("out", report_to="none"))
        >>> trainer.lightning_module.model is model
        True
    """

    def __init__(self, model: torch.nn.Module, hf_trainer: Trainer) -> None:
        super().__init__()
        self.model = model
        self._hf = [hf_trainer]  # a list: keeps the facade out of nn.Module's registries and state_dict
        self.windows: Any = None  # the train loader's AccumulationWindows, set per fit
        self.collector: EvalCollector | None = None
        self._scale_before_step: float | None = None
        self._uses_num_items: bool | None = None
        self._stay_at_teardown = False

    @property
    def hf(self) -> Trainer:
        return self._hf[0]

    @override
    def forward(self, **inputs: Any) -> Any:
        return self.model(**inputs)

    @override
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        # a callback asked to end the epoch (HF `control.should_epoch_stop`): -1 tells Lightning to skip the rest
        return -1 if self.hf.flow.epoch_stopped else None

    @override
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.model.train()  # HF does this every step; `from_pretrained` models start in eval mode
        info = self.windows.windows.popleft() if self.windows.windows else WindowInfo(None, 1)
        loss = self.hf.compute_loss(self.model, batch, num_items_in_batch=info.num_items_in_batch)
        if not self.hf.loss_is_scaled(info.num_items_in_batch):
            # HF: the mean of the window's micro-batch means; across processes, each rank's share of the batch
            loss = loss / info.window_size * info.share
        elif info.share != 1.0 and not self._normalises_by_num_items(batch, info.num_items_in_batch):
            loss = loss * info.share  # a mean that ignored num_items_in_batch: weight it like any mean
        elif info.share == 0:
            loss = loss * 0.0  # a stand-in row: takes part in the backward, contributes nothing
        self.hf.flow.record_loss(loss.detach())
        # Lightning divides every micro-batch loss by accumulate_grad_batches; HF's normalisation is done above
        k = self.trainer.accumulate_grad_batches
        return loss * k if k != 1 else loss

    def _normalises_by_num_items(self, batch: Any, num_items: Any) -> bool:
        """Probed once, only where it matters (several processes, a batch not split evenly)."""
        if self._uses_num_items is None:
            self._uses_num_items = num_items is not None and normalises_by_num_items(self.model, batch, num_items)
        return self._uses_num_items

    @override
    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        # runs after AMP unscaling; HF logs the pre-clip norm even when max_grad_norm <= 0 (then nothing is clipped)
        if isinstance(self.trainer.strategy, DeepSpeedStrategy):
            return  # DeepSpeed clips inside its engine (config "gradient_clipping"), on every micro-batch's call
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is not None:
            self._scale_before_step = scaler.get_scale()
            _unscale_once(scaler, optimizer)
        max_norm = self.hf.args.max_grad_norm
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm if max_norm > 0 else float("inf"))
        norm = plain_tensor(norm)  # sharded (FSDP) parameters give a DTensor norm
        self.hf.flow.record_step(grad_norm=norm, learning_rate=self.hf.current_learning_rate())

    @override
    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        engine = deepspeed_engine(self.trainer)
        if engine is not None and self.trainer.fit_loop._should_accumulate():
            # DeepSpeed's engine is stepped on every micro-batch and updates only at its accumulation boundary
            optimizer.step(closure=optimizer_closure)
            return
        if engine is not None:  # no clipping hook runs under DeepSpeed: HF's pre-step event from here
            self.hf.flow.record_step(grad_norm=None, learning_rate=self.hf.current_learning_rate())
        optimizer.step(closure=optimizer_closure)
        if engine is not None and engine.get_global_grad_norm() is not None:  # HF logs the engine's norm
            self.hf.flow.grad_norm = torch.as_tensor(float(engine.get_global_grad_norm()))
        self.hf.flow.on_optimizer_step()

    @override
    def setup(self, stage: str) -> None:
        destroy_process_group_at_exit()  # Lightning started the processes by now (fit, validate or predict)

    @override
    def on_fit_start(self) -> None:
        engine = deepspeed_engine(self.trainer)
        if engine is not None and self.hf._resume_from is not None:  # the engine exists only now
            load_engine_state(engine, self.hf._resume_from)

    # ---- after fit / validate / predict: the weights and optimizer state stay where they are, as in HF ----------
    @override
    def on_train_end(self) -> None:  # the last hook before the teardown (on_fit_end comes after it)
        if self._keep_in_place():
            self.trainer.strategy.optimizers = []  # the strategy's teardown would move their state to the CPU

    @override
    def on_validation_end(self) -> None:
        self._keep_in_place()

    @override
    def on_predict_end(self) -> None:
        self._keep_in_place()

    def _keep_in_place(self) -> bool:
        """Lightning's teardown parks the model (and the optimizer state) on the CPU: on a GPU, a round trip of the
        weights per ``train()`` / ``evaluate()`` and host memory to hold them, where HF leaves both on the device.
        Spawned / forked workers end after the run, so there Lightning's teardown runs as it is."""
        self._stay_at_teardown = not isinstance(self.trainer.strategy.launcher, _MultiProcessingLauncher)
        return self._stay_at_teardown

    @override
    def cpu(self) -> Self:
        if self._stay_at_teardown:  # the teardown's call, once; a user's own .cpu() moves the model
            self._stay_at_teardown = False
            return self
        return super().cpu()

    @override
    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is not None and self._scale_before_step is not None and scaler.get_scale() < self._scale_before_step:
            return  # fp16 overflow: the optimizer skipped this step, and HF does not advance the schedule either
        scheduler.step()

    @override
    def configure_model(self) -> None:
        """FSDP2: shard the HF model per layer on the data-parallel mesh (once; later runs reuse the shards)."""
        if isinstance(self.trainer.strategy, ModelParallelStrategy) and not is_sharded(self.model):
            shard_model(self.model, fsdp_plan(self.hf.args, self.model), self.device_mesh["data_parallel"])

    @override
    def configure_optimizers(self) -> Any:
        return self.hf.lightning_optimizers()

    @override
    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        assert self.collector is not None, "evaluation runs through hftrain.Trainer"
        self.collector.step(self.model, batch, dataloader_idx)

    @override
    def on_validation_epoch_end(self) -> None:
        assert self.collector is not None
        self.collector.finish()
        # HF's metric names as Lightning metrics, so Lightning callbacks can monitor "eval_loss", "eval_accuracy"...
        for result in self.collector.results:
            for name, value in result.output.metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.log(name, float(value), logger=False, add_dataloader_idx=False)

    @override
    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.validation_step(batch, batch_idx, dataloader_idx)

    @override
    def on_predict_epoch_end(self) -> None:
        assert self.collector is not None
        self.collector.finish()


def _unscale_once(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> None:
    """Unscale before clipping also for fused optimizers, which Lightning leaves scaled (accelerate unscales)."""
    from torch.amp.grad_scaler import OptState

    if scaler._per_optimizer_states[id(optimizer)]["stage"] is OptState.READY:
        scaler.unscale_(optimizer)
