"""DDP scaling on CPU: the same training run on 1 process (batch 16) and on 2 gloo processes (batch 8 each).

    python benchmarks/bench_ddp.py            # prints samples/s for 1 and 2 processes and the speed-up

Both runs see the same global batches (hftrain's sharding), so only the speed may differ. On a 2-core machine
each process is given one thread (OMP_NUM_THREADS=1), so 2 processes use the cores that 1 process with 2 threads
would: the figure measures DDP's overhead, not extra hardware.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GLOBAL_BATCH, ROWS, SEQ = 16, 1024, 64


def worker(out: str, per_device: int) -> None:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from hftrain import Trainer, TrainerCallback, TrainingArguments

    torch.manual_seed(0)
    ids = torch.randint(1, 2000, (ROWS, SEQ))
    rows = [{"input_ids": ids[i], "attention_mask": torch.ones(SEQ, dtype=torch.long), "labels": int(ids[i, 0] % 4)}
            for i in range(ROWS)]
    config = BertConfig(vocab_size=2000, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=256, num_labels=4)
    model = BertForSequenceClassification(config)

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 1:
                self.start = time.perf_counter()

    clock = Clock()
    args = TrainingArguments(out, per_device_train_batch_size=per_device, num_train_epochs=1, save_strategy="no",
                             report_to="none", disable_tqdm=True, logging_steps=10_000, use_cpu=True)
    trainer = Trainer(model, args, train_dataset=rows, callbacks=[clock])
    trainer.train()
    elapsed = time.perf_counter() - clock.start
    if trainer.is_world_process_zero():
        steps = trainer.state.global_step - 1
        Path(out, "speed.json").write_text(json.dumps({"samples_per_s": steps * GLOBAL_BATCH / elapsed}))


def launch(processes: int) -> float:
    with tempfile.TemporaryDirectory() as out, socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(2 // processes)}
        subprocess.run([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                        f"--master_port={port}", __file__, "--worker", out, str(GLOBAL_BATCH // processes)],
                       check=True, env=env, capture_output=True)
        return json.loads(Path(out, "speed.json").read_text())["samples_per_s"]


if __name__ == "__main__":
    if "--worker" in sys.argv:
        worker(sys.argv[2], int(sys.argv[3]))
    else:
        one, two = launch(1), launch(2)
        print(f"1 process  (batch {GLOBAL_BATCH}, 2 threads): {one:8.1f} samples/s")
        print(f"2 processes (batch {GLOBAL_BATCH // 2} each, 1 thread): {two:8.1f} samples/s")
        print(f"speed-up: {two / one:.2f}x")
