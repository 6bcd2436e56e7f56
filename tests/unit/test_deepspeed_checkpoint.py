"""DeepSpeed checkpoints in HF's layout, with a stand-in engine (DeepSpeed is not a dependency, and Lightning runs it
on CUDA only; ``tests/integration/test_deepspeed_cpu.py`` drives a real engine on the CPU where DeepSpeed is
installed, and ``tests/gpu/gpu_check.py --deepspeed`` the whole Trainer: bitwise resume under ZeRO-2 and ZeRO-3)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from hftrain import Trainer, TrainerState, TrainingArguments
from hftrain._backends import deepspeed_checkpoint as _deepspeed_checkpoint
from hftrain._loop import checkpoint as checkpointing
from tests.helpers import ListDataset


class FakeEngine:
    """What hftrain uses of ``DeepSpeedEngine``: it writes ``{dir}/{tag}/`` and ``latest`` as DeepSpeed does."""

    def __init__(self, model: nn.Module, stage: int = 2, fail: bool = False, load_ok: bool = True) -> None:
        self.model, self.stage, self.fail, self.load_ok = model, stage, fail, load_ok
        self.saved: list[tuple[str, str]] = []
        self.loaded: list[dict] = []

    def zero_optimization_partition_weights(self) -> bool:
        return self.stage == 3

    def _zero3_consolidated_16bit_state_dict(self) -> dict[str, torch.Tensor]:
        return {f"model.{k}": v.to(torch.bfloat16) for k, v in self.model.state_dict().items()}

    def save_checkpoint(self, save_dir: str, tag: str) -> None:
        os.makedirs(os.path.join(save_dir, tag), exist_ok=True)
        torch.save({"module": self.model.state_dict(), "ds_version": "0.19.8"},
                   Path(save_dir, tag, "mp_rank_00_model_states.pt"))
        if self.fail:
            raise OSError("disk full")
        Path(save_dir, "latest").write_text(tag)
        self.saved.append((save_dir, tag))

    def load_checkpoint(self, load_dir: str, **kwargs):
        self.loaded.append({"dir": load_dir, **kwargs})
        return (load_dir, {}) if self.load_ok else (None, None)


class DeepSpeedTrainer(Trainer):
    """The Trainer as it runs under DeepSpeed, with the stand-in engine in place of Lightning's."""

    _deepspeed = True
    engine: FakeEngine | None = None

    def _deepspeed_engine(self):
        return self.engine


def _trainer(tmp_path, engine, **arg_overrides):
    model = nn.Linear(3, 2)
    engine.model = model
    args = TrainingArguments(str(tmp_path), report_to="none", **arg_overrides)
    trainer = DeepSpeedTrainer(model, args)
    trainer.engine = engine
    trainer.optimizer = torch.optim.AdamW(model.parameters())
    trainer.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, lambda step: 1.0)
    return trainer


def _save(tmp_path, engine, **arg_overrides):
    trainer = _trainer(tmp_path, engine, **arg_overrides)
    trainer.state = TrainerState(global_step=4)
    trainer._save_checkpoint(trainer.model, trial=None)  # the path every save takes: save_model, _save, ...
    return Path(tmp_path, "checkpoint-4"), trainer.model


def test_checkpoint_holds_the_engine_states_beside_hf_files(tmp_path):
    engine = FakeEngine(nn.Linear(3, 2))
    path, model = _save(tmp_path, engine)
    assert path.name == "checkpoint-4"
    assert sorted(p.name for p in path.iterdir()) == [
        "global_step4", "latest", "model.safetensors", "rng_state.pth", "scheduler.pt", "trainer_state.json",
        "training_args.bin",
    ]  # no optimizer.pt: the optimizer state is the engine's, partitioned under global_step4/
    assert engine.saved[0][1] == "global_step4" and Path(engine.saved[0][0]).name.startswith(".tmp-checkpoint-4")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    weights = load_file(str(path / "model.safetensors"))
    assert torch.equal(weights["weight"], model.weight.detach())  # ZeRO-1/2: every process holds the whole model


def test_zero3_writes_the_gathered_weights_under_the_models_own_names(tmp_path):
    path, model = _save(tmp_path, FakeEngine(nn.Linear(3, 2), stage=3))
    weights = load_file(str(path / "model.safetensors"))
    assert sorted(weights) == ["bias", "weight"]
    assert torch.equal(weights["weight"], model.weight.detach().to(torch.bfloat16))


def test_save_only_model_writes_no_engine_states(tmp_path):
    engine = FakeEngine(nn.Linear(3, 2))
    path, _ = _save(tmp_path, engine, save_only_model=True)
    assert engine.saved == [] and not list(path.glob("global_step*"))


def test_a_crash_while_the_engine_saves_leaves_no_checkpoint_and_no_temporary_folder(tmp_path):
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, FakeEngine(nn.Linear(3, 2), fail=True))
    assert list(tmp_path.iterdir()) == []


