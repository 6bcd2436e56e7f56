"""DDP scaling on CPU: the same training run on 1 process (batch 16) and on 2 gloo processes (batch 8 each).

    python benchmarks/bench_ddp.py                  # 3 repeats (alternating order), median samples/s and speed-up
    python benchmarks/bench_ddp.py --repeats 1      # quick (two torchrun launches, under a minute on 2 idle cores)
    python benchmarks/bench_ddp.py --threads 2      # the single process gets 2 intra-op threads instead of 1

Both runs see the same global batches (hftrain's sharding), so only the speed may differ. Every process runs torch
with 1 intra-op thread (OMP_NUM_THREADS=1) by default, so the ratio is the speed-up from adding a second core
through DDP (gradient all-reduce over gloo, a second interpreter, half the batch per process). With --threads 2 the
single process gets 2 threads, so both configurations use the same 2 cores and the ratio compares DDP with torch's
own intra-op parallelism. On an idle 2-core machine the two are equal (1.01x). When other jobs share the cores,
that 2-thread baseline collapses (OpenMP threads spin waiting for a descheduled sibling: 9-54 samples/s against
~200-240 with 1 thread at load 3-6) and --threads 2 reports a meaningless 6-11x; see benchmarks/README.md.

The workload: a BertForSequenceClassification (hidden 128, 2 layers, 2 heads, intermediate 256, vocab 2000,
4 labels) on 1024 synthetic rows of 64 tokens, 1 epoch = 64 optimizer steps at global batch 16, no eval, no saving.
samples/s counts steps 2..N (step 1 is warm-up) over the wall time from the end of step 1 to the end of train(),
measured on rank 0. Every launch is a fresh `python -m torch.distributed.run`. load1, printed per launch, includes
this benchmark's own processes (1 or 2 busy cores).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
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
        Path(out, "speed.json").write_text(json.dumps({
            "samples_per_s": steps * GLOBAL_BATCH / elapsed, "steps": trainer.state.global_step,
            "world_size": args.world_size, "threads": torch.get_num_threads()}))


def free_port() -> int:
    # Bind to port 0 to get a free port, then CLOSE the socket before torchrun binds it. (Keeping it bound while
    # torchrun ran made the rendezvous TCPStore fail with EADDRINUSE on every launch.)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(processes: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
               f"--master_port={free_port()}", __file__, "--worker", out, str(GLOBAL_BATCH // processes)]
        started = time.time()
        proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
            raise SystemExit(f"torchrun with {processes} process(es) failed (exit {proc.returncode}): see above")
        result = json.loads(Path(out, "speed.json").read_text())
        result["wall_s"] = time.time() - started
        result["load1"] = os.getloadavg()[0]
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of the single process (default 1)")
    opts = parser.parse_args()
    print(f"{time.strftime('%a %b %d %Y %H:%M:%S UTC', time.gmtime())}, load {os.getloadavg()[0]:.2f}, "
          f"{os.cpu_count()} CPUs", flush=True)
    runs: dict[int, list[float]] = {1: [], 2: []}
    for repeat in range(opts.repeats):
        for processes in ((1, 2) if repeat % 2 == 0 else (2, 1)):
            r = launch(processes, opts.threads if processes == 1 else 1)
            runs[processes].append(r["samples_per_s"])
            print(f"repeat {repeat + 1}: {processes} process(es) x {r.get('threads', '?')} thread(s), "
                  f"world {r['world_size']}, {r['steps']} steps: {r['samples_per_s']:7.1f} samples/s  "
                  f"(launch to exit {r['wall_s']:5.1f} s, load1 {r['load1']:.2f})", flush=True)
    one, two = statistics.median(runs[1]), statistics.median(runs[2])
    n = opts.repeats
    print(f"1 process   (batch {GLOBAL_BATCH}, {opts.threads} thread(s)): {one:8.1f} samples/s (median of {n})")
    print(f"2 processes (batch {GLOBAL_BATCH // 2} each, 1 thread each): {two:8.1f} samples/s (median of {n})")
    print(f"speed-up 2 / 1 processes: {two / one:.2f}x   (load1 at the end {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    if "--worker" in sys.argv:
        worker(sys.argv[2], int(sys.argv[3]))
    else:
        main()
