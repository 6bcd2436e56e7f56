#!/usr/bin/env python
"""Train a tiny T5 to write a Debian package's section from its description, with ``Seq2SeqTrainer``.

The shape of transformers' ``examples/pytorch/translation/run_translation.py``: ``HfArgumentParser((ModelArguments,
DataArguments, Seq2SeqTrainingArguments))``, a ``DataCollatorForSeq2Seq``, ``predict_with_generate=True`` so that
evaluation calls ``model.generate()``, and text metrics on the decoded generations. Only the import of
``Seq2SeqTrainer`` / ``Seq2SeqTrainingArguments`` differs from a transformers script.

The task is built from the ``debian_sections`` data in ``examples/data`` (text → section): the source is the
package's short description, the target is ``"<section> : <a short description of that section>"``, e.g.

    "documentation for the OpenShot video library"  →  "doc : documentation manuals and other documents"

so that the section name is a one-word classification and the rest gives SacreBLEU (up to 4-grams) and chrF
something to score. The section descriptions are short paraphrases written for this example. Metrics
(torchmetrics, on decoded text, 0–1): ``bleu`` (SacreBLEU), ``chrf``, ``exact_match`` and ``section_accuracy``
(the first generated word is the right section). torchmetrics' chrF is pure Python (about 10 ms a sentence on one
CPU core): with large evaluation sets it costs more than the generation itself.

The model is a tiny T5 built from a ``T5Config`` with a word-level tokenizer trained on the training texts
(``--model_name_or_path tiny``, the default), or any local seq2seq checkpoint directory. Nothing is downloaded.

Example (from the repository root)::

    python examples/run_seq2seq.py --output_dir /tmp/s2s --do_train --do_eval --predict_with_generate \
        --max_train_samples 1024 --max_eval_samples 128 --num_train_epochs 3 --learning_rate 3e-3 --report_to none
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets
import numpy as np
import transformers
from datasets import load_dataset
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    HfArgumentParser,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

# The only change from a transformers script: these two names come from hftrain.
from hftrain import Seq2SeqTrainer, Seq2SeqTrainingArguments
from hftrain.trainer_utils import get_last_checkpoint, set_seed

logger = logging.getLogger(__name__)

# The Debian sections dataset next to the examples (one-line package descriptions → archive section).
DATA_DIR = Path(__file__).resolve().parent / "data" / "debian_sections"

# Target text per section: the section name, then a short description of the section (written for this example).
SECTION_DESCRIPTIONS = {
    "doc": "documentation manuals and other documents",
    "fonts": "font packages",
    "games": "games and programs to spend a nice weekend with",
    "libdevel": "library development files for programmers",
    "net": "network daemons and clients to connect your system to the world",
    "python": "modules and tools for the python language",
    "science": "basic tools for scientific work",
    "sound": "utilities to deal with sound",
}


def target_text(label: str) -> str:
    return f"{label} : {SECTION_DESCRIPTIONS.get(label, label)}"


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="tiny",
        metadata={"help": "A local seq2seq checkpoint directory, or 'tiny': a tiny T5 built from a config with a "
                          "word-level tokenizer trained on the training texts."},
    )
    tiny_d_model: int = field(default=64, metadata={"help": "d_model of the 'tiny' T5"})
    tiny_num_layers: int = field(default=2, metadata={"help": "encoder and decoder layers of the 'tiny' T5"})
    tiny_num_heads: int = field(default=4, metadata={"help": "attention heads of the 'tiny' T5"})
    tiny_vocab_size: int = field(default=4000, metadata={"help": "at most this many words in the 'tiny' tokenizer"})


@dataclass
class DataArguments:
    train_file: str | None = field(
        default=None, metadata={"help": "A jsonl file with `text` and `label`; "
                                         "default: the train split of examples/data/debian_sections."}
    )
    validation_file: str | None = field(
        default=None, metadata={"help": "Evaluation file; default: the test split of examples/data/debian_sections."}
    )
    test_file: str | None = field(default=None, metadata={"help": "File for --do_predict; default: validation."})
    max_source_length: int = field(default=48, metadata={"help": "Truncate sources to this many tokens."})
    max_target_length: int = field(default=16, metadata={"help": "Truncate training targets to this many tokens."})
    val_max_target_length: int | None = field(
        default=None,
        metadata={"help": "Maximum target length for evaluation; also the default `generation_max_length`. "
                          "Defaults to max_target_length."},
    )
    num_beams: int | None = field(
        default=None, metadata={"help": "Beams for evaluate()/predict(); default: `generation_num_beams`."}
    )
    ignore_pad_token_for_loss: bool = field(
        default=True, metadata={"help": "Pad labels with -100 so that padding is ignored by the loss."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Truncate the training set to this many examples (debugging, quick runs)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Truncate the evaluation set to this many examples."}
    )
    max_predict_samples: int | None = field(
        default=None, metadata={"help": "Truncate the prediction set to this many examples."}
    )

    def __post_init__(self) -> None:
        if self.val_max_target_length is None:
            self.val_max_target_length = self.max_target_length


def train_word_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A lower-cased word-level tokenizer with T5's special tokens (<pad>=0, </s>=1, <unk>=2), trained in memory."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=2,
                                                             special_tokens=["<pad>", "</s>", "<unk>"]))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def main() -> None:
    parser = HfArgumentParser((ModelArguments, DataArguments, Seq2SeqTrainingArguments))
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(json_file=os.path.abspath(sys.argv[1]))
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses()

    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stdout)])
    if training_args.should_log:
        transformers.utils.logging.set_verbosity_info()
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    logger.info(f"Training/evaluation parameters {training_args}")

    last_checkpoint = None
    if os.path.isdir(training_args.output_dir) and training_args.do_train:
        last_checkpoint = get_last_checkpoint(training_args.output_dir)
        if last_checkpoint is not None and training_args.resume_from_checkpoint is None:
            logger.info(f"Checkpoint detected, resuming training at {last_checkpoint}.")

    set_seed(training_args.seed)

    # --- data: description → "<section> : <section description>" ------------------------------------------------
    data_files = {
        "train": data_args.train_file or str(DATA_DIR / "train.jsonl"),
        "validation": data_args.validation_file or str(DATA_DIR / "test.jsonl"),
    }
    data_files["test"] = data_args.test_file or data_files["validation"]
    raw = load_dataset("json", data_files=data_files)

    # --- model and tokenizer -------------------------------------------------------------------------------
    if model_args.model_name_or_path == "tiny":
        targets = [target_text(label) for label in raw["train"]["label"]]
        tokenizer = train_word_tokenizer([*raw["train"]["text"], *targets], model_args.tiny_vocab_size)
        config = T5Config(
            vocab_size=len(tokenizer), d_model=model_args.tiny_d_model,
            d_kv=model_args.tiny_d_model // model_args.tiny_num_heads, d_ff=2 * model_args.tiny_d_model,
            num_layers=model_args.tiny_num_layers, num_decoder_layers=model_args.tiny_num_layers,
            num_heads=model_args.tiny_num_heads, dropout_rate=0.1, pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
        )
        model = T5ForConditionalGeneration(config)
    else:
        tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
        model = AutoModelForSeq2SeqLM.from_pretrained(model_args.model_name_or_path)

    def preprocess(batch, max_target_length: int):
        inputs = tokenizer(batch["text"], max_length=data_args.max_source_length, truncation=True)
        targets = [target_text(label) for label in batch["label"]]
        labels = tokenizer(text_target=targets, max_length=max_target_length, truncation=True)
        inputs["labels"] = labels["input_ids"]
        return inputs

    def prepare(split: str, limit: int | None, max_target_length: int):
        ds = raw[split]
        if limit is not None:
            ds = ds.select(range(min(limit, len(ds))))
        with training_args.main_process_first(desc=f"{split} tokenization"):
            return ds.map(preprocess, batched=True, remove_columns=ds.column_names, desc=f"Tokenizing {split}",
                          fn_kwargs={"max_target_length": max_target_length})

    train_dataset = prepare("train", data_args.max_train_samples, data_args.max_target_length) \
        if training_args.do_train else None
    eval_dataset = prepare("validation", data_args.max_eval_samples, data_args.val_max_target_length) \
        if training_args.do_eval else None
    predict_dataset = prepare("test", data_args.max_predict_samples, data_args.val_max_target_length) \
        if training_args.do_predict else None

    label_pad_token_id = -100 if data_args.ignore_pad_token_for_loss else tokenizer.pad_token_id
    data_collator = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=label_pad_token_id)

    # --- metrics on decoded text, with torchmetrics ------------------------------------------------------------
    from torchmetrics.functional.text import chrf_score, sacre_bleu_score

    def compute_metrics(eval_preds):
        preds, labels = eval_preds
        if isinstance(preds, tuple):
            preds = preds[0]
        preds = np.where(preds != -100, preds, tokenizer.pad_token_id)
        labels = np.where(labels != -100, labels, tokenizer.pad_token_id)
        hyps = [text.strip() for text in tokenizer.batch_decode(preds, skip_special_tokens=True)]
        refs = [text.strip() for text in tokenizer.batch_decode(labels, skip_special_tokens=True)]
        references = [[ref] for ref in refs]
        return {
            "bleu": float(sacre_bleu_score(hyps, references)),
            "chrf": float(chrf_score(hyps, references, n_word_order=0)),  # chrF (n_word_order=2 would be chrF++)
            "exact_match": float(np.mean([h == r for h, r in zip(hyps, refs)])),
            "section_accuracy": float(np.mean([h.split()[:1] == r.split()[:1] for h, r in zip(hyps, refs)])),
            "gen_len": float(np.mean(np.count_nonzero(preds != tokenizer.pad_token_id, axis=1))),
        }

    # as in transformers' run_translation.py: evaluation generates up to val_max_target_length tokens
    training_args.generation_max_length = training_args.generation_max_length or data_args.val_max_target_length
    num_beams = data_args.num_beams if data_args.num_beams is not None else training_args.generation_num_beams

    trainer = Seq2SeqTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=data_collator,
        compute_metrics=compute_metrics if training_args.predict_with_generate else None,
    )

    if training_args.do_train:
        checkpoint = training_args.resume_from_checkpoint or last_checkpoint
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()  # also saves the tokenizer
        metrics = train_result.metrics
        metrics["train_samples"] = len(train_dataset)
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()

    if training_args.do_eval:
        logger.info("*** Evaluate ***")
        metrics = trainer.evaluate(max_length=training_args.generation_max_length, num_beams=num_beams,
                                   metric_key_prefix="eval")
        metrics["eval_samples"] = len(eval_dataset)
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)

    if training_args.do_predict:
        logger.info("*** Predict ***")
        results = trainer.predict(predict_dataset, metric_key_prefix="predict",
                                  max_length=training_args.generation_max_length, num_beams=num_beams)
        metrics = results.metrics
        metrics["predict_samples"] = len(predict_dataset)
        trainer.log_metrics("predict", metrics)
        trainer.save_metrics("predict", metrics)
        if trainer.is_world_process_zero() and training_args.predict_with_generate:
            predictions = np.where(results.predictions != -100, results.predictions, tokenizer.pad_token_id)
            texts = [text.strip() for text in tokenizer.batch_decode(predictions, skip_special_tokens=True)]
            with open(os.path.join(training_args.output_dir, "generated_predictions.txt"), "w") as writer:
                writer.write("\n".join(texts) + "\n")


if __name__ == "__main__":
    main()
