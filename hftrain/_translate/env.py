"""The facts the translation needs about the machine and the model, probed once and passed in as plain data."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True, slots=True)
class Env:
    """What the machine offers; tests build it by hand to fake GPUs.

    Example:
        >>> Env(cuda_devices=2).has_cuda
        True
    """

    cuda_devices: int = 0
    world_size: int = 1  # processes of the launch (torchrun, SLURM, a test's ranks)
    local_world_size: int = 1  # of them, on this node

    @property
    def has_cuda(self) -> bool:
        return self.cuda_devices > 0


def detect_env() -> Env:
    """Probe the current process (the only hardware-touching function of the translation). It does not initialise
    CUDA (``device_count`` asks NVML), so ``ddp_notebook`` can still fork afterwards."""
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return Env(
        cuda_devices=cuda,
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1"))),
    )


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """What the translation reads of the model: DeepSpeed's ``"auto"`` sizes, and what decides transformers' DDP
    default (``_build_accelerator_args``: a ``PreTrainedModel`` searches for unused parameters unless activation
    checkpointing is on; any other model searches).

    Example:
        >>> ModelFacts(hidden_size=768, pretrained=True).checkpointing
        False
    """

    hidden_size: int | None = None
    pretrained: bool = False  # a transformers PreTrainedModel
    checkpointing: bool = False  # its activation checkpointing is on already (model.is_activation_checkpointing)


def model_facts(model: object) -> ModelFacts:
    """Read :class:`ModelFacts` off ``model``."""
    from transformers import PreTrainedModel

    pretrained = isinstance(model, PreTrainedModel)
    return ModelFacts(
        hidden_size=getattr(getattr(model, "config", None), "hidden_size", None),
        pretrained=pretrained,
        checkpointing=bool(pretrained and model.is_activation_checkpointing),
    )
