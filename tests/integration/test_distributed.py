"""Results do not depend on the number of processes: 1 process × batch 8 == 2 processes × batch 4 (gloo, CPU).

The ranks are started by the test under torchrun (never by Lightning re-launching pytest)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out: Path, processes: int, per_device: int, task: str, strategy: str | None = None,
            **env_vars: str) -> dict:
    """``processes`` ranks under torchrun; with ``strategy``, one plain process whose Lightning starts the ranks."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env_vars}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK"):
        env.pop(key, None)
    script = ["-m", "tests.integration.ddp_script", str(out), str(per_device), task]
    if strategy is None:
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                   f"--master_port={_free_port()}", "--master_addr=127.0.0.1", *script]
    else:
        command = [sys.executable, *script, strategy]
        env["MASTER_PORT"] = str(_free_port())
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    result = json.loads((out / "result.json").read_text())
    result["output"] = done.stdout + done.stderr
    result["weights"] = load_file(out / "final" / "model.safetensors")
    if (out / "resumed" / "final").is_dir():
        result["resumed_weights"] = load_file(out / "resumed" / "final" / "model.safetensors")
    result["labels"] = np.load(out / "labels.npy")
    return result


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The single-process reference runs (batch 8), computed once per task for every comparison."""
    cache: dict[str, dict] = {}

    def run(task: str) -> dict:
        if task not in cache:
            cache[task] = _launch(tmp_path_factory.mktemp(f"one-{task}"), 1, 8, task)
        return cache[task]

    return run


@pytest.mark.parametrize("task", ["classifier", "causal_lm", "grouped_lm", "tokenized"])
def test_two_processes_match_one(tmp_path, task, one_process):
    two = _launch(tmp_path / "two", 2, 4, task)
    _assert_same_run(one_process(task), two, task)
    if task == "tokenized":  # each process's slices of the batches come from the Arrow columns (fast_collate.py)
        assert two["train_dataset"] == one_process(task)["train_dataset"] == "ColumnarDataset"


def _torchrun(*script: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK"):
        env.pop(key, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
               "--master_addr=127.0.0.1", "-m", *script]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_a_parameter_some_steps_leave_unused_trains_with_transformers_ddp_default(tmp_path):
    """``ddp_find_unused_parameters`` unset is transformers' default: DDP searches for unused parameters, so a model
    that leaves some parameters without a gradient at some steps (here: every other step, as layerdrop or
    mixture-of-experts routing do) trains on 2 processes; without the search DDP refuses it."""
    trained = _torchrun("tests.integration.unused_parameters_script", str(tmp_path / "unset"), "unset")
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-3000:]
    assert "rank 0 trained 4 steps" in trained.stdout and "rank 1 trained 4 steps" in trained.stdout
    refused = _torchrun("tests.integration.unused_parameters_script", str(tmp_path / "false"), "false")
    assert refused.returncode != 0 and "find_unused_parameters" in refused.stderr


@pytest.mark.parametrize("strategy", ["ddp", "ddp_notebook", "ddp_spawn"])
def test_processes_started_by_lightning_match_one(tmp_path, strategy, one_process):
    """The one-argument swap: ``strategy=..., devices=2`` in a plain script (Lightning re-runs it, forks, or
    spawns: then the whole Trainer is pickled, and rank 0's state, metrics and weights come back)."""
    two = _launch(tmp_path / "two", 1, 4, "classifier", strategy=strategy)
    _assert_same_run(one_process("classifier"), two, "classifier", counted_here=strategy == "ddp")


@pytest.mark.parametrize("task", ["classifier", "causal_lm"])
def test_fsdp2_on_two_processes_matches_one_and_resumes(tmp_path, task, one_process):
    """``strategy="fsdp"``: fully_shard per layer over 2 gloo processes; checkpoints hold the gathered weights
    (``from_pretrained``-loadable) and a resume from the epoch-1 checkpoint ends with the same weights."""
    two = _launch(tmp_path / "two", 1, 4, task, strategy="fsdp")
    _assert_same_run(one_process(task), two, task, counted_here=False)  # it also trains the resumed run
    checkpoint = sorted((tmp_path / "two").glob("checkpoint-*"))[0]
    assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state_0.pth", "rng_state_1.pth"} <= {
        p.name for p in checkpoint.iterdir()}
    for name, tensor in two["weights"].items():
        torch.testing.assert_close(two["resumed_weights"][name], tensor, rtol=1e-5, atol=1e-6, msg=name)


