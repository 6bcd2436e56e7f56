"""``Seq2SeqTrainer``: the ``Trainer`` whose evaluation generates (``predict_with_generate``), as HF's."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from hftrain._loop.generation import (
    check_can_generate,
    generate_step,
    load_generation_config,
    pad_token_id,
    resolve_generation_kwargs,
)
from hftrain.trainer import Trainer
from hftrain.trainer_utils import PredictionOutput


class Seq2SeqTrainer(Trainer):
    """HF's ``transformers.Seq2SeqTrainer`` on Lightning: summarisation and translation scripts port unchanged.

    Example:
        >>> from hftrain import Seq2SeqTrainer, Seq2SeqTrainingArguments
        >>> args = Seq2SeqTrainingArguments("out", predict_with_generate=True, generation_num_beams=4)
        >>> trainer = Seq2SeqTrainer(model=t5, args=args, train_dataset=train, eval_dataset=evald,
        ...                          data_collator=DataCollatorForSeq2Seq(tokenizer, model=t5))  # doctest: +SKIP
        >>> trainer.predict(test, max_new_tokens=32).predictions  # generated ids, padded  # doctest: +SKIP

    Like HF's, ``eval_loss`` here is the plain mean of the batch losses (HF gathers without dropping the last
    batch's padding, so a short last batch counts as a full one), where ``Trainer`` weights batches by size.
    """

    _loss_weighted_by_samples = False

    def __init__(
        self,
        model: nn.Module | None = None,
        args: Any = None,
        data_collator: Any = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        model_init: Any = None,
        compute_loss_func: Any = None,
        compute_metrics: Any = None,
        callbacks: list[Any] | None = None,
        optimizers: tuple[Any, Any] = (None, None),
        preprocess_logits_for_metrics: Any = None,
    ) -> None:
        super().__init__(
            model=model, args=args, data_collator=data_collator, train_dataset=train_dataset,
            eval_dataset=eval_dataset, processing_class=processing_class, model_init=model_init,
            compute_loss_func=compute_loss_func, compute_metrics=compute_metrics, callbacks=callbacks,
            optimizers=optimizers, preprocess_logits_for_metrics=preprocess_logits_for_metrics,
        )
        if getattr(self.args, "predict_with_generate", False):
            check_can_generate(self.model)
        if getattr(self.args, "generation_config", None) is not None:
            self.model.generation_config = load_generation_config(self.args.generation_config)
        self._gen_kwargs: dict[str, Any] = {}

    def evaluate(
        self, eval_dataset: Any = None, ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval",
        **gen_kwargs: Any,
    ) -> dict[str, float]:
        self._gen_kwargs = resolve_generation_kwargs(self.args, gen_kwargs)
        return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def predict(
        self, test_dataset: Any, ignore_keys: list[str] | None = None, metric_key_prefix: str = "test",
        **gen_kwargs: Any,
    ) -> PredictionOutput:
        self._gen_kwargs = resolve_generation_kwargs(self.args, gen_kwargs)
        return super().predict(test_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def evaluate_during_training(self, trainer: L.Trainer, skip_scheduler: bool = False) -> dict[str, float]:
        self._gen_kwargs = resolve_generation_kwargs(self.args, {})  # HF: evaluate() with no kwargs
        return super().evaluate_during_training(trainer, skip_scheduler)

    def prediction_step(
        self, model: nn.Module, inputs: dict[str, Any], prediction_loss_only: bool,
        ignore_keys: list[str] | None = None, **gen_kwargs: Any,
    ) -> tuple[torch.Tensor | None, Any, Any]:
        if not getattr(self.args, "predict_with_generate", False) or prediction_loss_only:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        return generate_step(
            model, inputs, gen_kwargs or dict(self._gen_kwargs), loss_of=self._teacher_forced_loss,
            pad_id=lambda: pad_token_id(self.processing_class, self.model), loss_only=self.args.prediction_loss_only,
        )

    def _teacher_forced_loss(self, outputs: Any, inputs: dict[str, Any]) -> torch.Tensor:
        if self.label_smoother is not None:
            return self.label_smoother(outputs, inputs["labels"])
        return outputs["loss"] if isinstance(outputs, dict) else outputs[0]
