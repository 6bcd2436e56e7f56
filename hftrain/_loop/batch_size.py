"""``auto_find_batch_size`` that keeps the numbers: a smaller micro-batch, more accumulation, the same global batch.

transformers (accelerate's ``find_executable_batch_size``) retries an out-of-memory run with a 10 % smaller
per-device batch, which changes the global batch, the schedule and every number, and keeps the weights and the
optimizer state of the failed attempt. hftrain retries from the state the run started in (weights, optimizer and
scheduler states, RNG) with the next smaller divisor of ``per_device_train_batch_size`` as the micro-batch and the
gradient accumulation multiplied to match: the run equals a plain run with that micro-batch and that accumulation.
The micro-batch found is recorded as transformers records it (``state.train_batch_size``), so a resumed run
continues with it.

With several processes the processes agree at the start of each attempt, before any step: each runs the forward and
backward of its first window at the candidate micro-batch on the bare model (no collective inside), an all-reduce
tells whether it fitted everywhere, and if not every process retries with the smaller micro-batch, so one process's
out-of-memory shrinks all of them. (An out-of-memory on one process later in the run cannot be agreed on: the
others wait in a collective; that one stops the run.)
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hftrain._backends import ddp

_OUT_OF_MEMORY = (  # accelerate's should_reduce_batch_size messages
    " out of memory.", "MPS backend out of memory", "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED.",
    "DefaultCPUAllocator: can't allocate memory", "FATAL ERROR :: MODULE:PT_DEVMEM Allocation failed",
)


class OutOfMemoryOnSomeProcess(RuntimeError):
    """Raised on every process, at the start of training, when one of them cannot fit its first window."""


def is_out_of_memory(exc: BaseException) -> bool:
    """An exception a smaller batch may avoid (torch's ``OutOfMemoryError``, accelerate's messages)."""
    if isinstance(exc, (torch.OutOfMemoryError, OutOfMemoryOnSomeProcess)):
        return True
    return isinstance(exc, RuntimeError) and len(exc.args) == 1 and any(m in str(exc.args[0]) for m in _OUT_OF_MEMORY)


def smaller_micro_batch(per_device_batch: int, micro_batch: int) -> int | None:
    """The largest divisor of ``per_device_batch`` below ``micro_batch`` (None below 1).

    Example:
        >>> smaller_micro_batch(16, 16), smaller_micro_batch(12, 6), smaller_micro_batch(16, 1)
        (8, 4, None)
    """
    for candidate in range(micro_batch - 1, 0, -1):
        if per_device_batch % candidate == 0:
            return candidate
    return None


@dataclass
class Snapshot:
    """What a retry starts again from: the weights, the optimizer and scheduler states, the RNG."""

    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None
    scheduler: dict[str, Any] | None
    rng: tuple[Any, ...]

    @classmethod
    def take(cls, model: torch.nn.Module, optimizer: Any, scheduler: Any) -> Snapshot:
        weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        rng = (random.getstate(), np.random.get_state(), torch.random.get_rng_state(),
               torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
        return cls(weights, copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None,
                   copy.deepcopy(scheduler.state_dict()) if scheduler is not None else None, rng)

    def restore(self, model: torch.nn.Module, optimizer: Any, scheduler: Any) -> None:
        model.load_state_dict(self.weights)
        if optimizer is not None and self.optimizer is not None:
            optimizer.load_state_dict(self.optimizer)
        if scheduler is not None and self.scheduler is not None:
            scheduler.load_state_dict(self.scheduler)
        python, numpy, cpu, cuda = self.rng
        random.setstate(python)
        np.random.set_state(numpy)
        torch.random.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def fits_everywhere(trainer: Any, micro_batch: int) -> bool:
    """Whether every process can run the forward and backward of its first window at ``micro_batch`` (agreed by
    an all-reduce; the model, its gradients and the RNG are left as they were)."""
    oom = torch.zeros((), device=trainer.accelerator.device)
    loader = trainer.get_train_dataloader()
    model = trainer.model
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            for i, batch in enumerate(loader):
                if i == trainer.args.gradient_accumulation_steps:
                    break
                inputs = trainer._prepare_inputs(batch)
                with trainer.accelerator.autocast():
                    loss = trainer.compute_loss(model, inputs)
                loss.backward()
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        oom += 1
    finally:
        model.zero_grad(set_to_none=True)
        trainer.accelerator.free_memory()
    return not bool(ddp.all_reduce(oom, "max"))
