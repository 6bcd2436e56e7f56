"""``Trainer``: HF's training API as a thin facade over ``lightning.Trainer``.

The constructor and methods are transformers 5.x's; each call builds a Lightning ``Trainer`` from the arguments
(:mod:`hftrain._translate.build`) and runs ``fit`` / ``validate`` / ``predict`` on one :class:`~hftrain._loop.module.HFModule`.
HF's semantics live in small modules: data order and windows (:mod:`hftrain._loop.data`), the loss contract
(:mod:`hftrain._loop.loss`), optimizers (:mod:`hftrain._loop.optim`), the flow of events, logs, evaluations and saves
(:mod:`hftrain._loop.flow`), evaluation outputs (:mod:`hftrain._loop.evaluation`) and checkpoints
(:mod:`hftrain._loop.checkpoint`).
"""

from __future__ import annotations

import inspect
import os
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar
import torch
from torch import nn
from torch.utils.data import DataLoader
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
from transformers.trainer_utils import (
    PredictionOutput,
    TrainOutput,
    enable_full_determinism,
    has_length,
    set_seed,
    speed_metrics,
)

from hftrain._backends import deepspeed_checkpoint as _deepspeed_checkpoint, fsdp as _sharding
from hftrain._loop import checkpoint as checkpointing, data, loss as _loss, optim
from hftrain._translate.env import detect_env
from hftrain._loop.evaluation import EvalCollector, EvalRequest, EvalResult, add_speed_metrics
from hftrain._translate.lightning import build_lightning_trainer, quiet_lightning
from hftrain._loop.flow import HFFlow, disable_lightning_val_schedule, run_validation_now
from hftrain._loop.model_setup import apply_process_settings, enable_activation_checkpointing
from hftrain._args.support import check_supported
from hftrain._translate.build import TrainingPlan, training_plan
from hftrain._args.checks import check_trainer_inputs, coerce_args, split_callbacks
from hftrain._loop.loggers import build_loggers, rewrite_logs
from hftrain._loop.module import HFModule
from hftrain.trainer_callback import (
    CallbackHandler,
    DefaultFlowCallback,
    PrinterCallback,
    ProgressCallback,
    TrainerControl,
    TrainerState,
)

if TYPE_CHECKING:
    from hftrain.training_args import TrainingArguments


