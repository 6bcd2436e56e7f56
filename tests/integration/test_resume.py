"""Checkpoints survive a hard kill: resuming continues bitwise where the run stopped; saves are atomic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hftrain import Trainer, TrainingArguments
from hftrain.trainer_utils import get_last_checkpoint
from tests.helpers import classification_rows, tiny_bert_classifier

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _run(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "tests.integration.resume_script", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference run, trained once for every kill point."""
    out = tmp_path_factory.mktemp("full")
    full = _run(str(out / "run"), "0", "", str(out / "full.pt"))
    assert full.returncode == 0, full.stderr[-3000:]
    return out / "full.pt"


# 4 steps per epoch, a checkpoint every 2 steps: dying at 3 resumes from checkpoint-2 in the first epoch, at 7
# from checkpoint-6 in the middle of the second (sampler epoch, skipped batches and RNG all restored)
@pytest.mark.parametrize("die_at", [3, 7])
def test_killed_run_resumes_to_identical_weights(tmp_path, die_at, uninterrupted):
    killed = _run(str(tmp_path / "run"), str(die_at), "", str(tmp_path / "never.pt"))
    assert killed.returncode == 17, killed.stderr[-3000:]
    assert not (tmp_path / "never.pt").exists()
    assert get_last_checkpoint(str(tmp_path / "run")).endswith(f"checkpoint-{die_at - die_at % 2}")
    resumed = _run(str(tmp_path / "run"), "0", "last", str(tmp_path / "resumed.pt"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    expected, actual = torch.load(uninterrupted), torch.load(tmp_path / "resumed.pt")
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key  # bitwise, not approximately
    full_logs = torch.load(str(uninterrupted) + ".logs")
    resumed_logs = torch.load(str(tmp_path / "resumed.pt") + ".logs")
    assert [h["step"] for h in resumed_logs] == [h["step"] for h in full_logs]  # the history continues
    assert resumed_logs[-1]["loss"] == full_logs[-1]["loss"]
    assert resumed_logs[-1]["epoch"] == full_logs[-1]["epoch"]


def _args(tmp_path, **kwargs):
    return TrainingArguments(str(tmp_path / "out"), **{**dict(
        report_to="none", disable_tqdm=True, per_device_train_batch_size=4, learning_rate=1e-3, logging_steps=1,
        save_strategy="steps", save_steps=1, max_steps=3), **kwargs})


def test_a_crash_while_saving_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    from hftrain._loop import checkpoint as checkpointing

    trainer = Trainer(tiny_bert_classifier(), _args(tmp_path), train_dataset=classification_rows(16))
    real = checkpointing.save_model_files
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        real(*args, **kwargs)
        if calls["n"] == 2:
            raise OSError("disk full")

    monkeypatch.setattr(checkpointing, "save_model_files", flaky)
    with pytest.raises(OSError, match="disk full"):
        trainer.train()
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-1"]  # no half-written checkpoint-2, no temp dir
    assert get_last_checkpoint(str(out)).endswith("checkpoint-1")
    assert json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())["global_step"] == 1


def test_rotation_keeps_the_best_and_load_best_model_at_end(tmp_path):
    evald = classification_rows(8, seed=1)
    trainer = Trainer(
        tiny_bert_classifier(),
        _args(tmp_path, max_steps=4, eval_strategy="steps", eval_steps=1, save_total_limit=1,
              load_best_model_at_end=True, metric_for_best_model="loss"),
        train_dataset=classification_rows(16), eval_dataset=evald,
    )
    trainer.train()
    evals = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h]
    best_step = 1 + min(range(4), key=lambda i: evals[i])
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{best_step}")
    assert trainer.state.best_metric == min(evals)
    # HF: with save_total_limit=1 only the best survives the end of training
    assert sorted(os.listdir(tmp_path / "out")) == [f"checkpoint-{best_step}"]
    assert trainer.evaluate()["eval_loss"] == pytest.approx(min(evals), rel=1e-5)


def test_corrupt_or_incomplete_checkpoints_are_refused_with_the_file_name(tmp_path):
    trainer = Trainer(tiny_bert_classifier(), _args(tmp_path, max_steps=1), train_dataset=classification_rows(8))
    trainer.train()
    ckpt = tmp_path / "out" / "checkpoint-1"
    (ckpt / "optimizer.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="optimizer.pt is corrupt"):
        Trainer(tiny_bert_classifier(), _args(tmp_path, max_steps=2),
                train_dataset=classification_rows(8)).train(resume_from_checkpoint=str(ckpt))
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="missing model.safetensors"):
        Trainer(tiny_bert_classifier(), _args(tmp_path, max_steps=2),
                train_dataset=classification_rows(8)).train(resume_from_checkpoint=True)


def test_checkpoint_loads_with_from_pretrained(tmp_path):
    from transformers import AutoModelForSequenceClassification

    trainer = Trainer(tiny_bert_classifier(), _args(tmp_path, max_steps=1), train_dataset=classification_rows(8))
    trainer.train()
    model = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "out" / "checkpoint-1"))
    torch.testing.assert_close(model.classifier.weight, trainer.model.classifier.weight)


def test_resuming_with_another_number_of_processes_is_refused(tmp_path):
    trainer = Trainer(tiny_bert_classifier(), _args(tmp_path, max_steps=1), train_dataset=classification_rows(8))
    trainer.train()
    ckpt = tmp_path / "out" / "checkpoint-1"
    (ckpt / "rng_state.pth").rename(ckpt / "rng_state_0.pth")  # as if 2 processes had written it
    (ckpt / "rng_state_1.pth").write_bytes((ckpt / "rng_state_0.pth").read_bytes())
    with pytest.raises(ValueError, match="written by 2 process.*this run has 1"):
        Trainer(tiny_bert_classifier(), _args(tmp_path, max_steps=2),
                train_dataset=classification_rows(8)).train(resume_from_checkpoint=str(ckpt))


def test_a_new_trainer_resumed_from_the_last_checkpoint_trains_no_step(tmp_path):
    """transformers trains one step past max_steps here; hftrain fires on_train_begin / on_train_end and stops
    (a new Trainer: no Lightning run of its own exists then)."""
    from hftrain import Trainer, TrainerCallback, TrainingArguments
    from tests.helpers import classification_rows, tiny_bert_classifier

    def make(callbacks=()):
        args = TrainingArguments(str(tmp_path), report_to="none", disable_tqdm=True, per_device_train_batch_size=4,
                                 max_steps=2, save_strategy="steps", save_steps=2, learning_rate=1e-3)
        return Trainer(tiny_bert_classifier(), args, train_dataset=classification_rows(16), callbacks=list(callbacks))

    make().train()

    class Events(TrainerCallback):
        seen: list = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.seen.append("begin")

        def on_step_end(self, args, state, control, **kwargs):
            self.seen.append("step")

        def on_train_end(self, args, state, control, **kwargs):
            self.seen.append("end")

    resumed = make([Events()])
    output = resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert output.global_step == 2 and Events.seen == ["begin", "end"]
