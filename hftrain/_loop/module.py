"""``HFModule``: the one LightningModule, for any model that returns a ``ModelOutput`` or a tuple.

It owns no policy. Lightning's loops call its hooks; each hook hands over to the hftrain ``Trainer`` through the
small :class:`TrainerLoop` protocol (``_lightning_*`` methods), where transformers' own methods run: the optimizer
step (:mod:`hftrain._loop.step`) under manual optimization, the evaluation batch through ``prediction_step``, the
optimizer from ``create_optimizer``. So a Trainer subclass overriding any of those is honoured, as in transformers.
"""

from __future__ import annotations

from typing import Any, Protocol

import lightning as L
import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from typing_extensions import Self, override

from hftrain._backends.ddp import destroy_process_group_at_exit
from hftrain._backends.deepspeed_checkpoint import deepspeed_engine
from hftrain._backends.fsdp import fsdp_plan, is_sharded, shard_model
from hftrain._lightning_compat import is_multiprocessing_launcher


class TrainerLoop(Protocol):
    """What the module asks of the hftrain Trainer (its ``_lightning_*`` methods)."""

    args: Any

    def _lightning_configure_optimizers(self) -> Any: ...
    def _lightning_train_start(self, device: torch.device) -> None: ...
    def _lightning_epoch_start(self, lightning_epoch: int, step_optimizer: Any, to_device: Any) -> None: ...
    def _lightning_epoch_over(self) -> bool: ...
    def _lightning_training_step(self) -> None: ...
    def _lightning_should_stop(self) -> bool: ...
    def _lightning_epoch_end(self) -> None: ...
    def _lightning_train_end(self) -> None: ...
    def _lightning_engine_ready(self, engine: Any) -> None: ...
    def _lightning_evaluation_step(self, model: torch.nn.Module, batch: Any, dataloader_idx: int) -> None: ...
    def _lightning_evaluation_end(self) -> dict[str, float]: ...
    def results_for_main_process(self) -> dict[str, Any]: ...
    def receive_worker_results(self, results: dict[str, Any]) -> None: ...


class HFModule(L.LightningModule):
    """Wraps ``model`` for Lightning; the hftrain ``Trainer`` (``loop``) decides everything HF decides.

    Example:
        >>> import torch
        >>> from hftrain import Trainer, TrainingArguments
        >>> model = torch.nn.Linear(4, 2)
        >>> trainer = Trainer(model, TrainingArguments("out", report_to="none"))
        >>> trainer.lightning_module.model is model
        True
    """

    def __init__(self, model: torch.nn.Module, loop: TrainerLoop) -> None:
        super().__init__()
        self.automatic_optimization = False  # transformers' inner loop runs the step (hftrain._loop.step)
        self.model = model
        self._loop = [loop]  # a list: keeps the Trainer out of nn.Module's registries and state_dict
        self._stay_at_teardown = False

    @property
    def loop(self) -> TrainerLoop:
        return self._loop[0]

    @override
    def forward(self, **inputs: Any) -> Any:
        return self.model(**inputs)

    # ---- training --------------------------------------------------------------------------------------------------
    @override
    def configure_model(self) -> None:
        """FSDP2: shard the HF model per layer on the data-parallel mesh (once; later runs reuse the shards)."""
        if isinstance(self.trainer.strategy, ModelParallelStrategy) and not is_sharded(self.model):
            shard_model(self.model, fsdp_plan(self.loop.args, self.model), self.device_mesh["data_parallel"])

    @override
    def configure_optimizers(self) -> Any:
        return self.loop._lightning_configure_optimizers()

    @override
    def setup(self, stage: str) -> None:
        destroy_process_group_at_exit()  # Lightning started the processes by now (fit, validate or predict)

    @override
    def on_fit_start(self) -> None:
        engine = deepspeed_engine(self.trainer)
        if engine is not None:  # the engine exists only now
            self.loop._lightning_engine_ready(engine)

    @override
    def on_train_start(self) -> None:
        self.loop._lightning_train_start(self.device)

    @override
    def on_train_epoch_start(self) -> None:
        self.loop._lightning_epoch_start(self.trainer.current_epoch, self._step_optimizer, self._to_device)

    def _step_optimizer(self) -> None:
        if deepspeed_engine(self.trainer) is None:  # DeepSpeed's engine stepped in the backward
            self.optimizers().step()

    def _to_device(self, batch: Any) -> Any:
        return self.trainer.strategy.batch_to_device(batch)

    @override
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        return -1 if self.loop._lightning_epoch_over() else None  # -1: Lightning skips the rest of the epoch

    @override
    def training_step(self, batch: Any, batch_idx: int) -> None:
        self.loop._lightning_training_step()  # one optimizer step: the window, the backwards, the step

    @override
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.loop._lightning_should_stop():
            self.trainer.should_stop = True

    @override
    def on_train_epoch_end(self) -> None:
        self.loop._lightning_epoch_end()

    @override
    def on_train_end(self) -> None:  # the last hook before the teardown (on_fit_end comes after it)
        self.loop._lightning_train_end()
        if self._keep_in_place():
            self.trainer.strategy.optimizers = []  # the strategy's teardown would move their state to the CPU

    # ---- evaluation ------------------------------------------------------------------------------------------------
    @override
    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.loop._lightning_evaluation_step(self.model, batch, dataloader_idx)

    @override
    def on_validation_epoch_end(self) -> None:
        # HF's metric names as Lightning metrics, so Lightning callbacks can monitor "eval_loss", "eval_accuracy"...
        for name, value in self.loop._lightning_evaluation_end().items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.log(name, float(value), logger=False, add_dataloader_idx=False)

    @override
    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.loop._lightning_evaluation_step(self.model, batch, dataloader_idx)

    @override
    def on_predict_epoch_end(self) -> None:
        self.loop._lightning_evaluation_end()

    @override
    def on_validation_end(self) -> None:
        self._keep_in_place()

    @override
    def on_predict_end(self) -> None:
        self._keep_in_place()

    # ---- after fit / validate / predict: the weights and optimizer state stay where they are, as in HF ----------
    def _keep_in_place(self) -> bool:
        """Lightning's teardown parks the model (and the optimizer state) on the CPU: on a GPU, a round trip of the
        weights per ``train()`` / ``evaluate()`` and host memory to hold them, where HF leaves both on the device.
        Spawned / forked workers end after the run anyway, so there Lightning's teardown runs as it is."""
        self._stay_at_teardown = not is_multiprocessing_launcher(self.trainer.strategy.launcher)
        return self._stay_at_teardown

    @override
    def cpu(self) -> Self:
        if self._stay_at_teardown:  # the teardown's call, once; a user's own .cpu() moves the model
            self._stay_at_teardown = False
            return self
        return super().cpu()

