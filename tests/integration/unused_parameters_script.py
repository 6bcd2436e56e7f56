"""Run under torchrun by test_distributed.py: a tiny classifier with one parameter its forward never uses, with
``ddp_find_unused_parameters`` as given on the command line ("unset", "true")."""

from __future__ import annotations

import sys

import torch
import torch.distributed
from hftrain import Trainer, TrainingArguments
from tests.helpers import classification_rows, tiny_bert_classifier


def main(out: str, find_unused: str) -> None:
    model = tiny_bert_classifier()
    model.unused_head = torch.nn.Linear(4, 4)  # registered, requires a gradient, never in the forward
    args = TrainingArguments(
        out, per_device_train_batch_size=4, max_steps=3, report_to="none", save_strategy="no", disable_tqdm=True,
        use_cpu=True, ddp_find_unused_parameters={"unset": None, "true": True}[find_unused],
    )
    trainer = Trainer(model, args, train_dataset=classification_rows(32, seed=1))
    weights = model.classifier.weight.detach().clone()
    try:
        trainer.train()
    except ValueError as error:
        print(f"rank {trainer.args.process_index} refused: {error}", flush=True)
        assert torch.equal(model.classifier.weight, weights), "the refused step changed the weights"
        torch.distributed.barrier()  # both ranks have said it before either exits (torchrun then stops the other)
        raise SystemExit(3) from None
    finally:
        trainer.end()
    print(f"rank {trainer.args.process_index} trained {trainer.state.global_step} steps", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
