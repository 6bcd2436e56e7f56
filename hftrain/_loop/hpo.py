"""Hyperparameter search with optuna, as transformers' ``run_hp_search_optuna`` runs it, without accelerate.

transformers' optuna driver frees memory with accelerate's ``release_memory`` and ``Accelerator.clear``; this one is
the same study loop over this Trainer's ``train`` / ``evaluate``. With several processes the first process drives the
study and sends each trial's parameters to the others (a ``FixedTrial``), which train alongside it, as in
transformers. Ray Tune and W&B sweeps stay transformers' own backends.
"""

from __future__ import annotations

import os
from typing import Any

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, BestRun

from hftrain._backends import ddp


def run_optuna(trainer: Any, n_trials: int, direction: str | list[str], **kwargs: Any) -> BestRun | list[BestRun] | None:
    """``n_trials`` optuna trials of ``trainer.train``; the best run (a list of them for several directions)."""
    import optuna

    if trainer.args.process_index != 0:  # follow the first process's trials
        for _ in range(n_trials):
            trainer.objective = None
            trial = ddp.broadcast_object(None)
            trainer.train(resume_from_checkpoint=None, trial=trial)
            if getattr(trainer, "objective", None) is None:
                trainer.objective = trainer.compute_objective(trainer.evaluate())
        return None

    def objective(trial: optuna.Trial, checkpoint_dir: str | None = None) -> Any:
        checkpoint = None
        if checkpoint_dir:
            for subdir in os.listdir(checkpoint_dir):
                if subdir.startswith(PREFIX_CHECKPOINT_DIR):
                    checkpoint = os.path.join(checkpoint_dir, subdir)
        trainer.objective = None
        if trainer.args.world_size > 1:
            trainer.hp_space(trial)
            ddp.broadcast_object(optuna.trial.FixedTrial(trial.params, trial.number))
        trainer.train(resume_from_checkpoint=checkpoint, trial=trial)
        if getattr(trainer, "objective", None) is None:  # no evaluation during training
            trainer.objective = trainer.compute_objective(trainer.evaluate())
        trainer.model_wrapped = trainer.model = None  # the next trial builds its model from model_init
        trainer.accelerator.free_memory()
        return trainer.objective

    timeout = kwargs.pop("timeout", None)
    n_jobs = kwargs.pop("n_jobs", 1)
    gc_after_trial = kwargs.pop("gc_after_trial", False)
    catch = kwargs.pop("catch", ())
    directions = direction if isinstance(direction, list) else None
    direction = None if directions is not None else direction
    study = optuna.create_study(direction=direction, directions=directions, **kwargs)
    study.optimize(objective, n_trials=n_trials, timeout=timeout, n_jobs=n_jobs, gc_after_trial=gc_after_trial,
                   catch=catch)
    if not study._is_multi_objective():
        best = study.best_trial
        return BestRun(str(best.number), best.value, best.params)
    return [BestRun(str(best.number), best.values, best.params) for best in study.best_trials]
