"""Training throughput: hftrain.Trainer vs transformers.Trainer vs a plain PyTorch loop, on CPU or one GPU.

All three train the same small BERT sequence classifier: same config, same init seed, same synthetic data and data
order, batch 16, 1 epoch, fused AdamW (HF's default ``adamw_torch_fused``, lr 5e-5, HF's two parameter groups),
linear decay, grad-norm clipping at 1.0, no eval, no saving. They do the same arithmetic: the printed train
losses agree to the last digit. Each run happens in its own fresh subprocess, so import and setup are paid every time:

    python benchmarks/bench_throughput.py                      # full: 2048 rows (128 steps), 3 repeats, median
    python benchmarks/bench_throughput.py --quick              # CI smoke: 6 steps, 1 repeat
    python benchmarks/bench_throughput.py --size tiny          # a model so small that framework overhead dominates
    python benchmarks/bench_throughput.py --framework hftrain   # one child run (prints a BENCH_RESULT json line)
    python benchmarks/bench_throughput.py --device cuda --bf16 --size base --batch 32   # BERT-base on one GPU
    python benchmarks/bench_throughput.py --baseline d59220e   # + hftrain at that commit, in the same run
    python benchmarks/bench_throughput.py --compile            # torch_compile=True (inductor) everywhere

On a GPU every framework runs bf16 autocast with ``--bf16`` (the plain loop wraps its forward in
``torch.autocast``), and the step clock synchronises the device before reading the time.

Columns, per run (then the median over the repeats):
  samples/s   samples over the epoch excluding the first optimizer step (warm-up) / wall time of those steps
  step_ms     median wall time of one optimizer step (steps 2..N): robust to bursts of other load on the machine
  samp/cpu_s  the same samples / CPU time of this process over those steps (all its threads)
  train_s     wall time of train() (or of the whole plain loop, DataLoader and optimizer creation included)
  setup_s     wall time from calling train() to the end of the first optimizer step, less one median step: the
              framework's own setup (dataloader, optimizer, Lightning's Trainer and loops, accelerate, callbacks)
  1st_step_s  wall time from the parent launching the child process to the end of the first optimizer step
  1st_cpu_s   CPU time (user + sys) the child process had used by then
  import_s    from the top of the child script to the end of the framework import
  rss_MB      peak resident memory of the child (getrusage ru_maxrss)
  load1       1-minute load average during the run: above the number of cores, another process was competing
"""

import time

_T0_WALL = time.time()  # before any import: the child's own start (the parent's launch time comes by env var)
_T0 = time.perf_counter()

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile

FRAMEWORKS = ("hftrain", "transformers", "plain")
SEED, BATCH, LR, VOCAB = 1234, 16, 5e-5, 2000  # LR: HF's default learning_rate; BATCH: --batch changes it
RUN = argparse.Namespace(device="cpu", bf16=False, compile=False)  # --device / --bf16 / --compile, every child
SIZES = {  # hidden, layers, heads, intermediate, sequence length
    "base": (768, 12, 12, 3072, 128),  # BERT-base's shape: for a GPU
    "small": (128, 2, 2, 256, 64),
    "tiny": (16, 1, 1, 32, 8),  # ~1 ms of compute per step: measures the per-step overhead of the framework
}


# ---------------------------------------------------------------------------------------------------------------
# child: one framework, one run
# ---------------------------------------------------------------------------------------------------------------
class Clock:
    """perf_counter at the end of every optimizer step; process CPU time at the end of the first and the last."""

    def __init__(self, steps):
        self.steps, self.wall, self.cpu, self.first_wall, self.train_start = steps, [], [], None, None

    def step_done(self):
        if RUN.device == "cuda":
            import torch

            torch.cuda.synchronize()
        self.wall.append(time.perf_counter())
        if len(self.wall) in (1, self.steps):
            self.cpu.append(time.process_time())
        if self.first_wall is None:
            self.first_wall = time.time()
            ru = resource.getrusage(resource.RUSAGE_SELF)
            self.first_cpu = ru.ru_utime + ru.ru_stime  # CPU time of the whole process, interpreter start included


