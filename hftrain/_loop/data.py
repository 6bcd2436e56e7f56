"""Datasets → DataLoaders: transformers' data seams, and what accelerate's ``prepare`` adds to them.

``get_train_dataloader`` → ``_get_dataloader`` → ``_get_train_sampler`` / ``_remove_unused_columns`` /
``_get_collator_with_removed_columns`` are the Trainer's methods, as in transformers, so overrides run. The loader
is then prepared as accelerate prepares it for transformers (:func:`prepare_dataloader`): a ``RandomSampler`` becomes
a seeded one (epoch ``e`` is ``randperm(N, seed + e)``, independent of the global RNG, like accelerate's
``SeedableRandomSampler``), and with several processes every process gets its slice of each global batch
(``ShardedBatchSampler``), so results do not depend on the number of processes.

A loader an override builds without ``self.accelerator.prepare`` is used as it is (as transformers does): any
iterable of batches works, each process iterating it whole.

For a plain ``datasets.Dataset`` and one of transformers' collators that ``fast_collate`` reproduces, the loader
``_get_dataloader`` builds reads each batch as Arrow columns and collates it in numpy (the same tensors, bit for
bit); a subclass overriding one of :data:`LOADER_SEAMS` keeps the rows → collator path.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterator
from functools import partial
from itertools import islice
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, RandomSampler, Sampler, SequentialSampler
from transformers.data.data_collator import DataCollatorWithPadding, default_data_collator
from transformers.trainer_pt_utils import BatchRebalanceSampler, LengthGroupedSampler
from transformers.trainer_utils import RemoveColumnsCollator, has_length, seed_worker

from hftrain._backends.ddp import ShardedBatchSampler
from hftrain._logging import trainer_logger
from hftrain._loop.overrides import overrides

logger = trainer_logger()

# a subclass overriding one of these builds or inspects loaders its own way: its loaders keep the rows → collator path
LOADER_SEAMS = ("get_train_dataloader", "get_eval_dataloader", "get_test_dataloader", "_get_dataloader",
                "_remove_unused_columns")


class SeededRandomSampler(Sampler[int]):
    """A random order that depends only on ``seed + epoch``, never on the global RNG.

    This is the order HF's Trainer trains in (accelerate's ``SeedableRandomSampler``), so dropout or any other
    consumer of the global RNG cannot change which samples are seen. The epoch iterator calls :meth:`set_epoch`.

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


def default_collator(processing_class: Any) -> Callable:
    """HF's choice: pad with the tokenizer (or feature extractor) when one is given, else ``default_data_collator``."""
    if processing_class is not None and hasattr(processing_class, "pad"):
        return DataCollatorWithPadding(processing_class)
    return default_data_collator


def is_hf_dataset(dataset: Any) -> bool:
    # a datasets.Dataset means `datasets` is imported already; importing it for a torch Dataset costs seconds
    datasets = sys.modules.get("datasets")
    return datasets is not None and isinstance(dataset, datasets.Dataset)


def prepare_dataloader(loader: DataLoader, args: Any, split_batches: bool = False, seedable: bool = True) -> DataLoader:
    """What ``accelerator.prepare`` does to a Trainer's loader: a seeded order for a ``RandomSampler``, and with
    several processes this process's slice of every global batch (the loader is rebuilt around them).

    ``split_batches`` (``accelerator_config``): the loader's batch is the global batch, split between the
    processes, instead of each process's. ``seedable=False`` keeps torch's ``RandomSampler`` (drawing from the
    global RNG) on one process; several processes always share the seeded order, so that their slices partition
    each global batch. The result has accelerate's ``total_batch_size`` (the global batch)."""
    prepared = _prepare(loader, args, split_batches, seedable)
    batch_size = getattr(loader, "batch_size", None)
    if batch_size is not None:
        prepared.total_batch_size = batch_size if split_batches else batch_size * args.world_size
    return prepared


