"""The seven fields hftrain adds to HF's ``TrainingArguments``: Lightning's way of saying where a run executes, the
peak the model-FLOPs utilisation is measured against, and the signals a preemption checkpoint is written on.

``strategy``, ``accelerator``, ``devices``, ``num_nodes`` and ``precision`` take what ``lightning.Trainer`` takes,
so one argument moves a script from a CPU to several GPUs, FSDP, DeepSpeed or TPUs. HF's own flags keep working:
``strategy="auto"`` derives the strategy from ``fsdp`` / ``deepspeed`` / ``ddp_*`` and the launcher (``torchrun``,
SLURM), and ``precision=None`` derives it from ``bf16`` / ``fp16``. ``peak_flops`` (per device, FLOP/s) is what the
``mfu`` of each training log is a fraction of (:mod:`hftrain._loop.throughput`). ``jit_checkpoint_signals`` are the
signals ``enable_jit_checkpoint`` checkpoints and stops on (:mod:`hftrain._loop.preemption`). They come after HF's
fields, so an ``HfArgumentParser`` command line of HF's options parses the same.
"""

from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from typing_extensions import Self

from hftrain._args.fields import _TrainingArgumentsFields
from hftrain._args.normalise import preemption_signals

LIGHTNING_FIELDS = ("strategy", "accelerator", "devices", "num_nodes", "precision", "peak_flops",
                    "jit_checkpoint_signals")

# strategy names that run one process whatever ``devices`` says
SINGLE_PROCESS_STRATEGIES = frozenset({"single_device", "single_xla"})


