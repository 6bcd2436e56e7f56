"""A real DeepSpeed engine resumes from hftrain's checkpoint files; its files pass hftrain's no-pickled-code check.

Runs where DeepSpeed is installed (it is not a dependency; CI does not install it). The GPU check
(``tests/gpu/gpu_check.py --deepspeed``) runs the whole Trainer under Lightning's DeepSpeedStrategy."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="needs DeepSpeed"),
]
ROOT = Path(__file__).resolve().parents[2]


def test_a_real_engine_resumes_exactly_from_checked_files(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DS_ACCELERATOR": "cpu", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "tests.integration.deepspeed_cpu_script", str(tmp_path)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    for stage in (1, 2, 3):
        assert f"zero{stage} resumed max difference 0.0" in done.stdout
