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

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out: Path, processes: int, per_device: int, task: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
               f"--master_port={_free_port()}", "--master_addr=127.0.0.1", "-m", "tests.integration.ddp_script",
               str(out), str(per_device), task]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    result = json.loads((out / "result.json").read_text())
    result["weights"] = torch.load(out / "weights.pt")
    result["labels"] = np.load(out / "labels.npy")
    return result


@pytest.mark.parametrize("task", ["classifier", "causal_lm"])
def test_two_processes_match_one(tmp_path, task):
    one = _launch(tmp_path / "one", 1, 8, task)
    two = _launch(tmp_path / "two", 2, 4, task)
    steps = [h for h in one["history"] if "loss" in h]
    assert [h["step"] for h in steps] == [h["step"] for h in two["history"] if "loss" in h]
    for a, b in zip(steps, [h for h in two["history"] if "loss" in h]):
        for key in ("loss", "grad_norm", "learning_rate", "epoch"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["step"], key)
    for key, value in one["metrics"].items():
        if not key.endswith(("runtime", "per_second")):
            assert two["metrics"][key] == pytest.approx(value, rel=1e-4), key
    assert two["test_metrics"]["test_loss"] == pytest.approx(one["test_metrics"]["test_loss"], rel=1e-4)
    if task == "classifier":
        np.testing.assert_array_equal(two["labels"], one["labels"])  # every sample once, in dataset order
    else:
        assert two["labels"].shape[0] == one["labels"].shape[0] == 11
    for name, tensor in one["weights"].items():
        torch.testing.assert_close(two["weights"][name], tensor, rtol=1e-4, atol=1e-6, msg=name)
