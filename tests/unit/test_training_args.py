"""hftrain's TrainingArguments / Seq2SeqTrainingArguments against the installed transformers."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import typing
import warnings
from pathlib import Path

import pytest
import torch
import transformers
from transformers import GenerationConfig, HfArgumentParser

from hftrain._args import normalise as _args_normalise, removed as _removed_args
from hftrain._args.fields import OptimizerNames
from hftrain._args.lightning import LIGHTNING_FIELDS
from hftrain.training_args import ParallelMode, TrainingArguments
from hftrain.training_args_seq2seq import Seq2SeqTrainingArguments

REPO = Path(__file__).resolve().parents[2]
PAIRS = [
    pytest.param(TrainingArguments, transformers.TrainingArguments, id="TrainingArguments"),
    pytest.param(Seq2SeqTrainingArguments, transformers.Seq2SeqTrainingArguments, id="Seq2SeqTrainingArguments"),
]
CUDA = torch.cuda.is_available()


@pytest.fixture(autouse=True)
def _restore_environ():
    """HF's TrainingArguments writes os.environ (e.g. FSDP_CPU_RAM_EFFICIENT_LOADING); undo it after each test."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def _quiet(cls, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(*args, **kwargs)


# --------------------------------------------------------------------------- field declarations
def _annotation(cls: type, name: str) -> str:
    text = str(typing.get_type_hints(cls)[name])
    return text.replace("hftrain._args.fields.OptimizerNames", "transformers.training_args.OptimizerNames")


@pytest.mark.parametrize(("ours", "hf"), PAIRS)
def test_fields_match_installed_transformers(ours, hf):
    our_fields, hf_fields = _hf_part(dataclasses.fields(ours)), dataclasses.fields(hf)
    assert [f.name for f in our_fields] == [f.name for f in hf_fields]
    for mine, theirs in zip(our_fields, hf_fields):
        if mine.name == "parallelism_config":  # documented: accelerate's class cannot be named without accelerate
            assert _annotation(hf, mine.name) == "accelerate.parallelism_config.ParallelismConfig | None"
            assert _annotation(ours, mine.name) == "typing.Any | None"
        else:
            assert _annotation(ours, mine.name) == _annotation(hf, mine.name), mine.name
        assert mine.default == theirs.default, mine.name
        assert (mine.default_factory is dataclasses.MISSING) == (theirs.default_factory is dataclasses.MISSING)
        if mine.default_factory is not dataclasses.MISSING:
            assert mine.default_factory() == theirs.default_factory()
        assert dict(mine.metadata) == dict(theirs.metadata), mine.name
        assert mine.metadata["help"] == theirs.metadata["help"]
        assert {k: type(v) for k, v in mine.metadata.items()} == {k: type(v) for k, v in theirs.metadata.items()}


def _hf_part(our_fields: tuple) -> list:
    """HF's fields, in HF's order, followed only by hftrain's Lightning fields."""
    assert [f.name for f in our_fields[-len(LIGHTNING_FIELDS):]] == list(LIGHTNING_FIELDS)
    return list(our_fields[: -len(LIGHTNING_FIELDS)])


def test_lightning_fields_parse_from_the_command_line():
    (args,) = HfArgumentParser(TrainingArguments).parse_args_into_dataclasses(
        ["--output_dir", "out", "--strategy", "ddp", "--devices", "2", "--accelerator", "cpu", "--num_nodes", "1",
         "--precision", "bf16-mixed", "--report_to", "none"], look_for_args_file=False,
    )
    assert (args.strategy, args.devices, args.accelerator, args.precision) == ("ddp", 2, "cpu", "bf16-mixed")
    assert args.planned_processes == 2 and args.to_dict()["devices"] == 2


