"""What hftrain adds over transformers.Trainer, one short runnable part each, on a tiny BERT (CPU, about 15 s).

    OMP_NUM_THREADS=1 python examples/what_hftrain_adds.py            # every part
    OMP_NUM_THREADS=1 python examples/what_hftrain_adds.py ga preempt # some of them

Each part prints what it shows and checks it (an AssertionError if hftrain stopped doing it). The same code with
``from transformers import Trainer, TrainingArguments`` runs too, and shows the differences the README describes.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile

import torch
from transformers import BertConfig, BertForSequenceClassification

from hftrain import Trainer, TrainerCallback, TrainingArguments


def tiny_bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    ))


def rows(n: int = 64) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 64, (n, 12), generator=g)
    return [{"input_ids": ids[i], "attention_mask": torch.ones(12, dtype=torch.long), "labels": int(ids[i, 0] % 3)}
            for i in range(n)]


def args(out: str, **kwargs) -> TrainingArguments:
    common = dict(report_to="none", disable_tqdm=True, max_steps=8, logging_steps=1, learning_rate=1e-3, seed=0,
                  save_strategy="no", use_cpu=True)
    return TrainingArguments(out, **{**common, **kwargs})


def losses(trainer: Trainer) -> list[float]:
    return [round(h["loss"], 5) for h in trainer.state.log_history if "loss" in h]


def ga(out: str) -> None:
    """Gradient accumulation that is right for a mean loss: batch 4 × GA 2 trains as batch 8 × GA 1
    (transformers 5.24 sums BERT's two means: its logged loss and gradients double, transformers #47688)."""
    accumulated = Trainer(tiny_bert(), args(f"{out}/ga2", per_device_train_batch_size=4,
                                            gradient_accumulation_steps=2), train_dataset=rows())
    accumulated.train()
    whole = Trainer(tiny_bert(), args(f"{out}/ga1", per_device_train_batch_size=8), train_dataset=rows())
    whole.train()
    print("  4 x GA 2:", losses(accumulated)[:3], "\n  8 x GA 1:", losses(whole)[:3])
    torch.testing.assert_close(torch.tensor(losses(accumulated)), torch.tensor(losses(whole)), rtol=1e-4, atol=0)


def preempt(out: str) -> None:
    """A checkpoint on preemption: SIGTERM (here sent by the run to itself at step 3) finishes the step, saves
    checkpoint-3 atomically and stops; resuming gives the uninterrupted run. Under torchrun, a signal to any one
    process stops every process after the same step."""

    class Preempted(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler does before it kills the job

    cut = Trainer(tiny_bert(), args(out, enable_jit_checkpoint=True, per_device_train_batch_size=8),
                  train_dataset=rows(), callbacks=[Preempted()])
    print("  stopped at step", cut.train().global_step, "with", sorted(p for p in os.listdir(out) if "checkpoint" in p))
    resumed = Trainer(tiny_bert(), args(out, per_device_train_batch_size=8), train_dataset=rows())
    resumed.train(resume_from_checkpoint=f"{out}/checkpoint-3")
    full = Trainer(tiny_bert(), args(f"{out}/full", per_device_train_batch_size=8), train_dataset=rows())
    full.train()
    assert all(torch.equal(a, b) for a, b in zip(resumed.model.state_dict().values(), full.model.state_dict().values()))
    print("  resumed to step 8: weights equal to the uninterrupted run's, bit for bit")


def atomic(out: str) -> None:
    """Atomic checkpoints: the disk fills while checkpoint-4 is being written. The earlier checkpoint-2 is untouched
    and no half-written checkpoint-4 is left for get_last_checkpoint to pick, so the run resumes from checkpoint-2
    to the uninterrupted run's weights (transformers leaves checkpoint-4 without its optimizer and trainer state)."""
    import errno

    from hftrain.trainer_utils import get_last_checkpoint

    class DiskFills(Trainer):
        def _save(self, output_dir=None, state_dict=None):
            super()._save(output_dir, state_dict)  # the weights are written, then the disk is full
            if self.state.global_step == 4:
                raise OSError(errno.ENOSPC, "No space left on device (simulated at checkpoint-4)")

    crashing = DiskFills(tiny_bert(), args(out, per_device_train_batch_size=8, save_strategy="steps", save_steps=2),
                         train_dataset=rows())
    try:
        crashing.train()
    except OSError as error:
        print("  the save failed:", error)
    print("  left behind:", sorted(os.listdir(out)), "-> resume from", os.path.basename(get_last_checkpoint(out)))
    assert get_last_checkpoint(out) == os.path.join(out, "checkpoint-2")
    resumed = Trainer(tiny_bert(), args(out, per_device_train_batch_size=8, save_strategy="steps", save_steps=2),
                      train_dataset=rows())
    resumed.train(resume_from_checkpoint=True)
    full = Trainer(tiny_bert(), args(f"{out}/full", per_device_train_batch_size=8), train_dataset=rows())
    full.train()
    assert all(torch.equal(a, b) for a, b in zip(resumed.model.state_dict().values(), full.model.state_dict().values()))
    print("  resumed to step 8: weights equal to the uninterrupted run's, bit for bit")


def processes(out: str) -> None:
    """Results that do not depend on the number of processes: 2 processes × batch 4 == 1 process × batch 8
    (here Lightning forks the 2 processes; ``torchrun --nproc_per_node=2 script.py`` is the same)."""
    one = Trainer(tiny_bert(), args(f"{out}/one", per_device_train_batch_size=8), train_dataset=rows())
    one.train()
    two = Trainer(tiny_bert(), args(f"{out}/two", per_device_train_batch_size=4, strategy="ddp_notebook", devices=2,
                                    accelerator="cpu"), train_dataset=rows())
    two.train()
    print("  1 process:  ", losses(one)[:3], "\n  2 processes:", losses(two)[:3])
    torch.testing.assert_close(torch.tensor(losses(two)), torch.tensor(losses(one)), rtol=1e-4, atol=1e-6)


def auto_batch(out: str) -> None:
    """An auto batch size that keeps the global batch: out of memory above 4 rows, batch 8 becomes 4 × GA 2, the
    same run (transformers retries with a smaller batch, so a different global batch and schedule)."""

    class Small(BertForSequenceClassification):
        def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
            if input_ids is not None and input_ids.shape[0] > 4:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated above 4 rows)")
            return super().forward(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)

    torch.manual_seed(0)
    model = Small(tiny_bert().config)
    model.load_state_dict(tiny_bert().state_dict())
    found = Trainer(model, args(f"{out}/auto", per_device_train_batch_size=8, auto_find_batch_size=True),
                    train_dataset=rows())
    found.train()
    plain = Trainer(tiny_bert(), args(f"{out}/plain", per_device_train_batch_size=4, gradient_accumulation_steps=2),
                    train_dataset=rows())
    plain.train()
    print("  found micro-batch", found.state.train_batch_size, "with GA", found.args.gradient_accumulation_steps)
    torch.testing.assert_close(torch.tensor(losses(found)), torch.tensor(losses(plain)), rtol=1e-5, atol=0)


def metrics(out: str) -> None:
    """Evaluation in constant memory: a torchmetrics collection as compute_metrics is updated batch by batch, the
    logits are never gathered."""
    from torchmetrics import MetricCollection
    from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

    scores = MetricCollection({"accuracy": MulticlassAccuracy(3), "f1": MulticlassF1Score(3, average="macro")})
    trainer = Trainer(tiny_bert(), args(out, per_device_eval_batch_size=8), eval_dataset=rows(40),
                      compute_metrics=scores)
    result = trainer.evaluate()
    print("  ", {k: round(v, 4) for k, v in result.items() if k in ("eval_loss", "eval_accuracy", "eval_f1")})
    assert {"eval_accuracy", "eval_f1"} <= set(result)


def lightning(out: str) -> None:
    """Any Lightning callback or logger, in the same ``callbacks=`` list as HF's callbacks: here Lightning's
    LearningRateMonitor into a CSVLogger."""
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.loggers import CSVLogger

    trainer = Trainer(tiny_bert(), args(out, per_device_train_batch_size=8), train_dataset=rows(),
                      callbacks=[LearningRateMonitor(logging_interval="step"), CSVLogger(out, name="csv")])
    trainer.train()
    written = [os.path.join(root, f) for root, _, files in os.walk(out) for f in files if f == "metrics.csv"]
    print("  Lightning wrote", written[0])
    assert written


PARTS = {"ga": ga, "preempt": preempt, "atomic": atomic, "processes": processes, "auto_batch": auto_batch, "metrics": metrics,
         "lightning": lightning}

if __name__ == "__main__":
    chosen = sys.argv[1:] or list(PARTS)
    for name in chosen:
        print(f"{name}: {' '.join(PARTS[name].__doc__.split())}")
        with tempfile.TemporaryDirectory() as out:
            PARTS[name](out)
    print("all shown:", ", ".join(chosen))