def make_model_and_data(rows, size):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    hidden, layers, heads, intermediate, seq_len = SIZES[size]

    class SyntheticTokens(torch.utils.data.Dataset):
        """Random tokens; the label is whether the second token is in the lower half of the vocabulary."""

        def __init__(self, n):
            g = torch.Generator().manual_seed(SEED)
            self.input_ids = torch.randint(1, VOCAB, (n, seq_len), generator=g)
            self.attention_mask = torch.ones(n, seq_len, dtype=torch.long)
            self.labels = (self.input_ids[:, 1] < VOCAB // 2).long()

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            return {"input_ids": self.input_ids[i], "attention_mask": self.attention_mask[i], "labels": self.labels[i]}

    config = BertConfig(
        vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=intermediate, max_position_embeddings=seq_len, num_labels=2,
    )
    torch.manual_seed(SEED)
    return BertForSequenceClassification(config), SyntheticTokens(rows)


def use_hftrain_from(source):
    """Import hftrain from ``source`` (a checkout of another commit), not from the editable install."""
    sys.meta_path[:] = [finder for finder in sys.meta_path if "editable" not in repr(finder).lower()]
    sys.path.insert(0, source)


def run_trainer(framework, rows, size, clock):
    if os.environ.get("BENCH_HFTRAIN_SOURCE"):
        use_hftrain_from(os.environ["BENCH_HFTRAIN_SOURCE"])
    if framework == "hftrain":
        from hftrain import Trainer, TrainerCallback, TrainingArguments
    else:
        from transformers import Trainer, TrainerCallback, TrainingArguments
    t_imported = time.perf_counter()

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            clock.step_done()

    model, dataset = make_model_and_data(rows, size)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=BATCH, num_train_epochs=1, learning_rate=LR,
            save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True, logging_strategy="no",
            seed=SEED, use_cpu=RUN.device == "cpu", bf16=RUN.bf16, torch_compile=RUN.compile,
        )
        trainer = Trainer(model=model, args=args, train_dataset=dataset, callbacks=[StepClock()])
        clock.train_start = time.perf_counter()
        output = trainer.train()
        train_wall = time.perf_counter() - clock.train_start
    return t_imported, train_wall, output.training_loss


