"""Checkpoint save time and size: hftrain.Trainer vs transformers.Trainer on the same model.

Both train the same BERT sequence classifier (vocab 30522, hidden 256, 4 layers, 4 heads, intermediate 1024,
11.1 M parameters, fixed seed) for 6 steps (batch 8, 64 tokens) with save_steps=1, so each run writes
checkpoint-1 ... checkpoint-6 (full checkpoints: weights, optimizer, scheduler, RNG, trainer state, training args,
133 MB each) under --dir (default: the system temp dir, here on the ext4 disk; /dev/shm is tmpfs and takes the
disk out of the measurement). Neither framework fsyncs. Each run is a fresh subprocess. Per checkpoint, three clocks:

  save_ms    wall time of the framework's own save method (transformers: Trainer._save_checkpoint;
             hftrain: Trainer.save_checkpoint), wrapped with perf_counter
  cpu_ms     CPU time of this process (user + system: serialisation and the copy into the page cache) during
             that save method: much less sensitive than wall time to other jobs on a shared machine
  gap_ms     a callback's on_step_end -> on_save timestamps for the same step (what a user can see; includes
             whatever else runs between the two events: here nothing but the save)

checkpoint-1 is reported apart (first_ms: first save, pays one-time costs such as lazy imports); save_ms / gap_ms
/ cpu_ms are the median over checkpoint-2 ... -6, then the median over the repeats.

    python benchmarks/bench_checkpoint.py                 # 3 repeats per framework (alternating), median
    python benchmarks/bench_checkpoint.py --repeats 1
    python benchmarks/bench_checkpoint.py --dir /dev/shm  # tmpfs: serialisation cost without the disk
    python benchmarks/bench_checkpoint.py --framework hftrain   # one child run (prints BENCH_RESULT json)

Threads: every child runs torch with 1 thread by default (`--threads N` to change). On a 2-core machine shared
with other jobs (load average up to 6-8 during these measurements), 2 OpenMP threads on small ops spin and wait for
each other: one model.generate() batch of bench_generation_eval.py took 5-10 s wall with 2 threads vs 1.0 s
with 1 thread. Both frameworks get the same setting.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

SEED, VOCAB, SEQ, BATCH, STEPS = 1234, 30522, 64, 8, 6
FRAMEWORKS = ("hftrain", "transformers")


def child(framework, keep_dir, base_dir):
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    from transformers import BertConfig, BertForSequenceClassification

    if framework == "hftrain":
        import hftrain as lib

        method = "save_checkpoint"
    else:
        import transformers as lib

        method = "_save_checkpoint"
    Trainer, TrainingArguments, TrainerCallback = lib.Trainer, lib.TrainingArguments, lib.TrainerCallback

    save_ms, cpu_ms, events = [], [], {}
    original = getattr(Trainer, method)

    def timed(self, *args, **kwargs):
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            return original(self, *args, **kwargs)
        finally:
            save_ms.append(1000 * (time.perf_counter() - start))
            cpu_ms.append(1000 * (time.process_time() - cpu_start))

    setattr(Trainer, method, timed)

    class Stamps(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            events.setdefault(state.global_step, {})["step_end"] = time.perf_counter()

        def on_save(self, args, state, control, **kwargs):
            events.setdefault(state.global_step, {})["save"] = time.perf_counter()

    class Rows(torch.utils.data.Dataset):
        def __init__(self, n):
            g = torch.Generator().manual_seed(SEED)
            self.ids = torch.randint(1, VOCAB, (n, SEQ), generator=g)

        def __len__(self):
            return len(self.ids)

        def __getitem__(self, i):
            return {"input_ids": self.ids[i], "attention_mask": torch.ones(SEQ, dtype=torch.long),
                    "labels": int(self.ids[i, 1] % 2)}

    config = BertConfig(vocab_size=VOCAB, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=1024, max_position_embeddings=SEQ, num_labels=2)
    torch.manual_seed(SEED)
    model = BertForSequenceClassification(config)
    n_params = sum(p.numel() for p in model.parameters())
    out = keep_dir or tempfile.mkdtemp(prefix=f"bench_checkpoint_{framework}_", dir=base_dir)
    args = TrainingArguments(
        output_dir=out, per_device_train_batch_size=BATCH, max_steps=STEPS, save_strategy="steps", save_steps=1,
        eval_strategy="no", logging_steps=100_000, report_to="none", disable_tqdm=True, use_cpu=True, seed=SEED,
    )
    trainer = Trainer(model=model, args=args, train_dataset=Rows(BATCH * STEPS), callbacks=[Stamps()])
    trainer.train()
    gap_ms = [1000 * (events[s]["save"] - events[s]["step_end"]) for s in sorted(events)]
    assert len(save_ms) == len(gap_ms) == STEPS, (save_ms, events)
    folder = os.path.join(out, "checkpoint-1")
    files = {name: os.path.getsize(os.path.join(folder, name)) for name in sorted(os.listdir(folder))}
    if not keep_dir:
        shutil.rmtree(out, ignore_errors=True)
    result = {
        "framework": framework, "params": n_params, "first_ms": save_ms[0], "save_ms": statistics.median(save_ms[1:]),
        "gap_ms": statistics.median(gap_ms[1:]),
        "cpu_ms": statistics.median(cpu_ms[1:]), "all_save_ms": save_ms, "all_gap_ms": gap_ms,
        "size_mb": sum(files.values()) / 1e6, "files": files, "load1": os.getloadavg()[0],
    }
    print("BENCH_RESULT " + json.dumps(result), flush=True)


THREADS = 1


def spawn(framework, base_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "BENCH_THREADS": str(THREADS)}
    cmd = [sys.executable, os.path.abspath(__file__), "--framework", framework]
    cmd += ["--dir", base_dir] if base_dir else []
    proc = subprocess.run(cmd, env=env, check=False,
                          capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            return json.loads(line[len("BENCH_RESULT "):])
    sys.exit(f"{framework} run failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


COLS = [("save_ms", "save_ms", "{:>8.1f}"), ("cpu_ms", "cpu_ms", "{:>8.1f}"), ("gap_ms", "gap_ms", "{:>8.1f}"),
        ("first_ms", "first_ms", "{:>8.1f}"),
        ("size_mb", "size_MB", "{:>8.2f}"), ("load1", "load1", "{:>5.1f}")]
HEADER = f"{'framework':<13}" + "".join(f" {h:>{len(f.format(0))}}" for _, h, f in COLS)


def row(name, r):
    return f"{name:<13}" + "".join(" " + f.format(r[k]) for k, _, f in COLS)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--framework", choices=FRAMEWORKS, help="run one framework in this process (child mode)")
    p.add_argument("--keep-dir", help="child mode: write the checkpoints here and keep them")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dir", help="parent folder of the output_dirs (default: the system temp dir)")
    p.add_argument("--threads", type=int, default=1, help="torch threads in every child (default 1, see above)")
    a = p.parse_args()
    global THREADS
    THREADS = a.threads
    if a.framework:
        return child(a.framework, a.keep_dir, a.dir)
    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, BERT vocab {VOCAB} hidden 256 4 layers, {STEPS} steps, "
          f"save_steps=1, {a.repeats} repeat(s), torch threads {a.threads}, checkpoints under "
          f"{a.dir or tempfile.gettempdir()}, load average {os.getloadavg()[0]:.1f}")
    print(HEADER + "   per-checkpoint save_ms")
    runs = {f: [] for f in FRAMEWORKS}
    for r in range(a.repeats):
        for f in FRAMEWORKS if r % 2 == 0 else FRAMEWORKS[::-1]:  # alternate the order against drift
            runs[f].append(spawn(f, a.dir))
            x = runs[f][-1]
            print(row(f, x) + f"   {[round(v) for v in x['all_save_ms']]} (run {r + 1})", flush=True)
    med = {f: {k: statistics.median(x[k] for x in runs[f]) for k, _, _ in COLS} for f in FRAMEWORKS}
    print(f"\nmedian of {a.repeats}:\n{HEADER}")
    for f in FRAMEWORKS:
        print(row(f, med[f]))
    h, t = med["hftrain"], med["transformers"]
    print(f"hftrain/transformers  save time {h['save_ms'] / t['save_ms']:.3f}x (lower is better)   "
          f"save CPU time {h['cpu_ms'] / t['cpu_ms']:.3f}x   "
          f"on_step_end->on_save {h['gap_ms'] / t['gap_ms']:.3f}x   first save {h['first_ms'] / t['first_ms']:.3f}x   "
          f"size {h['size_mb'] / t['size_mb']:.3f}x")
    names = sorted(set(runs["hftrain"][-1]["files"]) | set(runs["transformers"][-1]["files"]))
    print(f"\ncheckpoint-1 contents ({runs['hftrain'][-1]['params'] / 1e6:.1f} M parameters), bytes:")
    print(f"{'file':<24} {'hftrain':>12} {'transformers':>12}")
    for n in names:
        sizes = [runs[f][-1]["files"].get(n) for f in FRAMEWORKS]
        print(f"{n:<24} " + " ".join(f"{'-' if s is None else s:>12}" for s in sizes))


if __name__ == "__main__":
    main()
