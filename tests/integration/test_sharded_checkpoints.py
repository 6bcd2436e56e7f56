"""Sharded checkpoints: hftrain writes them as ``save_pretrained`` shards a big model, and resumes and loads the
best model from them in each layout transformers has written (``model.safetensors.index.json`` with its shards,
``pytorch_model.bin``, ``pytorch_model.bin.index.json`` with its shards)."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from hftrain import Trainer, TrainingArguments
from tests.helpers import lm_rows, pad_lm_batch, tiny_gpt2


def _trainer(out, max_steps=8, **kwargs):
    args = TrainingArguments(str(out), report_to="none", disable_tqdm=True, per_device_train_batch_size=2,
                             max_steps=max_steps, save_steps=4, logging_steps=1, learning_rate=5e-3, seed=1,
                             **kwargs)
    return Trainer(tiny_gpt2(dropout=0.1), args, train_dataset=lm_rows(24, seed=4), eval_dataset=lm_rows(4, seed=5),
                   data_collator=pad_lm_batch)


def _reshard(checkpoint: Path, layout: str) -> None:
    """Rewrite a checkpoint's ``model.safetensors`` in ``layout``, as older or bigger transformers runs wrote it."""
    weights = load_file(checkpoint / "model.safetensors")
    os.remove(checkpoint / "model.safetensors")
    if layout == "bin":
        torch.save(weights, checkpoint / "pytorch_model.bin")
        return
    names = sorted(weights)
    shards = [names[: len(names) // 2], names[len(names) // 2:]]
    stem, suffix = ("model", "safetensors") if layout == "safetensors-shards" else ("pytorch_model", "bin")
    weight_map = {}
    for index, keys in enumerate(shards, start=1):
        file = f"{stem}-{index:05d}-of-{len(shards):05d}.{suffix}"
        part = {key: weights[key].contiguous() for key in keys}
        save_file(part, checkpoint / file, metadata={"format": "pt"}) if suffix == "safetensors" else torch.save(
            part, checkpoint / file)
        weight_map.update(dict.fromkeys(keys, file))
    index_name = "model.safetensors.index.json" if suffix == "safetensors" else "pytorch_model.bin.index.json"
    (checkpoint / index_name).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


@pytest.mark.parametrize("layout", ["safetensors-shards", "bin", "bin-shards"])
def test_resume_from_each_sharded_layout_gives_the_uninterrupted_run(tmp_path, layout):
    full = _trainer(tmp_path / "run")
    full.train()
    checkpoint = tmp_path / "run" / "checkpoint-4"
    _reshard(checkpoint, layout)
    resumed = _trainer(tmp_path / "run")
    resumed.train(resume_from_checkpoint=str(checkpoint))
    for name, value in full.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
    assert [h["loss"] for h in resumed.state.log_history if "loss" in h][-4:] == [
        h["loss"] for h in full.state.log_history if "loss" in h][-4:]


@pytest.mark.parametrize("layout", ["safetensors-shards", "bin-shards"])
def test_load_best_model_at_end_from_a_sharded_checkpoint(tmp_path, layout, monkeypatch):
    from hftrain._loop import checkpoint as checkpoints

    best_step = {}
    reshard_on_save = checkpoints.CheckpointMethods._save_checkpoint

    def save_then_reshard(self, model, trial):
        reshard_on_save(self, model, trial)
        folder = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
        if (folder / "model.safetensors").exists():
            best_step[self.state.global_step] = {k: v.clone() for k, v in self.model.state_dict().items()}
            _reshard(folder, layout)

    monkeypatch.setattr(checkpoints.CheckpointMethods, "_save_checkpoint", save_then_reshard)
    trainer = _trainer(tmp_path, max_steps=12, eval_strategy="steps", eval_steps=4, load_best_model_at_end=True,
                       metric_for_best_model="loss", greater_is_better=True)  # the worst loss: not the last step
    trainer.train()
    best = int(trainer.state.best_model_checkpoint.rsplit("-", 1)[1])
    assert best != 12
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(best_step[best][name], value), name


def test_a_big_model_is_saved_in_shards_as_save_pretrained_shards_it_and_resumes(tmp_path, monkeypatch):
    from transformers import PreTrainedModel

    small_shards = functools.partialmethod(PreTrainedModel.save_pretrained, max_shard_size="20KB")
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", small_shards)  # the tiny model is "big" now
    full = _trainer(tmp_path / "run")
    full.train()
    checkpoint = tmp_path / "run" / "checkpoint-4"
    index = json.loads((checkpoint / "model.safetensors.index.json").read_text())
    assert not (checkpoint / "model.safetensors").exists() and len(set(index["weight_map"].values())) > 1
    resumed = _trainer(tmp_path / "run")
    resumed.train(resume_from_checkpoint=str(checkpoint))
    for name, value in full.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
