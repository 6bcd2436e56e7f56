"""HF's DeepSpeed / TPU arguments → Lightning strategy objects, without deepspeed or torch_xla installed.

The config translation is pure and tested as data. Construction is tested with Lightning's availability flags
patched and stub packages in ``sys.modules`` (lightning_mapping.md §2.4); monkeypatch undoes every patch.
"""

from __future__ import annotations

import json
import logging
import sys
import types
from datetime import timedelta

import pytest
import torch

from hftrain import TrainingArguments
from hftrain._backends.deepspeed_xla import deepspeed_config, deepspeed_strategy, unresolved_keys, xla_precision, xla_strategy

# an HF-style config (transformers' tests/deepspeed/ds_config_zero3.json, trimmed): every value HF fills is "auto"
HF_ZERO3 = {
    "fp16": {"enabled": "auto", "loss_scale": 0},
    "bf16": {"enabled": "auto"},
    "optimizer": {
        "type": "AdamW",
        "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"},
    },
    "scheduler": {
        "type": "WarmupDecayLR",
        "params": {
            "warmup_min_lr": "auto",
            "warmup_max_lr": "auto",
            "warmup_num_steps": "auto",
            "total_num_steps": "auto",
        },
    },
    "zero_optimization": {
        "stage": 3,
        "reduce_bucket_size": "auto",
        "stage3_prefetch_bucket_size": "auto",
        "stage3_param_persistence_threshold": "auto",
    },
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "train_batch_size": "auto",
    "train_micro_batch_size_per_gpu": "auto",
}


@pytest.fixture(autouse=True)
def _one_process(monkeypatch):
    """args.world_size reads the launcher's variables: start every test as one unlaunched process."""
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)


def make_args(tmp_path, **kwargs):
    defaults = {
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "learning_rate": 3e-4,
        "weight_decay": 0.01,
        "max_grad_norm": 0.5,
    }
    return TrainingArguments(str(tmp_path), report_to="none", **{**defaults, **kwargs})


@pytest.fixture
def fake_deepspeed(monkeypatch):
    """DeepSpeedStrategy constructs: Lightning's flags say installed; `import deepspeed` finds a stub."""
    from lightning.pytorch.strategies import deepspeed as lightning_deepspeed

    monkeypatch.setattr(lightning_deepspeed, "_DEEPSPEED_AVAILABLE", True)
    monkeypatch.setattr(lightning_deepspeed, "_DEEPSPEED_GREATER_EQUAL_0_16", True)
    stub = types.ModuleType("deepspeed")
    stub.utils = types.SimpleNamespace(logging=types.SimpleNamespace(logger=logging.getLogger("stub-deepspeed")))
    monkeypatch.setitem(sys.modules, "deepspeed", stub)


@pytest.fixture
def no_deepspeed(monkeypatch):
    from lightning.pytorch.strategies import deepspeed as lightning_deepspeed

    monkeypatch.setattr(lightning_deepspeed, "_DEEPSPEED_AVAILABLE", False)


@pytest.fixture
def no_xla(monkeypatch):
    from lightning.pytorch.plugins.precision import xla as xla_plugin
    from lightning.pytorch.strategies import single_xla, xla

    for module in (xla, single_xla, xla_plugin):
        monkeypatch.setattr(module, "_XLA_AVAILABLE", False)


