"""``evaluate`` / ``evaluation_loop`` / ``predict`` / ``prediction_step``: transformers' evaluation seams.

``evaluate()`` and ``predict()`` call ``evaluation_loop(dataloader, description, …)`` and report what it returns,
as transformers does, so an override of either (QA post-processing, a custom loop) is honoured, and evaluations
during training go through ``_evaluate`` → ``evaluate`` too. The default ``evaluation_loop`` runs Lightning's
validation loop over the loader (``validate`` / ``predict`` outside training; the fit loop's validation loop,
synchronously, inside it), each batch going through ``prediction_step`` into an
:class:`~hftrain._loop.collector.EvalCollector`, which builds transformers' ``EvalLoopOutput``.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers.trainer_pt_utils import nested_detach
from transformers.trainer_utils import EvalLoopOutput, PredictionOutput, has_length, speed_metrics

from hftrain._logging import trainer_logger
from hftrain._loop.collector import EvalCollector, EvalRequest
from hftrain._loop.model_setup import compiled, report_tpu_metrics
from hftrain._loop.optim import is_metric_driven

logger = trainer_logger()


class EvaluationMethods:
    """transformers.Trainer's evaluation methods."""

    # eval_loss weights each batch by its real size (transformers' gather_for_metrics); Seq2SeqTrainer averages batches
    _loss_weighted_by_samples = True

    def evaluate(
        self, eval_dataset: Any = None, ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        """Evaluate on ``eval_dataset`` (or the Trainer's; a dict evaluates each, prefixing its name); the metrics
        are logged and passed to ``on_evaluate``."""
        override = eval_dataset is not None
        eval_dataset = eval_dataset if override else self.eval_dataset
        if isinstance(eval_dataset, dict):
            metrics = {}
            for name, dataset in eval_dataset.items():
                metrics.update(self.evaluate(
                    eval_dataset=dataset if override else name, ignore_keys=ignore_keys,
                    metric_key_prefix=f"{metric_key_prefix}_{name}",
                ))
            return metrics
        self._memory_tracker.start()
        eval_dataloader = self.get_eval_dataloader(eval_dataset)
        start_time = time.time()
        output = self.evaluation_loop(
            eval_dataloader, description="Evaluation",
            prediction_loss_only=True if self.compute_metrics is None else None,
            ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix,
        )
        self._add_speed_metrics(output, metric_key_prefix, start_time)
        self.log(output.metrics)
        report_tpu_metrics(self.args)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, output.metrics)
        self._memory_tracker.stop_and_update_metrics(output.metrics)
        return output.metrics

    def predict(
        self, test_dataset: Any, ignore_keys: list[str] | None = None, metric_key_prefix: str = "test"
    ) -> PredictionOutput:
        """Predictions (and metrics, when the dataset has labels) on ``test_dataset``."""
        self._memory_tracker.start()
        test_dataloader = self.get_test_dataloader(test_dataset)
        start_time = time.time()
        output = self.evaluation_loop(
            test_dataloader, description="Prediction", ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix
        )
        self._add_speed_metrics(output, metric_key_prefix, start_time)
        self.control = self.callback_handler.on_predict(self.args, self.state, self.control, output.metrics)
        self._memory_tracker.stop_and_update_metrics(output.metrics)
        return PredictionOutput(predictions=output.predictions, label_ids=output.label_ids, metrics=output.metrics)

    def _add_speed_metrics(self, output: EvalLoopOutput, prefix: str, start_time: float) -> None:
        total_batch_size = self.args.eval_batch_size * self.args.world_size
        if f"{prefix}_model_preparation_time" in output.metrics:
            start_time += output.metrics[f"{prefix}_model_preparation_time"]
        output.metrics.update(speed_metrics(
            prefix, start_time, num_samples=output.num_samples,
            num_steps=math.ceil(output.num_samples / total_batch_size),
        ))

    def evaluation_loop(
        self, dataloader: Any, description: str, prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval",
    ) -> EvalLoopOutput:
        """One pass over ``dataloader``: Lightning's validation loop (``predict`` for "Prediction" outside
        training), every batch through ``prediction_step``; losses, predictions, labels and metrics as
        transformers' ``EvalLoopOutput``."""
        args = self.args
        prediction_loss_only = prediction_loss_only if prediction_loss_only is not None else args.prediction_loss_only
        start = time.time()
        if not self.is_in_train and (args.fp16_full_eval or args.bf16_full_eval):
            # transformers casts the model itself (and leaves it cast) for evaluations outside train()
            self.model.to(torch.float16 if args.fp16_full_eval else torch.bfloat16)
        logger.info(f"\n***** Running {description} *****")
        if has_length(dataloader):
            logger.info(f"  Num examples = {self.num_examples(dataloader)}")
        else:
            logger.info("  Num examples: Unknown")
        logger.info(f"  Batch size = {args.eval_batch_size}")
        if not self._model_prepared:  # transformers prepares (compiles) for its first evaluation before training
            self.model_wrapped, self._model_prepared = compiled(self.model, args), True
            self._evaluation_model = self.model_wrapped  # for this pass only, as in transformers
        self.callback_handler.eval_dataloader = dataloader
        request = EvalRequest(
            metric_key_prefix, getattr(dataloader, "dataset", None), prediction_loss_only, ignore_keys,
            is_prediction=description == "Prediction",
            slices=getattr(getattr(dataloader, "batch_sampler", None), "slices", None),
            num_batches=len(dataloader) if has_length(dataloader) else None,
        )
        self._eval_collector = collector = EvalCollector(
            [request], args=args, prediction_step=self.prediction_step,
            main_input_name=getattr(self.model, "main_input_name", "input_ids"),
            compute_metrics=self.compute_metrics, preprocess_logits_for_metrics=self.preprocess_logits_for_metrics,
            on_batch=self._on_prediction_step, losses_by_sample=self._loss_weighted_by_samples,
            count_items=self._count_evaluation_items,
        )
        if self._fitting:
            from hftrain._lightning_compat import run_validation_now

            self.lightning_module.zero_grad(set_to_none=True)
            run_validation_now(self.lightning_trainer, dataloader)
        else:
            if not hasattr(self, "model_preparation_time") and self.state.global_step == 0:
                # transformers reports the time it took to prepare the model, on the first evaluation before training
                self.model_preparation_time = round(time.time() - start, 4)
            self._evaluate_with_lightning(dataloader, predict=request.is_prediction)
        self._evaluation_model = None
        (result,) = collector.results
        output = result.output
        if hasattr(self, "model_preparation_time"):
            output.metrics[f"{metric_key_prefix}_model_preparation_time"] = self.model_preparation_time
        return output

    def _evaluate_with_lightning(self, dataloader: Any, predict: bool) -> None:
        """evaluation_loop outside ``train()``: a Lightning ``validate`` (or ``predict``) run over ``dataloader``."""
        from hftrain._lightning_compat import quiet_lightning
        from hftrain._tracebacks import loop_frames_hidden

        with quiet_lightning():
            trainer = self._build_lightning_trainer(max_steps=None, training=False)
            self.accelerator._attach(trainer)
            try:
                if predict:
                    trainer.predict(self.lightning_module, dataloaders=[dataloader], return_predictions=False)
                else:
                    trainer.validate(self.lightning_module, dataloaders=[dataloader], verbose=False)
            except Exception as error:
                raise loop_frames_hidden(error)  # the user's frames, not Lightning's loop (HFTRAIN_FULL_TRACEBACK=1)
            finally:
                self.accelerator._detach()
        self.model.to(self.accelerator.device)

    def _count_evaluation_items(self, batches: list) -> Any:
        """A batch's label tokens (its loss weight when the processes' pieces are put back together)."""
        return self._get_num_items_in_batch(batches, self.accelerator.device)

    def _on_prediction_step(self) -> None:
        self.control = self.callback_handler.on_prediction_step(self.args, self.state, self.control)

    def _lightning_evaluation_step(self, model: nn.Module, batch: Any, dataloader_idx: int) -> None:
        self._eval_collector.step(self._evaluation_model or model, batch, dataloader_idx)

    def _lightning_evaluation_end(self) -> dict[str, Any]:
        self._eval_collector.finish()
        metrics: dict[str, Any] = {}
        for result in self._eval_collector.results:
            metrics.update(result.output.metrics)
        return metrics

    def prediction_step(
        self, model: nn.Module, inputs: dict[str, torch.Tensor | Any], prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """``(loss, logits, labels)`` for one evaluation batch (``loss`` only with ``prediction_loss_only``)."""
        has_labels = False if len(self.label_names) == 0 else all(inputs.get(k) is not None for k in self.label_names)
        return_loss = inputs.get("return_loss")
        if return_loss is None:
            return_loss = self.can_return_loss
        loss_without_labels = len(self.label_names) == 0 and return_loss
        inputs = self._prepare_inputs(inputs)
        if ignore_keys is None:
            if hasattr(self.model, "config"):
                ignore_keys = getattr(self.model.config, "keys_to_ignore_at_inference", ["cache"])
            else:
                ignore_keys = []
        if has_labels or loss_without_labels:
            labels = nested_detach(tuple(inputs.get(name) for name in self.label_names))
            if len(labels) == 1:
                labels = labels[0]
        else:
            labels = None
        with torch.no_grad():
            if has_labels or loss_without_labels:
                num_items_in_batch = self._get_num_items_in_batch([inputs], self.accelerator.device)
                with self.compute_loss_context_manager():
                    loss, outputs = self.compute_loss(
                        model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
                    )
                loss = loss.detach().mean()
                if isinstance(outputs, dict):
                    logits = tuple(v for k, v in outputs.items() if k not in ignore_keys + ["loss"])
                else:
                    logits = outputs[1:]
            else:
                loss = None
                with self.compute_loss_context_manager():
                    outputs = model(**inputs)
                if isinstance(outputs, dict):
                    logits = tuple(v for k, v in outputs.items() if k not in ignore_keys)
                else:
                    logits = outputs
        if prediction_loss_only:
            return (loss, None, None)
        logits = nested_detach(logits)
        if len(logits) == 1:
            logits = logits[0]
        return (loss, logits, labels)

    def _evaluate(self, trial: Any, ignore_keys_for_eval: list[str] | None, skip_scheduler: bool = False) -> dict[str, float]:
        """An evaluation during training: ``evaluate()``, the hyperparameter search's report, a plateau schedule."""
        metrics = self.evaluate(ignore_keys=ignore_keys_for_eval)
        self._report_to_hp_search(trial, self.state.global_step, metrics)
        if is_metric_driven(self.lr_scheduler) and not skip_scheduler:
            metric_to_check = self.args.metric_for_best_model
            if not metric_to_check.startswith("eval_"):
                metric_to_check = f"eval_{metric_to_check}"
            try:
                self.lr_scheduler.step(metrics[metric_to_check])
            except KeyError as exc:
                raise KeyError(
                    f"The `metric_for_best_model` training argument is set to '{metric_to_check}', which is not "
                    f"found in the evaluation metrics. The available evaluation metrics are: {list(metrics.keys())}. "
                    f"Please ensure that the `compute_metrics` function returns a dictionary that includes "
                    f"'{metric_to_check}' or consider changing the `metric_for_best_model` via the TrainingArguments."
                ) from exc
        return metrics

    def _determine_best_metric(self, metrics: dict[str, float], trial: Any) -> bool:
        """Whether ``metrics`` holds a new best ``metric_for_best_model`` (a strict improvement)."""
        is_new_best_metric = False
        if self.args.metric_for_best_model is not None:
            metric_to_check = self.args.metric_for_best_model
            if not metric_to_check.startswith("eval_"):
                metric_to_check = f"eval_{metric_to_check}"
            try:
                metric_value = metrics[metric_to_check]
            except KeyError as exc:
                raise KeyError(
                    f"The `metric_for_best_model` training argument is set to '{metric_to_check}', which is not "
                    f"found in the evaluation metrics. The available evaluation metrics are: {list(metrics.keys())}. "
                    "Consider changing the `metric_for_best_model` via the TrainingArguments."
                ) from exc
            operator = np.greater if self.args.greater_is_better else np.less
            if self.state.best_metric is None:
                self.state.best_metric = float("-inf") if self.args.greater_is_better else float("inf")
            if operator(metric_value, self.state.best_metric):
                self.state.best_metric = metric_value
                if self.args.save_strategy in ("steps", "epoch", "best"):
                    self.state.best_global_step = self.state.global_step
                is_new_best_metric = True
        return is_new_best_metric
