"""Columnar batches (hftrain/_loop/fast_collate.py) against transformers' collators, bit for bit.

Each test draws randomised ``datasets.Dataset`` s (variable lengths, each padded key present or not, labels int /
float / bool / lists, several Arrow types, an indices mapping) and compares, batch by batch, what the collator makes
of ``dataset.__getitems__(indices)`` with what ``ColumnarDataset.__getitems__(indices)`` returns: the same container
type, keys in the same order, and for each key the same dtype, shape, strides and values; the same warnings; and
where the collator raises, the same exception. It also counts the batches built from columns, so that a fast path
silently not taken fails.
"""

from __future__ import annotations

import dataclasses
import pickle
import warnings
import zlib
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pytest
import torch
from transformers import (
    DataCollatorForLanguageModeling, DataCollatorForSeq2Seq, DataCollatorForTokenClassification,
    DataCollatorWithPadding, DefaultDataCollator, default_data_collator,
)
from transformers.tokenization_utils_base import BatchEncoding
from transformers.trainer_utils import RemoveColumnsCollator

from hftrain._loop.fast_collate import (
    ColumnarDataset, already_collated, collate_columns, column_kinds, columnar_batches, take_columns,
)
from tests.helpers import word_tokenizer


def tokenizer(padding_side: str = "right", with_mask: bool = True, model_max_length: int | None = None) -> Any:
    tok = word_tokenizer()
    tok.padding_side = padding_side
    if not with_mask:
        tok.model_input_names = [name for name in tok.model_input_names if name != "attention_mask"]
    if model_max_length is not None:
        tok.model_max_length = model_max_length
    return tok


def ragged(rng: np.random.Generator, lengths: np.ndarray, low: int, high: int) -> list[list[int]]:
    return [rng.integers(low, high, int(n)).tolist() for n in lengths]


def random_dataset(rng: np.random.Generator, n: int = 40, *, min_len: int = 1, max_len: int = 12,
                   keys: tuple[str, ...] = ("attention_mask",), label: str | None = "int", ids_type: Any = pa.int64(),
                   list_type: Any = pa.list_, extra: bool = True, mapping: bool = True) -> datasets.Dataset:
    """A tokenized dataset: input_ids of random lengths, the padded ``keys``, a ``label`` of the given kind and
    (``extra``) columns the collators do not pad: a float64 weight (rounded to float32 by torch), a fixed-length
    int list, an int8 and a bool; (``mapping``) seen through an indices mapping, as after ``select`` / ``filter``."""
    lengths = rng.integers(min_len, max_len + 1, n)
    ids = ragged(rng, lengths, 3, 60)
    columns: dict[str, pa.Array] = {"input_ids": pa.array(ids, type=list_type(ids_type))}
    for key in keys:
        values = {"attention_mask": [[1] * len(r) for r in ids], "token_type_ids": ragged(rng, lengths, 0, 2),
                  "special_tokens_mask": ragged(rng, lengths, 0, 2)}[key]
        columns[key] = pa.array(values, type=list_type(pa.int8() if key != "attention_mask" else pa.int64()))
    if label == "int":
        columns["label"] = pa.array(rng.integers(0, 3, n), type=pa.int64())
    elif label == "float":
        columns["label"] = pa.array(rng.normal(size=n), type=pa.float64())
    elif label == "float32":
        columns["label"] = pa.array(rng.normal(size=n).astype(np.float32), type=pa.float32())
    elif label == "bool":
        columns["label"] = pa.array(rng.integers(0, 2, n).astype(bool))
    elif label == "label_ids":
        columns["label_ids"] = pa.array(rng.integers(-100, 5, (n, 3)).tolist(), type=pa.list_(pa.int32()))
    elif label == "label_ids_float":
        columns["label_ids"] = pa.array(rng.normal(size=(n, 3)).tolist(), type=pa.list_(pa.float64()))
    elif label == "labels_multi":
        columns["labels"] = pa.array(rng.integers(0, 2, (n, 4)).astype(float).tolist(), type=pa.list_(pa.float32()))
    if extra:
        weights = rng.normal(size=n) * 10.0 ** rng.integers(-40, 40, n)  # beyond float32 too: inf and subnormals
        columns["weight"] = pa.array(weights, type=pa.float64())
        columns["pair"] = pa.array(rng.integers(0, 9, (n, 2)).tolist(), type=pa.list_(pa.int16(), 2))
        columns["bucket"] = pa.array(rng.integers(-5, 5, n), type=pa.int8())
        columns["flag"] = pa.array(rng.integers(0, 2, n).astype(bool))
    dataset = datasets.Dataset(pa.table(columns))
    if mapping:
        dataset = dataset.select(rng.permutation(n)[: n - 3].tolist())
    return dataset