@pytest.fixture
def fake_xla(monkeypatch):
    """XLA objects construct: every `_XLA_AVAILABLE` they read is True; torch_xla's `xla_device` gives the CPU."""
    from lightning.fabric.plugins.environments import xla as xla_environment
    from lightning.pytorch.plugins.precision import xla as xla_plugin
    from lightning.pytorch.strategies import single_xla, xla

    for module in (xla, single_xla, xla_plugin, xla_environment):
        monkeypatch.setattr(module, "_XLA_AVAILABLE", True)
    xla_model = types.ModuleType("torch_xla.core.xla_model")
    xla_model.xla_device = lambda n=None: torch.device("cpu")
    core = types.ModuleType("torch_xla.core")
    core.xla_model = xla_model
    torch_xla = types.ModuleType("torch_xla")
    torch_xla.core = core
    for name, module in (("torch_xla", torch_xla), ("torch_xla.core", core), ("torch_xla.core.xla_model", xla_model)):
        monkeypatch.setitem(sys.modules, name, module)
    # XLAPrecision sets these variables (as HF's accelerate does on TPUs): restore them after the test
    monkeypatch.setenv("XLA_USE_BF16", "0")
    monkeypatch.setenv("XLA_USE_F16", "0")


# -- deepspeed_config: pure -----------------------------------------------------------------------------------------
def test_auto_values_are_filled_from_the_arguments(tmp_path):
    args = make_args(tmp_path, bf16=True, use_cpu=True, adam_beta1=0.8, adam_beta2=0.95, adam_epsilon=1e-6)
    cfg = deepspeed_config(HF_ZERO3, args)

    assert cfg["train_micro_batch_size_per_gpu"] == 4
    assert cfg["gradient_clipping"] == 0.5
    assert cfg["optimizer"]["params"] == {"lr": 3e-4, "betas": [0.8, 0.95], "eps": 1e-6, "weight_decay": 0.01}
    assert cfg["fp16"] == {"enabled": False, "loss_scale": 0}
    assert cfg["bf16"] == {"enabled": True}
    params = cfg["scheduler"]["params"]
    assert (params["warmup_min_lr"], params["warmup_max_lr"]) == (0, 3e-4)
    # known only at train time (HF's trainer_config_finalize): left for the caller
    assert (params["warmup_num_steps"], params["total_num_steps"]) == ("auto", "auto")
    assert cfg["zero_optimization"]["reduce_bucket_size"] == "auto"
    assert unresolved_keys(cfg) == [
        "scheduler.params.total_num_steps",
        "scheduler.params.warmup_num_steps",
        "zero_optimization.reduce_bucket_size",
        "zero_optimization.stage3_prefetch_bucket_size",
        "zero_optimization.stage3_param_persistence_threshold",
    ]
    # Lightning sets accumulation itself and raises if the config has it; DeepSpeed derives the global batch
    assert "gradient_accumulation_steps" not in cfg
    assert "train_batch_size" not in cfg
    assert "zero_allow_untested_optimizer" not in cfg  # the config brings its own optimizer


@pytest.mark.parametrize(
    ("warmup_steps", "num_training_steps", "expected_warmup"),
    [
        (0.1, 50, 5),  # a ratio: ceil(0.1 * 50)
        (7, 50, 7),  # a count
        (0, 50, 1),  # HF keeps the filled value positive (deepspeed>=0.19.6 rejects 0)
    ],
)
def test_scheduler_steps_are_filled_when_the_run_length_is_given(
    tmp_path, warmup_steps, num_training_steps, expected_warmup
):
    args = make_args(tmp_path, warmup_steps=warmup_steps)
    params = deepspeed_config(HF_ZERO3, args, num_training_steps=num_training_steps)["scheduler"]["params"]
    assert (params["total_num_steps"], params["warmup_num_steps"]) == (num_training_steps, expected_warmup)


@pytest.mark.parametrize(
    ("stage", "expected"),
    [
        (3, {"reduce_bucket_size": 64, "stage3_prefetch_bucket_size": 57, "stage3_param_persistence_threshold": 80}),
        # not ZeRO-3: HF fills only the reduce bucket
        (2, {"reduce_bucket_size": 64, "stage3_prefetch_bucket_size": "auto",
             "stage3_param_persistence_threshold": "auto"}),
    ],
)
def test_zero_bucket_sizes_are_filled_from_the_hidden_size(tmp_path, stage, expected):
    config = {**HF_ZERO3, "zero_optimization": {**HF_ZERO3["zero_optimization"], "stage": stage}}
    zero = deepspeed_config(config, make_args(tmp_path), hidden_size=8)["zero_optimization"]
    assert {key: zero[key] for key in expected} == expected


