"""Write ``hftrain/_args/fields.py`` from the installed transformers.

hftrain's ``TrainingArguments`` must declare exactly HF's fields (name, order, type, default, argparse metadata), but
importing ``transformers.training_args`` pulls in accelerate. So the declarations are copied once, by this script,
into a module that only needs ``transformers.trainer_utils`` / ``debug_utils`` / ``generation``. A unit test compares
the copy with the installed transformers, so an upstream change fails CI until this script is re-run.

Run:
    python scripts/generate_hf_fields.py            # writes hftrain/_args/fields.py
    python scripts/generate_hf_fields.py --check    # exit 1 if the file is out of date
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Literal

import transformers
from transformers import Seq2SeqTrainingArguments, TrainingArguments
from transformers.training_args import OptimizerNames, trainer_log_levels

OUTPUT = Path(__file__).resolve().parents[1] / "hftrain" / "_args" / "fields.py"
_LINE_LENGTH = 120  # pyproject's ruff line-length: the output must be stable under `ruff format`

# Where the classes named in HF's annotations can be imported from without importing accelerate.
_STDLIB = {"pathlib"}
_IMPORTABLE = {
    "transformers.trainer_utils": "transformers.trainer_utils",
    "transformers.debug_utils": "transformers.debug_utils",
    "transformers.generation.configuration_utils": "transformers.generation",
    "pathlib": "pathlib",
}

_HEADER = '''\
"""HF's ``TrainingArguments`` / ``Seq2SeqTrainingArguments`` field declarations, copied without accelerate.

Same names, order, types, defaults and argparse metadata as the installed transformers. Annotations are real
objects (no ``from __future__ import annotations``) so ``dataclasses.fields(...)[i].type`` is what HF has.
"""

import dataclasses
from dataclasses import field
{stdlib_imports}
from typing import Any, Literal

{imports}

# `log_level` / `log_level_replica` choices: HF passes `trainer_log_levels.keys()` (a dict view), so do we.
_TRAINER_LOG_LEVELS = dict(**logging.get_log_levels_dict(), passive=-1)

# HF picks the default optimizer when the class is defined: the fused AdamW from torch 2.8 on.
_DEFAULT_OPTIM = "adamw_torch_fused" if is_torch_greater_or_equal_than_2_8 else "adamw_torch"


class OptimizerNames(ExplicitEnum):
    """The values of ``optim``. HF's enum lives in ``transformers.training_args``, which imports accelerate."""