def _prepare(loader: DataLoader, args: Any, split_batches: bool, seedable: bool) -> DataLoader:
    dataset = loader.dataset
    if isinstance(dataset, IterableDataset):
        if args.world_size > 1:
            raise ValueError(
                "An IterableDataset with several processes is not supported by hftrain yet: shard it yourself per "
                "rank (e.g. datasets' split_dataset_by_node) and pass a map-style dataset, or run one process."
            )
        return loader
    if loader.batch_sampler is None or isinstance(loader.batch_sampler, ShardedBatchSampler):
        return loader
    if isinstance(loader.batch_sampler, BatchRebalanceSampler):
        return loader  # already this process's groups of each step (as transformers, which neutralises sharding)
    custom_batches = type(loader.batch_sampler) is not torch.utils.data.BatchSampler
    if custom_batches and args.world_size > 1:
        raise ValueError(
            f"A batch sampler ({type(loader.batch_sampler).__name__}) with several processes is not supported by "
            "hftrain: give the loader a sampler (hftrain cuts every global batch into the processes' slices), or "
            "run one process."
        )
    sampler = loader.sampler
    seeded = type(sampler) is RandomSampler and getattr(sampler, "generator", None) is None and (
        seedable or args.world_size > 1)
    if seeded:  # accelerate's use_seedable_sampler: data_seed, else the seed set_seed gave torch
        sampler = SeededRandomSampler(dataset, args.data_seed if args.data_seed is not None else torch.initial_seed())
    if args.world_size == 1 and not seeded:
        return loader
    if args.world_size > 1 and not seeded and not isinstance(sampler, (SequentialSampler, SeededRandomSampler)):
        sampler = SharedOrder(sampler)  # e.g. group_by_length, drawing from the global RNG: the first process's order
    params = _loader_params(loader)
    if args.world_size > 1:  # the same global batches as one process; this process takes its slice of each
        # a training loader (seeded per worker) gives a process with nothing left a stand-in row of weight 0, so
        # that it still joins the backward; an evaluation loader gives it no batch
        training = loader.worker_init_fn is not None or not isinstance(sampler, SequentialSampler)
        batch_size = loader.batch_size
        if split_batches:
            if batch_size % args.world_size:
                raise ValueError(
                    f"`accelerator_config={{'split_batches': True}}` splits each batch between the {args.world_size} "
                    f"processes, so the batch size ({batch_size}) must be a multiple of {args.world_size}."
                )
            batch_size //= args.world_size
        params["batch_sampler"] = ShardedBatchSampler(
            sampler, batch_size, args.world_size, args.process_index, loader.drop_last, pad_empty=training
        )
    else:
        params.update(sampler=sampler, batch_size=loader.batch_size, drop_last=loader.drop_last)
    return DataLoader(dataset, **params)


class SharedOrder(Sampler[int]):
    """Every process iterates the first process's order of ``sampler`` (one that draws from the global RNG, such
    as ``LengthGroupedSampler``), so that the processes' slices partition each global batch. On one process it is
    the sampler's own order, so with a dropout-free model (the same RNG stream) it is one process's order."""

    def __init__(self, sampler: Sampler[int]) -> None:
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        if callable(getattr(self.sampler, "set_epoch", None)):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        from hftrain._backends.ddp import broadcast_object, rank

        order = list(self.sampler)  # every process draws, so its own RNG stream moves as on one process
        return iter(broadcast_object(order))

    def __len__(self) -> int:
        return len(self.sampler)


def _loader_params(loader: DataLoader) -> dict[str, Any]:
    return {
        "collate_fn": loader.collate_fn, "num_workers": loader.num_workers, "pin_memory": loader.pin_memory,
        "timeout": loader.timeout, "worker_init_fn": loader.worker_init_fn,
        "multiprocessing_context": loader.multiprocessing_context, "generator": loader.generator,
        "prefetch_factor": loader.prefetch_factor, "persistent_workers": loader.persistent_workers,
        "in_order": loader.in_order,
    }


