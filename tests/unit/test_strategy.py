"""The strategy translation, table-tested without launching anything (a faked ``Env`` stands in for the machine)."""

from __future__ import annotations

import re
import sys
import types
from datetime import timedelta

import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, ModelParallelStrategy
from torch import nn

from hftrain import TrainingArguments
from hftrain._translate.env import Env, ModelFacts, model_facts
from hftrain._backends.fsdp import FsdpPlan, _layers_to_shard, fsdp_plan
from hftrain._translate.strategy import lightning_strategy
from hftrain._translate.build import lightning_trainer_kwargs

CPU, TORCHRUN_2 = Env(), Env(world_size=2, local_world_size=2)
PLAN = 10  # max_steps


def _args(**kwargs) -> TrainingArguments:
    return TrainingArguments("out", report_to="none", **kwargs)


def test_one_process_keeps_lightnings_default():
    kwargs = lightning_trainer_kwargs(_args(), CPU, PLAN)
    assert (kwargs["strategy"], kwargs["devices"], kwargs["num_nodes"], kwargs["accelerator"]) == ("auto", "auto", 1,
                                                                                                    "cpu")


@pytest.mark.parametrize(
    ("kwargs", "interactive", "start_method"),
    [
        ({"devices": 2}, False, "popen"),  # Lightning re-runs the script for rank 1
        ({"devices": 2}, True, "fork"),  # in a notebook, as Lightning's own "auto"
        ({"strategy": "ddp", "devices": 2}, True, "popen"),  # as asked; Lightning refuses it in a notebook itself
        ({"strategy": "ddp_notebook", "devices": 2}, False, "fork"),
        ({"strategy": "ddp_fork", "devices": 2}, False, "fork"),
        ({"strategy": "ddp_spawn", "devices": 2}, False, "spawn"),
    ],
)
def test_ddp_start_methods(kwargs, interactive, start_method):
    args = _args(accelerator="cpu", **kwargs)
    strategy = lightning_strategy(args, CPU, interactive)
    assert isinstance(strategy, DDPStrategy) and strategy._start_method == start_method
    assert args.world_size == 2 and args.planned_processes == 2


def test_torchrun_processes_get_ddp_with_hfs_options():
    args = _args(ddp_bucket_cap_mb=10, ddp_broadcast_buffers=False, ddp_timeout=60)
    kwargs = lightning_trainer_kwargs(args, TORCHRUN_2, PLAN)
    strategy = kwargs["strategy"]
    assert (kwargs["devices"], kwargs["num_nodes"]) == (2, 1)
    assert strategy._process_group_backend == "gloo" and strategy._timeout == timedelta(seconds=60)
    assert strategy._ddp_kwargs == {"find_unused_parameters": True, "bucket_cap_mb": 10, "broadcast_buffers": False}


@pytest.mark.parametrize(("kwargs", "model", "searches"), [
    ({}, ModelFacts(pretrained=True), True),  # transformers' _build_accelerator_args
    ({"activation_checkpointing": True}, ModelFacts(pretrained=True), False),
    ({}, ModelFacts(pretrained=True, checkpointing=True), False),  # checkpointing the user turned on on the model
    ({}, ModelFacts(), True),  # not a PreTrainedModel: transformers searches, checkpointing or not
    ({"activation_checkpointing": True}, ModelFacts(), True),
    ({"ddp_find_unused_parameters": False}, ModelFacts(pretrained=True), False),
    ({"ddp_find_unused_parameters": True}, ModelFacts(pretrained=True, checkpointing=True), True),
])
def test_ddp_searches_unused_parameters_as_transformers_decides(kwargs, model, searches):
    strategy = lightning_strategy(_args(**kwargs), TORCHRUN_2, model=model)
    assert strategy._ddp_kwargs == {"find_unused_parameters": searches}


def test_model_facts_read_a_pretrained_model():
    from transformers import BertConfig, BertModel

    model = BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    assert model_facts(model) == ModelFacts(hidden_size=16, pretrained=True, checkpointing=False)
    model.gradient_checkpointing_enable()
    assert model_facts(model).checkpointing and model_facts(torch.nn.Linear(2, 2)) == ModelFacts()


def test_a_strategy_object_is_used_as_given():
    """As given: a copy per Lightning Trainer, with the user's settings (the used object would be refused)."""
    mine = DDPStrategy(find_unused_parameters=False, start_method="spawn")
    given = lightning_strategy(_args(strategy=mine, devices=2), CPU)
    assert type(given) is DDPStrategy and given is not mine
    assert given._ddp_kwargs == mine._ddp_kwargs and given._start_method == "spawn"


