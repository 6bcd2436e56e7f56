"""Run under torchrun by test_distributed.py: a tiny classifier whose extra head is used at every other step (as
layerdrop or mixture-of-experts routing leave parameters unused at some steps), with ``ddp_find_unused_parameters``
as given on the command line ("unset", "false")."""

from __future__ import annotations

import sys

import torch
from hftrain import Trainer, TrainingArguments
from tests.helpers import classification_rows, tiny_bert_classifier


class SometimesUsedHead(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = tiny_bert_classifier()
        self.extra = torch.nn.Linear(3, 3)  # requires a gradient, in the forward of every other call only
        self.calls = 0

    def forward(self, input_ids, attention_mask=None, labels=None):
        self.calls += 1
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        if self.calls % 2 == 0:
            logits = logits + self.extra(logits)
        return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}


def main(out: str, find_unused: str) -> None:
    args = TrainingArguments(
        out, per_device_train_batch_size=4, max_steps=4, report_to="none", save_strategy="no", disable_tqdm=True,
        use_cpu=True, ddp_find_unused_parameters={"unset": None, "false": False}[find_unused],
    )
    trainer = Trainer(SometimesUsedHead(), args, train_dataset=classification_rows(32, seed=1))
    try:
        trainer.train()
    finally:
        trainer.end()
    print(f"rank {trainer.args.process_index} trained {trainer.state.global_step} steps", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
