"""Datasets → DataLoaders the way HF's Trainer builds them.

HF's data semantics that decide parity live here: column removal against the model's ``forward`` signature,
the default collator choice, the seeded train order (epoch ``e`` is ``randperm(N, seed + e)``, independent of the
global RNG, like accelerate's ``SeedableRandomSampler``) and the accumulation windows whose label-token count HF
passes to the model as ``num_items_in_batch``.
"""

from __future__ import annotations

import collections
import inspect
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from itertools import islice
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, SequentialSampler
from transformers.data.data_collator import DataCollatorWithPadding, default_data_collator
from transformers.trainer_utils import RemoveColumnsCollator, seed_worker

from hftrain._backends.ddp import ShardedBatchSampler, all_reduce_sum, world_size

logger = logging.getLogger(__name__)


class SeededRandomSampler(Sampler[int]):
    """A random order that depends only on ``seed + epoch``, never on the global RNG.

    This is the order HF's Trainer trains in (accelerate's ``SeedableRandomSampler``), so dropout or any other
    consumer of the global RNG cannot change which samples are seen. Lightning calls :meth:`set_epoch`.

    Example:
        >>> sampler = SeededRandomSampler(range(4), seed=42)
        >>> sampler.set_epoch(1)
        >>> sorted(sampler) == [0, 1, 2, 3]
        True
    """

    def __init__(self, data_source: Any, seed: int) -> None:
        self.num_samples = len(data_source)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        yield from torch.randperm(self.num_samples, generator=generator).tolist()

    def __len__(self) -> int:
        return self.num_samples


def signature_columns(model: torch.nn.Module, label_names: list[str]) -> list[str]:
    """The input names HF keeps: the parameters of ``model.forward`` plus ``label``, ``label_ids`` and the labels."""
    columns = list(inspect.signature(model.forward).parameters)
    return columns + sorted({"label", "label_ids", *label_names} - set(columns))


def remove_unused_columns(dataset: Any, columns: list[str], model_name: str, description: str) -> Any:
    """Drop the columns of a ``datasets.Dataset`` that the model does not accept (HF's ``_remove_unused_columns``)."""
    ignored = [c for c in dataset.column_names if c not in columns]
    if not any(c in dataset.column_names for c in columns):
        raise ValueError(
            f"No columns in the dataset match the model's forward method signature: ({', '.join(columns)}). "
            f"The following columns have been ignored: [{', '.join(ignored)}]. Please check the dataset and model. "
            "You may need to set `remove_unused_columns=False` in `TrainingArguments`."
        )
    if ignored:
        logger.info(
            "The following columns in the %s set don't have a corresponding argument in `%s.forward` and have been "
            "ignored: %s.", description, model_name, ", ".join(ignored)
        )
    return dataset.remove_columns(ignored)


def default_collator(processing_class: Any) -> Callable:
    """HF's choice: pad with the tokenizer when one is given, else ``default_data_collator``."""
    if processing_class is not None and hasattr(processing_class, "pad"):
        return DataCollatorWithPadding(processing_class)
    return default_data_collator


