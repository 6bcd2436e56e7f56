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
    python benchmarks/bench_throughput.py --data arrow --batch 32 --threads 1               # issue 17: compute-bound
    python benchmarks/bench_throughput.py --data arrow --size tiny --seq-len 16 --batch 8 --threads 1   # overhead

``--data tensors`` (the default) gives every framework fixed-length in-memory tensors (a torch ``Dataset`` of
tensor rows, stacked by the default collation). ``--data arrow`` is the data path of a real fine-tune: a tokenized
``datasets.Dataset`` (``input_ids`` / ``token_type_ids`` / ``attention_mask`` lists of 50–100% of ``--seq-len``
tokens, an int ``label``) padded per batch by ``DataCollatorWithPadding``. Then the Trainers get the dataset and
the tokenizer (their default collator is that one), ``plain_fair`` is the plain loop over a ``DataLoader`` of the
same dataset and collator, and ``plain`` is the plain loop over the same padded batches collated before its clock
starts (in-memory tensors: the lower bound of the data path).

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

FRAMEWORKS = ("hftrain", "transformers", "plain", "plain_fair")  # plain_fair: --data arrow only
SEED, BATCH, LR, VOCAB = 1234, 16, 5e-5, 2000  # LR: HF's default learning_rate; BATCH: --batch changes it
RUN = argparse.Namespace(device="cpu", bf16=False, compile=False, data="tensors", seq_len=None)  # every child
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


def seq_len_of(size):
    return RUN.seq_len or SIZES[size][4]


def make_model(size):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    hidden, layers, heads, intermediate, _ = SIZES[size]
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=intermediate, max_position_embeddings=seq_len_of(size), num_labels=2,
    )
    torch.manual_seed(SEED)
    return BertForSequenceClassification(config)


def make_tensor_data(rows, seq_len):
    import torch

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

    return SyntheticTokens(rows)


def make_arrow_data(rows, seq_len):
    """A tokenized ``datasets.Dataset`` of rows of 50-100% of ``seq_len`` tokens, and a tokenizer that pads them."""
    import torch
    from datasets import Dataset
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    g = torch.Generator().manual_seed(SEED)
    lengths = torch.randint(seq_len // 2, seq_len + 1, (rows,), generator=g).tolist()
    tokens = torch.randint(2, VOCAB, (rows, seq_len), generator=g)
    input_ids = [row[:n] for row, n in zip(tokens.tolist(), lengths)]
    dataset = Dataset.from_dict({
        "input_ids": input_ids,
        "token_type_ids": [[0] * n for n in lengths],
        "attention_mask": [[1] * n for n in lengths],
        "label": [int(ids[1] < VOCAB // 2) for ids in input_ids],
    })
    vocab = {"[PAD]": 0, "[UNK]": 1, **{f"t{i}": i for i in range(2, VOCAB)}}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="[UNK]")), pad_token="[PAD]", unk_token="[UNK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
    return dataset, tokenizer


def make_model_and_data(rows, size):
    """The model, the training data and the tokenizer (None with ``--data tensors``)."""
    data = make_arrow_data(rows, seq_len_of(size)) if RUN.data == "arrow" else (
        make_tensor_data(rows, seq_len_of(size)), None)
    return (make_model(size), *data)


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

    model, dataset, tokenizer = make_model_and_data(rows, size)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=BATCH, num_train_epochs=1, learning_rate=LR,
            save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True, logging_strategy="no",
            seed=SEED, use_cpu=RUN.device == "cpu", bf16=RUN.bf16, torch_compile=RUN.compile,
        )
        trainer = Trainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                          callbacks=[StepClock()])
        clock.train_start = time.perf_counter()
        output = trainer.train()
        train_wall = time.perf_counter() - clock.train_start
    return t_imported, train_wall, output.training_loss


