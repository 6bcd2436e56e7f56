"""Hyperparameter search with optuna, as transformers' ``run_hp_search_optuna`` runs it, without accelerate.

transformers' optuna driver frees memory with accelerate's ``release_memory`` and ``Accelerator.clear``; this one is
the same study loop over this Trainer's ``train`` / ``evaluate``. With several processes the first process drives the
study and sends each trial's parameters to the others (a ``FixedTrial``), which train alongside it, as in
transformers. Beyond transformers, nothing hangs there: the processes join their group before the first trial (HF
broadcasts on a group that may not exist yet), the first process says when the study is over (a timeout or a
stopped study ends it early; HF's followers wait for ``n_trials`` trials), and a pruning decision is sent to every
process so that all of them leave the pruned trial at the same evaluation (HF prunes the first process only and the
others wait for it in their next collective). Ray Tune and W&B sweeps stay transformers' own backends.
"""

from __future__ import annotations

import os
from typing import Any

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, BestRun

from hftrain._args.lightning import launched_by_environment
from hftrain._backends import ddp


def run_optuna(trainer: Any, n_trials: int, direction: str | list[str], **kwargs: Any) -> BestRun | list[BestRun] | None:
    """``n_trials`` optuna trials of ``trainer.train``; the best run (a list of them for several directions)."""
    import optuna

    several = trainer.args.world_size > 1
    if several:
        join_process_group(trainer.args)
    if trainer.args.process_index != 0:  # follow the first process's trials until it says the study is over
        while (trial := ddp.broadcast_object(None)) is not None:
            trainer.objective = None
            try:
                trainer.train(resume_from_checkpoint=None, trial=trial)
            except optuna.TrialPruned:
                continue
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
        if several:
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
    try:
        study.optimize(objective, n_trials=n_trials, timeout=timeout, n_jobs=n_jobs, gc_after_trial=gc_after_trial,
                       catch=catch)
    finally:
        if several:
            ddp.broadcast_object(None)  # the study is over: the other processes stop following
    if not study._is_multi_objective():
        best = study.best_trial
        return BestRun(str(best.number), best.value, best.params)
    return [BestRun(str(best.number), best.values, best.params) for best in study.best_trials]


def join_process_group(args: Any) -> None:
    """Under torchrun the processes exist before the first trial's fit creates their group; the study needs it to send
    the first trial, so join it here, with the backend and timeout the fit's strategy would use (Lightning reuses it).
    """
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if not launched_by_environment():
        raise ValueError(
            f"hyperparameter_search with several processes (world_size={args.world_size}) needs processes started by "
            "a launcher (torchrun, SLURM), so that every process follows the same study from its first trial; "
            "Lightning starts processes only inside train(). Launch the script with torchrun --nproc_per_node=N."
        )
    from hftrain._translate.env import detect_env
    from hftrain._translate.strategy import ddp_options

    options = ddp_options(args, detect_env())
    if options["process_group_backend"] == "nccl":
        import torch

        torch.cuda.set_device(args.local_process_index)
    dist.init_process_group(options["process_group_backend"], timeout=options["timeout"])
    ddp.destroy_process_group_at_exit()