def test_load_engine_state_asks_for_optimizer_states_and_names_a_folder_without_them(tmp_path):
    path, _ = _save(tmp_path, FakeEngine(nn.Linear(3, 2)))
    engine = FakeEngine(nn.Linear(3, 2))
    _deepspeed_checkpoint.load_engine_state(engine, str(path))
    assert engine.loaded == [{"dir": str(path), "load_module_strict": True, "load_optimizer_states": True,
                              "load_lr_scheduler_states": False}]
    model_only, _ = _save(tmp_path / "model_only", FakeEngine(nn.Linear(3, 2)), save_only_model=True)
    with pytest.raises(ValueError, match=r"checkpoint-4: it has no `global_step\*` folder"):
        _deepspeed_checkpoint.load_engine_state(engine, str(model_only))
    with pytest.raises(ValueError, match="failed to resume from checkpoint"):
        _deepspeed_checkpoint.load_engine_state(FakeEngine(nn.Linear(3, 2), load_ok=False), str(path))


class Payload:
    """A class a pickle names: loading an instance runs its module's code, so it is not plain data."""

    def __init__(self) -> None:
        self.command = "anything"


def test_engine_files_that_would_run_pickled_code_are_refused_before_deepspeed_opens_them(tmp_path):
    path, _ = _save(tmp_path, FakeEngine(nn.Linear(3, 2)))
    states = path / "global_step4" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    torch.save({"optimizer_state_dict": {"loss_scaler": Payload()}}, states)
    engine = FakeEngine(nn.Linear(3, 2))
    with pytest.raises(ValueError, match=r"zero_pp_rank_0_mp_rank_00_optim_states.pt holds pickled objects .*"
                                         r"test_deepspeed_checkpoint.Payload.*add_safe_globals"):
        _deepspeed_checkpoint.load_engine_state(engine, str(path))
    assert engine.loaded == []  # DeepSpeed never saw the file
    with torch.serialization.safe_globals([Payload]):  # the user's opt-in: torch's own allowlist
        _deepspeed_checkpoint.load_engine_state(engine, str(path))
    assert len(engine.loaded) == 1


def test_a_damaged_engine_file_is_named(tmp_path):
    path, _ = _save(tmp_path, FakeEngine(nn.Linear(3, 2)))
    (path / "global_step4" / "mp_rank_00_model_states.pt").write_bytes(b"half a zip")
    with pytest.raises(ValueError, match=r"mp_rank_00_model_states.pt is corrupt"):
        _deepspeed_checkpoint.load_engine_state(FakeEngine(nn.Linear(3, 2)), str(path))


def test_resume_reads_only_the_scheduler_the_engine_restores_the_optimizer(tmp_path):
    path, _ = _save(tmp_path, FakeEngine(nn.Linear(3, 2)))
    saved = torch.load(path / "scheduler.pt", weights_only=True)
    saved["last_epoch"] = 7
    torch.save(saved, path / "scheduler.pt")
    trainer = _trainer(tmp_path / "resumed", FakeEngine(nn.Linear(3, 2)))
    trainer._load_optimizer_and_scheduler(str(path))
    assert trainer.lr_scheduler.last_epoch == 7 and trainer.optimizer.state_dict()["state"] == {}


def test_engine_lookup_is_none_without_deepspeed():
    class Strategy:
        model = nn.Linear(1, 1)

    class LightningTrainer:
        strategy = Strategy()

    assert _deepspeed_checkpoint.deepspeed_engine(LightningTrainer()) is None
    assert _deepspeed_checkpoint.deepspeed_engine(None) is None
    assert not _deepspeed_checkpoint.runs_deepspeed(None)


class Regressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, x, labels=None):
        out = self.linear(x).squeeze(-1)
        return (nn.functional.mse_loss(out, labels), out)


def _rows():
    return ListDataset([{"x": torch.randn(4), "labels": torch.tensor(1.0)} for _ in range(4)])


def test_deepspeed_checkpoints_are_no_longer_refused(tmp_path):
    args = TrainingArguments(str(tmp_path), report_to="none", deepspeed={"zero_optimization": {"stage": 2}},
                             save_strategy="steps", save_steps=2)
    Trainer(Regressor(), args, train_dataset=_rows())  # the check runs at construction


def test_deepspeed_with_model_only_checkpoints_cannot_load_the_best_model(tmp_path):
    args = TrainingArguments(str(tmp_path), report_to="none", deepspeed={"zero_optimization": {"stage": 2}},
                             save_only_model=True, load_best_model_at_end=True, eval_strategy="steps",
                             save_strategy="steps")
    with pytest.raises(ValueError, match="DeepSpeed can't be used with `save_only_model` along with"):
        Trainer(Regressor(), args, train_dataset=_rows(), eval_dataset=_rows())
