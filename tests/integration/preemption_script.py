"""Run by test_preemption.py, alone or under torchrun: a tiny GPT-2 (with dropout) that a test signals mid-run.

``interrupt``: each step is slowed down and, after step 2, each process writes its pid to ``pid-<rank>``, for the
test to signal; the run must save one checkpoint and stop. ``resume``: resumes from that checkpoint to the end, then
``full`` trains the same run without interruption in the same processes. Each writes ``<mode>-<rank>.json``."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from hftrain import Trainer, TrainerCallback, TrainingArguments
from tests.helpers import lm_rows, pad_lm_batch, tiny_gpt2

MAX_STEPS = 40


class Slow(TrainerCallback):
    """Keeps the run going long enough to be signalled, and says when it is (after step 2)."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(0.2)
        if state.global_step == 2:
            Path(self.out, f"pid-{args.process_index}").write_text(str(os.getpid()))


def run(out: str, mode: str, signals: str) -> None:
    args = TrainingArguments(
        out if mode != "full" else f"{out}/full", per_device_train_batch_size=4 // int(os.environ.get("WORLD_SIZE", 1)),
        gradient_accumulation_steps=2, max_steps=MAX_STEPS, learning_rate=5e-3, logging_steps=3, save_strategy="no",
        seed=5, report_to="none", disable_tqdm=True, use_cpu=True, enable_jit_checkpoint=True,
        jit_checkpoint_signals=signals,
    )
    callbacks = [Slow(out)] if mode == "interrupt" else []
    trainer = Trainer(tiny_gpt2(dropout=0.1), args, train_dataset=lm_rows(24, seed=2), data_collator=pad_lm_batch,
                      callbacks=callbacks)
    checkpoints = sorted(Path(out).glob("checkpoint-*"))
    trainer.train(resume_from_checkpoint=str(checkpoints[0]) if mode == "resume" else None)
    weights = {k: v.flatten().tolist() for k, v in trainer.model.state_dict().items()}
    Path(out, f"{mode}-{args.process_index}.json").write_text(json.dumps({
        "global_step": trainer.state.global_step, "stopped_at": trainer._jit_checkpoint.stopped_at,
        "history": trainer.state.log_history, "weights": weights,
    }))


if __name__ == "__main__":
    out, mode, signals = sys.argv[1], sys.argv[2], sys.argv[3]
    for step in (["resume", "full"] if mode == "resume" else [mode]):
        run(out, step, signals)
