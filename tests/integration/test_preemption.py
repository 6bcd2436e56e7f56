"""``enable_jit_checkpoint``: a signal to any process ends the run after the same optimizer step, with one
checkpoint at that step, and resuming from it gives the uninterrupted run bit for bit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hftrain import Trainer, TrainerCallback, TrainingArguments
from tests.helpers import classification_rows, tiny_bert_classifier

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


class SignalAt(TrainerCallback):
    """Sends this process ``signum`` at the start of a step, as a scheduler would, mid-run."""

    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def _trainer(out, callbacks=(), **kwargs):
    args = TrainingArguments(str(out), report_to="none", disable_tqdm=True, per_device_train_batch_size=4,
                             gradient_accumulation_steps=2, max_steps=8, logging_steps=3, save_strategy="no",
                             learning_rate=1e-3, seed=3, enable_jit_checkpoint=True, **kwargs)
    return Trainer(tiny_bert_classifier(dropout=0.1), args, train_dataset=classification_rows(40),
                   callbacks=list(callbacks))


@pytest.mark.parametrize(("signum", "signals"), [(signal.SIGTERM, "SIGTERM"), (signal.SIGUSR1, "SIGTERM,SIGUSR1")])
def test_a_signal_finishes_the_step_saves_it_and_resuming_gives_the_uninterrupted_run(tmp_path, signum, signals):
    before = signal.getsignal(signum)
    interrupted = _trainer(tmp_path / "run", [SignalAt(3, signum)], jit_checkpoint_signals=signals)
    output = interrupted.train()
    assert output.global_step == 4 and interrupted._jit_checkpoint.stopped_at == 4  # the step it arrived in
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-4"]
    assert signal.getsignal(signum) == before  # the handler only while training

    resumed = _trainer(tmp_path / "run", jit_checkpoint_signals=signals)
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-4"))
    full = _trainer(tmp_path / "full")
    full.train()
    assert resumed.state.global_step == full.state.global_step == 8
    for name, value in full.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
    assert _losses(resumed.state.log_history) == _losses(full.state.log_history)  # the running loss was saved too


def _losses(history):
    return [(h["step"], h["loss"], h["grad_norm"], h["learning_rate"]) for h in history if "loss" in h]


def test_without_a_signal_nothing_is_saved_and_the_handler_is_restored(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    trainer = _trainer(tmp_path)
    trainer.train()
    assert trainer._jit_checkpoint.stopped_at is None and not list(tmp_path.glob("checkpoint-*"))
    assert signal.getsignal(signal.SIGTERM) == before


def test_jit_checkpoint_signals_must_be_catchable_signals(tmp_path):
    with pytest.raises(ValueError, match="`jit_checkpoint_signals`.*'SIGKILL' is not a signal that can be caught"):
        TrainingArguments(str(tmp_path), enable_jit_checkpoint=True, jit_checkpoint_signals="SIGTERM,SIGKILL")
    with pytest.raises(ValueError, match="'SIGNOPE'"):
        TrainingArguments(str(tmp_path), jit_checkpoint_signals="SIGNOPE")


def _env():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK"):
        env.pop(key, None)
    return env


def _command(processes: int, out: Path, mode: str, signals: str = "SIGTERM") -> list[str]:
    script = ["-m", "tests.integration.preemption_script", str(out), mode, signals]
    if processes == 1:
        return [sys.executable, *script]
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}", f"--master_port={port}",
            "--master_addr=127.0.0.1", *script]


@pytest.mark.parametrize("processes", [1, 2])
def test_signalling_one_process_of_a_running_job_stops_every_process_at_one_checkpoint(tmp_path, processes):
    job = subprocess.Popen(_command(processes, tmp_path, "interrupt"), cwd=ROOT, env=_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pid_file = tmp_path / f"pid-{processes - 1}"  # the last rank only: rank 0 is never told
    deadline = time.monotonic() + 300
    while not pid_file.exists() or not pid_file.read_text():
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()[0][-4000:]
        time.sleep(0.05)
    os.kill(int(pid_file.read_text()), signal.SIGTERM)
    signalled = time.monotonic()
    log, _ = job.communicate(timeout=120)
    assert job.returncode == 0, log[-4000:]
    assert time.monotonic() - signalled < 60, "the job took too long to stop after the signal"
    results = [json.loads((tmp_path / f"interrupt-{rank}.json").read_text()) for rank in range(processes)]
    steps = {r["stopped_at"] for r in results}
    assert len(steps) == 1 and None not in steps, steps  # every rank stopped after the same step
    (step,) = steps
    assert 2 <= step < 40 and all(r["global_step"] == step for r in results)
    assert [p.name for p in tmp_path.glob("checkpoint-*")] == [f"checkpoint-{step}"]
    assert not list(tmp_path.glob(".tmp-*"))  # no half-written checkpoint beside it

    done = subprocess.run(_command(processes, tmp_path, "resume"), cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    resumed, full = (json.loads((tmp_path / f"{mode}-0.json").read_text()) for mode in ("resume", "full"))
    assert resumed["global_step"] == full["global_step"] == 40
    assert resumed["weights"] == full["weights"]
    assert _losses(resumed["history"]) == _losses(full["history"])