def outcome(fn: Any) -> tuple[Any, list[tuple[type, str]]]:
    """``fn()`` (or the exception it raised) and the warnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = fn()
        except Exception as error:  # noqa: BLE001 - the collator's error is part of its behaviour
            result = error
    return result, [(w.category, str(w.message)) for w in caught]


def assert_same_batch(got: Any, expected: Any) -> None:
    if isinstance(expected, Exception):
        assert type(got) is type(expected) and str(got) == str(expected), (got, expected)
        return
    assert type(got) is type(expected), (type(got), type(expected))
    assert list(got) == list(expected), (list(got), list(expected))
    for key, want in expected.items():
        have = got[key]
        assert (have.dtype, have.shape, have.stride()) == (want.dtype, want.shape, want.stride()), key
        assert torch.equal(have, want), (key, have, want)
    if isinstance(expected, BatchEncoding):
        assert (got.encodings, got.n_sequences) == (expected.encodings, expected.n_sequences)


def compare(dataset: datasets.Dataset, collator: Any, rng: np.random.Generator, batches: int = 12) -> int:
    """Compare ``batches`` random batches of the fast path with the collator's; return how many the columns built."""
    wrapped, collate = columnar_batches(dataset, collator)
    assert isinstance(wrapped, ColumnarDataset) and collate is already_collated
    fast = 0
    for _ in range(batches):
        indices = rng.integers(0, len(dataset), int(rng.integers(1, 9))).tolist()
        expected, expected_warnings = outcome(lambda: collator(dataset.__getitems__(indices)))
        got, got_warnings = outcome(lambda: collate(wrapped.__getitems__(indices)))
        assert_same_batch(got, expected)
        assert got_warnings == expected_warnings
        columns = take_columns(dataset, indices, list(wrapped.kinds))
        fast += outcome(lambda: collate_columns(columns, wrapped.kinds, collator))[0] is not None
    return fast


PADDINGS = [
    dict(),  # the default: longest
    dict(padding="longest", pad_to_multiple_of=8),
    dict(padding=True, pad_to_multiple_of=3),
    dict(padding="max_length", max_length=14),
    dict(padding="max_length", max_length=14, pad_to_multiple_of=4),
    dict(padding="max_length", max_length=6),  # rows longer than max_length stay longer (ragged: the collator raises)
    dict(padding="max_length"),  # no max_length: the tokenizer's model_max_length, if any
    dict(padding=False),
    dict(padding="do_not_pad", max_length=5),
    dict(padding=True, max_length=9),  # warns that max_length is ignored
]