def test_mismatches_are_all_listed_in_one_error(tmp_path):
    config = {
        "train_micro_batch_size_per_gpu": 8,
        "gradient_clipping": 1.0,
        "optimizer": {"params": {"lr": 0.1, "betas": [0.9, 0.999]}},  # betas agree with HF's defaults
        "scheduler": {"params": {"total_num_steps": 10}},
    }
    with pytest.raises(ValueError, match="mismatch TrainingArguments") as err:
        deepspeed_config(config, make_args(tmp_path), num_training_steps=20)
    assert str(err.value).splitlines()[1:] == [
        "- ds train_micro_batch_size_per_gpu=8 vs hf per_device_train_batch_size=4",
        "- ds gradient_clipping=1.0 vs hf max_grad_norm=0.5",
        "- ds optimizer.params.lr=0.1 vs hf learning_rate=0.0003",
        "- ds scheduler.params.total_num_steps=10 vs hf num_training_steps (calculated)=20",
        "The easiest method is to set these DeepSpeed config values to 'auto'.",
    ]


def test_gradient_accumulation_mismatch_names_both_fields(tmp_path):
    with pytest.raises(ValueError, match="ds gradient_accumulation_steps=4 vs hf gradient_accumulation_steps=2"):
        deepspeed_config({"gradient_accumulation_steps": 4}, make_args(tmp_path))


def test_consistent_batch_values_are_accepted_and_removed(tmp_path):
    config = {"gradient_accumulation_steps": 2, "train_batch_size": 8, "train_micro_batch_size_per_gpu": 4}
    assert deepspeed_config(config, make_args(tmp_path)) == {
        "train_micro_batch_size_per_gpu": 4,
        "zero_allow_untested_optimizer": True,
    }


def test_train_batch_size_counts_every_process(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it
    args = make_args(tmp_path)
    assert "train_batch_size" not in deepspeed_config({"train_batch_size": 16}, args)  # 4 × 2 × 2
    with pytest.raises(ValueError, match=r"ds train_batch_size=8 vs hf train_batch_size \(calculated\)=16"):
        deepspeed_config({"train_batch_size": 8}, args)


def test_auto_find_batch_size_does_not_pin_the_batch(tmp_path):
    args = make_args(tmp_path, auto_find_batch_size=True)  # HF's batch-size search may lower the batch
    assert deepspeed_config({"train_micro_batch_size_per_gpu": 16}, args)["train_micro_batch_size_per_gpu"] == 16


def test_betas_as_a_tuple_match_the_arguments(tmp_path):
    cfg = deepspeed_config({"optimizer": {"params": {"betas": (0.9, 0.999)}}}, make_args(tmp_path))
    assert cfg["optimizer"]["params"]["betas"] == (0.9, 0.999)


def test_missing_sections_stay_missing(tmp_path):
    # HF fills only the keys the user wrote; without an optimizer section HF's own optimizer is handed to DeepSpeed
    assert deepspeed_config({}, make_args(tmp_path)) == {"zero_allow_untested_optimizer": True}


def test_save_on_each_node_uses_node_local_storage(tmp_path):
    cfg = deepspeed_config({"checkpoint": {"tag_validation": "Warn"}}, make_args(tmp_path, save_on_each_node=True))
    assert cfg["checkpoint"] == {"tag_validation": "Warn", "use_node_local_storage": True}


def test_the_input_dict_is_not_changed_and_a_second_pass_is_idempotent(tmp_path):
    original = json.loads(json.dumps(HF_ZERO3))
    args = make_args(tmp_path)
    first = deepspeed_config(HF_ZERO3, args)
    assert original == HF_ZERO3
    assert deepspeed_config(first, args) == first
    # the second pass may fill what the first could not
    second = deepspeed_config(first, args, num_training_steps=10, hidden_size=8)
    assert unresolved_keys(second) == []


def test_a_json_file_and_json_text_are_loaded(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(HF_ZERO3))
    args = make_args(tmp_path)
    expected = deepspeed_config(HF_ZERO3, args)
    assert deepspeed_config(str(path), args) == expected
    assert deepspeed_config(path, args) == expected
    assert deepspeed_config(json.dumps(HF_ZERO3), args) == expected


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, r"`deepspeed='.*missing\.json'`: no such file"),
        ("{not json", r"`deepspeed='.*missing\.json'` is not valid JSON"),
        ("[1, 2]", r"`deepspeed='.*missing\.json'` must hold a JSON object"),
    ],
)
def test_a_bad_config_file_names_the_argument(tmp_path, content, match):
    path = tmp_path / "missing.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=match):
        deepspeed_config(str(path), make_args(tmp_path))


