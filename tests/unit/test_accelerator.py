"""``trainer.accelerator``: accelerate's API over the Lightning strategy (and over the arguments between runs)."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from hftrain import Trainer, TrainingArguments
from hftrain._loop.accelerator import DistributedType, HFAccelerator


def _accelerator(tmp_path, **kwargs) -> HFAccelerator:
    return Trainer(nn.Linear(2, 2), TrainingArguments(str(tmp_path), report_to="none", **kwargs)).accelerator


def test_between_runs_it_answers_from_the_arguments(tmp_path):
    accelerator = _accelerator(tmp_path, gradient_accumulation_steps=3)
    assert (accelerator.num_processes, accelerator.process_index, accelerator.local_process_index) == (1, 0, 0)
    assert accelerator.is_main_process and accelerator.is_local_main_process and not accelerator.use_distributed
    assert accelerator.device == torch.device("cpu") and accelerator.distributed_type == DistributedType.NO
    assert accelerator.distributed_type == "NO"  # compares equal to accelerate's string enum
    assert accelerator.gradient_accumulation_steps == 3 and accelerator.sync_gradients
    assert accelerator.mixed_precision == "no" and accelerator.scaler is None
    assert accelerator.state.num_processes == 1 and accelerator.state.deepspeed_plugin is None


def test_collectives_on_one_process_return_their_input(tmp_path):
    accelerator = _accelerator(tmp_path)
    x = torch.arange(4.0)
    assert accelerator.gather(x) is x and accelerator.gather_for_metrics(x) is x
    assert accelerator.pad_across_processes(x, dim=0) is x
    assert torch.equal(accelerator.reduce(x, scale=2.0), x * 2)
    assert accelerator.gather_for_metrics(["a", "b"], use_gather_object=True) == ["a", "b"]
    accelerator.wait_for_everyone()


def test_unwrap_model_sees_through_wrappers(tmp_path):
    accelerator = _accelerator(tmp_path)
    model = nn.Linear(2, 2)
    assert accelerator.unwrap_model(nn.DataParallel(model)) is model
    assert accelerator.unwrap_model(model) is model


def test_backward_outside_a_run_is_plain_autograd(tmp_path):
    accelerator = _accelerator(tmp_path)
    weight = torch.ones(2, requires_grad=True)
    accelerator.backward((weight * 3).sum())
    assert torch.equal(weight.grad, torch.full((2,), 3.0))
    with accelerator.no_sync(), accelerator.accumulate(), accelerator.autocast():
        pass


def test_an_unknown_name_says_what_is_supported(tmp_path):
    with pytest.raises(AttributeError, match=r"has no `split_between_processes`\. It supports: backward, gather"):
        _accelerator(tmp_path).split_between_processes


def test_accelerator_config_is_read(tmp_path):
    accelerator = _accelerator(tmp_path, accelerator_config={"split_batches": True, "even_batches": False,
                                                             "gradient_accumulation_kwargs": {"sync_each_batch": True}})
    assert accelerator.split_batches and not accelerator.even_batches and accelerator.use_seedable_sampler
    assert accelerator.gradient_state.plugin_kwargs == {"num_steps": 1, "sync_each_batch": True}


def test_num_steps_in_the_accelerator_config_sets_the_accumulation(tmp_path):
    args = TrainingArguments(str(tmp_path), report_to="none", accelerator_config={
        "gradient_accumulation_kwargs": {"num_steps": 4}})
    Trainer(nn.Linear(2, 2), args)
    assert args.gradient_accumulation_steps == 4
    with pytest.raises(ValueError, match="`num_steps` is set but `gradient_accumulation_steps` is greater than 1"):
        Trainer(nn.Linear(2, 2), TrainingArguments(str(tmp_path), report_to="none", gradient_accumulation_steps=2,
                                                   accelerator_config={"gradient_accumulation_kwargs": {"num_steps": 4}}))


def test_under_deepspeed_the_engine_steps_on_every_micro_batch(tmp_path):
    """accelerate steps DeepSpeed's engine inside backward; the window's last step goes through Lightning's
    optimizer (so Lightning counts one optimizer step per window)."""
    calls = []

    class Engine:
        def save_checkpoint(self, *args, **kwargs): ...
        def step(self):
            calls.append("engine.step")
        def get_global_grad_norm(self):
            return 0.5

    class DeepSpeedStrategy:
        model = Engine()

    module = types.SimpleNamespace(
        manual_backward=lambda loss: calls.append("manual_backward"),
        optimizers=lambda: types.SimpleNamespace(step=lambda: calls.append("optimizer.step")),
    )
    accelerator = _accelerator(tmp_path)
    accelerator._attach(types.SimpleNamespace(strategy=DeepSpeedStrategy(), lightning_module=module))
    accelerator.gradient_state._set_sync_gradients(False)
    accelerator.backward(torch.tensor(1.0))
    accelerator.gradient_state._set_sync_gradients(True)
    accelerator.backward(torch.tensor(1.0))
    assert calls == ["manual_backward", "engine.step", "manual_backward", "optimizer.step"]
    assert float(accelerator.clip_grad_norm_([], 1.0)) == 0.5  # the engine clips; its norm is reported
    assert accelerator.distributed_type == DistributedType.DEEPSPEED