@pytest.mark.parametrize(("devices", "num_nodes", "expected"), [(2, 1, 2), ([0, 1, 2], 1, 3), ("0,1", 2, 4),
                                                                   ("auto", 1, 1), (-1, 3, 3), ("3", 1, 3)])
def test_planned_processes(devices, num_nodes, expected):
    assert _args(devices=devices, num_nodes=num_nodes, accelerator="cpu").planned_processes == expected


def test_single_device_strategy_is_one_process():
    assert _args(strategy="single_device", devices=4).planned_processes == 1


def test_a_launcher_world_size_wins(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    args = _args(devices=2)
    assert (args.world_size, args.process_index) == (4, 3)


def test_a_relaunched_script_derives_its_rank(monkeypatch):
    """Lightning's re-launched ranks get NODE_RANK / LOCAL_RANK / WORLD_SIZE but no RANK."""
    for key, value in {"WORLD_SIZE": "4", "NODE_RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("RANK", raising=False)
    assert _args(devices=2, num_nodes=2).process_index == 3


# ---- precision ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "expected"), [({"precision": "bf16-true"}, "bf16-true"),
                                                  ({"bf16": True, "precision": "bf16-mixed", "use_cpu": True}, "bf16-mixed"),
                                                  ({"bf16": True, "accelerator": "cpu"}, "bf16-mixed"), ({}, "32-true")])
def test_precision_field_or_hf_flags(kwargs, expected):
    assert lightning_trainer_kwargs(_args(**kwargs), CPU, PLAN)["precision"] == expected


def test_a_precision_plugin_object_passes_through():
    from lightning.pytorch.plugins.precision import HalfPrecision

    plugin = HalfPrecision("bf16-true")
    kwargs = lightning_trainer_kwargs(_args(precision=plugin), CPU, PLAN)
    assert kwargs["plugins"] == [plugin] and "precision" not in kwargs  # Lightning takes plugin objects there
    import lightning as L

    assert L.Trainer(**kwargs, logger=False).precision_plugin is plugin


# ---- FSDP -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [{"strategy": "fsdp"}, {"fsdp": True}, {"fsdp": "full_shard auto_wrap"}])
def test_fsdp_is_fsdp2_over_every_process(kwargs):
    strategy = lightning_strategy(_args(devices=2, accelerator="cpu", **kwargs), CPU)
    assert isinstance(strategy, ModelParallelStrategy)
    assert (strategy._data_parallel_size, strategy._tensor_parallel_size) == (2, 1)
    assert strategy._save_distributed_checkpoint is False and strategy._process_group_backend == "gloo"