def test_a_config_of_the_wrong_type_is_refused(tmp_path):
    with pytest.raises(TypeError, match="`deepspeed` must be a path to a JSON file or a dict, got int"):
        deepspeed_config(3, make_args(tmp_path))


# -- missing packages -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "stage", "offload", "argument"),
    [
        ({"deepspeed": {"zero_optimization": {"stage": 2}}}, None, False, "`deepspeed={...}`"),
        ({"deepspeed": "ds_config.json"}, None, False, "`deepspeed='ds_config.json'`"),
        ({"strategy": "deepspeed_stage_3_offload"}, 3, True, '`strategy="deepspeed_stage_3_offload"`'),
        ({}, 2, False, '`strategy="deepspeed_stage_2"`'),  # chosen by a caller, not by `strategy`
    ],
)
def test_missing_deepspeed_names_the_package_and_the_argument(
    tmp_path, monkeypatch, no_deepspeed, kwargs, stage, offload, argument
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ds_config.json").write_text("{}")
    args = make_args(tmp_path, **kwargs)
    with pytest.raises(ImportError) as err:
        deepspeed_strategy(args, stage=stage, offload=offload)
    assert isinstance(err.value, ModuleNotFoundError) and err.value.name == "deepspeed"
    assert str(err.value).startswith(argument)
    assert "pip install deepspeed" in str(err.value)


def test_config_errors_are_reported_before_the_missing_package(tmp_path, no_deepspeed):
    args = make_args(tmp_path, deepspeed={"gradient_accumulation_steps": 3})
    with pytest.raises(ValueError, match="ds gradient_accumulation_steps=3 vs hf gradient_accumulation_steps=2"):
        deepspeed_strategy(args)


def test_auto_values_that_need_the_run_are_refused_without_it(tmp_path, no_deepspeed):
    args = make_args(tmp_path, deepspeed=HF_ZERO3)
    with pytest.raises(ValueError, match=r"`deepspeed=\{...\}`: these config values are \"auto\"") as err:
        deepspeed_strategy(args, hidden_size=8)
    assert "scheduler.params.total_num_steps, scheduler.params.warmup_num_steps." in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "name", "argument"),
    [
        ({"strategy": "xla"}, "xla", '`strategy="xla"`'),
        ({"strategy": "single_xla"}, "single_xla", '`strategy="single_xla"`'),
        ({"accelerator": "tpu"}, "xla", '`accelerator="tpu"`'),
    ],
)
def test_missing_torch_xla_names_the_package_and_the_argument(tmp_path, no_xla, kwargs, name, argument):
    with pytest.raises(ImportError) as err:
        xla_strategy(make_args(tmp_path, **kwargs), name)
    assert isinstance(err.value, ModuleNotFoundError) and err.value.name == "torch_xla"
    assert str(err.value).startswith(argument)
    assert "pip install torch_xla" in str(err.value)


def test_missing_torch_xla_for_the_precision(no_xla):
    with pytest.raises(ModuleNotFoundError, match=r'`precision="bf16-mixed"` on TPUs needs torch_xla.*pip install'):
        xla_precision("bf16-mixed")