@pytest.mark.parametrize("options", PADDINGS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_collator_batches_equal_the_collators(options, side):
    rng = np.random.default_rng(zlib.crc32(f"{options}{side}".encode()))
    pads_all = options.get("padding", True) in (True, "longest") or options.get("max_length", 0) > 12
    for keys, label, with_mask, max_len in [
        (("attention_mask",), "int", True, 12),
        (("attention_mask", "token_type_ids", "special_tokens_mask"), "float", True, 12),
        (("token_type_ids",), "label_ids", True, 12),  # the tokenizer creates the attention mask
        ((), "labels_multi", True, 5),
        (("attention_mask",), "bool", False, 12),  # not a model input: a column like any other (ragged: raises)
    ]:
        tok = tokenizer(side, with_mask, model_max_length=10 if max_len == 5 else None)
        dataset = random_dataset(rng, keys=keys, label=label, max_len=max_len)
        built = compare(dataset, DataCollatorWithPadding(tok, **options), rng)
        if pads_all and with_mask:
            assert built == 12  # every batch built from the columns


@pytest.mark.parametrize("label", ["int", "float", "float32", "bool", "label_ids", "label_ids_float", "labels_multi",
                                   None])
@pytest.mark.parametrize("collator", [default_data_collator, DefaultDataCollator()], ids=["function", "class"])
def test_default_collator_batches_equal_the_collators(label, collator):
    rng = np.random.default_rng(7)
    fixed = random_dataset(rng, min_len=6, max_len=6, keys=("attention_mask", "token_type_ids"), label=label)
    fixed = fixed.add_column("text", [f"row {i}" for i in range(len(fixed))])  # dropped by default_data_collator
    assert compare(fixed, collator, rng) == 12
    varying = random_dataset(rng, min_len=5, max_len=6, label=label)  # ragged rows: the collator raises
    compare(varying, collator, rng)


@pytest.mark.parametrize("pad_to_multiple_of", [None, 8])
@pytest.mark.parametrize("side", ["right", "left"])
def test_causal_lm_collator_batches_equal_the_collators(pad_to_multiple_of, side):
    rng = np.random.default_rng(3)
    tok = tokenizer(side)
    dataset = random_dataset(rng, keys=("attention_mask", "special_tokens_mask"), label=None, extra=False)
    collator = DataCollatorForLanguageModeling(tok, mlm=False, pad_to_multiple_of=pad_to_multiple_of)
    assert compare(dataset, collator, rng) == 12


@pytest.mark.parametrize("ids_type", [pa.int32(), pa.int16(), pa.uint16(), pa.int64()])
@pytest.mark.parametrize("list_type", [pa.list_, pa.large_list])
def test_arrow_types_and_mappings(ids_type, list_type):
    rng = np.random.default_rng(11)
    tok = tokenizer()
    for mapping in (True, False):
        dataset = random_dataset(rng, ids_type=ids_type, list_type=list_type, mapping=mapping, keys=(
            "attention_mask", "token_type_ids"))
        assert compare(dataset, DataCollatorWithPadding(tok), rng) == 12
    filtered = random_dataset(rng, mapping=False).filter(lambda row: row["bucket"] > 0)
    assert compare(filtered, DataCollatorWithPadding(tok), rng) == 12


def test_float_default_dtype_is_torchs():
    rng = np.random.default_rng(5)
    dataset = random_dataset(rng, label="float")
    tok = tokenizer()
    for dtype, built in ((torch.float64, 12), (torch.bfloat16, 0)):  # bfloat16: the collator itself
        torch.set_default_dtype(dtype)
        assert compare(dataset, DataCollatorWithPadding(tok), rng) == built


def test_nulls_empty_rows_and_odd_indices_take_the_collators_path():
    rng = np.random.default_rng(2)
    tok = tokenizer()
    with_nulls = datasets.Dataset.from_dict({"input_ids": [[5, 6], [7], [8, 9, 10]], "label": [1, None, 0]})
    compare(with_nulls, DataCollatorWithPadding(tok), rng)  # whichever batch holds the null: the collator raises
    empty_rows = random_dataset(rng, min_len=0, max_len=2)
    compare(empty_rows, DataCollatorWithPadding(tok), rng, batches=30)
    wrapped, collate = columnar_batches(empty_rows, default_data_collator)
    for indices in ([np.int64(1), np.int64(0)], [-1, 2], [True, False], []):
        assert_same_batch(outcome(lambda: collate(wrapped.__getitems__(indices)))[0],
                          outcome(lambda: default_data_collator(empty_rows.__getitems__(indices)))[0])


def test_a_tensor_of_the_batch_owns_its_memory():
    dataset = datasets.Dataset.from_dict({"input_ids": [[5, 6], [7, 8]], "label": [1, 0]})
    wrapped, _ = columnar_batches(dataset, default_data_collator)
    batch = wrapped.__getitems__([0, 1])
    batch["input_ids"] += 1  # an in-place change of one batch (as the LM collator's labels) must not reach the data
    assert dataset[0]["input_ids"] == [5, 6] and wrapped.__getitems__([0])["input_ids"].tolist() == [[5, 6]]


class _Collator(DataCollatorWithPadding):
    pass


class _Tokenizer(type(word_tokenizer())):
    def _pad(self, *args, **kwargs):
        return super()._pad(*args, **kwargs)


def _plain() -> datasets.Dataset:
    return datasets.Dataset.from_dict({"input_ids": [[5, 6], [7]], "label": [1, 0]})


@pytest.mark.parametrize(("dataset", "collator"), [
    (_plain().with_format("torch"), default_data_collator),
    (_plain().with_transform(lambda batch: batch), default_data_collator),
    (_plain().with_format(None, columns=["label"]), default_data_collator),
    (type("Sub", (datasets.Dataset,), {})(_plain().data), default_data_collator),
    (_plain().to_iterable_dataset(), default_data_collator),
    ([{"input_ids": [1], "label": 0}], default_data_collator),
    (_plain().add_column("text", ["a", "b"]), DataCollatorWithPadding(word_tokenizer())),  # strings: the pad raises
    (_plain().add_column("nested", [[[1]], [[2]]]), default_data_collator),
    (_plain().cast_column("label", datasets.Value("uint64")), default_data_collator),
    (_plain(), _Collator(word_tokenizer())),
    (_plain(), lambda rows: default_data_collator(rows)),
    (_plain(), RemoveColumnsCollator(default_data_collator, ["input_ids"])),
    (_plain(), DefaultDataCollator(return_tensors="np")),
    (_plain(), DataCollatorForLanguageModeling(word_tokenizer(), mlm=False, seed=1)),
    (_plain(), DataCollatorForTokenClassification(word_tokenizer())),
    (_plain(), DataCollatorForSeq2Seq(word_tokenizer())),
    (_plain(), DataCollatorWithPadding(_Tokenizer(tokenizer_object=word_tokenizer()._tokenizer, pad_token="<pad>"))),
], ids=["torch format", "transform", "format columns", "subclass", "iterable", "list", "strings", "nested", "uint64",
        "collator subclass", "function", "RemoveColumnsCollator", "numpy", "LM with seed", "token classification",
        "seq2seq", "tokenizer overriding _pad"])
def test_anything_else_keeps_the_original_path(dataset, collator):
    assert column_kinds(dataset, collator) is None
    assert columnar_batches(dataset, collator) == (dataset, collator)


def test_masked_lm_keeps_the_original_path():
    tok = word_tokenizer()
    tok.add_special_tokens({"mask_token": "<mask>"})
    assert columnar_batches(_plain(), DataCollatorForLanguageModeling(tok))[0].__class__ is datasets.Dataset


def test_a_collator_changed_after_the_loader_was_built_is_honoured():
    rng = np.random.default_rng(1)
    dataset = random_dataset(rng)
    collator = DataCollatorWithPadding(tokenizer())
    wrapped, collate = columnar_batches(dataset, collator)
    collator.pad_to_multiple_of = 16
    collator.tokenizer.padding_side = "left"
    assert compare(dataset, collator, rng) == 12
    collator.return_tensors = "np"  # not reproduced: the collator's own numpy batch
    batch = collate(wrapped.__getitems__([0, 1]))
    assert isinstance(batch["input_ids"], np.ndarray)


def test_the_wrapper_pickles_and_passes_through_to_the_dataset():
    dataset = random_dataset(np.random.default_rng(4))
    collator = DataCollatorWithPadding(tokenizer())
    wrapped, _ = columnar_batches(dataset, collator)
    copy = pickle.loads(pickle.dumps(wrapped))
    assert_same_batch(copy.__getitems__([3, 1, 2]), collator(dataset.__getitems__([3, 1, 2])))
    assert len(copy) == len(dataset) and copy[2] == dataset[2] and copy.column_names == dataset.column_names
    with pytest.raises(AttributeError):
        copy._private
    assert dataclasses.is_dataclass(collator)  # the collator's fields are read at each batch (above)


@pytest.mark.parametrize("list_type", [pa.list_(pa.int32()), pa.large_list(pa.int32()), pa.list_(pa.int32(), 2)])
def test_list_parts_of_a_sliced_array(list_type):
    from hftrain._loop.fast_collate import _parts

    rows = [[1, 2], [3, 4], [5, 6], [7, 8]] if pa.types.is_fixed_size_list(list_type) else [[1], [2, 3], [], [4, 5, 6]]
    column = pa.array(rows, type=list_type).slice(1, 3)  # offsets into the values that do not start at 0
    values, lengths = _parts(column)
    assert values.tolist() == [v for row in rows[1:] for v in row]
    assert lengths.tolist() == [len(row) for row in rows[1:]]


def test_the_docstring_example_runs():
    import doctest

    from hftrain._loop import fast_collate

    assert doctest.testmod(fast_collate).failed == 0
