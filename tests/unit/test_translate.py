"""TrainingArguments + Env → step arithmetic and lightning.Trainer kwargs, as a table (faked hardware)."""

from __future__ import annotations

import sys

import pytest

from hftrain import TrainingArguments
from hftrain._translate.env import Env
from hftrain._translate.build import TrainingPlan, lightning_trainer_kwargs, precision, training_plan

CPU = Env()
ONE_GPU = Env(cuda_devices=1)


@pytest.mark.parametrize(
    ("kwargs", "env", "expected"),
    [
        ({}, CPU, "32-true"),
        ({"bf16": True, "use_cpu": True}, CPU, "bf16-mixed"),
        ({"fp16": True}, CPU, "32-true"),  # HF trains fp16=True in fp32 without CUDA; Lightning would use bf16
        ({"fp16": True}, ONE_GPU, "16-mixed"),
        ({"fp16": True, "use_cpu": True}, ONE_GPU, "32-true"),
    ],
)
def test_precision(kwargs, env, expected):
    assert precision(TrainingArguments("out", **kwargs), env) == expected


@pytest.mark.parametrize(
    ("max_steps", "epochs", "ga", "batches", "examples", "expected"),
    [
        # HF §4.3: 10 samples, bs 2 → 5 batches, GA 2 → 3 updates/epoch
        (-1, 3.0, 2, 5, 10, TrainingPlan(9, 3, 3, 5, 10, 30.0)),
        (-1, 1.5, 2, 5, 10, TrainingPlan(5, 2, 3, 5, 10, 15.0)),
        (7, 3.0, 2, 5, 10, TrainingPlan(7, 3, 3, 5, 10, 28)),
        (-1, 1.0, 8, 5, 10, TrainingPlan(1, 1, 1, 5, 10, 10.0)),  # at least one update per epoch
        (4, 3.0, 2, None, None, TrainingPlan(4, sys.maxsize, 4, 8, 16, 16)),  # unsized: max_steps drives it
    ],
)
def test_training_plan(max_steps, epochs, ga, batches, examples, expected):
    plan = training_plan(max_steps=max_steps, num_train_epochs=epochs, accumulation_steps=ga,
                         batches_per_epoch=batches, num_examples=examples, total_batch_size=4)
    assert plan == expected


def test_unsized_dataset_without_max_steps_is_refused():
    with pytest.raises(ValueError, match="`max_steps` has to be set"):
        training_plan(max_steps=-1, num_train_epochs=1, accumulation_steps=1, batches_per_epoch=None,
                      num_examples=None, total_batch_size=8)


@pytest.mark.parametrize(
    ("kwargs", "env", "expected"),
    [
        ({}, CPU, {"accelerator": "cpu", "accumulate_grad_batches": 1, "gradient_clip_val": 1.0, "max_steps": 9,
                   "max_epochs": -1, "num_sanity_val_steps": 0, "use_distributed_sampler": False,
                   "inference_mode": False, "enable_checkpointing": False, "deterministic": None}),
        ({"gradient_accumulation_steps": 4, "max_grad_norm": 0.0}, CPU,
         {"accumulate_grad_batches": 4, "gradient_clip_val": None}),
        ({"use_cpu": True}, ONE_GPU, {"accelerator": "cpu"}),
        ({}, ONE_GPU, {"accelerator": "cuda", "precision": "32-true"}),
        ({"full_determinism": True}, CPU, {"deterministic": True}),
        ({"bf16": True, "use_cpu": True}, CPU, {"precision": "bf16-mixed", "accelerator": "cpu"}),
    ],
)
def test_lightning_trainer_kwargs(kwargs, env, expected):
    args = TrainingArguments("out", **kwargs)
    plan = TrainingPlan(9, 3, 3, 5, 10, 30.0)
    result = lightning_trainer_kwargs(args, env, plan)
    assert {k: result[k] for k in expected} == expected
    assert result["default_root_dir"] == "out"


def test_several_processes_map_hf_ddp_options_to_a_ddp_strategy():
    from datetime import timedelta

    from lightning.pytorch.strategies import DDPStrategy

    args = TrainingArguments("out", ddp_timeout=60, ddp_bucket_cap_mb=10, ddp_broadcast_buffers=False)
    result = lightning_trainer_kwargs(args, Env(world_size=4, local_world_size=2), TrainingPlan(9, 3, 3, 5, 10, 30.0))
    strategy = result["strategy"]
    assert isinstance(strategy, DDPStrategy)
    assert (result["devices"], result["num_nodes"]) == (2, 2)
    assert strategy._process_group_backend == "gloo" and strategy._timeout == timedelta(seconds=60)
    assert strategy._ddp_kwargs == {"find_unused_parameters": True, "bucket_cap_mb": 10, "broadcast_buffers": False}
    assert lightning_trainer_kwargs(args, CPU, TrainingPlan(9, 3, 3, 5, 10, 30.0))["strategy"] == "auto"