def run_plain(rows, size, clock, fair=False):
    """The loop. ``--data arrow``: over the padded batches collated before the clock starts (in memory), or with
    ``fair`` over a DataLoader of the ``datasets.Dataset`` with ``DataCollatorWithPadding``, as the Trainers."""
    import torch

    t_imported = time.perf_counter()
    model, dataset, tokenizer = make_model_and_data(rows, size)
    model.to(RUN.device)
    # HF's train order: randperm(N) from a generator seeded with the seed, independent of the global RNG
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(SEED)).tolist()
    collate = None
    if tokenizer is not None:
        from transformers import DataCollatorWithPadding

        collate = DataCollatorWithPadding(tokenizer)
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, sampler=order, collate_fn=collate)
    if tokenizer is not None and not fair:
        loader = list(loader)  # in-memory tensors: the data path costs nothing in the clocked loop
    torch.manual_seed(SEED)  # the Trainers call set_seed(args.seed) after the model is built: same dropout masks
    if isinstance(loader, list):  # iterating a DataLoader draws its base seed from the global RNG: draw it too
        torch.empty((), dtype=torch.int64).random_()
    clock.train_start = time.perf_counter()
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
        batch = {"labels" if k == "label" else k: v.to(RUN.device, non_blocking=True) for k, v in batch.items()}
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
    if framework.startswith("plain"):
        t_imported, train_wall, loss = run_plain(rows, size, clock, fair=framework == "plain_fair")
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
           "--batch", str(BATCH), "--device", RUN.device, "--data", RUN.data] + (
        ["--seq-len", str(RUN.seq_len)] if RUN.seq_len else []) + (["--bf16"] if RUN.bf16 else []) + (
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
          f"{rows} rows, batch {BATCH}, {rows // BATCH} steps, {repeats} repeat(s), data {RUN.data} "
          f"(up to {seq_len_of(size)} tokens)"
          f"{', torch_compile' if RUN.compile else ''}")
    if RUN.compile:  # the first compile fills inductor's on-disk cache; the runs counted all find it warm
        warm = spawn(frameworks[0], rows, size, threads)
        print(f"(warm-up run of {frameworks[0]} for the compile cache, not counted: setup {warm['setup_s']:.1f} s)")
    print(HEADER)
    runs = {f: [] for f in frameworks}
    for r in range(repeats):
        for f in frameworks if r % 2 == 0 else frameworks[::-1]:  # alternate the order against drift
            runs[f].append(spawn(f, rows, size, threads))
            print(fmt_row(f, runs[f][-1]) + f"   (run {r + 1})", flush=True)
    med = {f: {k: statistics.median(run[k] for run in runs[f]) for k, _, _ in COLUMNS} for f in frameworks}
    best = {f: {k: (max if k.startswith("samples") else min)(run[k] for run in runs[f]) for k, _, _ in COLUMNS}
            for f in frameworks}
    for label, table in ((f"median of {repeats}", med), (f"best of {repeats}", best)):
        print(f"\n{label}:\n{HEADER}")
        for f in frameworks:
            print(fmt_row(f, table[f]))
    if "hftrain" not in med:
        return
    print("\nratios of the medians (best of the runs in brackets):")
    for other, goal in goals(frameworks, size):
        h, o, hb, ob = med["hftrain"], med[other], best["hftrain"], best[other]
        ratio = h["samples_per_s"] / o["samples_per_s"]
        verdict = "" if goal is None else f" (goal >= {goal}x: {'met' if ratio >= goal else 'MISSED'})"
        print(f"hftrain/{other:<12}  throughput {ratio:.3f}x [{hb['samples_per_s'] / ob['samples_per_s']:.3f}x]"
              f"{verdict}   by median step {o['step_ms'] / h['step_ms']:.3f}x"
              f"   per CPU-second {h['samples_per_cpu_s'] / o['samples_per_cpu_s']:.3f}x")
    if "transformers" in med:
        h, o = med["hftrain"], med["transformers"]
        ratio = h["first_step_s"] / o["first_step_s"]
        print(f"hftrain/transformers  time-to-first-step {ratio:.3f}x "
              f"[{best['hftrain']['first_step_s'] / best['transformers']['first_step_s']:.3f}x] "
              f"(goal <= 0.9x: {'met' if ratio <= 0.9 else 'MISSED'})   CPU "
              f"{h['first_step_cpu_s'] / o['first_step_cpu_s']:.3f}x")


def goals(frameworks, size):
    """(reference, goal or None) for hftrain's throughput ratios: issue 17's goals. The tiny model measures the
    per-step overhead (>= 1.5x transformers' steps per second); the others are compute-bound (>= 1.05x
    transformers, >= 0.97x the in-memory loop)."""
    targets = {"transformers": 1.5 if size == "tiny" else 1.05, "plain": None if size == "tiny" else 0.97}
    for other in frameworks:
        if other != "hftrain":
            yield other, None if other.startswith("hftrain@") else targets.get(other)


def main():
    global BATCH
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--framework", choices=FRAMEWORKS, help="run one framework in this process (child mode)")
    p.add_argument("--rows", type=int, default=2048, help="training rows, a multiple of the batch")
    p.add_argument("--size", choices=SIZES, default="small")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", nargs="+", choices=FRAMEWORKS, help="frameworks to compare (default: all that apply)")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads in every child (0: torch's default)")
    p.add_argument("--quick", action="store_true", help="CI smoke: 6 steps, 1 repeat")
    p.add_argument("--batch", type=int, default=BATCH, help="per-device batch size")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--data", choices=("tensors", "arrow"), default="tensors",
                   help="in-memory tensor rows, or a tokenized datasets.Dataset padded by DataCollatorWithPadding")
    p.add_argument("--seq-len", type=int, help="tokens per row (the longest with --data arrow); default: the size's")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (HF's bf16=True) in every framework")
    p.add_argument("--compile", action="store_true", help="torch_compile=True (inductor) in every framework")
    p.add_argument("--baseline", help="also run hftrain as of this git commit (e.g. before a change), same run")
    a = p.parse_args()
    BATCH, RUN.device, RUN.bf16, RUN.compile, RUN.data, RUN.seq_len = (
        a.batch, a.device, a.bf16, a.compile, a.data, a.seq_len)
    if a.data == "tensors" and "plain_fair" in (a.only or [a.framework]):
        p.error("plain_fair is the loop over the datasets.Dataset of --data arrow")
    if a.quick:
        a.rows, a.repeats = 6 * BATCH, 1
    if a.rows % BATCH or a.rows < 2 * BATCH:
        p.error(f"--rows must be a multiple of {BATCH}, at least {2 * BATCH}")
    if a.framework:
        child(a.framework, a.rows, a.size, a.threads)
    else:
        frameworks = list(a.only or [f for f in FRAMEWORKS if a.data == "arrow" or f != "plain_fair"])
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