def test_fsdp_version_1_is_lightnings_fsdp_strategy():
    args = _args(fsdp=True, fsdp_config={"version": 1, "transformer_layer_cls_to_wrap": ["BertLayer"],
                                         "reshard_after_forward": False, "cpu_offload": True})
    strategy = lightning_strategy(args, TORCHRUN_2)
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.sharding_strategy.name == "SHARD_GRAD_OP" and strategy.cpu_offload.offload_params


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fsdp": True, "fp16": True}, "use `bf16=True`"),
        ({"strategy": "fsdp", "precision": "16-mixed"}, "has no fp16 loss scaling"),
        ({"fsdp": True, "fsdp_config": {"state_dict_type": "SHARDED_STATE_DICT"}}, "SHARDED_STATE_DICT"),
    ],
)
def test_fsdp_refuses_what_it_cannot_do(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        lightning_strategy(_args(**kwargs), TORCHRUN_2)


class _Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.inner, self.outer = nn.Linear(width, width), nn.Linear(width, 2)


class _Net(nn.Module):
    _no_split_modules = ["_Block"]

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(100, 8)
        self.blocks = nn.ModuleList([_Block(8), _Block(8)])


def test_fsdp_shards_the_models_no_split_modules_or_the_configured_classes():
    net = _Net()
    assert fsdp_plan(_args(fsdp=True), net).layer_classes == ("_Block",)
    assert _layers_to_shard(net, fsdp_plan(_args(fsdp=True), net)) == list(net.blocks)
    plan = fsdp_plan(_args(fsdp=True, fsdp_config={"transformer_layer_cls_to_wrap": "Embedding"}), net)
    assert _layers_to_shard(net, plan) == [net.embed]


def test_fsdp_size_based_wrapping_goes_bottom_up():
    net = _Net()  # embed: 800 parameters; each block: 72 + 18
    plan = FsdpPlan(layer_classes=(), min_num_params=80, reshard_after_forward=True, cpu_offload=False)
    assert _layers_to_shard(net, plan) == [net.embed, net.blocks[0], net.blocks[1]]
    plan = FsdpPlan(layer_classes=(), min_num_params=150, reshard_after_forward=True, cpu_offload=False)
    assert _layers_to_shard(net, plan) == [net.embed, net.blocks]


# ---- DeepSpeed / XLA ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [{"strategy": "deepspeed_stage_2"}, {"deepspeed": {"zero_optimization": {}}}])
def test_deepspeed_without_the_package_names_it(kwargs):
    with pytest.raises(ModuleNotFoundError, match="pip install deepspeed"):
        lightning_trainer_kwargs(_args(**kwargs), CPU, PLAN)


def test_tpus_without_torch_xla_name_it():
    with pytest.raises(ModuleNotFoundError, match="torch_xla"):
        lightning_trainer_kwargs(_args(accelerator="tpu"), CPU, PLAN)


@pytest.fixture
def fake_deepspeed(monkeypatch):
    import lightning.pytorch.strategies.deepspeed as ds

    monkeypatch.setattr(ds, "_DEEPSPEED_AVAILABLE", True)
    monkeypatch.setattr(ds, "_DEEPSPEED_GREATER_EQUAL_0_16", True, raising=False)
    stub = types.ModuleType("deepspeed")
    stub.utils = types.SimpleNamespace(logging=types.SimpleNamespace(logger=types.SimpleNamespace(setLevel=print)))
    monkeypatch.setitem(sys.modules, "deepspeed", stub)


def test_deepspeed_gets_a_precision_that_leaves_accumulation_to_lightning(fake_deepspeed):
    """Lightning divides the loss by GA; DeepSpeed's backward must not divide again (HF: scale_wrt_gas=False)."""
    kwargs = lightning_trainer_kwargs(_args(strategy="deepspeed_stage_2", bf16=True, use_cpu=True), CPU, PLAN)
    assert type(kwargs["strategy"]).__name__ == "DeepSpeedStrategy" and "precision" not in kwargs
    (plugin,) = kwargs["plugins"]
    calls = []
    engine = types.SimpleNamespace(backward=lambda loss, **kw: calls.append(kw))
    import lightning as L

    model = L.LightningModule()
    model._trainer = types.SimpleNamespace(model=engine)
    plugin.backward(torch.tensor(1.0), model, None)
    assert plugin.precision == "bf16-mixed" and calls == [{"scale_wrt_gas": False}]


@pytest.mark.parametrize("kwargs", [{"strategy": "deepspeed_stage_3"}, {"deepspeed": {"zero_optimization": {}}}])
def test_deepspeed_refuses_a_ready_made_optimizer_before_training(kwargs):
    from hftrain import Trainer

    Trainer(nn.Linear(2, 2), _args(**kwargs))  # checkpoints are written (tests/unit/test_deepspeed_checkpoint.py)
    with pytest.raises(RuntimeError, match="Passing `optimizers` is not allowed"):  # HF's error
        Trainer(nn.Linear(2, 2), _args(save_strategy="no", **kwargs),
                optimizers=(torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1), None))


@pytest.mark.parametrize(("on_each_node", "expected"), [(True, True), (False, False)])
def test_save_on_each_node_lets_each_nodes_first_process_save(monkeypatch, on_each_node, expected):
    for key, value in {"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"}.items():  # node 1's first process
        monkeypatch.setenv(key, value)
    assert _args(save_on_each_node=on_each_node).should_save is expected


def test_fsdp_activation_checkpointing_checkpoints_the_layers():
    from hftrain._loop.model_setup import enable_activation_checkpointing
    from tests.helpers import tiny_bert_classifier

    model = tiny_bert_classifier()
    enable_activation_checkpointing(model, _args(fsdp=True, fsdp_config={"activation_checkpointing": True}))
    assert model.is_gradient_checkpointing


def test_fsdp_config_keys_without_effect_are_named():
    with pytest.warns(UserWarning, match=r"no effect in hftrain.*\['forward_prefetch'\]"):
        lightning_strategy(_args(fsdp=True, fsdp_config={"forward_prefetch": True}), TORCHRUN_2)