{optimizer_members}
'''


# Comments written above a field whose declaration differs from HF's.
_FIELD_COMMENTS = {
    "parallelism_config": (
        "HF: `ParallelismConfig | None` (accelerate's class, which cannot be named without importing accelerate).\n"
        "`Any` keeps HfArgumentParser working (the option gets `type=Any`; HF's value cannot come from a command line\n"
        "either) and still lets a user pass a ParallelismConfig object, which hftrain rejects as unsupported."
    ),
}


def _q(text: str) -> str:
    """A double-quoted Python string literal."""
    return json.dumps(text, ensure_ascii=False)


def render_type(tp: Any, imports: set[tuple[str, str]]) -> str:
    """Source text that evaluates to ``tp`` in the generated module."""
    if tp is type(None):
        return "None"
    if tp is Any:
        return "Any"
    origin = typing.get_origin(tp)
    if isinstance(tp, types.UnionType) or origin is typing.Union:
        return " | ".join(render_type(arg, imports) for arg in tp.__args__)
    if origin is Literal:
        return f"Literal[{', '.join(repr(arg) for arg in tp.__args__)}]"
    if isinstance(tp, types.GenericAlias):
        return f"{origin.__name__}[{', '.join(render_type(arg, imports) for arg in tp.__args__)}]"
    if tp is OptimizerNames:
        return "OptimizerNames"  # our own copy, generated below
    if getattr(tp, "__name__", None) == "ParallelismConfig":
        return "Any"  # see _FIELD_COMMENTS["parallelism_config"]
    if isinstance(tp, type) and tp.__module__ == "builtins":
        return tp.__name__
    if isinstance(tp, type) and tp.__module__ in _IMPORTABLE:
        imports.add((_IMPORTABLE[tp.__module__], tp.__name__))
        return tp.__name__
    raise TypeError(f"don't know how to write the annotation {tp!r}; extend render_type()")


def render_str(text: str, indent: str, prefix: str) -> str:
    """A string literal for ``{indent}{prefix}<literal>,``; split into implicitly concatenated pieces (which join
    back exactly) only when it does not fit in the line length, so ``ruff format`` leaves the output unchanged."""
    if len(indent) + len(prefix) + len(_q(text)) + 1 <= _LINE_LENGTH:
        return _q(text)
    width = _LINE_LENGTH - len(indent) - 4 - 2  # piece indent, quotes
    pieces = textwrap.wrap(
        text,
        width,
        drop_whitespace=False,
        replace_whitespace=False,
        expand_tabs=False,
        break_on_hyphens=False,
        break_long_words=False,
    )
    assert "".join(pieces) == text, text
    inner = "".join(f"\n{indent}    {_q(piece)}" for piece in pieces)
    return f"({inner}\n{indent})"


def render_value(value: Any, indent: str, prefix: str) -> str:
    if isinstance(value, str):
        return render_str(value, indent, prefix)
    if type(value).__name__ == "dict_keys":
        if list(value) != list(trainer_log_levels):
            raise ValueError(f"unexpected dict_keys metadata value {value!r}")
        return "_TRAINER_LOG_LEVELS.keys()"
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return f"[{', '.join(_q(v) for v in value)}]"
    raise TypeError(f"don't know how to write the value {value!r}")


def render_field(f: dataclasses.Field, imports: set[str]) -> str:
    indent = " " * 8
    args = []
    if f.default_factory is not dataclasses.MISSING:
        if f.default_factory not in (list, dict):
            raise TypeError(f"{f.name}: unexpected default_factory {f.default_factory!r}")
        args.append(f"default_factory={f.default_factory.__name__}")
    elif f.name == "optim":
        assert f.default == OptimizerNames(f.default).value
        args.append("default=_DEFAULT_OPTIM")
    else:
        args.append(f"default={render_value(f.default, indent, 'default=')}")
    if f.metadata:
        inner = indent + "    "
        items = "".join(f"\n{inner}{_q(k)}: {render_value(v, inner, f'{_q(k)}: ')}," for k, v in f.metadata.items())
        args.append(f"metadata={{{items}\n{indent}}}")
    if not f.init or not f.repr or not f.compare or f.kw_only is True:
        raise ValueError(f"{f.name}: non-default field() flags are not handled")
    body = "".join(f"\n{indent}{arg}," for arg in args)
    comment = "".join(f"    # {line}\n" for line in _FIELD_COMMENTS.get(f.name, "").splitlines())
    return f"{comment}    {f.name}: {render_type(f.type, imports)} = field({body}\n    )\n"


def generate() -> str:
    imports: set[tuple[str, str]] = {
        ("transformers.pytorch_utils", "is_torch_greater_or_equal_than_2_8"),
        ("transformers.utils", "ExplicitEnum"),
        ("transformers.utils", "logging"),
    }
    hf_fields = dataclasses.fields(TrainingArguments)
    base_names = {f.name for f in hf_fields}
    seq2seq_fields = [f for f in dataclasses.fields(Seq2SeqTrainingArguments) if f.name not in base_names]

    body = ["\n\n@dataclasses.dataclass\nclass _TrainingArgumentsFields:\n"]
    body.append(f'    """The {len(hf_fields)} fields of ``transformers.TrainingArguments``, in HF\'s order."""\n\n')
    body.append("    # Fields that also accept a JSON string starting with '{' (parsed in __post_init__).\n")
    dict_fields = "".join(f"        {_q(name)},\n" for name in TrainingArguments._VALID_DICT_FIELDS)
    body.append(f"    _VALID_DICT_FIELDS = [\n{dict_fields}    ]\n\n")
    body.extend(render_field(f, imports) for f in hf_fields)

    body.append("\n\n@dataclasses.dataclass\nclass _Seq2SeqFields(_TrainingArgumentsFields):\n")
    body.append(f'    """The {len(seq2seq_fields)} fields ``Seq2SeqTrainingArguments`` adds."""\n\n')
    body.extend(render_field(f, imports) for f in seq2seq_fields)

    members = "\n".join(f"    {m.name} = {_q(m.value)}" for m in OptimizerNames)
    by_module: dict[str, list[str]] = {}
    for module, name in sorted(imports):
        by_module.setdefault(module, []).append(name)
    lines = {m: f"from {m} import {', '.join(names)}" for m, names in by_module.items()}
    header = _HEADER.format(
        stdlib_imports="\n".join(line for m, line in lines.items() if m in _STDLIB),
        imports="\n".join(line for m, line in lines.items() if m not in _STDLIB),
        optimizer_members=members,
    )
    version = transformers.__version__
    first_line = f"# GENERATED by scripts/generate_hf_fields.py from transformers {version} — do not edit by hand.\n"
    return first_line + header + "".join(body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the file is up to date")
    source = generate()
    if parser.parse_args().check:
        up_to_date = OUTPUT.exists() and OUTPUT.read_text(encoding="utf-8") == source
        print(f"{OUTPUT}: {'up to date' if up_to_date else 'OUT OF DATE, re-run scripts/generate_hf_fields.py'}")
        return 0 if up_to_date else 1
    OUTPUT.write_text(source, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
