"""Tokens per second: the figure hftrain logs against the benchmark's own count, and the three frameworks compared.

A small GPT-2 causal LM (hidden 128, 2 layers, sequence 128, batch 8, no padding) trains for ``--steps`` optimizer
steps, logging every ``--log-every``. hftrain logs ``tokens_per_second`` (and ``mfu``, against ``--peak``) for each
logging interval. The benchmark keeps its own count: it knows every batch holds ``8 × 128`` tokens, and a callback
notes the wall clock at each log (and at ``on_train_begin``), so its own rate is ``tokens in the interval /
seconds between the two logs``. The two must agree (they measure the same interval; the callback runs a few
microseconds after the meter). transformers.Trainer and a plain PyTorch loop train the same model on the same
batches, timed by the same count, for the ratios. Each framework runs in its own fresh process.

    python benchmarks/bench_tokens_per_second.py                  # 60 steps, a log every 10, 1 thread
    python benchmarks/bench_tokens_per_second.py --peak 0         # the peak: a measured fp32 matmul rate (default)

``--peak`` (FLOP/s of the device, 0 = measure a 1024² fp32 matmul on one thread here first) is passed as ``peak_flops``, so on a
CPU ``mfu`` is a fraction of what this CPU's matmul reaches, not of a datasheet figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone

FRAMEWORKS = ("hftrain", "transformers", "plain")
BATCH, SEQ, VOCAB, SEED = 8, 128, 2000, 7


def tiny_gpt2():
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(SEED)
    config = GPT2Config(vocab_size=VOCAB, n_positions=SEQ, n_embd=128, n_layer=2, n_head=2, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config)


def rows(count: int) -> list[dict]:
    import torch

    generator = torch.Generator().manual_seed(SEED)
    ids = torch.randint(0, VOCAB, (count, SEQ), generator=generator)
    return [{"input_ids": row, "labels": row} for row in ids]


def measured_peak() -> float:
    """FLOP/s of a 1024 × 1024 fp32 matmul on one thread of this CPU (the children's one thread), best of 10."""
    import torch

    torch.set_num_threads(1)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    best = float("inf")
    for _ in range(10):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * 1024**3 / best


def run_child(framework: str, steps: int, log_every: int, peak: float) -> dict:
    import torch

    torch.set_num_threads(1)
    data = rows(steps * BATCH)
    tokens_per_step = BATCH * SEQ
    if framework == "plain":
        model = tiny_gpt2()
        optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
        loader = torch.utils.data.DataLoader(data, batch_size=BATCH, shuffle=False)
        marks = [time.perf_counter()]
        for step, batch in enumerate(loader, start=1):
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            if step % log_every == 0:
                loss.item()
                marks.append(time.perf_counter())
        own = [tokens_per_step * log_every / (b - a) for a, b in zip(marks, marks[1:])]
        return {"own": own, "logged": [], "mfu": []}

    if framework == "hftrain":
        from hftrain import Trainer, TrainerCallback, TrainingArguments
    else:
        from transformers import Trainer, TrainerCallback, TrainingArguments

    class Marks(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if "loss" in (logs or {}):
                self.times.append(time.perf_counter())

    extra = {"peak_flops": peak} if framework == "hftrain" else {}
    args = TrainingArguments(
        os.path.join(os.environ.get("TMPDIR", "/tmp"), f"bench-tokens-{framework}"), report_to="none",
        disable_tqdm=True, per_device_train_batch_size=BATCH, max_steps=steps, logging_steps=log_every,
        learning_rate=5e-4, lr_scheduler_type="constant", save_strategy="no", include_num_input_tokens_seen="all",
        dataloader_drop_last=True, use_cpu=True, seed=SEED, **extra,
    )
    marks = Marks()
    trainer = Trainer(tiny_gpt2(), args, train_dataset=data, callbacks=[marks])
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    own = [tokens_per_step * log_every / (b - a) for a, b in zip(marks.times, marks.times[1:])]
    return {"own": own, "logged": [h.get("tokens_per_second") for h in logs], "mfu": [h.get("mfu") for h in logs],
            "seen": logs[-1]["num_input_tokens_seen"], "expected_seen": tokens_per_step * steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=FRAMEWORKS)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--peak", type=float, default=0.0)
    opts = parser.parse_args()
    if opts.framework:
        print("BENCH_RESULT " + json.dumps(run_child(opts.framework, opts.steps, opts.log_every, opts.peak)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    peak = opts.peak or measured_peak()
    print(f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, load1 {os.getloadavg()[0]:.2f}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; peak {peak / 1e9:.1f} GFLOP/s")
    results = {}
    for framework in FRAMEWORKS:
        done = subprocess.run([sys.executable, __file__, "--framework", framework, "--steps", str(opts.steps),
                               "--log-every", str(opts.log_every), "--peak", str(peak)],
                              env=env, capture_output=True, text=True, check=True)
        line = next(line for line in done.stdout.splitlines() if line.startswith("BENCH_RESULT "))
        results[framework] = json.loads(line.removeprefix("BENCH_RESULT "))
    ours = results["hftrain"]
    print("interval  hftrain logged  hftrain own count  logged/own   transformers own  plain own   mfu")
    for i, (logged, own) in enumerate(zip(ours["logged"], ours["own"])):
        print(f"{i + 1:8d}  {logged:14.0f}  {own:17.0f}  {logged / own:10.4f}   {results['transformers']['own'][i]:16.0f}"
              f"  {results['plain']['own'][i]:9.0f}   {ours['mfu'][i]}")
    assert ours["seen"] == ours["expected_seen"], (ours["seen"], ours["expected_seen"])
    steady = slice(1, None)  # the first interval pays the first batch's set-up
    median = {name: statistics.median(results[name]["own"][steady]) for name in FRAMEWORKS}
    agreement = [logged / own for logged, own in zip(ours["logged"], ours["own"])]
    print(f"logged / own count: min {min(agreement):.4f}, max {max(agreement):.4f}")
    print(f"median tokens/s (intervals 2..): hftrain {median['hftrain']:.0f}, transformers {median['transformers']:.0f}, "
          f"plain {median['plain']:.0f}; hftrain / transformers {median['hftrain'] / median['transformers']:.3f}, "
          f"hftrain / plain {median['hftrain'] / median['plain']:.3f}")


if __name__ == "__main__":
    main()
