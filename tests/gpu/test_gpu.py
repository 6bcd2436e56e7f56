"""The GPU check script (``gpu_check.py``): its CPU pass in the default run, so the script a GPU slot runs is known
to work; the real run on a CUDA machine (skipped without CUDA)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("gpu_check.py")


def _run(out: Path, *flags: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *flags], env=env, capture_output=True,
                          text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.integration
def test_gpu_check_code_paths_on_the_cpu(tmp_path):
    report = _run(tmp_path / "smoke.json", "--smoke")
    assert report["bf16"]["max_rel_loss_diff"] < 1e-4 and report["fp16"]["max_rel_loss_diff"] < 1e-4
    assert report["fsdp"]["sharded"] and "model.safetensors" in report["fsdp"]["files"]
    overflow = report["fp16_overflow"]  # a CPU GradScaler here: the same plugin and step code as on CUDA
    assert overflow["ok"] and overflow["overflowed_steps"] and overflow["schedule_held_on_overflow"]
    assert report["throughput"]["ok"] == (report["throughput"]["ratio_hftrain_over_transformers"] >= 0.3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_check(tmp_path):
    import importlib.util

    deepspeed = importlib.util.find_spec("deepspeed") is not None
    report = _run(tmp_path / "gpu.json", *(["--deepspeed"] if deepspeed else []))
    names = ["bf16", "fp16", "fsdp", "throughput", "fp16_overflow"]
    names += ["deepspeed_zero2", "deepspeed_zero3", "deepspeed_parity"] if deepspeed else []
    assert all(report[name]["ok"] for name in names)
