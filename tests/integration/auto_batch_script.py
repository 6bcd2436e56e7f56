"""Run under torchrun by test_auto_batch_size.py: only rank 1's model runs out of memory above 2 rows."""

from __future__ import annotations

import json
import sys

import torch.distributed as dist

from hftrain import Trainer, TrainingArguments
from tests.helpers import classification_rows, step_logs, tiny_bert_classifier
from tests.integration.test_auto_batch_size import Limited


def main(out: str) -> None:
    args = TrainingArguments(f"{out}/run", report_to="none", disable_tqdm=True, learning_rate=5e-3, logging_steps=1,
                             num_train_epochs=2, seed=4, per_device_train_batch_size=4, auto_find_batch_size=True,
                             save_strategy="no", use_cpu=True)
    rank = args.process_index
    model = tiny_bert_classifier()
    trainer = Trainer(Limited(model, limit=2 if rank == 1 else 1_000), args, train_dataset=classification_rows(32))
    trainer.train()
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump({"micro_batch": trainer._train_batch_size, "accumulation": trainer.args.gradient_accumulation_steps,
                   "history": step_logs(trainer.state.log_history)}, f)
    if dist.is_initialized():
        dist.barrier()


if __name__ == "__main__":
    main(sys.argv[1])
