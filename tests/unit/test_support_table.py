"""The field-support table against the installed transformers, and check_supported's warnings and errors."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import transformers
from transformers import GenerationConfig

from hftrain._args import support as _support
from hftrain._args.support import FIELD_SUPPORT, Ignored, Mapped, Unsupported, check_supported
from hftrain.training_args import TrainingArguments
from hftrain.training_args_seq2seq import Seq2SeqTrainingArguments

REPO = Path(__file__).resolve().parents[2]


def _names_used(paths) -> set[str]:
    """Every attribute read, keyword argument, string constant and name in these files: where a field can be used."""
    found: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute):
                found.add(node.attr)
            elif isinstance(node, ast.keyword) and node.arg:
                found.add(node.arg)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(node.value)
            elif isinstance(node, ast.Name):
                found.add(node.id)
    return found


# where the fields are declared and classified: a name there proves nothing
TABLE_FILES = {REPO / "hftrain" / "_args" / "fields.py", REPO / "hftrain" / "_args" / "support.py"}
# tests of the arguments object itself (parsing, defaults), not of what a field does to a run
ARGUMENT_TESTS = {REPO / "tests" / "unit" / "test_support_table.py", REPO / "tests" / "unit" / "test_training_args.py"}
# Mapped fields the Trainer itself does not read: the script flags HF stores for the user's script, and those
# transformers' own code reads for hftrain (optim_target_modules: its GaLore / APOLLO optimizer handlers)
READ_ELSEWHERE = {name for name, entry in FIELD_SUPPORT.items() if entry is _support._SCRIPT_FLAG}
READ_BY_TRANSFORMERS = {"optim_target_modules": "trainer_optimizer.py"}


def _mapped() -> set[str]:
    return {name for name, entry in FIELD_SUPPORT.items() if isinstance(entry, Mapped)}


def test_every_mapped_field_is_read_by_the_code_outside_the_table():
    read = _names_used(p for p in (REPO / "hftrain").rglob("*.py") if p not in TABLE_FILES)
    unread = sorted(_mapped() - READ_ELSEWHERE - set(READ_BY_TRANSFORMERS) - read)
    assert not unread, f"classed Mapped but read nowhere in hftrain: {unread}"
    for name, module in READ_BY_TRANSFORMERS.items():
        assert f"args.{name}" in (Path(transformers.__file__).parent / module).read_text(encoding="utf-8")


def test_every_mapped_field_has_a_test_that_sets_it():
    tests = [p for p in (REPO / "tests").rglob("*.py") if p not in ARGUMENT_TESTS]
    untested = sorted(_mapped() - READ_ELSEWHERE - _names_used(tests))
    assert not untested, f"classed Mapped but no test outside the argument tests sets them: {untested}"


def test_ignored_fields_are_read_nowhere():
    read = _names_used(p for p in (REPO / "hftrain").rglob("*.py") if p not in TABLE_FILES)
    ignored = {name for name, entry in FIELD_SUPPORT.items() if isinstance(entry, Ignored)}
    assert not ignored & read, f"classed Ignored but read: {sorted(ignored & read)}"


@pytest.fixture(autouse=True)
def _fresh_warned_set(monkeypatch):
    """check_supported warns once per process; give each test its own memory of what was warned."""
    monkeypatch.setattr(_support, "_warned_ignored", set())


def test_table_covers_every_field_of_the_installed_transformers():
    hf_names = {f.name for f in dataclasses.fields(transformers.TrainingArguments)}
    hf_names |= {f.name for f in dataclasses.fields(transformers.Seq2SeqTrainingArguments)}
    assert set(FIELD_SUPPORT) == hf_names
    assert len(FIELD_SUPPORT) == 119


def test_every_entry_says_what_or_why():
    assert all((s.target if isinstance(s, Mapped) else s.reason).strip() for s in FIELD_SUPPORT.values())


def test_entries_are_frozen_values():
    with pytest.raises(dataclasses.FrozenInstanceError):
        FIELD_SUPPORT["parallelism_config"].reason = "x"


@pytest.mark.parametrize("cls", [TrainingArguments, Seq2SeqTrainingArguments])
def test_defaults_are_silent(cls):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_supported(cls())
        check_supported(cls("out", report_to="none", debug="", fsdp=False, learning_rate=1e-3, use_cpu=True))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"trackio_bucket_id": "secret"}, "trackio_bucket_id"),
        ({"trackio_space_id": "exp"}, "trackio_space_id"),
        ({"eval_use_gather_object": True}, "eval_use_gather_object"),
    ],
)
def test_ignored_field_warns_once_per_process(kwargs, field):
    args = TrainingArguments(**kwargs)
    with pytest.warns(UserWarning, match=f"`{field}` is ignored by hftrain: ") as record:
        check_supported(args)
    assert "secret" not in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_supported(args)  # already warned in this process


def test_unsupported_fields_raise_once_listing_each():
    unsupported = sorted(name for name, entry in FIELD_SUPPORT.items() if isinstance(entry, Unsupported))
    on = {"parallelism_config": object()}
    assert set(on) == set(unsupported)
    with pytest.raises(ValueError) as error:
        check_supported(TrainingArguments(**on))
    message = str(error.value)
    for field in unsupported:
        assert f"- `{field}`: {FIELD_SUPPORT[field].reason}" in message
    assert message.count("\n- ") == len(unsupported)


@pytest.mark.parametrize("kwargs", [{"parallelism_config": object()}])
def test_each_unsupported_value_raises(kwargs):
    with pytest.raises(ValueError, match=f"`{next(iter(kwargs))}`: "):
        check_supported(TrainingArguments(**kwargs))


def test_falsy_values_of_none_default_unsupported_fields_are_off():
    check_supported(TrainingArguments(fsdp="", deepspeed=None, liger_kernel_config={}))
    check_supported(TrainingArguments(accelerator_config={"split_batches": False}))  # HF's default value


@pytest.mark.parametrize(
    "kwargs",
    [
        {"predict_with_generate": True},
        {"generation_num_beams": 2},
        {"generation_max_length": 16},
        {"generation_config": GenerationConfig(num_beams=2)},
    ],
)
def test_seq2seq_generation_fields_are_accepted(kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_supported(Seq2SeqTrainingArguments(**kwargs))


def test_sortish_sampler_is_ignored():
    with pytest.warns(UserWarning, match="`sortish_sampler` is ignored by hftrain: dead in transformers 5.24"):
        check_supported(Seq2SeqTrainingArguments(sortish_sampler=True))


def test_importing_the_arguments_does_not_import_accelerate_or_lightning():
    code = (
        "import sys, hftrain.training_args, hftrain.training_args_seq2seq, hftrain._args.support\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('accelerate', 'transformers.training_args',"
        " 'transformers.trainer_callback', 'lightning')) or m == 'transformers.trainer')\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