def test_lightning_fields_stay_out_of_to_dict_until_used():
    assert not set(LIGHTNING_FIELDS) & set(TrainingArguments("out", report_to="none").to_dict())
    from lightning.pytorch.strategies import DDPStrategy

    args = TrainingArguments("out", strategy=DDPStrategy(), report_to="none")
    assert args.to_dict()["strategy"] == "DDPStrategy" and args.for_saving().strategy == "DDPStrategy"
    assert isinstance(args.strategy, DDPStrategy)  # for_saving copies, the run keeps the object


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(bf16=True, precision="16-mixed"), "`bf16=True` contradicts `precision='16-mixed'`"),
        (dict(use_cpu=True, accelerator="cuda"), "`use_cpu=True` contradicts `accelerator='cuda'`"),
        (dict(devices=0), "`devices` must be a positive number"),
        (dict(num_nodes=0), "`num_nodes` must be a positive integer"),
    ],
)
def test_lightning_fields_reject_contradictions(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainingArguments("out", report_to="none", **kwargs)


def test_optimizer_names_match_installed_transformers():
    from transformers.training_args import OptimizerNames as HFOptimizerNames

    assert [(m.name, m.value) for m in OptimizerNames] == [(m.name, m.value) for m in HFOptimizerNames]
    assert len(OptimizerNames) == 41


def test_generated_module_is_up_to_date():
    spec = importlib.util.spec_from_file_location("generate_hf_fields", REPO / "scripts" / "generate_hf_fields.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    text = (REPO / "hftrain" / "_args" / "fields.py").read_text(encoding="utf-8")
    assert text.startswith("# GENERATED by scripts/generate_hf_fields.py from transformers 5.")
    # the first line names the transformers it was generated from: a release with the same fields still passes
    _, _, body = text.partition("\n")
    assert body == generator.generate().partition("\n")[2], "re-run `python scripts/generate_hf_fields.py`"


def test_copied_accelerate_constants_match():
    from accelerate.utils.constants import FSDP_AUTO_WRAP_POLICY, FSDP_SHARDING_STRATEGY
    from transformers.trainer_pt_utils import AcceleratorConfig
    from transformers.training_args import ParallelMode as HFParallelMode

    assert _args_normalise.FSDP_AUTO_WRAP_POLICY == FSDP_AUTO_WRAP_POLICY
    assert _args_normalise.FSDP_SHARDING_STRATEGY == FSDP_SHARDING_STRATEGY
    expected = AcceleratorConfig().to_dict()
    expected.pop("use_configured_state")  # HF's device setup pops it
    assert _args_normalise.ACCELERATOR_CONFIG_DEFAULTS == expected
    assert [(m.name, m.value) for m in ParallelMode] == [(m.name, m.value) for m in HFParallelMode]


# --------------------------------------------------------------------------- HfArgumentParser
def _option(action) -> tuple:
    return (
        tuple(action.option_strings),
        action.dest,
        action.default,
        list(action.choices or []),
        action.help,
        action.nargs,
        action.const,
        action.required,
        getattr(action.type, "__name__", repr(action.type)),
    )


@pytest.mark.parametrize(("ours", "hf"), PAIRS)
def test_hf_argument_parser_builds_the_same_options(ours, hf):
    our_options = [_option(a) for a in HfArgumentParser(ours)._actions if a.dest not in LIGHTNING_FIELDS]
    hf_options = [_option(a) for a in HfArgumentParser(hf)._actions]
    assert len(our_options) == len(hf_options)
    for mine, theirs in zip(our_options, hf_options):
        if mine[1] == "parallelism_config":  # documented: type=Any instead of accelerate's ParallelismConfig
            assert (mine[:-1], mine[-1], theirs[-1]) == (theirs[:-1], "Any", "ParallelismConfig")
        else:
            assert mine == theirs


SAMPLE_COMMAND_LINE = [
    "--output_dir",
    "out",
    "--learning_rate",
    "1e-4",
    "--eval_strategy",
    "steps",
    "--eval_steps",
    "10",
    "--lr_scheduler_type",
    "cosine",
    "--lr_scheduler_kwargs",
    '{"num_cycles": "2"}',
    "--warmup_steps",
    "0.1",
    "--optim",
    "adamw_torch",
    "--include_for_metrics",
    "inputs",
    "loss",
    "--no_remove_unused_columns",
    "--label_names",
    "labels",
    "--activation_checkpointing",
    "--debug",
    "underflow_overflow",
    "--log_level",
    "info",
    "--report_to",
    "none",
    "--fsdp",
    "--fsdp_config",
    '{"min_num_params": "100"}',
    "--per_device_train_batch_size",
    "4",
    "--save_strategy",
    "epoch",
    "--hub_token",
    "secret",
]


@pytest.mark.parametrize(("ours", "hf"), PAIRS)
def test_parsing_a_command_line_gives_hfs_to_dict(ours, hf):
    (mine,) = HfArgumentParser(ours).parse_args_into_dataclasses(SAMPLE_COMMAND_LINE, look_for_args_file=False)
    (theirs,) = HfArgumentParser(hf).parse_args_into_dataclasses(SAMPLE_COMMAND_LINE, look_for_args_file=False)
    assert mine.to_dict() == theirs.to_dict()
    assert mine.to_dict()["hub_token"] == "<HUB_TOKEN>"


# --------------------------------------------------------------------------- serialisation
TO_DICT_CASES = [
    {},
    {"output_dir": "~/runs/x", "report_to": "all", "hub_token": "secret", "use_cpu": True},
    {"eval_strategy": "steps", "logging_steps": 10, "load_best_model_at_end": True, "save_steps": 20},
    {"lr_scheduler_kwargs": '{"a": "1", "b": "true", "c": "0.5"}', "debug": "underflow_overflow", "optim": "sgd"},
    {"gradient_checkpointing": True, "include_num_input_tokens_seen": True, "torch_compile_mode": "default"},
    {"fsdp": "full_shard offload", "fsdp_config": {"fsdp_min_num_params": 5, "transformer_layer_cls_to_wrap": "B"}},
    {"accelerator_config": {"split_batches": True}, "warmup_steps": 0.25, "report_to": ["tensorboard"]},
    {"lr_scheduler_type": "reduce_lr_on_plateau", "eval_strategy": "epoch", "save_strategy": "epoch"},
]


@pytest.mark.parametrize("kwargs", TO_DICT_CASES)
@pytest.mark.parametrize(("ours", "hf"), PAIRS)
def test_to_dict_and_json_match_hf(ours, hf, kwargs):
    mine, theirs = _quiet(ours, **kwargs), _quiet(hf, **kwargs)
    assert mine.to_dict() == theirs.to_dict()
    assert mine.to_json_string() == theirs.to_json_string()
    mine_sanitized, theirs_sanitized = mine.to_sanitized_dict(), theirs.to_sanitized_dict()
    if torch.cuda.device_count() > 1:  # documented: HF multiplies the batch sizes by n_gpu (nn.DataParallel)
        for key in ("train_batch_size", "eval_batch_size"):
            mine_sanitized.pop(key), theirs_sanitized.pop(key)
    assert mine_sanitized == theirs_sanitized


def test_str_masks_tokens_and_matches_hf_layout():
    mine, theirs = str(TrainingArguments(hub_token="secret")), str(transformers.TrainingArguments(hub_token="secret"))
    assert "secret" not in mine and "hub_token=<HUB_TOKEN>," in mine
    # Only difference: HF's str shows AcceleratorConfig's `use_configured_state`, which its to_dict() drops.
    differing = [(a, b) for a, b in zip(mine.splitlines(), theirs.splitlines()) if a != b]
    assert [a.split("=")[0] for a, _ in differing] == ["accelerator_config"]
    assert repr(Seq2SeqTrainingArguments(hub_token="secret")).count("secret") == 0  # HF's Seq2Seq repr leaks it


def test_seq2seq_to_dict_serialises_generation_config():
    config = GenerationConfig(num_beams=3, max_length=20)
    mine = Seq2SeqTrainingArguments(generation_config=config)
    theirs = transformers.Seq2SeqTrainingArguments(generation_config=config)
    assert mine.to_dict() == theirs.to_dict()
    assert mine.to_dict()["generation_config"]["num_beams"] == 3
    json.loads(mine.to_json_string())


# --------------------------------------------------------------------------- §2.1 errors, same input → same error
NO_CUDA = pytest.mark.skipif(CUDA, reason="the error only happens without a CUDA GPU")
ERRORS = [
    ({"eval_strategy": "foo"}, "foo is not a valid IntervalStrategy, please select one of ['no', 'steps', 'epoch']"),
    ({"logging_strategy": "foo"}, "foo is not a valid IntervalStrategy"),
    ({"save_strategy": "foo"}, "foo is not a valid SaveStrategy, please select one of ['no', 'steps', 'epoch', 'bes"),
    ({"hub_strategy": "foo"}, "foo is not a valid HubStrategy"),
    ({"lr_scheduler_type": "foo"}, "foo is not a valid SchedulerType"),
    ({"optim": "adamw_hf"}, "adamw_hf is not a valid OptimizerNames"),
    ({"debug": "foo"}, "foo is not a valid DebugOption"),
    (
        {"eval_strategy": "steps", "logging_steps": 0},
        "evaluation strategy IntervalStrategy.STEPS requires either non-zero --eval_steps or --logging_steps",
    ),
    ({"torch_empty_cache_steps": 0}, "`torch_empty_cache_steps` must be an integer bigger than 0, got 0."),
    ({"torch_empty_cache_steps": 1.5}, "`torch_empty_cache_steps` must be an integer bigger than 0, got 1.5."),
    ({"torch_empty_cache_steps": "none"}, "`torch_empty_cache_steps` must be an integer bigger than 0, got none."),
    ({"logging_steps": 0}, "logging strategy IntervalStrategy.STEPS requires non-zero --logging_steps"),
    ({"logging_steps": 2.5}, "--logging_steps must be an integer if bigger than 1: 2.5"),
    ({"eval_strategy": "steps", "eval_steps": 2.5}, "--eval_steps must be an integer if bigger than 1: 2.5"),
    ({"save_steps": 2.5}, "--save_steps must be an integer if bigger than 1: 2.5"),
    (
        {"load_best_model_at_end": True},
        '--load_best_model_at_end requires the save and eval strategy to match, except when --save_strategy="best", '
        "but found\n- Evaluation strategy: IntervalStrategy.NO\n- Save strategy: SaveStrategy.STEPS",
    ),
    (
        {"load_best_model_at_end": True, "eval_strategy": "steps", "eval_steps": 0.4, "save_steps": 3},
        "--load_best_model_at_end requires the saving steps to be a multiple of the evaluation steps, which cannot get "
        "guaranteed when mixing ratio and absolute steps for save_steps 3 and eval_steps 0.4.",
    ),
    (
        {"load_best_model_at_end": True, "eval_strategy": "steps", "eval_steps": 0.3, "save_steps": 0.5},
        "--load_best_model_at_end requires the saving steps to be a multiple of the evaluation steps, but found 0.5, "
        "which is not a multiple of 0.3.",
    ),
    (
        {"load_best_model_at_end": True, "eval_strategy": "steps", "eval_steps": 3, "save_steps": 10},
        "--load_best_model_at_end requires the saving steps to be a round multiple of the evaluation steps, but found "
        "10, which is not a round multiple of 3.",
    ),
    pytest.param(
        {"bf16": True},
        "Your setup doesn't support bf16/gpu. You need to assign use_cpu if you want to train the model on CPU.",
        marks=NO_CUDA,
        id="bf16",
    ),
    pytest.param({"bf16_full_eval": True}, "Your setup doesn't support bf16/gpu.", marks=NO_CUDA, id="bf16_full_eval"),
    ({"fp16": True, "bf16": True, "use_cpu": True}, "At most one of fp16 and bf16 can be True, but not both"),
    (
        {"fp16_full_eval": True, "bf16_full_eval": True, "use_cpu": True},
        "At most one of fp16 and bf16 can be True for full eval, but not both",
    ),
    ({"lr_scheduler_type": "reduce_lr_on_plateau"}, "lr_scheduler_type reduce_lr_on_plateau requires an eval strategy"),
    ({"lr_scheduler_type": "greedy"}, "lr_scheduler_type greedy requires an eval strategy"),
    ({"warmup_steps": -1}, "Got warmup_steps = -1, Expected value warmup_steps >= 0"),
    (
        {"dataloader_prefetch_factor": 2},
        "--dataloader_prefetch_factor can only be set when data is loaded in a different process, i.e. when "
        "--dataloader_num_workers > 0.",
    ),
    pytest.param(
        {"tf32": True}, "--tf32 requires Ampere or a newer GPU arch, cuda>=11 and torch>=1.7", marks=NO_CUDA, id="tf32"
    ),
    ({"fsdp": "foo"}, "Unknown `fsdp` option: foo"),
    ({"fsdp": "hybrid_shard"}, "`fsdp=hybrid_shard` is only available with FSDP1."),
    (
        {"fsdp": True, "fsdp_config": {"auto_wrap_policy": "X"}},
        "`auto_wrap_policy` must be one of ['TRANSFORMER_BASED_WRAP', 'SIZE_BASED_WRAP', 'NO_WRAP'], got X.",
    ),
    ({"lr_scheduler_kwargs": "{bad json"}, "Expecting property name enclosed in double quotes"),
]


@pytest.mark.parametrize(("kwargs", "message"), ERRORS)
@pytest.mark.parametrize("cls", [TrainingArguments, transformers.TrainingArguments], ids=["hftrain", "transformers"])
def test_same_input_gives_hfs_error(cls, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        _quiet(cls, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"eval_strategy": "foo"}, "`eval_strategy='foo'`: "),
        ({"optim": "adamw_hf"}, "`optim='adamw_hf'`: "),
        ({"debug": "foo"}, "`debug='foo'`: "),
        ({"lr_scheduler_type": "foo"}, "`lr_scheduler_type='foo'`: "),
        pytest.param({"bf16": True}, "`bf16=True`: ", marks=NO_CUDA),
        ({"lr_scheduler_kwargs": "{bad"}, "`lr_scheduler_kwargs` is not valid JSON"),
        ({"fsdp": True, "fsdp_config": {"auto_wrap_policy": "X"}}, "`fsdp_config`: "),
    ],
)
def test_errors_name_the_field(kwargs, named):
    with pytest.raises(ValueError, match=re.escape(named)):
        TrainingArguments(**kwargs)


