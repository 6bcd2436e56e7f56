"""Run under torchrun by test_distributed.py (or alone as one process): a tiny run whose numbers must not
depend on the number of processes. Writes the log history, eval metrics, predictions and weights (rank 0)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
from hftrain import Trainer, TrainingArguments
from tests.helpers import (
    accuracy, classification_rows, lm_rows, pad_lm_batch, tiny_bert_classifier, tiny_llama, tokenized_rows,
    word_tokenizer,
)


SYNCS: list[bool] = []  # with COUNT_GRADIENT_SYNCS: accelerator.sync_gradients at each gradient all-reduce
TRAINERS: list[Trainer] = []


def counting_allreduce(state, bucket):
    """DDP's all-reduce, noting whether the step had asked for a synchronisation (the window's last micro-batch)."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    SYNCS.append(TRAINERS[-1].accelerator.sync_gradients)
    return allreduce_hook(state, bucket)


SAMPLES: dict[str, list] = {}  # the sample counts behind each *_samples_per_second


def count_samples(module) -> None:
    """Record the ``num_samples`` each speed metric is computed from, in ``module``'s ``speed_metrics``."""
    original = module.speed_metrics

    def recording(split, start_time, num_samples=None, num_steps=None, num_tokens=None):
        SAMPLES.setdefault(split, []).append(num_samples)
        return original(split, start_time, num_samples=num_samples, num_steps=num_steps, num_tokens=num_tokens)

    module.speed_metrics = recording


def main(out: str, per_device: int, task: str, strategy: str | None = None) -> None:
    from hftrain._loop import collector, evaluation, train

    for module in (collector, evaluation, train):
        if hasattr(module, "speed_metrics"):
            count_samples(module)
    # strategy given: one plain process, Lightning starts the second one (re-run script, fork, or FSDP2's mesh)
    launch = {} if strategy is None else dict(strategy=strategy, devices=2, accelerator="cpu")
    if os.environ.get("COUNT_GRADIENT_SYNCS"):  # under torchrun: DDP with a hook counting its all-reduces
        import lightning as L

        class CountSyncs(L.Callback):  # Lightning registers comm hooks on CUDA only: register it here
            def on_train_start(self, trainer, pl_module):
                trainer.strategy.model.register_comm_hook(None, counting_allreduce)

        launch = dict(callbacks=[CountSyncs()])
    callbacks = launch.pop("callbacks", None)
    common = dict(**launch, report_to="none", disable_tqdm=True, learning_rate=5e-3, logging_steps=1, seed=9,
                  per_device_train_batch_size=per_device, per_device_eval_batch_size=per_device,
                  gradient_accumulation_steps=2, num_train_epochs=2, eval_strategy="epoch",
                  save_strategy="epoch" if strategy == "fsdp" else "no", use_cpu=True,
                  # padded LM batches: counting the padding too must not depend on how each process pads its slice
                  include_num_input_tokens_seen="non_padding" if task in ("classifier", "tokenized") else "all")
    trainer, test = build(out, task, common, callbacks)
    TRAINERS.append(trainer)
    trainer.train()
    metrics = trainer.evaluate()
    prediction = trainer.predict(test)
    trainer.save_model(f"{out}/final")  # gathers sharded (FSDP) weights from every process
    if strategy == "fsdp":  # resume the same run from its first (epoch 1) checkpoint, in these processes
        resumed, _ = build(f"{out}/resumed", task, common)
        first = sorted(Path(out).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[0]
        resumed.train(resume_from_checkpoint=str(first))
        resumed.save_model(f"{out}/resumed/final")
    if trainer.is_world_process_zero():
        np.save(f"{out}/labels.npy", prediction.label_ids)
        with open(f"{out}/result.json", "w") as f:
            json.dump({"history": trainer.state.log_history, "metrics": metrics, "syncs": SYNCS,
                       "test_metrics": prediction.metrics, "global_step": trainer.state.global_step,
                       "total_flos": trainer.state.total_flos, "samples": SAMPLES,
                       "num_input_tokens_seen": trainer.state.num_input_tokens_seen,
                       "train_dataset": type(trainer.get_train_dataloader().dataset).__name__}, f)
    # the end of the script, as HF's accelerator.end_training(): the process group goes before the interpreter does
    # (hftrain also does it at exit; gloo's threads can still abort a finished run during finalisation, rarely)
    trainer.end()


def build(out: str, task: str, common: dict, callbacks: list | None = None) -> tuple[Trainer, list]:
    if task == "classifier":  # a mean-reduced loss: each rank's share of the batch weights its loss
        trainer = Trainer(tiny_bert_classifier(), TrainingArguments(out, **common),
                          train_dataset=classification_rows(27, seed=3), eval_dataset=classification_rows(11, seed=4),
                          compute_metrics=accuracy, callbacks=callbacks)
        return trainer, classification_rows(11, seed=4)
    if task == "tokenized":  # a datasets.Dataset padded by the tokenizer's collator: built from its Arrow columns
        trainer = Trainer(tiny_bert_classifier(), TrainingArguments(out, **common),
                          train_dataset=tokenized_rows(27, seed=3), eval_dataset=tokenized_rows(11, seed=4),
                          processing_class=word_tokenizer(), compute_metrics=accuracy, callbacks=callbacks)
        return trainer, tokenized_rows(11, seed=4)
    # a token-normalised causal LM: the window's token count is summed over the ranks; grouped_lm draws its
    # order with transformers' LengthGroupedSampler (the first process's, on every process)
    if task == "grouped_lm":
        common = {**common, "train_sampling_strategy": "group_by_length"}
    trainer = Trainer(tiny_llama(), TrainingArguments(out, **common), train_dataset=lm_rows(27, seed=3),
                      eval_dataset=lm_rows(11, seed=4), data_collator=pad_lm_batch)
    return trainer, lm_rows(11, seed=4)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], *sys.argv[4:5])