class DataMethods:
    """transformers.Trainer's data methods."""

    def get_train_dataloader(self) -> DataLoader:
        """The training loader (seeded random order; this process's slice of each batch with several)."""
        if self.train_dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        return self._get_dataloader(
            dataset=self.train_dataset, description="Training", batch_size=self._train_batch_size,
            sampler_fn=self._get_train_sampler, is_training=True,
        )

    def get_resumed_dataloader(self, dataloader: DataLoader, num_batches: int) -> DataLoader:
        """``dataloader`` without its first ``num_batches`` batches, for a run resumed mid-epoch (in the same order;
        accelerate's ``skip_first_batches``). Override it for a stateful or streaming loader that skips itself."""
        return skip_first_batches(dataloader, num_batches)

    def get_eval_dataloader(self, eval_dataset: str | Dataset | None = None) -> DataLoader:
        """The evaluation loader of ``eval_dataset`` (a name of ``self.eval_dataset``, a dataset, or the default)."""
        if eval_dataset is None and self.eval_dataset is None:
            raise ValueError("Trainer: evaluation requires an eval_dataset.")
        dataloader_key = eval_dataset if isinstance(eval_dataset, str) else "eval"
        if dataloader_key in self._eval_dataloaders and self.args.dataloader_persistent_workers:
            return self._eval_dataloaders[dataloader_key]
        eval_dataset = (
            self.eval_dataset[eval_dataset] if isinstance(eval_dataset, str)
            else eval_dataset if eval_dataset is not None else self.eval_dataset
        )
        return self._get_dataloader(
            dataset=eval_dataset, description="Evaluation", batch_size=self.args.eval_batch_size,
            sampler_fn=self._get_eval_sampler, dataloader_key=dataloader_key,
        )

    def get_test_dataloader(self, test_dataset: Dataset) -> DataLoader:
        """The loader ``predict()`` runs over."""
        return self._get_dataloader(
            dataset=test_dataset, description="test", batch_size=self.args.eval_batch_size,
            sampler_fn=self._get_eval_sampler,
        )

    def num_examples(self, dataloader: DataLoader) -> int:
        """The samples behind ``dataloader`` (its dataset's length, else batches × batch size)."""
        try:
            return len(dataloader.dataset)
        except (NameError, AttributeError, TypeError):
            return len(dataloader) * self.args.per_device_train_batch_size

    def _get_dataloader(
        self, dataset: Dataset, description: str, batch_size: int,
        sampler_fn: Callable[[Dataset], Sampler] | None = None, is_training: bool = False,
        dataloader_key: str | None = None,
    ) -> DataLoader:
        """A DataLoader with the arguments' options, prepared as accelerate prepares transformers' loaders."""
        data_collator = self.data_collator
        if is_hf_dataset(dataset):
            dataset = self._remove_unused_columns(dataset, description=description)
        else:
            data_collator = self._get_collator_with_removed_columns(self.data_collator, description=description)
        params: dict[str, Any] = {
            "batch_size": batch_size,
            "collate_fn": data_collator,
            "num_workers": self.args.dataloader_num_workers,
            # pinning only helps a CUDA copy; on a CPU-only machine torch warns about it
            "pin_memory": self.args.dataloader_pin_memory and torch.cuda.is_available(),
            "persistent_workers": self.args.dataloader_persistent_workers,
            "multiprocessing_context": self.args.dataloader_multiprocessing_context,
            "prefetch_factor": self.args.dataloader_prefetch_factor,
            "in_order": self.args.dataloader_in_order,
        }
        if not isinstance(dataset, IterableDataset):
            sampler = sampler_fn(dataset) if sampler_fn is not None else None
            if isinstance(sampler, BatchRebalanceSampler):
                params.pop("batch_size", None)
                params["batch_sampler"] = sampler
            else:
                if sampler is not None:
                    params["sampler"] = sampler
                params["drop_last"] = self.args.dataloader_drop_last
            if is_training:
                params["worker_init_fn"] = partial(
                    seed_worker, num_workers=self.args.dataloader_num_workers, rank=self.args.process_index
                )
        if batch_size is not None and is_hf_dataset(dataset) and not any(overrides(self, m) for m in LOADER_SEAMS):
            from hftrain._loop.fast_collate import columnar_batches  # pyarrow: imported by `datasets` already

            # a known HF collator on a plain datasets.Dataset: each batch read as columns and collated in numpy
            dataset, params["collate_fn"] = columnar_batches(dataset, data_collator)
        dataloader = self.accelerator.prepare(DataLoader(dataset, **params))
        if dataloader_key is not None and self.args.dataloader_persistent_workers:
            self._eval_dataloaders[dataloader_key] = dataloader
        return dataloader

    def _get_train_sampler(self, train_dataset: Dataset | None = None) -> Sampler | None:
        """The training order for ``train_sampling_strategy`` (random, sequential, group_by_length, batch_rebalance)."""
        if train_dataset is None:
            train_dataset = self.train_dataset
        if train_dataset is None or not has_length(train_dataset):
            return None
        strategy = self.args.train_sampling_strategy
        if strategy == "group_by_length":  # grouped per global batch: the order does not depend on the processes
            return LengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps * max(self.args.world_size, 1),
                dataset=train_dataset,
                lengths=self._length_column(train_dataset), model_input_name=self._model_input_name(),
            )
        if strategy == "batch_rebalance":
            lengths = self._length_column(train_dataset)
            if lengths is None:
                name = self._model_input_name() or "input_ids"
                if not isinstance(train_dataset[0], dict) or name not in train_dataset[0]:
                    raise ValueError(
                        "Can only automatically infer lengths for datasets whose items are dictionaries with an "
                        f"'{name}' key."
                    )
                lengths = [len(feature[name]) for feature in train_dataset]
            world, accumulation = max(1, self.args.world_size), self.args.gradient_accumulation_steps
            return BatchRebalanceSampler(
                lengths=list(lengths), effective_batch_size=self.args.train_batch_size * accumulation * world,
                dp_size=world, grad_accum=accumulation, rank=self.args.process_index if world > 1 else 0,
                drop_last=self.args.dataloader_drop_last,
            )
        if strategy == "sequential":
            return SequentialSampler(train_dataset)
        return RandomSampler(train_dataset)

    def _length_column(self, dataset: Any) -> Any:
        if is_hf_dataset(dataset) and self.args.length_column_name in dataset.column_names:
            return dataset[self.args.length_column_name]
        return None

    def _model_input_name(self) -> str | None:
        names = getattr(self.processing_class, "model_input_names", None)
        return names[0] if names else None

    def _get_eval_sampler(self, eval_dataset: Dataset) -> Sampler | None:
        """Evaluation runs in dataset order (grouped by length, with a fixed seed, for ``group_by_length``)."""
        if eval_dataset is None or not has_length(eval_dataset):
            return None
        if self.args.train_sampling_strategy == "group_by_length":
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return LengthGroupedSampler(
                self.args.eval_batch_size * max(self.args.world_size, 1), dataset=eval_dataset,
                lengths=self._length_column(eval_dataset),
                model_input_name=self._model_input_name(), generator=torch.Generator().manual_seed(seed),
            )
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None

    def _set_signature_columns_if_needed(self) -> None:
        """The input names kept: the parameters of ``model.forward``, ``label``, ``label_ids`` and the labels."""
        if self._signature_columns is None:
            model_to_inspect = self.model
            if hasattr(self.model, "get_base_model"):  # a PEFT model
                model_to_inspect = self.model.get_base_model()
            self._signature_columns = list(inspect.signature(model_to_inspect.forward).parameters.keys())
            self._signature_columns += list(set(["label", "label_ids"] + self.label_names))

    def _remove_unused_columns(self, dataset: Any, description: str | None = None) -> Any:
        """A ``datasets.Dataset`` without the columns ``model.forward`` does not take."""
        if not self.args.remove_unused_columns:
            return dataset
        self._set_signature_columns_if_needed()
        signature_columns = self._signature_columns
        ignored_columns = list(set(dataset.column_names) - set(signature_columns))
        if len(ignored_columns) > 0:
            dset_description = "" if description is None else f"in the {description} set"
            logger.info(
                f"The following columns {dset_description} don't have a corresponding argument in "
                f"`{self.model.__class__.__name__}.forward` and have been ignored: {', '.join(ignored_columns)}."
                f" If {', '.join(ignored_columns)} are not expected by `{self.model.__class__.__name__}.forward`, "
                " you can safely ignore this message."
            )
        columns = [k for k in signature_columns if k in dataset.column_names]
        if len(columns) == 0:
            raise ValueError(
                "No columns in the dataset match the model's forward method signature: "
                f"({', '.join(signature_columns)}). The following columns have been ignored: "
                f"[{', '.join(ignored_columns)}]. Please check the dataset and model. You may need to set "
                "`remove_unused_columns=False` in `TrainingArguments`."
            )
        return dataset.remove_columns(ignored_columns)

    def _get_collator_with_removed_columns(self, data_collator: Callable, description: str | None = None) -> Callable:
        """``data_collator`` dropping the features ``model.forward`` does not take (for non-``datasets`` data)."""
        if not self.args.remove_unused_columns:
            return data_collator
        self._set_signature_columns_if_needed()
        return RemoveColumnsCollator(
            data_collator=data_collator, signature_columns=self._signature_columns, logger=logger,
            description=description, model_name=self.model.__class__.__name__,
        )


