"""fp16 with a GradScaler, on the CPU: the step unscales once (for clipping, as accelerate does), skips the optimizer
step and the schedule on overflow, and equals a plain PyTorch loop making accelerate's calls.

Lightning runs fp16 only on CUDA when asked with a string; a ``MixedPrecision`` plugin with a CPU ``GradScaler``
passed as ``precision=`` exercises the same plugin, scaler and step code here.
"""

from __future__ import annotations

import copy

import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from torch.utils.data import DataLoader
from transformers import default_data_collator, get_scheduler

from tests.helpers import assert_same_parameters, classification_rows, tiny_bert_classifier

INIT_SCALE = 2.0**20  # overflows for the first steps: the scaler halves its scale, the steps are skipped


def plain_loop(model, rows, optim: str, steps: int):
    """accelerate's sequence: autocast forward, scaled backward, unscale_ + clip, scaler.step, update, schedule
    unless the step was skipped."""
    from hftrain import TrainingArguments
    from hftrain.trainer import Trainer

    scaler = torch.amp.GradScaler("cpu", init_scale=INIT_SCALE)
    args = TrainingArguments("unused", optim=optim, learning_rate=1e-3, report_to="none")
    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args)
    decay = set(Trainer.get_decay_parameter_names(None, model))
    named = list(model.named_parameters())
    optimizer = cls([{"params": [p for n, p in named if n in decay], "weight_decay": 0.0},
                     {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0}], **kwargs)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=0, num_training_steps=steps)
    logs = []
    for batch in list(DataLoader(rows, batch_size=4, collate_fn=default_data_collator))[:steps]:
        model.train()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = model(**batch).loss
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        lr = scheduler.get_last_lr()[0]
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        if scaler.get_scale() >= scale:
            scheduler.step()
        model.zero_grad()
        logs.append((float(loss), float(norm), lr))
    return logs


@pytest.mark.parametrize("optim", ["adamw_torch", "adamw_torch_fused"])
def test_fp16_with_a_grad_scaler_equals_accelerates_step(tmp_path, optim):
    from hftrain import Trainer, TrainingArguments

    model, rows = tiny_bert_classifier(), classification_rows(24)
    reference = copy.deepcopy(model)
    expected = plain_loop(reference, rows, optim, steps=6)
    scaler = torch.amp.GradScaler("cpu", init_scale=INIT_SCALE)
    args = TrainingArguments(
        str(tmp_path), report_to="none", disable_tqdm=True, per_device_train_batch_size=4, max_steps=6,
        logging_steps=1, learning_rate=1e-3, optim=optim, train_sampling_strategy="sequential", use_cpu=True,
        precision=MixedPrecision("16-mixed", "cpu", scaler=scaler), save_strategy="no",
    )
    trainer = Trainer(model, args, train_dataset=rows)
    trainer.train()
    logs = [(h["loss"], h["grad_norm"], h["learning_rate"]) for h in trainer.state.log_history if "loss" in h]
    assert sum(1 for _, norm, _ in expected if not torch.isfinite(torch.tensor(norm))) >= 2  # overflows happened
    assert [lr for *_, lr in logs] == [lr for *_, lr in expected]  # skipped steps did not advance the schedule
    torch.testing.assert_close(torch.tensor([loss for loss, *_ in logs]),
                               torch.tensor([loss for loss, *_ in expected]))
    torch.testing.assert_close(torch.tensor([norm for _, norm, _ in logs]),
                               torch.tensor([norm for _, norm, _ in expected]), equal_nan=True)
    assert_same_parameters(reference, trainer.model)
    assert scaler.get_scale() < INIT_SCALE
