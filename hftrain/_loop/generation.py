"""Generation for ``Seq2SeqTrainer``: HF's priority of generation settings and its generate-then-pad step.

``resolve_generation_kwargs`` is HF's order of precedence as a pure function (transformers' ``Seq2SeqTrainer.evaluate`` / ``predict``):
keyword arguments given to ``evaluate()`` / ``predict()`` win; ``generation_max_length`` fills ``max_length`` only
when neither ``max_length`` nor ``max_new_tokens`` was given, ``generation_num_beams`` fills ``num_beams``; whatever
is still unset comes from ``model.generation_config`` (itself replaced by ``args.generation_config`` when given).
"""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path
from typing import Any, Callable

import torch
from transformers.generation import GenerationConfig


def resolve_generation_kwargs(args: Any, gen_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments ``model.generate`` gets for one evaluate()/predict() call.

    Example:
        >>> from hftrain import Seq2SeqTrainingArguments
        >>> args = Seq2SeqTrainingArguments("out", generation_max_length=20, generation_num_beams=4)
        >>> resolve_generation_kwargs(args, {"max_new_tokens": 5})
        {'max_new_tokens': 5, 'num_beams': 4}
    """
    kwargs = dict(gen_kwargs)
    max_length = getattr(args, "generation_max_length", None)  # args None: only drop the None values
    if kwargs.get("max_length") is None and kwargs.get("max_new_tokens") is None and max_length is not None:
        kwargs["max_length"] = max_length
    num_beams = getattr(args, "generation_num_beams", None)
    if kwargs.get("num_beams") is None and num_beams is not None:
        kwargs["num_beams"] = num_beams
    return {k: v for k, v in kwargs.items() if not (k in ("num_beams", "max_length") and v is None)}


def load_generation_config(value: str | Path | GenerationConfig) -> GenerationConfig:
    """``args.generation_config`` as a validated ``GenerationConfig`` (a copy, a directory or a JSON file)."""
    if isinstance(value, GenerationConfig):
        config = deepcopy(value)
    else:
        path = Path(value)
        config = (GenerationConfig.from_pretrained(path.parent, path.name) if path.is_file()
                  else GenerationConfig.from_pretrained(path))
    try:
        config.validate(strict=True)
    except ValueError as exc:
        raise ValueError(f"`generation_config`: {exc}\n\nFix these issues to train your model.") from exc
    return config


def check_can_generate(model: torch.nn.Module) -> None:
    """``predict_with_generate=True`` needs a model with ``generate()``: refuse others before any step."""
    can = getattr(model, "can_generate", None)
    if not callable(getattr(model, "generate", None)) or (callable(can) and not can()):
        raise ValueError(
            f"`predict_with_generate=True` but {type(model).__name__} cannot generate (no usable `generate()`): use "
            "a model with a language-modeling head (e.g. *ForConditionalGeneration, *ForCausalLM) or set "
            "predict_with_generate=False."
        )


def pad_to_length(tensor: torch.Tensor, length: int, pad_token_id: int) -> torch.Tensor:
    """Right-pad ``(batch, seq)`` to ``length`` with the pad token (HF ``_pad_tensors_to_max_len``)."""
    padded = torch.full((tensor.shape[0], length), pad_token_id, dtype=tensor.dtype, device=tensor.device)
    padded[:, : tensor.shape[-1]] = tensor
    return padded


def pad_token_id(processing_class: Any, model: torch.nn.Module) -> int:
    if processing_class is not None and hasattr(processing_class, "pad_token_id"):
        pad = processing_class.pad_token_id
        return pad if pad is not None else processing_class.eos_token_id
    pad = getattr(getattr(model, "config", None), "pad_token_id", None)
    if pad is None:
        raise ValueError("Pad_token_id must be set in the configuration of the model, in order to pad tensors")
    return pad


def generate_step(
    model: torch.nn.Module,
    inputs: dict[str, Any],
    gen_kwargs: dict[str, Any],
    *,
    loss_of: Callable[[Any, dict[str, Any]], torch.Tensor],
    pad_id: Callable[[], int],
    loss_only: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """HF's ``Seq2SeqTrainer.prediction_step`` with generation: generated ids and labels padded to the generation
    length with the pad token, and the teacher-forced loss from a separate forward pass."""
    has_labels = "labels" in inputs
    gen_kwargs = {"synced_gpus": False, **gen_kwargs}
    generation_inputs = inputs
    if has_labels and "decoder_input_ids" in inputs and inputs["labels"].shape == inputs["decoder_input_ids"].shape:
        # decoder inputs derived from the labels would leak the answer into generate()
        generation_inputs = {k: v for k, v in inputs.items() if k not in ("decoder_input_ids", "decoder_attention_mask")}
    generated = model.generate(**generation_inputs, **gen_kwargs)
    config = model.generation_config
    if config._from_model_config:
        config._from_model_config = False
    config.update(**config._get_default_generation_params(), defaults_only=True)
    target = _target_length(generated.shape[-1], config)
    if target is not None:
        generated = pad_to_length(generated, target, pad_id())
    loss = None
    if has_labels:
        with torch.no_grad():
            outputs = model(**inputs)
        loss = loss_of(outputs, inputs).detach().mean()
    if loss_only:
        return loss, None, None
    labels = None
    if has_labels:
        labels = inputs["labels"]
        target = _target_length(labels.shape[-1], config)
        if target is not None:
            labels = pad_to_length(labels, target, pad_id())
    return loss, generated, labels


def _target_length(current: int, config: GenerationConfig) -> int | None:
    """HF pads to ``max_length``, else to ``max_new_tokens + 1``, using the model's config (not the call's kwargs)."""
    if current < config.max_length:
        return config.max_length
    if config.max_new_tokens is not None and current < config.max_new_tokens + 1:
        return config.max_new_tokens + 1
    return None