def run_plain(rows, size, clock):
    import torch

    t_imported = time.perf_counter()
    model, dataset = make_model_and_data(rows, size)
    model.to(RUN.device)
    torch.manual_seed(SEED)  # the Trainers call set_seed(args.seed) after the model is built: same dropout masks
    clock.train_start = time.perf_counter()
    # HF's train order: randperm(N) from a generator seeded with the seed, independent of the global RNG
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(SEED)).tolist()
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, sampler=order)
    total = len(loader)
    # HF's two parameter groups (decay / no decay); HF's default weight_decay is 0.0, so both get 0.0
    no_decay = {n for n, _ in model.named_parameters() if "bias" in n or "LayerNorm" in n}
    groups = [{"params": [p for n, p in model.named_parameters() if (n in no_decay) == nd], "weight_decay": 0.0}
              for nd in (False, True)]
    optimizer = torch.optim.AdamW(groups, lr=LR, betas=(0.9, 0.999), eps=1e-8, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, (total - step) / total))
    model.train()
    if RUN.compile:  # what accelerate does for transformers' torch_compile: compile the model (inductor)
        model = torch.compile(model, backend="inductor")
    loss_sum = torch.zeros((), device=RUN.device)
    for batch in loader:
        batch = {k: v.to(RUN.device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(RUN.device, dtype=torch.bfloat16, enabled=RUN.bf16):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss_sum += loss.detach()
        clock.step_done()
    train_wall = time.perf_counter() - clock.train_start
    return t_imported, train_wall, loss_sum.item() / total


def child(framework, rows, size, threads):
    load_before = os.getloadavg()[0]
    if threads:
        import torch

        torch.set_num_threads(threads)
    steps = rows // BATCH
    clock = Clock(steps)
    if framework == "plain":
        t_imported, train_wall, loss = run_plain(rows, size, clock)
    else:
        t_imported, train_wall, loss = run_trainer(framework, rows, size, clock)
    import torch

    assert len(clock.wall) == steps, f"{framework}: saw {len(clock.wall)} optimizer steps, expected {steps}"
    step_s = [b - a for a, b in zip(clock.wall, clock.wall[1:])]  # steps 2..N: step 1 is the warm-up
    result = {
        "framework": framework,
        "threads": torch.get_num_threads(),
        "samples_per_s": (steps - 1) * BATCH / (clock.wall[-1] - clock.wall[0]),
        "step_ms": 1000 * statistics.median(step_s),
        "samples_per_cpu_s": (steps - 1) * BATCH / (clock.cpu[-1] - clock.cpu[0]),
        "train_s": train_wall,
        "setup_s": max(0.0, clock.wall[0] - clock.train_start - statistics.median(step_s)),
        "first_step_s": clock.first_wall - float(os.environ.get("BENCH_LAUNCH_TIME", _T0_WALL)),
        "first_step_cpu_s": clock.first_cpu,
        "import_s": t_imported - _T0,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "loss": loss,
        "load1": max(load_before, os.getloadavg()[0]),
    }
    print("BENCH_RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------------------------
# parent: spawn the children, alternate the order, print medians and ratios
# ---------------------------------------------------------------------------------------------------------------
COLUMNS = [  # (key, header, format)
    ("samples_per_s", "samples/s", "{:>9.1f}"), ("step_ms", "step_ms", "{:>8.2f}"),
    ("samples_per_cpu_s", "samp/cpu_s", "{:>10.1f}"), ("train_s", "train_s", "{:>8.2f}"),
    ("setup_s", "setup_s", "{:>7.2f}"),
    ("first_step_s", "1st_step_s", "{:>10.2f}"), ("first_step_cpu_s", "1st_cpu_s", "{:>9.2f}"),
    ("import_s", "import_s", "{:>8.2f}"),
    ("rss_mb", "rss_MB", "{:>7.0f}"), ("loss", "loss", "{:>9.6f}"), ("load1", "load1", "{:>5.1f}"),
]
HEADER = f"{'framework':<17}" + "".join(f" {h:>{len(fmt.format(0))}}" for _, h, fmt in COLUMNS)


def fmt_row(name, r):
    return f"{name:<17}" + "".join(" " + fmt.format(r[k]) for k, _, fmt in COLUMNS)


BASELINES = {}  # "hftrain@REV" -> the folder holding that commit's hftrain package


def spawn(framework, rows, size, threads):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if framework in BASELINES:
        env["BENCH_HFTRAIN_SOURCE"], framework = BASELINES[framework], "hftrain"
    cmd = [sys.executable, os.path.abspath(__file__), "--framework", framework, "--rows", str(rows), "--size", size,
           "--batch", str(BATCH), "--device", RUN.device] + (["--bf16"] if RUN.bf16 else []) + (
        ["--compile"] if RUN.compile else [])
    if threads:
        cmd += ["--threads", str(threads)]
    env["BENCH_LAUNCH_TIME"] = repr(time.time())
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            return json.loads(line[len("BENCH_RESULT "):])
    sys.exit(f"{framework} run failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def parent(frameworks, rows, size, repeats, threads):
    import torch

    device = torch.cuda.get_device_name(0) if RUN.device == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {device}{', bf16' if RUN.bf16 else ''}, "
          f"torch threads {threads or torch.get_num_threads()}"
          f"{'' if threads else ' (default)'}, {os.cpu_count()} CPUs, model {size} {SIZES[size]}, "
          f"{rows} rows, batch {BATCH}, {rows // BATCH} steps, {repeats} repeat(s)"
          f"{', torch_compile' if RUN.compile else ''}")
    print(HEADER)
    runs = {f: [] for f in frameworks}
    for r in range(repeats):
        for f in frameworks if r % 2 == 0 else frameworks[::-1]:  # alternate the order against drift
            runs[f].append(spawn(f, rows, size, threads))
            print(fmt_row(f, runs[f][-1]) + f"   (run {r + 1})", flush=True)
    med = {f: {k: statistics.median(run[k] for run in runs[f]) for k, _, _ in COLUMNS} for f in frameworks}
    print(f"\nmedian of {repeats}:\n{HEADER}")
    for f in frameworks:
        print(fmt_row(f, med[f]))
    if "hftrain" not in med:
        return
    baselines = [f for f in frameworks if f.startswith("hftrain@")]
    for other, goal in (*((b, 1.0) for b in baselines), ("transformers", 1.2), ("plain", 0.95)):
        if other in med:
            h, o = med["hftrain"], med[other]
            ratio = h["samples_per_s"] / o["samples_per_s"]
            verdict = "met" if ratio >= goal else "MISSED"
            print(f"hftrain/{other:<12}  throughput {ratio:.3f}x (goal >= {goal}x: {verdict})"
                  f"   by median step {o['step_ms'] / h['step_ms']:.3f}x"
                  f"   per CPU-second {h['samples_per_cpu_s'] / o['samples_per_cpu_s']:.3f}x"
                  f"   time-to-first-step {h['first_step_s'] / o['first_step_s']:.3f}x"
                  f" (CPU {h['first_step_cpu_s'] / o['first_step_cpu_s']:.3f}x)")


def main():
    global BATCH
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--framework", choices=FRAMEWORKS, help="run one framework in this process (child mode)")
    p.add_argument("--rows", type=int, default=2048, help="training rows, a multiple of the batch")
    p.add_argument("--size", choices=SIZES, default="small")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS), help="frameworks to compare")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads in every child (0: torch's default)")
    p.add_argument("--quick", action="store_true", help="CI smoke: 6 steps, 1 repeat")
    p.add_argument("--batch", type=int, default=BATCH, help="per-device batch size")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (HF's bf16=True) in every framework")
    p.add_argument("--compile", action="store_true", help="torch_compile=True (inductor) in every framework")
    p.add_argument("--baseline", help="also run hftrain as of this git commit (e.g. before a change), same run")
    a = p.parse_args()
    BATCH, RUN.device, RUN.bf16, RUN.compile = a.batch, a.device, a.bf16, a.compile
    if a.quick:
        a.rows, a.repeats = 6 * BATCH, 1
    if a.rows % BATCH or a.rows < 2 * BATCH:
        p.error(f"--rows must be a multiple of {BATCH}, at least {2 * BATCH}")
    if a.framework:
        child(a.framework, a.rows, a.size, a.threads)
    else:
        frameworks = list(a.only)
        if a.baseline:
            frameworks.insert(1, f"hftrain@{a.baseline}")
            BASELINES[frameworks[1]] = checkout(a.baseline)
        parent(tuple(frameworks), a.rows, a.size, a.repeats, a.threads)


def checkout(rev):
    """``rev``'s hftrain package in a temporary folder (``git archive``), for the baseline's children."""
    folder = tempfile.mkdtemp(prefix="bench-hftrain-")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    archive = subprocess.run(["git", "-C", repo, "archive", rev, "hftrain"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
    return folder


if __name__ == "__main__":
    main()