def build_dataloader(
    dataset: Any,
    *,
    args: Any,
    batch_size: int,
    collate_fn: Callable,
    columns: list[str] | None,
    model_name: str,
    description: str,
    is_training: bool,
) -> DataLoader:
    """One DataLoader with HF's options; ``columns`` (or None to keep all) drive column removal."""
    if columns is not None:
        if _is_hf_dataset(dataset):
            dataset = remove_unused_columns(dataset, columns, model_name, description)
        else:
            collate_fn = RemoveColumnsCollator(collate_fn, columns, logger, model_name, description)
    params: dict[str, Any] = {
        "batch_size": batch_size,
        "collate_fn": collate_fn,
        "num_workers": args.dataloader_num_workers,
        # pinning only helps a CUDA copy; on a CPU-only machine torch warns about it
        "pin_memory": args.dataloader_pin_memory and torch.cuda.is_available(),
        "persistent_workers": args.dataloader_persistent_workers,
        "multiprocessing_context": args.dataloader_multiprocessing_context,
        "prefetch_factor": args.dataloader_prefetch_factor,
        "in_order": args.dataloader_in_order,
    }
    world = args.world_size  # the processes Lightning will start count too
    if isinstance(dataset, IterableDataset) and world > 1:
        raise ValueError(
            "An IterableDataset with several processes is not supported by hftrain yet: shard it yourself per "
            "rank (e.g. datasets' split_dataset_by_node) and pass a map-style dataset, or run one process."
        )
    if not isinstance(dataset, IterableDataset):
        sampler = _train_sampler(dataset, args) if is_training else SequentialSampler(dataset)
        if world > 1:  # the same global batches as one process; this rank takes its slice of each
            del params["batch_size"]
            params["batch_sampler"] = ShardedBatchSampler(
                sampler, batch_size, world, args.process_index, args.dataloader_drop_last, pad_empty=is_training
            )
        else:
            params["sampler"] = sampler
            params["drop_last"] = args.dataloader_drop_last
        if is_training:
            params["worker_init_fn"] = partial(
                seed_worker, num_workers=args.dataloader_num_workers, rank=args.process_index
            )
    return DataLoader(dataset, **params)


def _train_sampler(dataset: Dataset, args: Any) -> Sampler[int]:
    strategy = args.train_sampling_strategy
    if strategy == "sequential":
        return SequentialSampler(dataset)
    if strategy == "random":
        # HF: data_seed, else torch.initial_seed() at dataloader creation (= args.seed after set_seed)
        seed = args.data_seed if args.data_seed is not None else torch.initial_seed()
        return SeededRandomSampler(dataset, seed)
    raise ValueError(
        f"`train_sampling_strategy={strategy!r}` is not supported by hftrain yet; use 'random' or 'sequential'."
    )


def _is_hf_dataset(dataset: Any) -> bool:
    # a datasets.Dataset means `datasets` is imported already; importing it for a torch Dataset costs seconds
    datasets = sys.modules.get("datasets")
    return datasets is not None and isinstance(dataset, datasets.Dataset)


class AccumulationWindows:
    """Iterates a train DataLoader window by window, as HF's ``get_batch_samples`` does.

    HF fetches the ``gradient_accumulation_steps`` micro-batches of an optimizer step before running any of them,
    counts their label tokens and normalises every micro-batch loss by that window total. This wrapper does the
    same fetch and yields the micro-batches unchanged (plain dicts, so Lightning callbacks see the usual batch);
    the window's ``(num_items_in_batch, window_size)`` goes into :attr:`windows`, one entry per yielded batch, for
    the LightningModule to pop in ``training_step``.

    It also owns the epoch of the sampler (epoch ``e`` of a run is iteration ``e``, counted from ``start_epoch``
    on resume), so Lightning's own epoch bookkeeping cannot shift the data order, and it replays HF's resume:
    the first epoch skips ``skip_batches`` micro-batches of the same permutation, and ``restore_rng`` runs where HF
    restores the RNG states (before the iterator exists at an epoch boundary, after the first window otherwise).
    """

    def __init__(
        self,
        loader: DataLoader,
        accumulation_steps: int,
        count_items: Callable[[list], Any],
        *,
        start_epoch: int = 0,
        skip_batches: int = 0,
        restore_rng: Callable[[], None] | None = None,
        average_tokens_across_devices: bool = True,
    ) -> None:
        self.loader = loader
        self.accumulation_steps = accumulation_steps
        self.count_items = count_items
        self.epoch = start_epoch
        self.windows: collections.deque[WindowInfo] = collections.deque()
        self._skip, self._restore_rng = skip_batches, restore_rng
        self.average_tokens_across_devices = average_tokens_across_devices

    @property
    def dataset(self) -> Any:
        return self.loader.dataset

    # No __len__ on purpose: a resumed epoch is shorter than the loader, and Lightning, given a length, would
    # trust it over the iterator (it would not step on the real last batch). Unsized, it looks one batch ahead.

    def __iter__(self) -> Iterator[Any]:
        self.windows.clear()
        set_epoch(self.loader, self.epoch)
        self.epoch += 1
        skip, restore = self._skip, self._restore_rng
        self._skip, self._restore_rng = 0, None
        if restore is not None and not skip:
            restore()
            restore = None
        slices = getattr(getattr(self.loader, "batch_sampler", None), "slices", None)  # when sharded
        batches = iter(skip_first_batches(self.loader, skip) if skip else self.loader)
        while window := list(islice(batches, self.accumulation_steps)):
            if restore is not None:
                restore()
                restore = None
            if slices is not None and skip:
                for _ in range(skip):  # the skipped batches went through the sharded sampler too
                    slices.popleft()
                skip = 0
            parts = [slices.popleft() if slices is not None else None for _ in window]
            num_items = self._count(window, parts)
            for batch, part in zip(window, parts):
                self.windows.append(WindowInfo.of(num_items, len(window), part))
                yield batch

    def _count(self, window: list, parts: list) -> Any:
        """The window's label tokens over all processes; stand-in rows (weight 0) count for nothing."""
        if all(p is None for p in parts):
            return self.count_items(window)
        counts = [self.count_items([b]) for b in window]
        if any(c is None for c in counts):
            return None
        local = sum(c * int(p.rows > 0) for c, p in zip(counts, parts))
        if not self.average_tokens_across_devices:
            return local  # HF: each rank normalises by its own tokens; DDP averages the ranks' means
        return all_reduce_sum(local) / world_size()


