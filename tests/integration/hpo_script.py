"""Run under torchrun by test_distributed.py: an optuna search in which the pruner stops trials part-way, then one
whose timeout ends it after its first trial (of 5 asked for).

Every rank writes the trials it trained (learning rate, the steps it reached) to ``ranks-<rank>.json``; rank 0 also
writes the first study's best run."""

from __future__ import annotations

import json
import sys

import optuna

from hftrain import Trainer, TrainerCallback, TrainingArguments
from tests.helpers import classification_rows, tiny_bert_classifier


class NoteTrials(TrainerCallback):
    """Which trial this rank trains, with which learning rate, and how far it got before the end or the pruner."""

    def __init__(self, trials: list[dict]):
        self.trials = trials

    def on_train_begin(self, args, state, control, **kwargs):
        self.trials.append({"learning_rate": args.learning_rate, "steps": 0})

    def on_step_end(self, args, state, control, **kwargs):
        self.trials[-1]["steps"] = state.global_step


def main(out: str) -> None:
    trials: list[dict] = []
    args = TrainingArguments(out, report_to="none", disable_tqdm=True, max_steps=6, eval_strategy="steps",
                             eval_steps=2, per_device_train_batch_size=2, save_strategy="no", use_cpu=True, seed=3)
    trainer = Trainer(model_init=lambda: tiny_bert_classifier(), args=args, train_dataset=classification_rows(16),
                      eval_dataset=classification_rows(8, seed=1), callbacks=[NoteTrials(trials)])

    def hp_space(trial):
        return {"learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True)}

    # prunes every trial after the first one whose first evaluation is not the best so far
    pruner = optuna.pruners.PercentilePruner(1.0, n_startup_trials=1, n_warmup_steps=0)
    best = trainer.hyperparameter_search(hp_space=hp_space, n_trials=5, direction="minimize", backend="optuna",
                                         sampler=optuna.samplers.TPESampler(seed=0), pruner=pruner)
    result = {"trials": list(trials)}
    trials.clear()
    trainer.hyperparameter_search(hp_space=hp_space, n_trials=5, direction="minimize", backend="optuna",
                                  sampler=optuna.samplers.TPESampler(seed=1), timeout=1e-3)
    result["timed_out_trials"] = trials
    if trainer.is_world_process_zero():
        result["best"] = [best.run_id, best.objective, best.hyperparameters]
    with open(f"{out}/ranks-{trainer.args.process_index}.json", "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1])
