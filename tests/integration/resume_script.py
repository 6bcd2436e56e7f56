"""Run by test_resume.py in a subprocess: train a tiny GPT-2 with dropout, optionally dying hard at a step."""

from __future__ import annotations

import os
import sys

import torch

from hftrain import Trainer, TrainerCallback, TrainingArguments
from tests.helpers import lm_rows, pad_lm_batch, tiny_gpt2


class DieAtStep(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os._exit(17)  # a hard kill: no cleanup, no final save


def main(output_dir: str, die_at: int, resume: str, weights_out: str) -> None:
    args = TrainingArguments(
        output_dir, per_device_train_batch_size=2, gradient_accumulation_steps=2, num_train_epochs=3,
        learning_rate=5e-3, logging_steps=1, save_strategy="steps", save_steps=2, seed=5, report_to="none",
        disable_tqdm=True, eval_strategy="epoch",
    )
    callbacks = [DieAtStep(die_at)] if die_at > 0 else []
    trainer = Trainer(tiny_gpt2(dropout=0.1), args, train_dataset=lm_rows(14, seed=2),  # 7 batches: 4 steps/epoch
                      eval_dataset=lm_rows(4, seed=3), data_collator=pad_lm_batch, callbacks=callbacks)
    trainer.train(resume_from_checkpoint={"": None, "last": True}.get(resume, resume))
    torch.save({k: v.clone() for k, v in trainer.model.state_dict().items()}, weights_out)
    torch.save([h for h in trainer.state.log_history if "loss" in h], weights_out + ".logs")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])