def _assert_same_run(one: dict, two: dict, task: str, counted_here: bool = True) -> None:
    """``counted_here``: the script's process ran every speed metric (not a forked or spawned worker)."""
    steps = [h for h in one["history"] if "loss" in h]
    assert [h["step"] for h in steps] == [h["step"] for h in two["history"] if "loss" in h]
    for a, b in zip(steps, [h for h in two["history"] if "loss" in h]):
        for key in ("loss", "grad_norm", "learning_rate", "epoch"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["step"], key)
    for key, value in one["metrics"].items():
        if not key.endswith(("runtime", "per_second")):
            assert two["metrics"][key] == pytest.approx(value, rel=1e-4), key
    assert two["test_metrics"]["test_loss"] == pytest.approx(one["test_metrics"]["test_loss"], rel=1e-4)
    # the counters: FLOPs and tokens over every process, and the samples each *_samples_per_second divides
    assert two["total_flos"] == one["total_flos"] > 0
    assert two["num_input_tokens_seen"] == one["num_input_tokens_seen"] > 0
    if counted_here:
        assert two["samples"] == one["samples"] and set(one["samples"]) >= {"train", "eval", "test"}
    if task in ("classifier", "tokenized"):
        np.testing.assert_array_equal(two["labels"], one["labels"])  # every sample once, in dataset order
    else:
        assert two["labels"].shape[0] == one["labels"].shape[0] == 11
    for name, tensor in one["weights"].items():
        torch.testing.assert_close(two["weights"][name], tensor, rtol=1e-4, atol=1e-6, msg=name)


EXIT_CHECK = """
import atexit, sys, torch, torch.distributed as dist
from hftrain import Trainer, TrainingArguments
from tests.helpers import classification_rows, tiny_bert_classifier

dist.init_process_group("gloo", store=dist.FileStore(sys.argv[1], 1), rank=0, world_size=1)
atexit.register(lambda: print("group alive at exit:", dist.is_initialized()))  # runs after hftrain's handler
Trainer(tiny_bert_classifier(), TrainingArguments(sys.argv[2], max_steps=1, report_to="none", use_cpu=True),
        train_dataset=classification_rows(4, seed=0)).train()
"""


def test_process_group_is_destroyed_before_the_interpreter_exits(tmp_path):
    """A gloo group left to interpreter finalisation can abort a finished run (SIGABRT, pytorch#179291)."""
    done = subprocess.run([sys.executable, "-c", EXIT_CHECK, str(tmp_path / "store"), str(tmp_path / "out")],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "group alive at exit: False" in done.stdout


def test_gradients_are_synchronised_only_on_the_last_micro_batch_of_a_window(tmp_path):
    """accelerate's accumulate: with gradient accumulation 2, DDP all-reduces once per optimizer step (on the
    window's last micro-batch), never on the others; the numbers stay one process's (the other tests)."""
    result = _launch(tmp_path, 2, 4, "classifier", COUNT_GRADIENT_SYNCS="1")
    syncs = result["syncs"]
    assert syncs and all(syncs), syncs  # no all-reduce while the step had asked to skip the synchronisation
    assert len(syncs) % result["global_step"] == 0  # the same number of buckets at every optimizer step


def test_hyperparameter_search_under_torchrun_follows_rank_0_and_never_hangs(tmp_path):
    """Rank 1 trains rank 0's trials, leaves a pruned trial at the same evaluation, and stops when rank 0's study
    ends early (a timeout): transformers' followers would wait for a trial that never comes."""
    done = _torchrun("tests.integration.hpo_script", str(tmp_path))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    rank0, rank1 = (json.loads((tmp_path / f"ranks-{r}.json").read_text()) for r in (0, 1))
    assert rank0["trials"] == rank1["trials"] and len(rank0["trials"]) == 5
    steps = [trial["steps"] for trial in rank0["trials"]]
    assert steps[0] == 6 and 2 in steps[1:]  # the pruner stopped trials at their first evaluation, on both ranks
    assert len({trial["learning_rate"] for trial in rank0["trials"]}) == 5
    run_id, objective, hyperparameters = rank0["best"]
    assert hyperparameters["learning_rate"] == rank0["trials"][int(run_id)]["learning_rate"]
    assert rank0["timed_out_trials"] == rank1["timed_out_trials"] and len(rank1["timed_out_trials"]) == 1
