"""``Trainer``: transformers' training API, run by PyTorch Lightning.

The class is transformers' ``Trainer``: the same constructor, the same methods with the same signatures, called at
the same moments, so a subclass that overrides ``training_step``, ``compute_loss``, ``evaluation_loop``, ``_save``,
``get_batch_samples``… behaves as under transformers. The methods live by concern in :mod:`hftrain._loop`
(``train`` in ``train.py``, the optimizer step in ``step.py``, evaluation, data, optimizers, checkpoints, the Hub);
this module assembles them and holds the constructor. Lightning runs the loop: ``train`` fits one
:class:`~hftrain._loop.module.HFModule` under manual optimization, ``evaluate`` / ``predict`` validate it.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers.trainer_pt_utils import (
    LabelSmoother,
    get_learning_rates,
    get_num_trainable_parameters,
    get_optimizer_group,
    log_metrics,
    metrics_format,
    save_metrics,
    save_state,
)
from transformers.trainer_utils import enable_full_determinism, set_seed, speed_metrics
from transformers.utils import is_in_notebook

from hftrain._args.checks import check_trainer_inputs, coerce_args, split_callbacks
from hftrain._args.support import check_supported
from hftrain._backends import ddp
from hftrain._logging import trainer_logger
from hftrain._loop.accelerator import HFAccelerator
from hftrain._loop.checkpoint import (  # noqa: F401  (transformers.trainer's names)
    OPTIMIZER_NAME,
    SCALER_NAME,
    SCHEDULER_NAME,
    TRAINER_STATE_NAME,
    TRAINING_ARGS_NAME,
    CheckpointMethods,
)
from hftrain._loop.data import DataMethods, default_collator
from hftrain._loop.evaluation import EvaluationMethods
from hftrain._loop.hub import HubMethods
from hftrain._loop.loggers import build_loggers, rewrite_logs
from hftrain._loop.model_setup import apply_process_settings, check_liger, memory_tracker
from hftrain._loop.optim import OptimizerMethods
from hftrain._loop.overrides import check_overrides
from hftrain._loop.preemption import JITCheckpointCallback
from hftrain._loop.step import TrainingStepMethods
from hftrain._loop.throughput import ThroughputMeter
from hftrain._loop.train import TrainMethods
from hftrain.trainer_callback import (
    CallbackHandler,
    DefaultFlowCallback,
    PrinterCallback,
    ProgressCallback,
    TrainerControl,
    TrainerState,
)

if TYPE_CHECKING:
    import lightning as L

    from hftrain.training_args import TrainingArguments

logger = trainer_logger()

OPTIMIZER_NAME_BIN = "optimizer.bin"
FSDP_MODEL_NAME = "pytorch_model_fsdp"
DEFAULT_CALLBACKS = [DefaultFlowCallback]
DEFAULT_PROGRESS_CALLBACK = ProgressCallback

# In a notebook, transformers' HTML progress table (it renders without widget state, e.g. on GitHub), decided once at
# import as transformers.trainer decides it.
if is_in_notebook():
    from transformers.utils.notebook import NotebookProgressCallback

    DEFAULT_PROGRESS_CALLBACK = NotebookProgressCallback


class Trainer(
    TrainMethods, TrainingStepMethods, EvaluationMethods, DataMethods, OptimizerMethods, CheckpointMethods, HubMethods
):
    """transformers' ``Trainer``, run by PyTorch Lightning. Porting a script is an import change.

    Example:
        >>> from hftrain import Trainer, TrainingArguments
        >>> trainer = Trainer(model=model, args=TrainingArguments("out", num_train_epochs=1),
        ...                   train_dataset=train_ds, eval_dataset=eval_ds, compute_metrics=compute_metrics)
        >>> trainer.train()                      # doctest: +SKIP
        >>> trainer.evaluate()["eval_loss"]      # doctest: +SKIP

    ``callbacks=`` also takes Lightning callbacks and loggers. After a run, ``trainer.lightning_trainer`` is the
    ``lightning.Trainer`` it used and ``trainer.lightning_module`` the ``LightningModule`` around ``model``.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        args: TrainingArguments | None = None,
        data_collator: Callable | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        model_init: Callable[..., nn.Module] | None = None,
        compute_loss_func: Callable | None = None,
        compute_metrics: Callable | None = None,
        callbacks: list[Any] | None = None,
        optimizers: tuple[torch.optim.Optimizer | None, Any] = (None, None),
        optimizer_cls_and_kwargs: tuple[type[torch.optim.Optimizer], dict[str, Any]] | None = None,
        preprocess_logits_for_metrics: Callable | None = None,
    ) -> None:
        check_overrides(type(self))
        self.args = args = coerce_args(args)
        check_supported(args)
        check_liger(args)
        enable_full_determinism(args.seed) if args.full_determinism else set_seed(args.seed)
        self._memory_tracker = memory_tracker(args.skip_memory_metrics)
        self._memory_tracker.start()
        self.deepspeed = None
        self.model = model
        self.create_accelerator_and_postprocess()
        apply_process_settings(args)
        if model is None:
            if model_init is None:
                raise RuntimeError("`Trainer` requires either a `model` or `model_init` argument")
            self.model_init = model_init
            model = self.call_model_init()
        else:
            if model_init is not None:
                raise ValueError("`Trainer` requires either a `model` or `model_init` argument, but not both.")
            self.model_init = model_init
        self.is_model_parallel = False
        self.place_model_on_device = (
            args.place_model_on_device if args.place_model_on_device is not None
            else not (self._sharded or self._deepspeed or args.fp16_full_eval or args.bf16_full_eval)
        )
        if self.place_model_on_device:
            self._move_model_to_device(model, args.device)
        self._uses_num_items: bool | None = None
        self.lightning_trainer: L.Trainer | None = None
        self._set_model(model)
        self.data_collator = data_collator if data_collator is not None else default_collator(processing_class)
        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset
        self.processing_class = processing_class
        self.neftune_noise_alpha = args.neftune_noise_alpha
        self.compute_loss_func, self.compute_metrics = compute_loss_func, compute_metrics
        self.preprocess_logits_for_metrics = preprocess_logits_for_metrics
        self.optimizer, self.lr_scheduler = optimizers
        self.optimizer_cls_and_kwargs = optimizer_cls_and_kwargs
        self._validate_args()
        hf_callbacks, self.lightning_callbacks, user_loggers = split_callbacks(callbacks)
        # transformers adds its JITCheckpointCallback after the default callbacks, before the user's
        self._jit_checkpoint = JITCheckpointCallback(args.jit_checkpoint_signals) if args.enable_jit_checkpoint else None
        self.callback_handler = CallbackHandler(
            [*DEFAULT_CALLBACKS, *([self._jit_checkpoint] if self._jit_checkpoint else []), *hf_callbacks], self.model,
            self.processing_class, self.optimizer, self.lr_scheduler,
        )
        if not any(_is_progress_bar(cb) for cb in self.lightning_callbacks):
            self.add_callback(PrinterCallback if args.disable_tqdm else DEFAULT_PROGRESS_CALLBACK)
        self.loggers = [*build_loggers(args.report_to, args.output_dir, args.run_name, args.project), *user_loggers]
        self.hub_model_id = None
        self.push_in_progress = None
        if args.push_to_hub:
            self.init_hf_repo()
        if args.should_save:
            os.makedirs(args.output_dir, exist_ok=True)
        self.control = TrainerControl()
        self.state = self._initial_state()
        self.is_in_train = False
        self.hp_name, self.hp_search_backend, self._trial = None, None, None
        self.current_flos = 0
        self._signature_columns: list[str] | None = None
        self._train_batch_size = args.train_batch_size
        self._created_lr_scheduler = False
        self._eval_dataloaders: dict[str, Any] = {}
        self._train_run = self._epoch_run = self._eval_collector = None
        self._fitting = False
        self._model_prepared = False  # accelerate's registry of prepared models: the first train / evaluation
        self._evaluation_model: nn.Module | None = None  # the compiled model of an evaluation before training
        self.current_gradient_accumulation_steps = args.gradient_accumulation_steps
        self._tr_loss = torch.zeros(())
        self._total_loss_scalar, self._globalstep_last_logged, self._initial_global_step = 0.0, 0, 0
        self._initial_num_input_tokens_seen = 0
        self._throughput: ThroughputMeter | None = None  # set when training starts (hftrain._loop.throughput)
        self.control = self.callback_handler.on_init_end(self.args, self.state, self.control)
        if getattr(self.model, "config", None) is not None and hasattr(self.model.config, "use_cache"):
            self.model.config.use_cache = args.use_cache
        self._memory_tracker.stop_and_update_metrics()

    def _set_model(self, model: nn.Module) -> None:
        """What transformers learns about a model by inspecting it, and the LightningModule around it."""
        from transformers.loss.loss_utils import LOSS_MAPPING, ForCausalLMLoss
        from transformers.utils import can_return_loss, find_labels

        self.model = self.model_wrapped = model
        if hasattr(model, "accepts_loss_kwargs"):
            self.model_accepts_loss_kwargs = model.accepts_loss_kwargs
        else:
            params = inspect.signature(model.forward).parameters.values()
            self.model_accepts_loss_kwargs = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params)
        self.label_names = find_labels(model.__class__) if self.args.label_names is None else self.args.label_names
        self.can_return_loss = can_return_loss(model.__class__)
        config = getattr(model, "config", None)
        self._loss_shifts_labels = LOSS_MAPPING.get(getattr(model, "loss_type", None)) is ForCausalLMLoss and not (
            getattr(config, "is_encoder_decoder", False)
        )
        self.label_smoother = None
        if self.args.label_smoothing_factor != 0:
            if getattr(config, "problem_type", None) == "multi_label_classification":
                warnings.warn("Label smoothing is not compatible with multi-label classification. "
                              "Disabling label smoothing for this training run.", UserWarning, stacklevel=3)
            else:
                self.label_smoother = LabelSmoother(epsilon=self.args.label_smoothing_factor)
        self._uses_num_items = None
        self._signature_columns = None
        self._evaluation_model = None
        from hftrain._loop.module import HFModule  # Lightning: imported by the first Trainer, not by the import

        self.lightning_module = HFModule(model, self)

    def _initial_state(self) -> TrainerState:
        from hftrain._callbacks.state import refresh_callback_states

        return TrainerState(
            is_local_process_zero=self.is_local_process_zero(), is_world_process_zero=self.is_world_process_zero(),
            stateful_callbacks=refresh_callback_states({}, self.callback_handler.callbacks, self.control),
        )

    def _validate_args(self) -> None:
        """transformers' checks of the constructor's inputs, before any step."""
        check_trainer_inputs(self)

    def _move_model_to_device(self, model: nn.Module, device: torch.device) -> None:
        if getattr(model, "hf_device_map", None) is not None:
            logger.warning("The model is already on multiple devices. Skipping the move to device specified in `args`.")
            return
        model.to(device)

    def create_accelerator_and_postprocess(self) -> None:
        """``self.accelerator`` (an adapter over the Lightning strategy) and the flags transformers derives;
        ``accelerator_config``'s ``gradient_accumulation_kwargs`` apply here, as in transformers."""
        grad_acc_kwargs = dict((self.args.accelerator_config or {}).get("gradient_accumulation_kwargs") or {})
        if "num_steps" in grad_acc_kwargs:
            if self.args.gradient_accumulation_steps > 1:
                raise ValueError(
                    "The `AcceleratorConfig`'s `num_steps` is set but `gradient_accumulation_steps` is greater than 1 "
                    "in the passed `TrainingArguments`. If using the passed `AcceleratorConfig` is desired, do not "
                    "set the `TrainingArguments` `gradient_accumulation_steps`."
                )
            self.args.gradient_accumulation_steps = grad_acc_kwargs["num_steps"]
        grad_acc_kwargs["num_steps"] = 1  # transformers' loop accumulates, not accelerate's plugin
        plugin_defaults = {"adjust_scheduler": True, "sync_with_dataloader": True, "sync_each_batch": False}
        plugin_kwargs = {k: v for k, v in grad_acc_kwargs.items() if plugin_defaults.get(k, object()) != v}
        self.accelerator = HFAccelerator(self.args, plugin_kwargs)
        self.gather_function = self.accelerator.gather_for_metrics
        self.is_deepspeed_enabled = self._deepspeed
        self.is_fsdp_enabled = self._sharded

    @property
    def _deepspeed(self) -> bool:
        strategy = self.args.strategy
        return bool(self.args.deepspeed) or type(strategy).__name__ == "DeepSpeedStrategy" or (
            isinstance(strategy, str) and strategy.startswith("deepspeed"))

    @property
    def _sharded(self) -> bool:
        strategy = self.args.strategy
        return bool(self.args.fsdp) or type(strategy).__name__ in ("FSDPStrategy", "ModelParallelStrategy") or (
            isinstance(strategy, str) and strategy.startswith("fsdp"))

    def _build_lightning_trainer(self, max_steps: int | None, training: bool) -> L.Trainer:
        from hftrain._translate.build import build_lightning_trainer
        from hftrain._translate.env import model_facts

        self.lightning_trainer = build_lightning_trainer(
            self.args, max_steps or 0, list(self.lightning_callbacks), self.loggers, model_facts(self.model)
        )
        self._fitting = training
        return self.lightning_trainer

    # ---- logging ---------------------------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add ``epoch`` (and tokens seen; a training log, ``start_time`` given, also its interval's
        ``tokens_per_second`` and ``mfu``: :mod:`hftrain._loop.throughput`), append to ``log_history`` with the step,
        fire ``on_log``; Lightning loggers get the values under HF's integration names (``train/loss``, ``eval/loss``)."""
        if self.state.epoch is not None:
            logs["epoch"] = self.state.epoch
        if self.args.include_num_input_tokens_seen != "no":
            logs["num_input_tokens_seen"] = self.state.num_input_tokens_seen
            if start_time is not None:
                tokens = self.state.num_input_tokens_seen - self._initial_num_input_tokens_seen
                logs.update(speed_metrics("train", start_time, num_tokens=tokens))
        if start_time is not None and self._throughput is not None:  # a training log: this interval's rates
            counting = self.args.include_num_input_tokens_seen != "no"
            logs.update(self._throughput.measure(self.state.num_input_tokens_seen, self.state.total_flos, counting))
        self.state.log_history.append({**logs, "step": self.state.global_step})
        self.control = self.callback_handler.on_log(self.args, self.state, self.control, logs)
        for lightning_logger in self.loggers:
            lightning_logger.log_metrics(rewrite_logs(logs), step=self.state.global_step)

    def store_flos(self) -> None:
        """Add this run's floating-point operations (over every process) to ``state.total_flos``."""
        self.state.total_flos += float(ddp.all_reduce(torch.tensor(float(self.current_flos), dtype=torch.float64)))
        self.current_flos = 0

    def floating_point_ops(self, inputs: dict[str, torch.Tensor | Any]) -> int:
        """transformers' estimate: 6 × input tokens × non-embedding parameters (counted once per model)."""
        main_input = getattr(self.model, "main_input_name", "input_ids")
        if main_input in inputs and hasattr(self.model, "num_parameters"):
            if getattr(self, "_flos_model", None) is not self.model:
                self._flos_model, self._flos_params = self.model, self.model.num_parameters(exclude_embeddings=True)
            return 6 * inputs[main_input].numel() * self._flos_params
        return 0

    log_metrics = log_metrics
    save_metrics = save_metrics
    save_state = save_state
    metrics_format = metrics_format
    get_learning_rates = get_learning_rates
    get_num_trainable_parameters = get_num_trainable_parameters
    get_optimizer_group = get_optimizer_group

    # ---- callbacks and processes -----------------------------------------------------------------------------------
    def add_callback(self, callback: Any) -> None:
        """Add a ``TrainerCallback`` (a class is instantiated)."""
        self.callback_handler.add_callback(callback)

    def pop_callback(self, callback: Any) -> Any:
        """Remove and return a callback (by class or instance); None if there is none."""
        return self.callback_handler.pop_callback(callback)

    def remove_callback(self, callback: Any) -> None:
        """Remove a callback (by class or instance)."""
        self.callback_handler.remove_callback(callback)

    def is_local_process_zero(self) -> bool:
        """Whether this is the main process of its machine."""
        return self.args.local_process_index == 0

    def is_world_process_zero(self) -> bool:
        """Whether this is the main process of the whole run."""
        return self.args.process_index == 0

    def end(self) -> None:
        """Finish: destroy the process group (call it once, at the very end of a script)."""
        self.accelerator.end_training()

    # ---- processes Lightning started itself (ddp_spawn / ddp_notebook) -----------------------------------------------
    def results_for_main_process(self) -> dict[str, Any]:
        """What a spawned / forked worker (rank 0) sends back to the process that called this Trainer."""
        collector = self._eval_collector
        return {"state": self.state, "control": self.control, "current_flos": self.current_flos,
                "tr_loss": float(self._tr_loss), "total_loss": self._total_loss_scalar,
                "eval_results": collector.results if collector is not None else None}

    def receive_worker_results(self, results: dict[str, Any]) -> None:
        self.state, self.control, self.current_flos = results["state"], results["control"], results["current_flos"]
        self._tr_loss, self._total_loss_scalar = torch.tensor(results["tr_loss"]), results["total_loss"]
        if results["eval_results"] is not None and self._eval_collector is not None:
            self._eval_collector.results = results["eval_results"]


def _is_progress_bar(callback: Any) -> bool:
    from lightning.pytorch.callbacks import ProgressBar

    return isinstance(callback, ProgressBar)
