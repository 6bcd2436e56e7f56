"""Python function calls per optimizer step: hftrain vs transformers.Trainer vs the plain loops, one number each
that the machine's load does not move (a count, not a time).

The run is bench_throughput.py's (``--data arrow``: a tokenized ``datasets.Dataset`` padded by
``DataCollatorWithPadding``), here the per-step-overhead workload by default: a tiny BERT, 8–16 tokens, batch 8.
cProfile counts the calls of steps 17 to 16 + ``--steps`` (imports, setup and the first steps left out), and the
``--top`` functions with the most calls per step are listed, so the count says where each framework's Python goes.

    python benchmarks/bench_step_calls.py                          # all four frameworks, fresh process each
    python benchmarks/bench_step_calls.py --framework hftrain --top 25
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_throughput as bench  # noqa: E402  (the same model, data, loop and Trainer arguments)

START = 16  # the steps before the counted ones (warm-up)


class CountingClock(bench.Clock):
    """bench_throughput's step clock, with cProfile on from the end of step START to the end of the last counted."""

    def __init__(self, steps: int, counted: int) -> None:
        super().__init__(steps)
        self.counted, self.profile = counted, cProfile.Profile()

    def step_done(self) -> None:
        super().step_done()
        if len(self.wall) == START:
            self.profile.enable()
        elif len(self.wall) == START + self.counted:
            self.profile.disable()


def child(framework: str, size: str, counted: int, top: int) -> None:
    import torch

    torch.set_num_threads(1)
    rows = (START + counted + 4) * bench.BATCH
    clock = CountingClock(rows // bench.BATCH, counted)
    if framework.startswith("plain"):
        bench.run_plain(rows, size, clock, fair=framework == "plain_fair")
    else:
        bench.run_trainer(framework, rows, size, clock)
    stats = pstats.Stats(clock.profile)
    print(f"{framework:<13} {stats.total_calls / counted:8.0f} Python calls per optimizer step")
    if top:
        by_calls = sorted(stats.stats.items(), key=lambda item: -item[1][1])[:top]
        for (filename, line, name), (_, calls, *_rest) in by_calls:
            where = filename.split("site-packages/")[-1] if filename != "~" else "builtin"
            print(f"    {calls / counted:7.1f}  {name} ({where}:{line})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--framework", choices=bench.FRAMEWORKS, help="count one framework in this process")
    parser.add_argument("--size", choices=bench.SIZES, default="tiny")
    parser.add_argument("--seq-len", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=256, help="optimizer steps counted")
    parser.add_argument("--top", type=int, default=0, help="also list the N functions called most per step")
    opts = parser.parse_args()
    bench.BATCH, bench.RUN.data, bench.RUN.seq_len = opts.batch, "arrow", opts.seq_len
    if opts.framework:
        child(opts.framework, opts.size, opts.steps, opts.top)
        return
    print(f"{opts.size} BERT, tokenized datasets.Dataset of up to {opts.seq_len} tokens, batch {opts.batch}, "
          f"{opts.steps} steps counted after {START}")
    for framework in bench.FRAMEWORKS:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        command = [sys.executable, os.path.abspath(__file__), "--framework", framework, "--size", opts.size,
                   "--seq-len", str(opts.seq_len), "--batch", str(opts.batch), "--steps", str(opts.steps),
                   "--top", str(opts.top)]
        with tempfile.TemporaryDirectory() as cwd:
            done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, check=False)
        lines = [line for line in done.stdout.splitlines() if "calls per optimizer step" in line or
                 line.startswith("    ")]
        print("\n".join(lines) if done.returncode == 0 else f"{framework} failed:\n{done.stderr[-2000:]}")


if __name__ == "__main__":
    main()