@pytest.mark.parametrize("cls", [TrainingArguments, transformers.TrainingArguments], ids=["hftrain", "transformers"])
def test_accelerator_config_errors_match_hf(cls, tmp_path):
    with pytest.raises(NotImplementedError, match="Tried passing in a callable to `accelerator_config`"):
        _quiet(cls, accelerator_config=dict)
    path = tmp_path / "accelerator.json"
    path.write_text(json.dumps({"split_batches": True, "foo": 1}))
    with pytest.raises(ValueError, match=re.escape(f"The config file at {path} had unknown keys (['foo'])")):
        _quiet(cls, accelerator_config=str(path))


def test_accelerator_config_file_becomes_a_dict(tmp_path):
    path = tmp_path / "accelerator.json"
    path.write_text(json.dumps({"split_batches": True}))
    assert TrainingArguments(accelerator_config=str(path)).accelerator_config["split_batches"] is True
    with pytest.raises(TypeError, match=r"`accelerator_config` got unknown keys \['foo'\]"):
        TrainingArguments(accelerator_config={"foo": 1})
    with pytest.raises(ValueError, match="use_configured_state"):
        TrainingArguments(accelerator_config={"use_configured_state": True})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"generation_num_beams": 0}, "`generation_num_beams=0` must be at least 1"),
        ({"generation_max_length": 0}, "`generation_max_length=0` must be a positive number of tokens"),
        ({"generation_config": "google/flan-t5-small"}, "`generation_config='google/flan-t5-small'` is neither"),
    ],
)
def test_seq2seq_generation_checks(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Seq2SeqTrainingArguments(**kwargs)


def test_seq2seq_generation_config_accepts_local_paths(tmp_path):
    GenerationConfig(num_beams=2).save_pretrained(tmp_path)
    assert Seq2SeqTrainingArguments(generation_config=tmp_path).to_dict()["generation_config"] == str(tmp_path)
    Seq2SeqTrainingArguments(generation_config=str(tmp_path / "generation_config.json"))
    with pytest.raises(ValueError, match="offline"):
        Seq2SeqTrainingArguments(generation_config=tmp_path / "missing")


def test_gradient_checkpointing_alias_warns_like_hf():
    with pytest.warns(FutureWarning, match="`gradient_checkpointing` is deprecated and will be removed in v6"):
        args = TrainingArguments(gradient_checkpointing=True)
    assert args.activation_checkpointing is True and args.gradient_checkpointing is True


# --------------------------------------------------------------------------- properties and helpers
def test_single_process_properties():
    args = TrainingArguments(per_device_train_batch_size=4, per_device_eval_batch_size=6, ddp_timeout=60)
    assert (args.train_batch_size, args.eval_batch_size) == (4, 6)
    assert (args.world_size, args.process_index, args.local_process_index) == (1, 0, 0)
    assert args.parallel_mode == ParallelMode.NOT_PARALLEL
    assert args.should_log and args.should_save and args.place_model_on_device is None
    assert args.ddp_timeout_delta.total_seconds() == 60
    assert args.mixed_precision == "no" and TrainingArguments(fp16=True).mixed_precision == "fp16"
    if not CUDA:
        assert (args.n_gpu, args.device) == (0, torch.device("cpu"))
    with args.main_process_first(desc="map"):
        pass


def test_device_follows_cuda_and_local_rank(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert (TrainingArguments().n_gpu, TrainingArguments().device) == (1, torch.device("cuda", 1))
    assert (TrainingArguments(use_cpu=True).n_gpu, TrainingArguments(use_cpu=True).device.type) == (0, "cpu")


@pytest.mark.parametrize(
    ("env", "on_each_node", "expected"),
    [
        ({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"}, True, True),
        ({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"}, False, False),
        ({"WORLD_SIZE": "4", "RANK": "0", "LOCAL_RANK": "0"}, False, True),
        ({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}, True, False),
    ],
)
def test_should_log_and_save_under_ranks(monkeypatch, env, on_each_node, expected):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    args = TrainingArguments(log_on_each_node=on_each_node, save_on_each_node=on_each_node)
    assert (args.should_log, args.should_save) == (expected, expected)
    assert args.parallel_mode == ParallelMode.DISTRIBUTED and args.world_size == 4


@pytest.mark.parametrize(("warmup", "total"), [(0, 100), (5, 100), (5.0, 3), (0.1, 95), (0.5, 7)])
def test_get_warmup_steps_matches_hf(warmup, total):
    hf = transformers.TrainingArguments(warmup_steps=warmup)
    assert TrainingArguments(warmup_steps=warmup).get_warmup_steps(total) == hf.get_warmup_steps(total)


@pytest.mark.parametrize(("level", "replica"), [("passive", "warning"), ("info", "error"), ("debug", "passive")])
def test_get_process_log_level_matches_hf(level, replica):
    hf = transformers.TrainingArguments(log_level=level, log_level_replica=replica)
    assert TrainingArguments(log_level=level, log_level_replica=replica).get_process_log_level() == (
        hf.get_process_log_level()
    )


SETTER_CALLS = [
    ("set_training", {"learning_rate": 1e-4, "batch_size": 32, "activation_checkpointing": True}),
    ("set_evaluate", {"strategy": "steps", "steps": 100, "delay": 2}),
    ("set_testing", {"batch_size": 32, "loss_only": True}),
    ("set_save", {"strategy": "epoch", "total_limit": 2}),
    ("set_logging", {"strategy": "steps", "steps": 10, "report_to": "none", "level": "info"}),
    ("set_push_to_hub", {"model_id": "me/model", "strategy": "end", "token": "secret"}),
    ("set_optimizer", {"name": "sgd", "beta1": 0.8}),
    ("set_lr_scheduler", {"name": "cosine", "warmup_steps": 0.05}),
    ("set_dataloader", {"train_batch_size": 16, "num_workers": 2, "sampler_seed": 7}),
]


@pytest.mark.parametrize(("setter", "kwargs"), SETTER_CALLS)
def test_setters_match_hf(setter, kwargs):
    mine, theirs = TrainingArguments("out"), transformers.TrainingArguments("out")
    assert getattr(mine, setter)(**kwargs) is mine
    getattr(theirs, setter)(**kwargs)
    assert mine.to_dict() == theirs.to_dict()


@pytest.mark.parametrize("setter", ["set_evaluate", "set_save", "set_logging"])
def test_steps_setters_reject_zero_steps_like_hf(setter):
    for args in (TrainingArguments(), transformers.TrainingArguments()):
        with pytest.raises(ValueError, match=re.escape("Setting `strategy` as 'steps' requires a positive value")):
            getattr(args, setter)(strategy="steps", steps=0)


def test_from_hf_converts_and_keeps_user_fields():
    @dataclasses.dataclass
    class ScriptArgs(transformers.TrainingArguments):
        model_name: str = "tiny"

    hf_args = _quiet(
        ScriptArgs,
        "out",
        eval_strategy="steps",
        eval_steps=5,
        hub_token="t",
        use_cpu=True,
        lr_scheduler_kwargs={"num_cycles": 2},
        debug="underflow_overflow",
    )
    args = TrainingArguments.from_hf(hf_args)
    assert type(args) is TrainingArguments and args.model_name == "tiny"
    hf_dict = hf_args.to_dict()
    assert hf_dict.pop("model_name") == "tiny" and args.to_dict() == hf_dict
    assert args.hub_token == "t" and args.lr_scheduler_kwargs is not hf_args.lr_scheduler_kwargs
    config = GenerationConfig(num_beams=2)
    s2s = Seq2SeqTrainingArguments.from_hf(transformers.Seq2SeqTrainingArguments(generation_config=config))
    assert s2s.to_dict()["generation_config"]["num_beams"] == 2
    with pytest.raises(TypeError, match="from_hf"):
        TrainingArguments.from_hf({"output_dir": "x"})


# --------------------------------------------------------------------------- 4.x names removed in 5.x
LEGACY = [
    ({"warmup_ratio": 0.1}, {"warmup_steps": 0.1}, "warmup_steps"),
    ({"evaluation_strategy": "epoch"}, {"eval_strategy": "epoch"}, "eval_strategy"),
    ({"per_gpu_train_batch_size": 4}, {"per_device_train_batch_size": 4}, "per_device_train_batch_size"),
    ({"per_gpu_eval_batch_size": 4}, {"per_device_eval_batch_size": 4}, "per_device_eval_batch_size"),
    ({"no_cuda": True}, {"use_cpu": True}, "use_cpu=True"),
    ({"group_by_length": True}, {"train_sampling_strategy": "group_by_length"}, 'train_sampling_strategy="group'),
    ({"include_inputs_for_metrics": True}, {"include_for_metrics": ["inputs"]}, 'include_for_metrics=["inputs"]'),
    ({"push_to_hub_model_id": "me/m"}, {"hub_model_id": "me/m"}, "hub_model_id"),
    ({"push_to_hub_token": "t"}, {"hub_token": "t"}, "hub_token"),
    ({"torchdynamo": "eager"}, {"torch_compile_backend": "eager"}, "torch_compile_backend"),
    ({"adafactor": True}, {"optim": "adafactor"}, 'optim="adafactor"'),
    ({"tpu_metrics_debug": True}, {"debug": "tpu_metrics_debug"}, 'debug="tpu_metrics_debug"'),
    (
        {"tpu_metrics_debug": True, "debug": "underflow_overflow"},
        {"debug": "underflow_overflow tpu_metrics_debug"},
        "debug=",
    ),
    ({"fsdp_min_num_params": 7, "fsdp": True}, {"fsdp": True, "fsdp_config": {"min_num_params": 7}}, "fsdp_config"),
    (
        {"fsdp_transformer_layer_cls_to_wrap": "Block", "fsdp": True},
        {"fsdp": True, "fsdp_config": {"transformer_layer_cls_to_wrap": ["Block"]}},
        "transformer_layer_cls_to_wrap",
    ),
    ({"include_tokens_per_second": True}, {"include_num_input_tokens_seen": "all"}, "include_num_input_tokens_seen"),
    ({"no_cuda": False}, {}, "use_cpu=True"),  # 4.x's default value: warns, changes nothing
]


@pytest.mark.parametrize(("old", "new", "spelling"), LEGACY)
def test_removed_name_warns_and_maps(old, new, spelling):
    name = next(iter(old))
    with pytest.warns(FutureWarning, match=re.escape(spelling)) as record:
        args = TrainingArguments(**old)
    assert [str(w.message).split("`")[1] for w in record if w.category is FutureWarning] == [name]
    assert args.to_dict() == TrainingArguments(**new).to_dict()


@pytest.mark.parametrize("name", sorted(n for n, r in _removed_args.REMOVED.items() if r.apply is None))
def test_removed_name_without_replacement_warns_no_effect(name):
    with pytest.warns(FutureWarning, match=re.escape(f"`{name}` was removed in transformers 5.x and has no effect")):
        args = TrainingArguments(**{name: "x"})
    assert args.to_dict() == TrainingArguments().to_dict()


def test_logging_dir_warning_says_where_tensorboard_writes():
    with pytest.warns(FutureWarning, match=re.escape("$TENSORBOARD_LOGGING_DIR, else to `<output_dir>/runs`")):
        TrainingArguments(logging_dir="logs")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"warmup_ratio": 0.1, "warmup_steps": 10},
        {"evaluation_strategy": "steps", "eval_strategy": "epoch"},
        {"adafactor": True, "optim": "sgd"},
        {"per_gpu_train_batch_size": 4, "per_device_train_batch_size": 2},
        {"push_to_hub_token": "a", "hub_token": "b"},
        {"fsdp_min_num_params": 5, "fsdp_config": {"min_num_params": 6}},
        {"warmup_ratio": 1.0},
    ],
)
def test_removed_name_conflicting_with_new_name_raises(kwargs):
    old = next(name for name in kwargs if name in _removed_args.REMOVED)
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match=re.escape(f"`{old}")) as error:
        TrainingArguments(**kwargs)
    assert "'a'" not in str(error.value)  # tokens are not echoed


def test_removed_names_are_not_fields_and_hf_rejects_them():
    hf_fields = {f.name for f in dataclasses.fields(transformers.Seq2SeqTrainingArguments)}
    assert not _removed_args.REMOVED.keys() & hf_fields  # else the wrapper would shadow a real field
    with pytest.raises(TypeError, match="unexpected keyword argument 'warmup_ratio'"):
        transformers.TrainingArguments(warmup_ratio=0.1)
    assert "warmup_ratio" not in TrainingArguments().to_dict()


def test_seq2seq_accepts_removed_names_too():
    with pytest.warns(FutureWarning, match="eval_strategy"):
        assert Seq2SeqTrainingArguments(evaluation_strategy="epoch").eval_strategy == "epoch"


def test_unknown_keyword_is_a_type_error():
    with pytest.raises(TypeError, match="unexpected keyword argument 'learning_rat'"):
        TrainingArguments(learning_rat=1e-4)