# -- construction with patched availability -------------------------------------------------------------------------
def test_the_strategy_gets_the_rewritten_config(tmp_path, fake_deepspeed):
    from lightning.pytorch.strategies import DeepSpeedStrategy

    args = make_args(tmp_path, deepspeed=HF_ZERO3, gradient_accumulation_steps=3, ddp_timeout=60)
    strategy = deepspeed_strategy(args, num_training_steps=100, hidden_size=8)

    assert isinstance(strategy, DeepSpeedStrategy)
    assert strategy.config == deepspeed_config(HF_ZERO3, args, num_training_steps=100, hidden_size=8)
    assert "gradient_accumulation_steps" not in strategy.config and "train_batch_size" not in strategy.config
    assert unresolved_keys(strategy.config) == []
    assert strategy.config["scheduler"]["params"]["total_num_steps"] == 100
    assert strategy._timeout == timedelta(seconds=60)
    assert args.deepspeed["gradient_accumulation_steps"] == "auto"  # the user's dict is left alone

    # what Lightning does with the config once the Trainer is attached: no error, accumulation from the Trainer
    trainer = types.SimpleNamespace(accumulate_grad_batches=3, gradient_clip_val=0.5)
    strategy._lightning_module = types.SimpleNamespace(trainer=trainer)
    strategy._format_batch_size_and_grad_accum_config()
    assert strategy.config["gradient_accumulation_steps"] == 3
    assert strategy.config["train_micro_batch_size_per_gpu"] == 4


def test_a_json_path_reaches_the_strategy(tmp_path, fake_deepspeed):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto"}))
    strategy = deepspeed_strategy(make_args(tmp_path, deepspeed=str(path)))
    assert strategy.config == {"train_micro_batch_size_per_gpu": 4, "zero_allow_untested_optimizer": True}


@pytest.mark.parametrize(
    ("stage", "offload", "expected_stage", "offloaded"),
    [
        (None, False, 2, set()),  # Lightning's default stage
        (2, True, 2, {"offload_optimizer"}),
        (3, False, 3, set()),
        (3, True, 3, {"offload_optimizer", "offload_param"}),
    ],
)
def test_a_stage_name_builds_lightnings_config(tmp_path, fake_deepspeed, stage, offload, expected_stage, offloaded):
    strategy = deepspeed_strategy(make_args(tmp_path), stage=stage, offload=offload)
    zero = strategy.config["zero_optimization"]
    assert zero["stage"] == expected_stage
    assert {key for key in ("offload_optimizer", "offload_param") if key in zero} == offloaded


@pytest.mark.parametrize(("name", "class_name"), [("xla", "XLAStrategy"), ("single_xla", "SingleDeviceXLAStrategy")])
def test_xla_strategies_construct(tmp_path, fake_xla, name, class_name):
    strategy = xla_strategy(make_args(tmp_path, strategy=name), name)
    assert type(strategy).__name__ == class_name
    if name == "xla":
        assert strategy._sync_module_states and strategy._start_method == "fork"


@pytest.mark.parametrize(
    ("precision", "expected"),
    [("bf16-mixed", "bf16-true"), ("bf16-true", "bf16-true"), ("32-true", "32-true"), ("16-true", "16-true")],
)
def test_xla_precision(fake_xla, precision, expected):
    assert xla_precision(precision).precision == expected


def test_xla_fsdp_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r'`strategy="xla_fsdp"`: Lightning\'s Trainer has no XLA FSDP strategy'):
        xla_strategy(make_args(tmp_path, strategy="xla_fsdp"), "xla_fsdp")


@pytest.mark.parametrize(
    ("precision", "match"),
    [("16-mixed", "fp16 mixed precision is not supported on TPUs"), ("64-true", "is not available on TPUs")],
)
def test_xla_precision_refuses_what_hf_refuses(precision, match):
    with pytest.raises(ValueError, match=match):
        xla_precision(precision)
