"""Data parallelism that does not change the numbers: the same global batches, whatever the number of processes.

Each optimizer step consumes the same ``per_device_batch_size × world_size`` samples of the same seeded
permutation as one process with the whole batch; rank ``r`` trains on the ``r``-th contiguous slice of every
global batch. Per-rank losses are weighted so that DDP's gradient average is the single-process loss exactly:
a mean-reduced loss by ``rows_on_this_rank × world_size / rows_in_the_global_batch``; a token-normalised loss gets
``num_items_in_batch`` = the window's token count over all ranks ÷ world size, so each rank's ``sum / (N / W)``
averages to the global ``sum / N`` (HF instead multiplies the loss by W, which also doubles the loss of models that
accept ``**kwargs`` but return a mean, e.g. ``BertForSequenceClassification``; on one process both are HF's number).
A rank whose slice of a short last batch is empty trains on a stand-in row with weight 0, so every rank still
takes part in every backward.

Evaluation shards the same way and gathers every piece with its first sample index and its global batch, so
metrics see each sample exactly once, in dataset order, and each batch's loss is the single-process batch loss
(rebuilt from the pieces' sums and weights).
"""

from __future__ import annotations

import atexit
import collections
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True, slots=True)
class Slice:
    """What one rank's micro-batch is within its global batch."""

    first_index: int  # position in the sampler order of the slice's first sample (orders gathered pieces)
    rows: int  # real rows on this rank (0: a stand-in row with weight 0)
    global_rows: int  # rows of the whole global batch
    batch_id: int = 0  # which global batch (one process: one batch) the slice belongs to


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class ShardedBatchSampler(Sampler[list[int]]):
    """Global batches of ``batch_size × world`` from ``sampler``; this rank's contiguous slice of each.

    :attr:`slices` receives one :class:`Slice` per yielded batch, in order, for the consumer of the batches.

    Example:
        >>> s = ShardedBatchSampler(range(10), batch_size=2, world=2, rank=1, drop_last=False, pad_empty=True)
        >>> list(s)
        [[2, 3], [6, 7], [9]]
    """

    # attribute names differ from torch's BatchSampler on purpose: Lightning would rebuild a look-alike for predict
    def __init__(self, sampler: Any, batch_size: int, world: int, rank: int, drop_last: bool, pad_empty: bool):
        self.sampler, self.rank_batch_size, self.world, self.rank = sampler, batch_size, world, rank
        self.drop_incomplete, self.pad_empty = drop_last, pad_empty
        self.slices: collections.deque[Slice] = collections.deque()

    def set_epoch(self, epoch: int) -> None:
        if callable(getattr(self.sampler, "set_epoch", None)):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        # a loader built before Lightning started the processes (fork / spawn) learns its rank here
        rank_now = rank() if world_size() == self.world > 1 else self.rank
        self.slices.clear()
        order = list(self.sampler)
        step = self.rank_batch_size * self.world
        for start in range(0, len(order), step):
            batch = order[start : start + step]
            if len(batch) < step and self.drop_incomplete:
                return
            per_rank = math.ceil(len(batch) / self.world)
            mine = batch[rank_now * per_rank : (rank_now + 1) * per_rank]
            if not mine and not self.pad_empty:
                continue
            self.slices.append(Slice(start + rank_now * per_rank, len(mine), len(batch), start // step))
            yield mine or batch[:1]

    def __len__(self) -> int:
        n, step = len(self.sampler), self.rank_batch_size * self.world
        return n // step if self.drop_incomplete else math.ceil(n / step)


def all_reduce(value: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """``value`` reduced over every process in place (``op``: "sum", "mean" or "max"); itself on one process."""
    if world_size() > 1:
        dist.all_reduce(value, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        if op == "mean":
            value /= world_size()
    return value


def all_gather(value: torch.Tensor) -> torch.Tensor:
    """Every process's ``value`` stacked along a new first dimension."""
    if world_size() == 1:
        return value[None]
    out = [torch.empty_like(value) for _ in range(world_size())]
    dist.all_gather(out, value.contiguous())
    return torch.stack(out)


def all_gather_objects(obj: Any) -> list[Any]:
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of process ``src``, on every process (itself on one process)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def destroy_process_group_at_exit() -> None:
    """Destroy the process group before the interpreter finalises, whatever its backend (once per process).

    Lightning registers this for NCCL only. A gloo group left alive holds work on its own threads, and their
    clean-up during interpreter finalisation can abort the process ("terminate called without an active
    exception", SIGABRT) after a run that succeeded: pytorch/pytorch#179291. Does nothing without a process group.
    """
    global _destroy_registered
    if dist.is_available() and dist.is_initialized() and not _destroy_registered:
        atexit.register(_destroy_process_group)
        _destroy_registered = True


_destroy_registered = False


def destroy_process_group() -> None:
    """End the process group, if there is one (HF's ``Trainer.end``)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


_destroy_process_group = destroy_process_group
