"""Columnar batches: a ``datasets.Dataset`` batch read in one Arrow take and collated in numpy (issue 17).

On every step transformers' data path turns the batch's Arrow rows into Python dicts (``Dataset.__getitems__``), and
the collator turns the dicts back into tensors (``DataCollatorWithPadding`` pads row by row in ``tokenizer.pad``).
When the dataset is a plain ``datasets.Dataset`` and the collator is exactly one of transformers' collators that this
module reproduces, ``_get_dataloader`` gives the DataLoader a :class:`ColumnarDataset` instead: torch's fetcher calls
its ``__getitems__`` with the batch's indices, which takes the needed columns of those rows in one Arrow ``take`` and
builds the collator's tensors from the list offsets and values, padding in numpy. The sampler, the order and every
other part of the loader are unchanged; the loader's ``collate_fn`` is :func:`already_collated`.

Reproduced exactly (the same tensors, dtypes, key order and container; ``tests/unit/test_fast_collate.py`` compares
them with the collators' own on randomised datasets):

* ``DataCollatorWithPadding(tokenizer)`` (``return_tensors="pt"``): every ``padding`` / ``max_length`` /
  ``pad_to_multiple_of``, the tokenizer's ``padding_side``, its pad values (``pad_token_id``, ``pad_token_type_id``,
  0 for ``attention_mask``, 1 for ``special_tokens_mask``), the attention mask it creates, ``label`` / ``label_ids``
  renamed ``labels``; the result is a ``BatchEncoding``;
* ``default_data_collator`` and ``DefaultDataCollator()``: ``labels`` first (long for integer labels, float32
  otherwise), string columns dropped; the result is a ``dict``;
* ``DataCollatorForLanguageModeling(tokenizer, mlm=False)`` without a ``seed``: ``tokenizer.pad``, then the labels
  (``input_ids`` with the pad token set to -100). Collators that draw random numbers (MLM) are never reproduced.

Everything else keeps the original path: other datasets (a format or transform set, a subclass, an
``IterableDataset``), other collators (subclasses included), tokenizers overriding ``pad`` / ``_pad``, columns of
other types (nested lists, structs, strings but for ``default_data_collator``, which drops them, features that
decode). And batch by batch, a batch holding something this module does not reproduce (nulls, a ragged column the
collator would refuse, a float default dtype other than float32 / float64, …) is fetched and collated as the original
does, so its errors and warnings are the collator's own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import Dataset
from transformers.data.data_collator import (
    DataCollatorForLanguageModeling, DataCollatorWithPadding, DefaultDataCollator, default_data_collator,
)
from transformers.tokenization_utils_base import BatchEncoding, PreTrainedTokenizerBase
from transformers.utils import PaddingStrategy

# the keys tokenizer.pad pads besides the main input (the main input is padded with pad_token_id)
_PADDED_KEYS = ("attention_mask", "token_type_ids", "special_tokens_mask")
# a tokenizer overriding one of these pads its own way: its batches keep the original path
_PAD_METHODS = ("pad", "_pad", "_get_padding_truncation_strategies")
_SCALARS = ("int", "float", "bool")


def columnar_batches(dataset: Any, collate_fn: Callable) -> tuple[Any, Callable]:
    """The DataLoader's ``(dataset, collate_fn)``: ``(ColumnarDataset, already_collated)`` when this module
    reproduces ``collate_fn`` on ``dataset``'s columns, else the two unchanged.

    Example:
        >>> import datasets
        >>> from transformers import default_data_collator
        >>> rows = datasets.Dataset.from_dict({"input_ids": [[1, 2], [3, 4]], "label": [0, 1]})
        >>> dataset, collate = columnar_batches(rows, default_data_collator)
        >>> type(dataset).__name__, collate(dataset.__getitems__([1, 0]))["labels"]
        ('ColumnarDataset', tensor([1, 0]))
    """
    kinds = column_kinds(dataset, collate_fn)
    if kinds is None:
        return dataset, collate_fn
    return ColumnarDataset(dataset, collate_fn, kinds), already_collated


def already_collated(batch: Any) -> Any:
    """The collate_fn of a loader over a :class:`ColumnarDataset`, whose ``__getitems__`` returns the batch."""
    return batch


class ColumnarDataset(Dataset):
    """``dataset`` whose ``__getitems__`` returns ``collate_fn``'s batch of the rows, built from Arrow columns.

    Indexing one row and the attributes of ``dataset`` (``column_names``, ``features``…) pass through to it. A batch
    this module does not reproduce is fetched and collated as the original path does.
    """

    def __init__(self, dataset: Any, collate_fn: Callable, kinds: dict[str, str]) -> None:
        self.dataset, self.collate_fn, self.kinds = dataset, collate_fn, kinds

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: Any) -> Any:
        return self.dataset[index]

    def __getitems__(self, indices: Sequence[int]) -> Any:
        batch, size = None, len(self.dataset)
        if indices and all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) and 0 <= i < size
                           for i in indices):
            batch = collate_columns(take_columns(self.dataset, indices, list(self.kinds)), self.kinds,
                                    self.collate_fn)
        return batch if batch is not None else self.collate_fn(self.dataset.__getitems__(indices))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or "dataset" not in self.__dict__:  # unpickling looks up __setstate__ first
            raise AttributeError(name)
        return getattr(self.dataset, name)


# ---- which datasets and collators --------------------------------------------------------------------------------
def column_kinds(dataset: Any, collate_fn: Callable) -> dict[str, str] | None:
    """The columns a batch needs, in the dataset's order, each ``"int"`` / ``"float"`` / ``"bool"`` or
    ``"list:<that>"``; None when the dataset or the collator is not one this module reproduces."""
    import datasets
    from datasets.features.features import require_decoding

    # a plain Dataset (no subclass), whose row mapping take_columns reads (None: the table's own order)
    if type(dataset) is not datasets.Dataset or not isinstance(getattr(dataset, "_indices", 0),
                                                               (type(None), datasets.table.Table)):
        return None
    if not isinstance(getattr(dataset.data, "table", None), pa.Table):  # the Arrow table take_columns reads
        return None
    fmt = dataset.format  # no format, transform or column selection: __getitems__ gives every column as Python
    if fmt["type"] is not None or fmt["format_kwargs"] or fmt["output_all_columns"] or (
            fmt["columns"] != dataset.column_names):
        return None
    kind = _collator_kind(collate_fn)
    if kind is None or any(require_decoding(feature) for feature in dataset.features.values()):
        return None
    kinds = {field.name: _arrow_kind(field.type) for field in dataset.data.schema}
    if list(kinds) != dataset.column_names:
        return None
    if kind == "default":  # default_data_collator drops strings; its labels are scalars (label) or lists (label_ids)
        kinds = {name: k for name, k in kinds.items() if k != "str"}
        if "label" in kinds and kinds["label"] not in _SCALARS:
            return None
        if "label" not in kinds and "label_ids" in kinds and not str(kinds["label_ids"]).startswith("list:"):
            return None
    return kinds if all(k is not None and k != "str" for k in kinds.values()) else None


def _collator_kind(collate_fn: Callable) -> str | None:
    if collate_fn is default_data_collator:
        return "default"
    if getattr(collate_fn, "return_tensors", None) != "pt":
        return None
    if type(collate_fn) is DefaultDataCollator:
        return "default"
    if type(collate_fn) is DataCollatorForLanguageModeling and (collate_fn.mlm or collate_fn.seed is not None):
        return None  # masking draws random numbers; a seed makes the collator build a generator
    if type(collate_fn) in (DataCollatorWithPadding, DataCollatorForLanguageModeling) and _pads_as_transformers(
        collate_fn.tokenizer
    ):
        return "pad"
    return None


def _pads_as_transformers(tokenizer: Any) -> bool:
    return isinstance(tokenizer, PreTrainedTokenizerBase) and all(
        getattr(type(tokenizer), name) is getattr(PreTrainedTokenizerBase, name) and name not in vars(tokenizer)
        for name in _PAD_METHODS
    )


def _arrow_kind(dtype: pa.DataType) -> str | None:
    if pa.types.is_integer(dtype):
        return None if pa.types.is_uint64(dtype) else "int"  # uint64 may not fit torch's int64
    if pa.types.is_floating(dtype):
        return "float"
    if pa.types.is_boolean(dtype):
        return "bool"
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "str"
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype) or pa.types.is_fixed_size_list(dtype):
        inner = _arrow_kind(dtype.value_type)
        return f"list:{inner}" if inner in _SCALARS else None
    return None


# ---- one batch ---------------------------------------------------------------------------------------------------
def take_columns(dataset: Any, indices: Sequence[int], names: list[str]) -> dict[str, pa.Array]:
    """Columns ``names`` of rows ``indices`` of ``dataset`` (through its indices mapping, as ``dataset[indices]``)."""
    rows = pa.array(indices, type=pa.int64())
    if dataset._indices is not None:  # select / filter / shuffle: row i of the dataset is row _indices[i] of the table
        rows = dataset._indices.column(0).take(rows)
    table = dataset.data.table.select(names).take(rows)
    return {name: table.column(name).combine_chunks() for name in names}


def collate_columns(columns: dict[str, pa.Array], kinds: dict[str, str], collate_fn: Callable) -> Any:
    """``collate_fn``'s batch of the rows whose ``columns`` these are; None when this batch is not reproduced."""
    kind = _collator_kind(collate_fn)  # again at each batch: the collator's fields may have changed since the plan
    if kind is None or any(column.null_count for column in columns.values()):
        return None
    if kind == "default":
        return default_collate(columns, kinds)
    tokenizer = collate_fn.tokenizer
    if type(collate_fn) is DataCollatorWithPadding:
        batch = pad(columns, kinds, tokenizer, collate_fn.padding, collate_fn.max_length,
                    collate_fn.pad_to_multiple_of)
        if batch is not None:  # as DataCollatorWithPadding renames them
            if "label" in batch:
                batch["labels"] = batch["label"]
                del batch["label"]
            if "label_ids" in batch:
                batch["labels"] = batch["label_ids"]
                del batch["label_ids"]
        return batch
    batch = pad(columns, kinds, tokenizer, True, None, collate_fn.pad_to_multiple_of)
    if batch is not None:  # as DataCollatorForLanguageModeling(mlm=False) makes its labels
        batch.pop("special_tokens_mask", None)
        batch.pop("offset_mapping", None)
        labels = batch["input_ids"].clone()
        if tokenizer.pad_token_id is not None:
            labels[labels == tokenizer.pad_token_id] = -100
        batch["labels"] = labels
    return batch


