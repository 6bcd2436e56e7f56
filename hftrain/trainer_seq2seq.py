"""``Seq2SeqTrainer``: the ``Trainer`` whose evaluation generates (``predict_with_generate``), as HF's."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from transformers.generation import GenerationConfig

from hftrain._loop.generation import (
    check_can_generate,
    generate_step,
    load_generation_config,
    pad_to_length,
    pad_token_id,
    resolve_generation_kwargs,
)
from hftrain.trainer import Trainer
from hftrain.trainer_utils import PredictionOutput

logger = logging.getLogger(__name__)


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
            self.model.generation_config = self.load_generation_config(self.args.generation_config)
        self._gen_kwargs: dict[str, Any] = resolve_generation_kwargs(self.args, {})

    @staticmethod
    def load_generation_config(gen_config_arg: str | GenerationConfig) -> GenerationConfig:
        """``args.generation_config`` (a ``GenerationConfig``, a folder or a JSON file), validated."""
        return load_generation_config(gen_config_arg)

    def evaluate(
        self, eval_dataset: Any = None, ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval",
        **gen_kwargs: Any,
    ) -> dict[str, float]:
        """``Trainer.evaluate``, generating with ``gen_kwargs`` (defaults: ``generation_max_length`` /
        ``generation_num_beams``) when ``predict_with_generate``."""
        self.gather_function = self.accelerator.gather
        self._gen_kwargs = resolve_generation_kwargs(self.args, gen_kwargs)
        return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def predict(
        self, test_dataset: Any, ignore_keys: list[str] | None = None, metric_key_prefix: str = "test",
        **gen_kwargs: Any,
    ) -> PredictionOutput:
        """``Trainer.predict``, generating with ``gen_kwargs`` when ``predict_with_generate``."""
        self.gather_function = self.accelerator.gather
        self._gen_kwargs = resolve_generation_kwargs(self.args, gen_kwargs)
        return super().predict(test_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def prediction_step(
        self, model: nn.Module, inputs: dict[str, Any], prediction_loss_only: bool,
        ignore_keys: list[str] | None = None, **gen_kwargs: Any,
    ) -> tuple[torch.Tensor | None, Any, Any]:
        """The generated ids (padded to the generation length) and the teacher-forced loss, with
        ``predict_with_generate``; else ``Trainer.prediction_step``."""
        if not self.args.predict_with_generate or prediction_loss_only:
            return super().prediction_step(
                model, inputs, prediction_loss_only=prediction_loss_only, ignore_keys=ignore_keys
            )
        inputs = self._prepare_inputs(inputs)
        if len(gen_kwargs) == 0:
            gen_kwargs = dict(self._gen_kwargs)
        return generate_step(
            self.model, inputs, resolve_generation_kwargs(None, gen_kwargs), loss_of=self._teacher_forced_loss,
            pad_id=lambda: pad_token_id(self.processing_class, self.model), loss_only=self.args.prediction_loss_only,
        )

    def _pad_tensors_to_max_len(self, tensor: torch.Tensor, max_length: int) -> torch.Tensor:
        return pad_to_length(tensor, max_length, pad_token_id(self.processing_class, self.model))

    def _teacher_forced_loss(self, outputs: Any, inputs: dict[str, Any]) -> torch.Tensor:
        if self.label_smoother is not None:
            return self.label_smoother(outputs, inputs["labels"])
        return outputs["loss"] if isinstance(outputs, dict) else outputs[0]
