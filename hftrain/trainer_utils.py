"""``transformers.trainer_utils`` under hftrain's name, so ``from transformers.trainer_utils import X`` ports by
changing the package.

These are transformers' own objects (that module imports neither accelerate nor the Trainer), so outputs compare
equal to transformers' and ``isinstance`` checks keep working.
"""

from __future__ import annotations

from transformers.trainer_utils import (
    PREFIX_CHECKPOINT_DIR,
    BestRun,
    EvalLoopOutput,
    EvalPrediction,
    HubStrategy,
    IntervalStrategy,
    PredictionOutput,
    RemoveColumnsCollator,
    SaveStrategy,
    SchedulerType,
    TrainOutput,
    denumpify_detensorize,
    enable_full_determinism,
    get_last_checkpoint,
    has_length,
    rotate_checkpoints,
    seed_worker,
    set_seed,
    sort_checkpoints,
    speed_metrics,
)

__all__ = [
    "PREFIX_CHECKPOINT_DIR",
    "BestRun",
    "EvalLoopOutput",
    "EvalPrediction",
    "HubStrategy",
    "IntervalStrategy",
    "PredictionOutput",
    "RemoveColumnsCollator",
    "SaveStrategy",
    "SchedulerType",
    "TrainOutput",
    "denumpify_detensorize",
    "enable_full_determinism",
    "get_last_checkpoint",
    "has_length",
    "rotate_checkpoints",
    "seed_worker",
    "set_seed",
    "sort_checkpoints",
    "speed_metrics",
]
