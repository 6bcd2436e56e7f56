#!/usr/bin/env python
"""Train a tiny GPT-2 (causal language model) on the Debian package descriptions that ship with hftrain.

The shape of transformers' ``examples/pytorch/language-modeling/run_clm.py``: ``HfArgumentParser((ModelArguments,
DataArguments, TrainingArguments))``, ``Trainer`` with ``DataCollatorForLanguageModeling(mlm=False)``, and the
perplexity ``exp(eval_loss)`` in the saved metrics, next to a next-token accuracy. Only the import of ``Trainer`` /
``TrainingArguments`` differs from a transformers script.

Each description is one document, ``<|endoftext|> words … <|endoftext|>``, padded per batch by the collator
(padding is masked out of the loss). The model is a tiny GPT-2 built from a ``GPT2Config`` with a word-level
tokenizer trained on the training texts (``--model_name_or_path tiny``, the default), or any local causal-LM
checkpoint directory. Nothing is downloaded.

Example (from the repository root)::

    python examples/run_clm.py --output_dir /tmp/clm --do_train --do_eval --max_train_samples 1024 \
        --max_eval_samples 200 --num_train_epochs 3 --learning_rate 3e-3 --report_to none
"""

from __future__ import annotations

import logging
import math
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
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    GPT2Config,
    GPT2LMHeadModel,
    HfArgumentParser,
    PreTrainedTokenizerFast,
)

# The only change from a transformers script: these two names come from hftrain.
from hftrain import Trainer, TrainingArguments
from hftrain.trainer_utils import get_last_checkpoint, set_seed

logger = logging.getLogger(__name__)

# The Debian sections dataset next to the examples (one-line package descriptions → archive section).
DATA_DIR = Path(__file__).resolve().parent / "data" / "debian_sections"


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="tiny",
        metadata={"help": "A local causal-LM checkpoint directory, or 'tiny': a tiny GPT-2 built from a config with "
                          "a word-level tokenizer trained on the training texts."},
    )
    tiny_n_embd: int = field(default=64, metadata={"help": "embedding size of the 'tiny' GPT-2"})
    tiny_n_layer: int = field(default=2, metadata={"help": "layers of the 'tiny' GPT-2"})
    tiny_n_head: int = field(default=2, metadata={"help": "attention heads of the 'tiny' GPT-2"})
    tiny_vocab_size: int = field(default=4000, metadata={"help": "at most this many words in the 'tiny' tokenizer"})


@dataclass
class DataArguments:
    train_file: str | None = field(
        default=None, metadata={"help": "A jsonl file with a `text` column; "
                                         "default: the train split of examples/data/debian_sections."}
    )
    validation_file: str | None = field(
        default=None, metadata={"help": "Evaluation file; default: the test split of examples/data/debian_sections."}
    )
    text_column_name: str = field(default="text", metadata={"help": "column with the documents"})
    block_size: int = field(default=32, metadata={"help": "Truncate each document to this many tokens."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Truncate the training set to this many examples (debugging, quick runs)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Truncate the evaluation set to this many examples."}
    )


def train_word_tokenizer(texts: list[str], vocab_size: int, model_max_length: int) -> PreTrainedTokenizerFast:
    """A lower-cased word-level tokenizer; each text becomes ``<|endoftext|> words <|endoftext|>``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=2,
                                                             special_tokens=["<pad>", "<unk>", "<|endoftext|>"]))
    eos = tok.token_to_id("<|endoftext|>")
    tok.post_processor = processors.TemplateProcessing(single="<|endoftext|> $A <|endoftext|>",
                                                       special_tokens=[("<|endoftext|>", eos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   model_max_length=model_max_length)


def main() -> None:
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
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

    # --- data ----------------------------------------------------------------------------------------------
    data_files = {
        "train": data_args.train_file or str(DATA_DIR / "train.jsonl"),
        "validation": data_args.validation_file or str(DATA_DIR / "test.jsonl"),
    }
    raw = load_dataset("json", data_files=data_files)
    text_col = data_args.text_column_name

    # --- model and tokenizer -------------------------------------------------------------------------------
    if model_args.model_name_or_path == "tiny":
        tokenizer = train_word_tokenizer(raw["train"][text_col], model_args.tiny_vocab_size, data_args.block_size)
        config = GPT2Config(
            vocab_size=len(tokenizer), n_positions=max(64, data_args.block_size), n_embd=model_args.tiny_n_embd,
            n_layer=model_args.tiny_n_layer, n_head=model_args.tiny_n_head, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        )
        model = GPT2LMHeadModel(config)
    else:
        tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info(f"Training a {type(model).__name__} with {n_params / 1e6:.2f}M parameters")

    def tokenize(batch):
        return tokenizer(batch[text_col], truncation=True, max_length=data_args.block_size)

    def prepare(split: str, limit: int | None):
        ds = raw[split]
        if limit is not None:
            ds = ds.select(range(min(limit, len(ds))))
        with training_args.main_process_first(desc=f"{split} tokenization"):
            return ds.map(tokenize, batched=True, remove_columns=ds.column_names, desc=f"Tokenizing {split}")

    train_dataset = prepare("train", data_args.max_train_samples) if training_args.do_train else None
    eval_dataset = prepare("validation", data_args.max_eval_samples) if training_args.do_eval else None

    # --- next-token accuracy, as in transformers' run_clm.py (perplexity comes from the loss) -----------------
    def preprocess_logits_for_metrics(logits, labels):
        if isinstance(logits, tuple):
            logits = logits[0]
        return logits.argmax(dim=-1)

    def compute_metrics(eval_preds):
        preds, labels = eval_preds
        # predictions at position i are for the token at i + 1
        labels, preds = labels[:, 1:].reshape(-1), preds[:, :-1].reshape(-1)
        keep = labels != -100
        return {"accuracy": float(np.mean(preds[keep] == labels[keep]))}

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        compute_metrics=compute_metrics if training_args.do_eval else None,
        preprocess_logits_for_metrics=preprocess_logits_for_metrics if training_args.do_eval else None,
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
        metrics = trainer.evaluate()
        metrics["eval_samples"] = len(eval_dataset)
        try:
            perplexity = math.exp(metrics["eval_loss"])
        except OverflowError:
            perplexity = float("inf")
        metrics["perplexity"] = perplexity
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)


if __name__ == "__main__":
    main()
