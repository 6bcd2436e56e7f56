"""Names ``transformers.training_args`` defines besides the arguments (that module imports accelerate, so they
are defined again here, with the same values)."""

from __future__ import annotations

from enum import Enum

from transformers.utils import ExplicitEnum
from transformers.utils import logging as hf_logging

log_levels = hf_logging.get_log_levels_dict().copy()
trainer_log_levels = dict(**log_levels, passive=-1)


def str_to_bool(value: str, to_bool: bool = True) -> int | bool:
    """``"yes"``/``"true"``/``"1"``… → True (1), ``"no"``/``"false"``/``"0"``… → False (0), as transformers'."""
    value = value.lower()
    if value in ("y", "yes", "t", "true", "on", "1"):
        return 1 if not to_bool else True
    if value in ("n", "no", "f", "false", "off", "0"):
        return 0 if not to_bool else False
    raise ValueError(f"invalid truth value {value}")


class ParallelMode(ExplicitEnum):
    """Same values as ``transformers.training_args.ParallelMode`` (which cannot be imported without accelerate)."""

    NOT_PARALLEL = "not_parallel"
    NOT_DISTRIBUTED = "not_distributed"
    DISTRIBUTED = "distributed"
    SAGEMAKER_MODEL_PARALLEL = "sagemaker_model_parallel"
    SAGEMAKER_DATA_PARALLEL = "sagemaker_data_parallel"
    TPU = "tpu"

    def __eq__(self, other: object) -> bool:
        """Equal to transformers' member of the same value too (its enum is not a str enum), so code written
        against transformers (e.g. its model card) reads hftrain's ``args.parallel_mode`` right."""
        if isinstance(other, Enum) and type(other).__name__ == "ParallelMode":
            return self.value == other.value
        return str.__eq__(self, other)

    __hash__ = str.__hash__
