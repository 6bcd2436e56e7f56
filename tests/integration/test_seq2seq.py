"""Seq2SeqTrainer: same generated tokens, eval loss, metrics and weights as transformers.Seq2SeqTrainer."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import transformers
from transformers import DataCollatorForSeq2Seq, GenerationConfig

import hftrain
from tests.helpers import assert_same_parameters, copy_task, for_transformers, tiny_t5, word_tokenizer

pytestmark = pytest.mark.integration


def text_metrics(tokenizer):
    """compute_metrics on decoded text with torchmetrics' ROUGE, SacreBLEU and chrF (what the example uses)."""
    from torchmetrics.text import CHRFScore, SacreBLEUScore

    def compute(eval_pred):
        preds, labels = eval_pred
        preds = np.where(preds != -100, preds, tokenizer.pad_token_id)
        labels = np.where(labels != -100, labels, tokenizer.pad_token_id)
        hyps = tokenizer.batch_decode(preds, skip_special_tokens=True)
        refs = tokenizer.batch_decode(labels, skip_special_tokens=True)
        return {
            "bleu": float(SacreBLEUScore(tokenize="none")(hyps, [[r] for r in refs])),
            "chrf": float(CHRFScore()(hyps, [[r] for r in refs])),
            "exact": float(np.mean([h == r for h, r in zip(hyps, refs)])),
        }

    return compute


def _run(trainer_cls, args_cls, tmp_path, name, model, tokenizer, train, evald, **extra):
    args = args_cls(
        output_dir=str(tmp_path / name), per_device_train_batch_size=4, per_device_eval_batch_size=3,
        gradient_accumulation_steps=2, num_train_epochs=2, learning_rate=1e-2, logging_steps=1,
        eval_strategy="epoch", save_strategy="no", predict_with_generate=True, generation_max_length=9,
        generation_num_beams=2, report_to="none", disable_tqdm=True, seed=4, **extra,
    )
    model = for_transformers(model) if trainer_cls is transformers.Seq2SeqTrainer else copy.deepcopy(model)
    trainer = trainer_cls(
        model=model, args=args, train_dataset=train, eval_dataset=evald, processing_class=tokenizer,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model), compute_metrics=text_metrics(tokenizer),
    )
    trainer.train()
    return trainer


def test_generation_parity_with_transformers(tmp_path):
    tokenizer = word_tokenizer()
    model = tiny_t5(len(tokenizer))
    train, evald = copy_task(tokenizer, 18, seed=0), copy_task(tokenizer, 7, seed=1)
    hf = _run(transformers.Seq2SeqTrainer, transformers.Seq2SeqTrainingArguments, tmp_path, "hf", model, tokenizer,
              train, evald)
    ours = _run(hftrain.Seq2SeqTrainer, hftrain.Seq2SeqTrainingArguments, tmp_path, "ours", model, tokenizer,
                train, evald)
    assert_same_parameters(hf.model, ours.model)
    hf_evals = [h for h in hf.state.log_history if "eval_loss" in h]
    our_evals = [h for h in ours.state.log_history if "eval_loss" in h]
    assert len(our_evals) == len(hf_evals) == 2
    for a, b in zip(hf_evals, our_evals):
        for key in ("eval_loss", "eval_bleu", "eval_chrf", "eval_exact", "epoch"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key

    # beam search with an explicit max length passed to predict(): the same ids, padded the same way
    hf_out = hf.predict(evald, max_length=6, num_beams=3)
    our_out = ours.predict(evald, max_length=6, num_beams=3)
    np.testing.assert_array_equal(our_out.predictions, hf_out.predictions)
    np.testing.assert_array_equal(our_out.label_ids, hf_out.label_ids)
    assert our_out.metrics["test_loss"] == pytest.approx(hf_out.metrics["test_loss"], rel=1e-5)
    assert set(our_out.metrics) == set(hf_out.metrics)

    hf_metrics = hf.evaluate(max_new_tokens=4)
    our_metrics = ours.evaluate(max_new_tokens=4)
    assert list(our_metrics) == list(hf_metrics)
    for key in ("eval_loss", "eval_bleu", "eval_chrf"):
        assert our_metrics[key] == pytest.approx(hf_metrics[key], rel=1e-4, abs=1e-6)


def test_generation_config_argument_replaces_the_models(tmp_path):
    tokenizer = word_tokenizer()
    config = GenerationConfig(max_length=5, num_beams=1, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    trainer = hftrain.Seq2SeqTrainer(
        model=tiny_t5(len(tokenizer)),
        args=hftrain.Seq2SeqTrainingArguments(str(tmp_path), predict_with_generate=True, generation_config=config,
                                              report_to="none", disable_tqdm=True),
        processing_class=tokenizer, data_collator=DataCollatorForSeq2Seq(tokenizer),
    )
    assert trainer.model.generation_config.max_length == 5
    out = trainer.predict(copy_task(tokenizer, 4))
    assert out.predictions.shape == (4, 5)


def test_decoder_only_model_generates_with_prompt(tmp_path):
    from tests.helpers import lm_rows, pad_lm_batch, tiny_gpt2

    model = tiny_gpt2(dropout=0.0)
    model.config.pad_token_id = 0
    model.generation_config.pad_token_id = 0
    trainer = hftrain.Seq2SeqTrainer(
        model=model, args=hftrain.Seq2SeqTrainingArguments(str(tmp_path), predict_with_generate=True,
                                                           report_to="none", disable_tqdm=True,
                                                           per_device_eval_batch_size=2),
        data_collator=pad_lm_batch,
    )
    rows = lm_rows(4, min_len=3, max_len=3)
    out = trainer.predict(rows, max_new_tokens=3)
    assert out.predictions.shape[0] == 4 and out.predictions.shape[1] >= 6  # prompt + new tokens
    np.testing.assert_array_equal(out.predictions[:, :3], np.stack([r["input_ids"].numpy() for r in rows.rows]))


def test_bad_generation_input_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match="cannot generate"):
        hftrain.Seq2SeqTrainer(model=torch.nn.Linear(2, 2), args=hftrain.Seq2SeqTrainingArguments(
            str(tmp_path), predict_with_generate=True, report_to="none"))
    with pytest.raises(ValueError, match="generation_num_beams=0"):
        hftrain.Seq2SeqTrainingArguments(str(tmp_path), generation_num_beams=0)
    with pytest.raises(ValueError, match="generation_max_length=0"):
        hftrain.Seq2SeqTrainingArguments(str(tmp_path), generation_max_length=0)
    with pytest.raises(ValueError, match="generation_config="):
        hftrain.Seq2SeqTrainingArguments(str(tmp_path), generation_config=str(tmp_path / "missing.json"))