@dataclass(frozen=True, slots=True)
class WindowInfo:
    """What the module needs to normalise one micro-batch's loss as HF (and one process) would."""

    num_items_in_batch: Any  # label tokens of the whole window, over all processes (None: not counted)
    window_size: int  # micro-batches in this optimizer step
    share: float = 1.0  # this rank's rows × world size / rows of the global batch (1 on one process)

    @classmethod
    def of(cls, num_items: Any, window_size: int, part: Any) -> WindowInfo:
        if part is None:
            return cls(num_items, window_size)
        return cls(num_items, window_size, part.rows * world_size() / part.global_rows)


def set_epoch(loader: Any, epoch: int) -> None:
    for obj in (getattr(loader, "batch_sampler", None), getattr(loader, "sampler", None)):
        if callable(getattr(obj, "set_epoch", None)):
            obj.set_epoch(epoch)


class _SkipBatchSampler:
    """The batches of ``batch_sampler`` after the first ``skip`` (indices only: nothing is loaded or collated)."""

    def __init__(self, batch_sampler: Any, skip: int) -> None:
        self.batch_sampler, self.skip = batch_sampler, skip

    def __iter__(self) -> Iterator[list[int]]:
        yield from islice(self.batch_sampler, self.skip, None)

    def __len__(self) -> int:
        return max(len(self.batch_sampler) - self.skip, 0)


def skip_first_batches(loader: DataLoader, skip: int) -> Any:
    """``loader`` without its first ``skip`` batches, in the same order (accelerate's ``skip_first_batches``)."""
    if loader.batch_sampler is None or isinstance(loader.dataset, IterableDataset):
        return islice(loader, skip, None)
    return DataLoader(
        loader.dataset, batch_sampler=_SkipBatchSampler(loader.batch_sampler, skip), collate_fn=loader.collate_fn,
        num_workers=loader.num_workers, pin_memory=loader.pin_memory, timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn, multiprocessing_context=loader.multiprocessing_context,
        generator=loader.generator, prefetch_factor=loader.prefetch_factor,
        persistent_workers=loader.persistent_workers, in_order=loader.in_order,
    )


def count_label_items(window: list, *, shift_labels: bool) -> torch.Tensor | None:
    """HF's ``num_items_in_batch``: the non-``-100`` labels of the whole window (``labels[..., 1:]`` for causal LMs)."""
    if not window or not isinstance(window[0], collections.abc.Mapping) or "labels" not in window[0]:
        return None
    try:
        counted = [
            b["shift_labels"] if "shift_labels" in b else b["labels"][..., 1:] if shift_labels else b["labels"]
            for b in window
        ]
        return sum(labels.ne(-100).sum() for labels in counted)
    except (TypeError, AttributeError):
        return None