@dataclass(repr=False)
class _LightningFields(_TrainingArgumentsFields):
    strategy: str = field(
        default="auto",
        metadata={
            "help": (
                "hftrain: a Lightning strategy name ('auto', 'ddp', 'ddp_spawn', 'ddp_notebook', 'fsdp', "
                "'deepspeed_stage_2', 'xla', ...) or a `lightning.pytorch.strategies.Strategy` object. 'auto' "
                "derives it from `fsdp`, `deepspeed`, the `ddp_*` options and the launcher (torchrun, SLURM)."
            )
        },
    )
    accelerator: str = field(
        default="auto",
        metadata={"help": "hftrain: Lightning's accelerator ('auto', 'cpu', 'cuda', 'gpu', 'mps', 'tpu')."},
    )
    devices: str = field(
        default="auto",
        metadata={
            "help": (
                "hftrain: devices per node, as Lightning takes them (an int, a list of indices or 'auto'). "
                "With several devices and no external launcher, Lightning starts the processes."
            )
        },
    )
    num_nodes: int = field(default=1, metadata={"help": "hftrain: number of machines (Lightning's `num_nodes`)."})
    precision: str | None = field(
        default=None,
        metadata={
            "help": (
                "hftrain: a Lightning precision ('32-true', 'bf16-mixed', '16-mixed', 'bf16-true', "
                "'transformer-engine', ...) or precision plugin. None: from `bf16` / `fp16`, as HF."
            )
        },
    )

    peak_flops: float | None = field(
        default=None,
        metadata={
            "help": (
                "hftrain: the peak FLOP/s of one device, for the `mfu` (model-FLOPs utilisation) of each training "
                "log. None: the device's known peak for the run's precision (Lightning's table of NVIDIA GPUs and "
                "TPUs); on a CPU no `mfu` is logged unless it is given."
            )
        },
    )

    jit_checkpoint_signals: str = field(
        default="SIGTERM",
        metadata={
            "help": (
                "hftrain: the signals `enable_jit_checkpoint` saves a checkpoint and stops on, comma-separated "
                "(e.g. 'SIGTERM,SIGUSR1': SLURM's `--signal=USR1@90` sends SIGUSR1 before its SIGTERM)."
            )
        },
    )

    def _normalise_lightning_fields(self) -> None:
        """Command-line strings to Lightning's types (``"2"`` devices → 2) and the conflicts HF's flags can have."""
        if isinstance(self.devices, str) and self.devices.lstrip("-").isdigit():
            self.devices = int(self.devices)
        if isinstance(self.num_nodes, str):
            self.num_nodes = int(self.num_nodes)
        if not isinstance(self.num_nodes, int) or self.num_nodes < 1:
            raise ValueError(f"`num_nodes` must be a positive integer, got {self.num_nodes!r}.")
        if isinstance(self.devices, int) and (self.devices == 0 or self.devices < -1):
            raise ValueError(f"`devices` must be a positive number, a list of device indices or 'auto'; got "
                             f"{self.devices}. Use `use_cpu=True` or `accelerator='cpu'` to train on the CPU.")
        if self.use_cpu and self.accelerator not in ("auto", "cpu"):
            raise ValueError(f"`use_cpu=True` contradicts `accelerator={self.accelerator!r}`: set only one of them.")
        if isinstance(self.peak_flops, str):
            with contextlib.suppress(ValueError):
                self.peak_flops = float(self.peak_flops)
        if self.peak_flops is not None and (isinstance(self.peak_flops, (bool, str))
                                            or not isinstance(self.peak_flops, (int, float)) or not self.peak_flops > 0):
            raise ValueError(f"`peak_flops` is one device's peak FLOP/s, a positive number (e.g. 989e12 for an H100's "
                             f"bf16), or None for the device's known peak; got {self.peak_flops!r}.")
        preemption_signals(self.jit_checkpoint_signals)  # a ValueError naming the field, before any step
        if isinstance(self.precision, str):
            flag = "bf16" if self.bf16 else "fp16" if self.fp16 else None
            wanted = {"bf16": ("bf16",), "fp16": ("16",)}.get(flag or "", ())
            if flag is not None and not self.precision.startswith(wanted):
                raise ValueError(f"`{flag}=True` contradicts `precision={self.precision!r}`: set only one of them "
                                 f"(e.g. precision='bf16-mixed' alone, or {flag}=True without `precision`).")

    @property
    def planned_processes(self) -> int:
        """Processes of the run when hftrain (through Lightning) starts them: ``devices × num_nodes``.

        Example:
            >>> from hftrain import TrainingArguments
            >>> TrainingArguments("out", accelerator="cpu", devices=2, report_to="none").planned_processes
            2
        """
        if isinstance(self.strategy, str) and self.strategy in SINGLE_PROCESS_STRATEGIES:
            return 1
        devices = self.devices
        if isinstance(devices, (list, tuple)):
            per_node = len(devices)
        elif isinstance(devices, str) and "," in devices:
            per_node = len([d for d in devices.split(",") if d.strip()])
        elif isinstance(devices, int) and devices > 0:
            per_node = devices
        else:  # "auto" / -1: every GPU of the node, one process on a CPU
            per_node = _cuda_count() if self._uses_cuda() else 1
        return per_node * self.num_nodes

    @property
    def world_size(self) -> int:
        """Processes of the run: the launcher's ``WORLD_SIZE`` (torchrun, SLURM, Lightning's re-launch), the process
        group's size once it exists, else the processes Lightning will start (``devices × num_nodes``)."""
        if launched_by_environment():
            return int(os.environ["WORLD_SIZE"])
        if _process_group():
            return torch.distributed.get_world_size()
        return self.planned_processes

    @property
    def process_index(self) -> int:
        if _process_group():
            return torch.distributed.get_rank()
        if "RANK" in os.environ:
            return int(os.environ["RANK"])
        # Lightning's re-launched scripts get NODE_RANK and LOCAL_RANK only
        per_node = max(self.world_size // self.num_nodes, 1)
        return int(os.environ.get("NODE_RANK", "0")) * per_node + self.local_process_index

    @property
    def local_process_index(self) -> int:
        return int(os.environ.get("LOCAL_RANK", "0"))

    def for_saving(self) -> Self:
        """A copy for ``training_args.bin``: strategy / accelerator / precision objects by class name, since a live
        ``Strategy`` holds process groups and the model, which neither pickle nor belong in a checkpoint."""
        saved = copy.copy(self)
        for key in LIGHTNING_FIELDS:
            setattr(saved, key, describe(getattr(self, key)))
        return saved

    def _uses_cuda(self) -> bool:
        if self.use_cpu or self.accelerator == "cpu":
            return False
        return self.accelerator in ("auto", "cuda", "gpu") and _cuda_count() > 0


def _cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _process_group() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def launched_by_environment() -> bool:
    """Processes were started outside Lightning (torchrun, SLURM, Lightning's own re-launch, a test's ranks)."""
    return "WORLD_SIZE" in os.environ


def describe(value: Any) -> str:
    """A strategy or precision as it is written to ``training_args.bin`` / JSON: objects by their class name."""
    return value if value is None or isinstance(value, (str, int, float, list)) else type(value).__name__
