"""Run under torchrun by test_distributed.py (or alone as one process): a tiny run whose numbers must not
depend on the number of processes. Writes the log history, eval metrics, predictions and weights (rank 0)."""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

from hftrain import Trainer, TrainingArguments
from tests.helpers import accuracy, classification_rows, lm_rows, pad_lm_batch, tiny_bert_classifier, tiny_llama


def main(out: str, per_device: int, task: str) -> None:
    common = dict(report_to="none", disable_tqdm=True, learning_rate=5e-3, logging_steps=1, seed=9,
                  per_device_train_batch_size=per_device, per_device_eval_batch_size=per_device,
                  gradient_accumulation_steps=2, num_train_epochs=2, eval_strategy="epoch", save_strategy="no",
                  use_cpu=True)
    if task == "classifier":  # a mean-reduced loss: each rank's share of the batch weights its loss
        trainer = Trainer(tiny_bert_classifier(), TrainingArguments(out, **common),
                          train_dataset=classification_rows(27, seed=3), eval_dataset=classification_rows(11, seed=4),
                          compute_metrics=accuracy)
        test = classification_rows(11, seed=4)
    else:  # a token-normalised causal LM: the window's token count is summed over the ranks
        trainer = Trainer(tiny_llama(), TrainingArguments(out, **common), train_dataset=lm_rows(27, seed=3),
                          eval_dataset=lm_rows(11, seed=4), data_collator=pad_lm_batch)
        test = lm_rows(11, seed=4)
    trainer.train()
    metrics = trainer.evaluate()
    prediction = trainer.predict(test)
    if trainer.is_world_process_zero():
        torch.save({k: v.detach().clone() for k, v in trainer.model.state_dict().items()}, f"{out}/weights.pt")
        np.save(f"{out}/labels.npy", prediction.label_ids)
        with open(f"{out}/result.json", "w") as f:
            json.dump({"history": trainer.state.log_history, "metrics": metrics,
                       "test_metrics": prediction.metrics, "global_step": trainer.state.global_step}, f)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