class Trainer:
    """HF's ``transformers.Trainer``, run by PyTorch Lightning. Porting a script is an import change.

    Example:
        >>> from hftrain import Trainer, TrainingArguments
        >>> trainer = Trainer(model=model, args=TrainingArguments("out", num_train_epochs=1),
        ...                   train_dataset=train_ds, eval_dataset=eval_ds, compute_metrics=compute_metrics)
        >>> trainer.train()                      # doctest: +SKIP
        >>> trainer.evaluate()["eval_loss"]      # doctest: +SKIP

    ``trainer.lightning_module`` is the ``LightningModule`` that wraps ``model`` and ``trainer.lightning_trainer``
    the ``lightning.Trainer`` of the last call; Lightning callbacks and loggers go in ``callbacks=``.
    """

    # HF 5.x: set True/False in a subclass whose compute_loss already normalises for gradient accumulation
    loss_is_scaled_for_ga: bool | None = None
    # eval_loss weights each batch by its real size (HF's gather_for_metrics); Seq2SeqTrainer averages batches
    _loss_weighted_by_samples = True

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
        self.args = args = coerce_args(args)
        check_supported(args)
        apply_process_settings(args)
        enable_full_determinism(args.seed) if args.full_determinism else set_seed(args.seed)
        if model is None and model_init is None:
            raise RuntimeError("`Trainer` requires either a `model` or `model_init` argument")
        if model is not None and model_init is not None:
            raise ValueError("`Trainer` requires either a `model` or `model_init` argument, but not both.")
        self.model_init = model_init
        self.model = model if model is not None else self.call_model_init()
        self.processing_class = processing_class
        self.data_collator = data_collator if data_collator is not None else data.default_collator(processing_class)
        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset
        self.compute_loss_func, self.compute_metrics = compute_loss_func, compute_metrics
        self.preprocess_logits_for_metrics = preprocess_logits_for_metrics
        self.optimizer, self.lr_scheduler = optimizers
        self.optimizer_cls_and_kwargs = optimizer_cls_and_kwargs
        check_trainer_inputs(self)
        self._bind_model(self.model)
        hf_callbacks, self.lightning_callbacks, user_loggers = split_callbacks(callbacks)
        self.callback_handler = CallbackHandler(
            [DefaultFlowCallback, *hf_callbacks], self.model, processing_class, self.optimizer, self.lr_scheduler
        )
        if not any(isinstance(cb, ProgressBar) for cb in self.lightning_callbacks):  # else Lightning's bar shows
            self.callback_handler.add_callback(PrinterCallback if args.disable_tqdm else ProgressCallback)
        self.loggers = [*build_loggers(args.report_to, args.output_dir, args.run_name, args.project), *user_loggers]
        if args.should_save:
            os.makedirs(args.output_dir, exist_ok=True)
        self.control = TrainerControl()
        self.state = self._new_state()
        self.current_flos = 0.0
        self.hp_name, self._trial, self._resume_from = None, None, None
        self._flos_model, self._flos_params = None, 0
        self.is_in_train = False
        self.lightning_trainer: L.Trainer | None = None
        self.flow: HFFlow | None = None
        self._created_scheduler = False
        self.control = self.callback_handler.on_init_end(self.args, self.state, self.control)
        if hasattr(getattr(self.model, "config", None), "use_cache"):
            self.model.config.use_cache = args.use_cache

    def _bind_model(self, model: nn.Module) -> None:
        self.model = model
        self.contract = _loss.ModelContract.inspect(model, self.args.label_names)
        self.label_names = self.contract.label_names
        self.model_accepts_loss_kwargs = self.contract.accepts_loss_kwargs
        self.label_smoother = None
        if self.args.label_smoothing_factor != 0:
            if getattr(getattr(model, "config", None), "problem_type", None) == "multi_label_classification":
                warnings.warn(
                    "Label smoothing is not compatible with multi-label classification. "
                    "Disabling label smoothing for this training run.", UserWarning, stacklevel=3,
                )
            else:
                self.label_smoother = LabelSmoother(epsilon=self.args.label_smoothing_factor)
        self.lightning_module = HFModule(model, self)

    def _new_state(self) -> TrainerState:
        from hftrain._callbacks.state import refresh_callback_states

        return TrainerState(
            is_local_process_zero=self.is_local_process_zero(),
            is_world_process_zero=self.is_world_process_zero(),
            stateful_callbacks=refresh_callback_states({}, self.callback_handler.callbacks, self.control),
        )

    def call_model_init(self, trial: Any = None) -> nn.Module:
        n_args = len(inspect.signature(self.model_init).parameters)
        if n_args > 1:
            raise RuntimeError("model_init should have 0 or 1 argument.")
        model = self.model_init() if n_args == 0 else self.model_init(trial)
        if model is None:
            raise RuntimeError("model_init should not return None.")
        return model

    # ---- HF's overridable hooks ------------------------------------------------------------------------------
    def compute_loss(
        self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        return _loss.compute_loss(
            model, inputs, contract=self.contract, label_smoother=self.label_smoother,
            compute_loss_func=self.compute_loss_func, num_items_in_batch=num_items_in_batch,
            return_outputs=return_outputs,
        )

    def loss_is_scaled(self, num_items_in_batch: Any) -> bool:
        """HF: a loss normalised by the window's token count (or a compute_loss_func) is not divided by GA."""
        if self.loss_is_scaled_for_ga is not None:
            return self.loss_is_scaled_for_ga
        return (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or self.compute_loss_func is not None

    def count_items(self, window: list) -> torch.Tensor | None:
        """``num_items_in_batch`` for a window of micro-batches (only when the model or loss function uses it)."""
        if not (self.model_accepts_loss_kwargs or self.compute_loss_func is not None):
            return None
        return data.count_label_items(window, shift_labels=self.contract.shifts_labels)

    def prediction_step(
        self, model: nn.Module, inputs: dict[str, Any], prediction_loss_only: bool, ignore_keys: list[str] | None = None
    ) -> tuple[torch.Tensor | None, Any, Any]:
        return _loss.prediction_step(
            model, inputs, prediction_loss_only, contract=self.contract, ignore_keys=ignore_keys,
            loss_fn=self.compute_loss, count_items=self.count_items,
        )

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        """HF's estimate: 6 × input tokens × non-embedding parameters (counted once per model)."""
        main_input = getattr(self.model, "main_input_name", "input_ids")
        if isinstance(inputs, Mapping) and main_input in inputs and hasattr(self.model, "num_parameters"):
            if self._flos_model is not self.model:
                self._flos_model, self._flos_params = self.model, self.model.num_parameters(exclude_embeddings=True)
            return 6 * inputs[main_input].numel() * self._flos_params
        return 0

    def store_flos(self) -> None:
        self.state.total_flos += self.current_flos
        self.current_flos = 0.0

    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        return optim.decay_parameter_names(model)

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            model = self.model if model is None else model
            if self.optimizer_cls_and_kwargs is not None:
                cls, kwargs = self.optimizer_cls_and_kwargs
                self.optimizer = cls(optim.parameter_groups(model, self.args.weight_decay), **kwargs)
            else:
                self.optimizer = optim.create_optimizer(model, self.args)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None) -> Any:
        if self.lr_scheduler is None:
            self.lr_scheduler = optim.create_scheduler(optimizer or self.optimizer, self.args, num_training_steps)
            self._created_scheduler = True
        return self.lr_scheduler

    def create_optimizer_and_scheduler(self, num_training_steps: int) -> None:
        self.create_scheduler(num_training_steps, self.create_optimizer())

    def lightning_optimizers(self) -> dict[str, Any]:
        """``configure_optimizers`` output: HF's optimizer, and its scheduler stepped after every optimizer step."""
        self.create_optimizer_and_scheduler(self.state.max_steps)
        if self._resume_from is not None:
            checkpointing.load_optimizer_and_scheduler(
                self._resume_from, self.optimizer, self.lr_scheduler, self.model,
                deepspeed=_deepspeed_checkpoint.runs_deepspeed(self.lightning_trainer),
            )
        self.callback_handler.optimizer, self.callback_handler.lr_scheduler = self.optimizer, self.lr_scheduler
        if optim.is_metric_driven(self.lr_scheduler):  # stepped by the flow after evaluations
            return {"optimizer": self.optimizer}
        return {"optimizer": self.optimizer,
                "lr_scheduler": {"scheduler": self.lr_scheduler, "interval": "step", "frequency": 1}}

    def current_learning_rate(self) -> float:
        if self.lr_scheduler is not None and not optim.is_metric_driven(self.lr_scheduler):
            return self.lr_scheduler.get_last_lr()[0]
        return self.optimizer.param_groups[0]["lr"]

    # ---- data ------------------------------------------------------------------------------------------------
    def _dataloader(self, dataset: Any, description: str, batch_size: int, is_training: bool) -> DataLoader:
        columns = data.signature_columns(self.model, self.label_names) if self.args.remove_unused_columns else None
        return data.build_dataloader(
            dataset, args=self.args, batch_size=batch_size, collate_fn=self.data_collator, columns=columns,
            model_name=type(self.model).__name__, description=description, is_training=is_training,
        )

    def get_train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        return self._dataloader(self.train_dataset, "training", self.args.train_batch_size, is_training=True)

    def get_eval_dataloader(self, eval_dataset: Any = None) -> DataLoader:
        if eval_dataset is None and self.eval_dataset is None:
            raise ValueError("Trainer: evaluation requires an eval_dataset.")
        if isinstance(eval_dataset, str):
            eval_dataset = self.eval_dataset[eval_dataset]
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        return self._dataloader(dataset, "evaluation", self.args.eval_batch_size, is_training=False)

    def get_test_dataloader(self, test_dataset: Any) -> DataLoader:
        return self._dataloader(test_dataset, "test", self.args.eval_batch_size, is_training=False)

    def num_examples(self, dataloader: DataLoader) -> int:
        try:
            return len(dataloader.dataset)
        except (AttributeError, TypeError):
            return len(dataloader) * self.args.per_device_train_batch_size

    # ---- training --------------------------------------------------------------------------------------------
    def train(
        self, resume_from_checkpoint: str | bool | None = None, trial: Any = None,
        ignore_keys_for_eval: list[str] | None = None,
    ) -> TrainOutput:
        args = self.args
        checkpoint = checkpointing.resolve_checkpoint(resume_from_checkpoint, args.output_dir)
        if self.model_init is not None:
            set_seed(args.seed)
            self._bind_model(self.call_model_init(trial))
            self.optimizer = self.lr_scheduler = None
        elif self._created_scheduler:  # HF rebuilds a scheduler it created on every train() call
            self.lr_scheduler, self._created_scheduler = None, False
        self.is_in_train = True
        enable_activation_checkpointing(self.model, args)
        loader = self.get_train_dataloader()
        plan = training_plan(
            max_steps=args.max_steps, num_train_epochs=args.num_train_epochs,
            accumulation_steps=args.gradient_accumulation_steps,
            batches_per_epoch=len(loader) if has_length(loader) else None,
            num_examples=self.num_examples(loader) if has_length(loader) else None,
            total_batch_size=args.train_batch_size * args.gradient_accumulation_steps * args.world_size,
        )
        self.state = self._new_state()
        self.state.train_batch_size = args.train_batch_size
        self.state.compute_steps(args, plan.max_steps)
        epochs_trained = skip = 0
        self._resume_from = checkpoint
        if checkpoint is not None:  # HF §6.3: weights now, optimizer/scheduler once built, RNG where HF does
            checkpointing.check_resumable(checkpoint)
            checkpointing.load_model_weights(self.model, checkpoint)
            self.state = checkpointing.load_trainer_state(checkpoint, TrainerState)
            if args.restore_callback_states_from_checkpoint:  # HF's _load_callback_state
                from hftrain._callbacks.state import restore_callback_states

                self.control = restore_callback_states(self.state.stateful_callbacks, self.callback_handler,
                                                       self.control)
            epochs_trained = self.state.global_step // plan.updates_per_epoch
            if not args.ignore_data_skip:
                skip = (self.state.global_step % plan.updates_per_epoch) * args.gradient_accumulation_steps
        self.state.init_training_references(self, plan.max_steps, plan.num_train_epochs, trial)
        self.flow = flow = HFFlow(self, plan, start_epoch=epochs_trained, skipped_batches=skip)
        module = self.lightning_module
        module.windows = data.AccumulationWindows(
            loader, args.gradient_accumulation_steps, self.count_items, start_epoch=epochs_trained,
            skip_batches=skip, restore_rng=partial(checkpointing.load_rng_state, checkpoint) if checkpoint else None,
            average_tokens_across_devices=args.average_tokens_across_devices,
        )
        eval_loaders = self._in_training_eval_requests(ignore_keys_for_eval) if self.eval_dataset is not None else []
        self._eval_requests = [request for request, _ in eval_loaders]
        self.callback_handler.train_dataloader = loader
        with quiet_lightning():
            remaining = replace(plan, max_steps=max(plan.max_steps - self.state.global_step, 0))
            trainer = self._lightning_trainer(remaining, [flow])
            disable_lightning_val_schedule(trainer)
            trainer.fit(module, train_dataloaders=module.windows,
                        val_dataloaders=[dl for _, dl in eval_loaders] or None)
        self.model.to(self._device())  # Lightning parks the model on the CPU after fit; HF leaves it on device
        return self._finish_training(plan, flow)

    def _finish_training(self, plan: TrainingPlan, flow: HFFlow) -> TrainOutput:
        train_loss = flow.final_train_loss if flow.final_train_loss is not None else flow.train_loss()
        steps = self.state.global_step - flow.initial_global_step
        metrics = speed_metrics(
            "train", flow.start_time, num_samples=plan.num_train_samples * steps / max(self.state.max_steps, 1),
            num_steps=steps,
        )
        self.store_flos()
        metrics["total_flos"] = self.state.total_flos
        metrics["train_loss"] = train_loss
        self.is_in_train = False
        self.log(metrics)
        best = self.state.best_model_checkpoint
        deepspeed = _deepspeed_checkpoint.runs_deepspeed(self.lightning_trainer)  # its engine loaded it (HFFlow)
        if self.args.load_best_model_at_end and best is not None and not deepspeed:
            checkpointing.load_model_weights(self.model, best)
        self.control = self.callback_handler.on_train_end(self.args, self.state, self.control)
        return TrainOutput(self.state.global_step, train_loss, metrics)

    def _lightning_trainer(self, plan: TrainingPlan | None, callbacks: list[L.Callback]) -> L.Trainer:
        hidden_size = getattr(getattr(self.model, "config", None), "hidden_size", None)  # DeepSpeed's "auto"s
        self.lightning_trainer = build_lightning_trainer(
            self.args, plan, [*callbacks, *self.lightning_callbacks], self.loggers, hidden_size
        )
        return self.lightning_trainer

    def results_for_main_process(self) -> dict[str, Any]:
        """What a spawned / forked Lightning worker (rank 0) sends back to the process that called this Trainer."""
        collector = self.lightning_module.collector
        return {"state": self.state, "control": self.control, "current_flos": self.current_flos,
                "train_loss": self.flow.final_train_loss if self.flow is not None else None,
                "eval_results": collector.results if collector is not None else None}

    def receive_worker_results(self, results: dict[str, Any]) -> None:
        self.state, self.control, self.current_flos = results["state"], results["control"], results["current_flos"]
        if self.flow is not None:
            self.flow.final_train_loss = results["train_loss"]
        if results["eval_results"] is not None and self.lightning_module.collector is not None:
            self.lightning_module.collector.results = results["eval_results"]

    def _device(self) -> torch.device:
        return torch.device("cuda") if detect_env().has_cuda and not self.args.use_cpu else torch.device("cpu")

    # ---- evaluation ------------------------------------------------------------------------------------------
    def _in_training_eval_requests(self, ignore_keys: list[str] | None) -> list[tuple[EvalRequest, DataLoader]]:
        datasets = self.eval_dataset if isinstance(self.eval_dataset, dict) else {None: self.eval_dataset}
        loss_only = True if self.compute_metrics is None else self.args.prediction_loss_only
        runs = [
            (EvalRequest("eval" if name is None else f"eval_{name}", ds, loss_only, ignore_keys),
             self.get_eval_dataloader(ds))
            for name, ds in datasets.items()
        ]
        return [(_with_slices(request, loader), loader) for request, loader in runs]

    def _on_prediction_step(self) -> None:
        self.control = self.callback_handler.on_prediction_step(self.args, self.state, self.control)

    def _collector(self, requests: list[EvalRequest]) -> EvalCollector:
        collector = EvalCollector(
            requests, args=self.args, prediction_step=self.prediction_step,
            main_input_name=getattr(self.model, "main_input_name", "input_ids"),
            compute_metrics=self.compute_metrics, preprocess_logits_for_metrics=self.preprocess_logits_for_metrics,
            on_batch=self._on_prediction_step, losses_by_sample=self._loss_weighted_by_samples,
            count_items=self.count_items,
        )
        self.lightning_module.collector = collector
        return collector

    def _report(self, result: EvalResult, log: bool) -> dict[str, float]:
        metrics = add_speed_metrics(result, self.args.eval_batch_size * self.args.world_size)
        if log:
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def evaluate_during_training(self, trainer: L.Trainer, skip_scheduler: bool = False) -> dict[str, float]:
        """An evaluation the flow asked for mid-``fit``: Lightning's validation loop, then HF's reporting."""
        collector = self._collector(self._eval_requests)
        self.lightning_module.zero_grad(set_to_none=True)
        run_validation_now(trainer)
        metrics: dict[str, float] = {}
        for result in collector.results:
            metrics.update(self._report(result, log=True))
        if not skip_scheduler and optim.is_metric_driven(self.lr_scheduler):
            self.lr_scheduler.step(metrics[checkpointing.metric_key(self.args.metric_for_best_model)])
        return metrics

    def evaluate(
        self, eval_dataset: Any = None, ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError("Trainer: evaluation requires an eval_dataset.")
        named = dataset.items() if isinstance(dataset, dict) else [(None, dataset)]
        loss_only = True if self.compute_metrics is None else self.args.prediction_loss_only
        runs = [
            (EvalRequest(metric_key_prefix if name is None else f"{metric_key_prefix}_{name}", ds, loss_only,
                         ignore_keys), self.get_eval_dataloader(ds))
            for name, ds in named
        ]
        metrics: dict[str, float] = {}
        requests = [_with_slices(request, loader) for request, loader in runs]
        for result in self._run_standalone(requests, [dl for _, dl in runs], predict=False):
            metrics.update(self._report(result, log=True))
        return metrics

    def predict(
        self, test_dataset: Any, ignore_keys: list[str] | None = None, metric_key_prefix: str = "test"
    ) -> PredictionOutput:
        loader = self.get_test_dataloader(test_dataset)
        request = _with_slices(EvalRequest(metric_key_prefix, test_dataset, self.args.prediction_loss_only,
                                           ignore_keys, is_prediction=True), loader)
        (result,) = self._run_standalone([request], [loader], predict=True)
        metrics = self._report(result, log=False)
        self.control = self.callback_handler.on_predict(self.args, self.state, self.control, metrics)
        return PredictionOutput(result.output.predictions, result.output.label_ids, metrics)

    def _run_standalone(self, requests: list[EvalRequest], loaders: list[DataLoader], predict: bool) -> list[EvalResult]:
        """evaluate()/predict() outside ``train()``: a Lightning ``validate``/``predict`` run over the datasets."""
        start = time.time()
        if not self.is_in_train and (self.args.fp16_full_eval or self.args.bf16_full_eval):
            # HF casts the model itself (and leaves it cast) for evaluations outside train()
            self.model.to(torch.float16 if self.args.fp16_full_eval else torch.bfloat16)
        with quiet_lightning():
            trainer = self._lightning_trainer(None, [])
            collector = self._collector(requests)
            self.callback_handler.eval_dataloader = loaders[0]
            if not hasattr(self, "model_preparation_time") and self.state.global_step == 0 and not self.is_in_train:
                # HF reports the time it took to prepare the model on the first evaluation before any training
                self.model_preparation_time = round(time.time() - start, 4)
            if predict:
                trainer.predict(self.lightning_module, dataloaders=loaders, return_predictions=False)
            else:
                trainer.validate(self.lightning_module, dataloaders=loaders, verbose=False)
        self.model.to(self._device())
        if hasattr(self, "model_preparation_time"):
            for result in collector.results:
                result.output.metrics[f"{result.prefix}_model_preparation_time"] = self.model_preparation_time
        return collector.results

    def determine_best_metric(self, metrics: dict[str, float]) -> bool:
        """HF ``_determine_best_metric``: strict improvement of ``eval_<metric_for_best_model>``."""
        return checkpointing.update_best_metric(self.state, self.args, metrics)

    # ---- saving and logging ----------------------------------------------------------------------------------
    def save_checkpoint(self) -> str:
        from hftrain._callbacks.state import refresh_callback_states

        self.store_flos()  # HF: trainer_state.json carries the FLOs so far
        if self.args.should_save:  # HF: each stateful callback's and the control's state as of this save
            self.state.stateful_callbacks = refresh_callback_states(
                self.state.stateful_callbacks, self.callback_handler.callbacks, self.control
            )
        best_step = self.state.best_global_step
        if best_step is not None:
            best_dir = os.path.join(self.args.output_dir, f"checkpoint-{best_step}")
            if best_step == self.state.global_step or os.path.isdir(best_dir):
                self.state.best_model_checkpoint = best_dir
        return checkpointing.save_checkpoint(
            output_dir=self.args.output_dir, global_step=self.state.global_step, model=self.model,
            processing_class=self.processing_class, args=self.args, optimizer=self.optimizer,
            scheduler=self.lr_scheduler, state=self.state,
            deepspeed_engine=_deepspeed_checkpoint.deepspeed_engine(self.lightning_trainer),
        )

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        engine = _deepspeed_checkpoint.deepspeed_engine(self.lightning_trainer)
        if engine is None:  # FSDP: every process takes part in gathering the weights
            weights = _sharding.full_state_dict(self.model)
        else:  # ZeRO-3: likewise
            weights = _deepspeed_checkpoint.full_state_dict(engine)
        if self.args.should_save:
            checkpointing.save_model_files(
                self.model, output_dir or self.args.output_dir, self.processing_class, self.args, weights
            )

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """HF's ``Trainer.log``: add ``epoch``, append to ``log_history`` with the step, fire ``on_log``."""
        if self.state.epoch is not None:
            logs["epoch"] = self.state.epoch
        self.state.log_history.append({**logs, "step": self.state.global_step})
        self.control = self.callback_handler.on_log(self.args, self.state, self.control, logs)
        for logger in self.loggers:
            logger.log_metrics(rewrite_logs(logs), step=self.state.global_step)

    log_metrics = log_metrics
    save_metrics = save_metrics
    save_state = save_state
    metrics_format = metrics_format
    get_learning_rates = get_learning_rates
    get_num_trainable_parameters = get_num_trainable_parameters
    get_optimizer_group = get_optimizer_group

    def add_callback(self, callback: Any) -> None:
        self.callback_handler.add_callback(callback)

    def pop_callback(self, callback: Any) -> Any:
        return self.callback_handler.pop_callback(callback)

    def remove_callback(self, callback: Any) -> None:
        self.callback_handler.remove_callback(callback)

    def is_local_process_zero(self) -> bool:
        return self.args.local_process_index == 0

    def is_world_process_zero(self) -> bool:
        return self.args.process_index == 0


def _with_slices(request: EvalRequest, loader: DataLoader) -> EvalRequest:
    return replace(request, slices=getattr(loader.batch_sampler, "slices", None),
                   num_batches=len(loader) if has_length(loader) else None)






