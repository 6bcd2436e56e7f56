"""TrainingArguments + Env → step arithmetic and lightning.Trainer kwargs, as a table (faked hardware)."""

from __future__ import annotations

import sys

import pytest
import torch

from hftrain import TrainingArguments
from hftrain._translate.env import Env
from hftrain._translate.build import lightning_trainer_kwargs
from hftrain._translate.precision import precision

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
    ("max_steps", "epochs", "ga", "rows"),
    [
        (-1, 3.0, 2, 10),  # 10 samples, batch 2 → 5 batches, GA 2 → 3 updates per epoch
        (-1, 1.5, 2, 10),
        (7, 3.0, 2, 10),
        (-1, 1.0, 8, 10),  # at least one update per epoch
        (4, 3.0, 2, None),  # unsized: max_steps drives it
    ],
)
def test_initial_training_values_are_transformers(tmp_path, max_steps, epochs, ga, rows):
    import transformers
    from torch.utils.data import DataLoader, IterableDataset

    from hftrain import Trainer

    class Stream(IterableDataset):
        def __iter__(self):
            return iter(range(10))

    data = list(range(rows)) if rows else Stream()
    values = []
    for cls, args_cls in ((transformers.Trainer, transformers.TrainingArguments), (Trainer, TrainingArguments)):
        args = args_cls(str(tmp_path), max_steps=max_steps, num_train_epochs=epochs, gradient_accumulation_steps=ga,
                        per_device_train_batch_size=2, report_to="none")
        trainer = cls(torch.nn.Linear(2, 2), args)
        values.append(trainer.set_initial_training_values(args, DataLoader(data, batch_size=2)))
    assert values[1] == values[0]


def test_unsized_dataset_without_max_steps_is_refused(tmp_path):
    from torch.utils.data import DataLoader, IterableDataset

    from hftrain import Trainer

    class Stream(IterableDataset):
        def __iter__(self):
            return iter(range(10))

    args = TrainingArguments(str(tmp_path), report_to="none")
    with pytest.raises(ValueError, match="max_steps must be set to a positive value"):
        Trainer(torch.nn.Linear(2, 2), args).set_initial_training_values(args, DataLoader(Stream(), batch_size=2))


@pytest.mark.parametrize(
    ("kwargs", "env", "expected"),
    [
        ({}, CPU, {"accelerator": "cpu", "max_steps": 9,
                   "max_epochs": -1, "num_sanity_val_steps": 0, "use_distributed_sampler": False,
                   "inference_mode": False, "enable_checkpointing": False, "deterministic": None}),
        ({"use_cpu": True}, ONE_GPU, {"accelerator": "cpu"}),
        ({}, ONE_GPU, {"accelerator": "cuda", "precision": "32-true"}),
        ({"full_determinism": True}, CPU, {"deterministic": True}),
        ({"bf16": True, "use_cpu": True}, CPU, {"precision": "bf16-mixed", "accelerator": "cpu"}),
    ],
)
def test_lightning_trainer_kwargs(kwargs, env, expected):
    args = TrainingArguments("out", **kwargs)
    result = lightning_trainer_kwargs(args, env, 9)
    assert {k: result[k] for k in expected} == expected
    # the optimizer step is transformers' (manual optimization): Lightning neither accumulates nor clips
    assert "accumulate_grad_batches" not in result and "gradient_clip_val" not in result
    assert result["default_root_dir"] == "out"


def test_several_processes_map_hf_ddp_options_to_a_ddp_strategy():
    from datetime import timedelta

    from lightning.pytorch.strategies import DDPStrategy

    args = TrainingArguments("out", ddp_timeout=60, ddp_bucket_cap_mb=10, ddp_broadcast_buffers=False)
    result = lightning_trainer_kwargs(args, Env(world_size=4, local_world_size=2), 9)
    strategy = result["strategy"]
    assert isinstance(strategy, DDPStrategy)
    assert (result["devices"], result["num_nodes"]) == (2, 2)
    assert strategy._process_group_backend == "gloo" and strategy._timeout == timedelta(seconds=60)
    assert strategy._ddp_kwargs == {"find_unused_parameters": True, "bucket_cap_mb": 10, "broadcast_buffers": False}
    assert lightning_trainer_kwargs(args, CPU, 9)["strategy"] == "auto"