def set_epoch(loader: Any, epoch: int) -> None:
    """Tell the loader's sampler(s) which epoch starts (the seeded order depends on it)."""
    if callable(getattr(loader, "set_epoch", None)):
        loader.set_epoch(epoch)
    for obj in (getattr(loader, "batch_sampler", None), getattr(loader, "sampler", None)):
        if callable(getattr(obj, "set_epoch", None)):
            obj.set_epoch(epoch)


class _SkipBatchSampler:
    """The batches of ``batch_sampler`` after the first ``skip`` (indices only: nothing is loaded or collated). Over
    a sharded sampler the skipped batches' :class:`Slice` records are dropped too, so that its ``slices`` are those
    of the batches this one yields."""

    def __init__(self, batch_sampler: Any, skip: int) -> None:
        self.batch_sampler, self.skip = batch_sampler, skip

    @property
    def slices(self) -> Any:
        return getattr(self.batch_sampler, "slices", None)

    def __iter__(self) -> Iterator[list[int]]:
        batches, slices = iter(self.batch_sampler), self.slices
        for _ in islice(batches, self.skip):
            if slices is not None:
                slices.popleft()
        yield from batches

    def __len__(self) -> int:
        return max(len(self.batch_sampler) - self.skip, 0)


def skip_first_batches(loader: Any, skip: int) -> Any:
    """``loader`` without its first ``skip`` batches, in the same order (accelerate's ``skip_first_batches``)."""
    if not isinstance(loader, DataLoader) or loader.batch_sampler is None or isinstance(loader.dataset, IterableDataset):
        return islice(loader, skip, None)
    return DataLoader(loader.dataset, batch_sampler=_SkipBatchSampler(loader.batch_sampler, skip),
                      **_loader_params(loader))
