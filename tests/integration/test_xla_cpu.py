"""XLA for real: a tiny fine-tune through Lightning's XLA strategy on torch_xla's CPU device (``PJRT_DEVICE=CPU``),
against the same run on the plain CPU. Runs where torch_xla is importable (torch_xla 2.9.0 needs torch 2.9.0, so in
a separate environment: see the README); skipped elsewhere.

Lightning's ``XLAAccelerator`` counts TPU chips only (``torch_xla._internal.tpu``), so on a CPU it reports no device;
the accelerator below counts torch_xla's devices instead, which is all that differs from a TPU run."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from tests.helpers import accuracy, classification_rows, tiny_bert_classifier

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("torch_xla") is None, reason="needs torch_xla (PJRT_DEVICE=CPU)"),
]


def cpu_xla_accelerator():
    from lightning.pytorch.accelerators import XLAAccelerator
    from torch_xla import runtime as xr

    class CPUXLAAccelerator(XLAAccelerator):
        @staticmethod
        def auto_device_count() -> int:
            return xr.global_runtime_device_count()

        @staticmethod
        def is_available() -> bool:
            return True

        @staticmethod
        def parse_devices(devices):
            return devices if isinstance(devices, list) else int(devices)

        @staticmethod
        def get_parallel_devices(devices):
            return [torch.device("xla", i) for i in range(devices if isinstance(devices, int) else len(devices))]

    return CPUXLAAccelerator()


def _run(out, **extra):
    from hftrain import Trainer, TrainingArguments

    args = TrainingArguments(str(out), report_to="none", disable_tqdm=True, per_device_train_batch_size=4,
                             max_steps=6, logging_steps=1, save_strategy="no", learning_rate=1e-3, seed=0,
                             optim="adamw_torch", **extra)  # fused AdamW has no XLA kernel (under HF too)
    trainer = Trainer(tiny_bert_classifier(), args, train_dataset=classification_rows(24),
                      eval_dataset=classification_rows(8, seed=1), compute_metrics=accuracy)
    trainer.train()
    metrics = trainer.evaluate()
    return trainer, metrics


def test_a_fine_tune_on_torch_xla_matches_the_plain_cpu_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PJRT_DEVICE", os.environ.get("PJRT_DEVICE", "CPU"))
    import torch_xla

    torch_xla.device()  # before any backward: autograd sizes its device queues at its first backward
    cpu, cpu_metrics = _run(tmp_path / "cpu")
    xla, xla_metrics = _run(tmp_path / "xla", accelerator=cpu_xla_accelerator(), strategy="single_xla", devices=1)
    assert type(xla.lightning_trainer.strategy).__name__ == "SingleDeviceXLAStrategy"
    steps = [(h["loss"], h["grad_norm"], h["learning_rate"]) for h in cpu.state.log_history if "loss" in h]
    on_xla = [(h["loss"], h["grad_norm"], h["learning_rate"]) for h in xla.state.log_history if "loss" in h]
    assert len(on_xla) == len(steps) == 6
    torch.testing.assert_close(torch.tensor(on_xla), torch.tensor(steps), rtol=1e-5, atol=1e-7)
    assert xla_metrics["eval_loss"] == pytest.approx(cpu_metrics["eval_loss"], rel=1e-5)
    assert xla_metrics["eval_accuracy"] == cpu_metrics["eval_accuracy"]
    for name, value in cpu.model.state_dict().items():
        torch.testing.assert_close(xla.model.state_dict()[name].cpu(), value.cpu(), rtol=1e-4, atol=1e-6, msg=name)