def pad(
    columns: dict[str, pa.Array], kinds: dict[str, str], tokenizer: Any, padding: Any, max_length: int | None,
    pad_to_multiple_of: int | None,
) -> BatchEncoding | None:
    """``tokenizer.pad(rows, padding, max_length, pad_to_multiple_of, return_tensors="pt")`` of the rows whose
    ``columns`` these are, or None where it is not reproduced (then the original raises, or pads otherwise)."""
    main = tokenizer.model_input_names[0]
    if kinds.get(main) != "list:int" or main in _PADDED_KEYS:
        return None
    ids, lengths = _parts(columns[main])
    if ids is None or (pad_to_multiple_of is not None and not (
            type(pad_to_multiple_of) is int and pad_to_multiple_of > 0)):
        return None
    try:  # the strategy as tokenizer.pad works it out (its warnings are given below, once the batch is built)
        strategy, _, target, _ = tokenizer._get_padding_truncation_strategies(
            padding=padding, max_length=max_length, verbose=False
        )
    except Exception:  # noqa: BLE001 - e.g. no pad token: the original path raises it, after its warnings
        return None
    if strategy == PaddingStrategy.LONGEST:
        target, strategy = int(lengths.max()), PaddingStrategy.MAX_LENGTH
    if target is not None and pad_to_multiple_of is not None and (target % pad_to_multiple_of != 0):
        target = ((target // pad_to_multiple_of) + 1) * pad_to_multiple_of
    padded = strategy != PaddingStrategy.DO_NOT_PAD
    if padded and type(target) is not int:
        return None
    widths = np.maximum(lengths, target) if padded else lengths  # a longer row stays as it is
    if widths.min() != widths.max() or widths[0] == 0:
        return None  # rows of different lengths: the original's tensor conversion raises
    width = int(widths[0])
    needs_padding = bool((lengths != width).any())
    left = tokenizer.padding_side == "left"
    if needs_padding and tokenizer.padding_side not in ("left", "right"):
        return None
    with_mask = "attention_mask" in tokenizer.model_input_names
    data: dict[str, np.ndarray | None] = {}
    for name, kind in kinds.items():
        if name == main:
            data[name] = _pad_rows(ids, lengths, width, tokenizer.pad_token_id if needs_padding else 0, left)
        elif name in ("token_type_ids", "special_tokens_mask") or (name == "attention_mask" and with_mask):
            values, row_lengths = _parts(columns[name]) if kind == "list:int" else (None, None)
            if values is None or not np.array_equal(row_lengths, lengths):
                return None
            value = tokenizer.pad_token_type_id if name == "token_type_ids" and needs_padding else (
                1 if name == "special_tokens_mask" else 0)
            data[name] = _pad_rows(values, lengths, width, value, left)
        else:
            data[name] = _dense(columns[name], kind)
    if with_mask and "attention_mask" not in kinds:  # tokenizer.pad creates it, after the row's own keys
        data["attention_mask"] = _pad_rows(np.ones(len(ids), np.int64), lengths, width, 0, left)
    if any(value is None for value in data.values()):
        return None
    # reproduced: now the warnings tokenizer.pad gives (e.g. that max_length is ignored with padding=True)
    tokenizer._get_padding_truncation_strategies(padding=padding, max_length=max_length, verbose=True)
    return BatchEncoding({name: torch.from_numpy(value) for name, value in data.items()}, tensor_type="pt")


def default_collate(columns: dict[str, pa.Array], kinds: dict[str, str]) -> dict[str, torch.Tensor] | None:
    """``default_data_collator(rows)`` of the rows whose ``columns`` these are, or None where not reproduced."""
    data: dict[str, np.ndarray | None] = {}
    if "label" in kinds:  # an integer (or bool) label is long, any other float32
        data["labels"] = _dense(columns["label"], kinds["label"], np.float32 if kinds["label"] == "float" else np.int64)
    elif "label_ids" in kinds:  # the first row's first label decides
        if pc.list_value_length(columns["label_ids"])[0].as_py() == 0:
            return None  # the original raises an IndexError
        data["labels"] = _dense(columns["label_ids"], kinds["label_ids"],
                                np.int64 if kinds["label_ids"] != "list:float" else np.float32)
    for name, kind in kinds.items():
        if name not in ("label", "label_ids"):
            data[name] = _dense(columns[name], kind)
    if any(value is None for value in data.values()):
        return None
    return {name: torch.from_numpy(value) for name, value in data.items()}


# ---- numpy -------------------------------------------------------------------------------------------------------
def _parts(column: pa.Array) -> tuple[np.ndarray | None, np.ndarray]:
    """A list column's values, one row after another, and its rows' lengths (values None with nulls inside)."""
    if pa.types.is_fixed_size_list(column.type):
        values, lengths = column.flatten(), np.full(len(column), column.type.list_size, dtype=np.int64)
    else:  # the offsets of this (sliced) array into its values
        offsets = column.offsets.to_numpy()
        values, lengths = column.values.slice(offsets[0], offsets[-1] - offsets[0]), offsets[1:] - offsets[:-1]
    return (None if values.null_count else values.to_numpy(zero_copy_only=False)), lengths


def _pad_rows(values: np.ndarray, lengths: np.ndarray, width: int, pad_value: Any, left: bool) -> np.ndarray | None:
    """int64 rows of ``width``: each row's values, padded on the left or right with ``pad_value``."""
    if not isinstance(pad_value, int):
        return None  # e.g. no pad token id: the original's tensor conversion raises
    out = np.full((len(lengths), width), pad_value, dtype=np.int64)
    positions = np.arange(width)
    out[positions >= (width - lengths)[:, None] if left else positions < lengths[:, None]] = values
    return out


def _dense(column: pa.Array, kind: str, dtype: Any = None) -> np.ndarray | None:
    """``torch.tensor(values, dtype=dtype)`` of the column's Python values, as a fresh numpy array: one value per
    row, or rows of equal, non-zero length (None otherwise). Without ``dtype``, as torch infers it: integers int64,
    bools bool, floats the default dtype."""
    if kind.startswith("list:"):
        values, lengths = _parts(column)
        if values is None or lengths.min() != lengths.max() or lengths[0] == 0:
            return None
        values = values.reshape(len(lengths), int(lengths[0]))
    else:
        values = column.to_numpy(zero_copy_only=False)
    if dtype is None:
        dtype = {"int": np.int64, "bool": np.bool_}.get(kind.removeprefix("list:")) or _default_float()
    if dtype is None:
        return None
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf, as torch.tensor makes it
        return values.astype(dtype)  # always a copy: the tensor must not share the Arrow buffers


def _default_float() -> Any:
    """torch.tensor's dtype for Python floats (None: one numpy cannot give exactly, such as bfloat16)."""
    return {torch.float32: np.float32, torch.float64: np.float64}.get(torch.get_default_dtype())
