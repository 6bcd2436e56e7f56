"""Peak memory of one evaluate() over a large-vocabulary LM: holding every logit vs streaming metrics.

A GPT-2 (vocab 8000, n_embd 64, 2 layers, untrained, fixed seed) is evaluated over 1,536 rows of 64 random tokens,
per_device_eval_batch_size 16 (96 batches). Kept whole, the logits would be 1536 x 64 x 8000 x 4 B = 3.1 GB.
Every configuration runs in its own fresh subprocess:

    a  hf-numpy       transformers.Trainer, numpy compute_metrics(eval_pred)         (holds every logit)
    b  hf-batch       transformers.Trainer, batch_eval_metrics=True, compute_metrics(eval_pred, compute_result)
    c  hftrain-batch  hftrain.Trainer, the same batch_eval_metrics function
    d  hftrain-tm     hftrain.Trainer, compute_metrics=torchmetrics MulticlassAccuracy(8000, ignore_index=-100,
                      average="micro"), preprocess_logits_for_metrics=lambda logits, labels: logits.argmax(-1)
    e  hftrain-numpy  hftrain.Trainer, the numpy compute_metrics of (a)                 (holds every logit)

All compute the same number, position-aligned token accuracy (argmax(logits)[b, t] == labels[b, t], no -100 in the
labels), so the printed accuracies and eval_loss cross-check the configurations.

    python benchmarks/bench_eval_memory.py                 # all five: ~8.5 minutes on 2 cores, ~6.5 GB peak;
                                                           # (a) and (e) take ~3.5 min each (quadratic concat)
    python benchmarks/bench_eval_memory.py --rows 768      # ~3 minutes, 1.6 GB of logits
    python benchmarks/bench_eval_memory.py --only b c d    # the streaming ones only
    python benchmarks/bench_eval_memory.py --config c      # one child run (prints a BENCH_RESULT json line)
    python benchmarks/bench_eval_memory.py --only b c d --repeats 3   # median of 3 fresh runs per configuration
    python benchmarks/bench_eval_memory.py --glibc-default # keep glibc's dynamic mmap threshold (see below)

Allocator: every child runs with MALLOC_MMAP_THRESHOLD_=1048576, so each allocation of 1 MiB or more (a batch of
logits is 16 x 64 x 8000 x 4 B = 31.25 MiB) is its own mmap, unmapped when freed: RSS follows the live tensors and
the peak is deterministic (the same to the MB run after run). With glibc's default dynamic threshold (up to
32 MiB, so these 31.25 MiB blocks land on the heap after the first free), freed blocks may stay resident and the
same configuration measured 78 MB or 121 MB from one fresh run to the next; `--glibc-default` measures that way.

Columns:
  peak_MB     ru_maxrss after evaluate() minus VmRSS right before it. The high-water mark is reset
              (echo 5 > /proc/self/clear_refs) right before evaluate(), so it is evaluate()'s own peak.
  hwm_MB      the same from /proc/self/status VmHWM (the mm's high-water mark alone; should equal peak_MB)
  rss_before  VmRSS right before evaluate() (model, data, trainer built; framework imported)
  eval_s      wall time of evaluate()
  cpu_s       CPU time of this process during evaluate() (all threads): less sensitive to other load

Threads: every child runs torch with 1 thread by default (`--threads N` to change). On a 2-core machine shared
with other jobs (load average up to 6-8 during these measurements), 2 OpenMP threads on small ops spin and wait for
each other: one model.generate() batch of bench_generation_eval.py took 5-10 s wall with 2 threads vs 1.0 s
with 1 thread. Both frameworks get the same setting.
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

SEED, VOCAB, ROWS, SEQ, BATCH = 1234, 8000, 1536, 64, 16
CONFIGS = {
    "a": "hf-numpy",
    "b": "hf-batch",
    "c": "hftrain-batch",
    "d": "hftrain-tm",
    "e": "hftrain-numpy",
}


def status_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def numpy_accuracy(eval_pred):
    import numpy as np

    preds = np.argmax(eval_pred.predictions, axis=-1)
    labels = eval_pred.label_ids
    mask = labels != -100
    return {"accuracy": float((preds[mask] == labels[mask]).sum() / mask.sum())}


class BatchAccuracy:
    """batch_eval_metrics: count per batch, return the total on the last batch."""

    def __init__(self):
        self.correct = self.total = 0

    def __call__(self, eval_pred, compute_result):
        import torch

        logits, labels = torch.as_tensor(eval_pred.predictions), torch.as_tensor(eval_pred.label_ids)
        mask = labels != -100
        self.correct += int((logits.argmax(-1)[mask] == labels[mask]).sum())
        self.total += int(mask.sum())
        if compute_result:
            result = {"accuracy": self.correct / self.total}
            self.correct = self.total = 0
            return result
        return {}


def child(config, rows):
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    from transformers import GPT2Config, GPT2LMHeadModel

    if config in ("a", "b"):
        from transformers import Trainer, TrainingArguments
    else:
        from hftrain import Trainer, TrainingArguments

    class Rows(torch.utils.data.Dataset):
        def __init__(self):
            g = torch.Generator().manual_seed(SEED)
            self.ids = torch.randint(0, VOCAB, (rows, SEQ), generator=g)

        def __len__(self):
            return rows

        def __getitem__(self, i):
            return {"input_ids": self.ids[i], "attention_mask": torch.ones(SEQ, dtype=torch.long),
                    "labels": self.ids[i]}

    torch.manual_seed(SEED)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=SEQ, n_embd=64, n_layer=2, n_head=2))
    extra, kwargs = {}, {}
    if config in ("a", "e"):
        kwargs["compute_metrics"] = numpy_accuracy
    elif config in ("b", "c"):
        extra["batch_eval_metrics"] = True
        kwargs["compute_metrics"] = BatchAccuracy()
    else:
        from torchmetrics.classification import MulticlassAccuracy

        kwargs["compute_metrics"] = MulticlassAccuracy(num_classes=VOCAB, ignore_index=-100, average="micro")
        kwargs["preprocess_logits_for_metrics"] = lambda logits, labels: logits.argmax(-1)
    out = tempfile.mkdtemp(prefix="bench_eval_memory_")  # nothing is written there; removed at the end
    args = TrainingArguments(output_dir=out, per_device_eval_batch_size=BATCH, report_to="none", disable_tqdm=True,
                             use_cpu=True, seed=SEED, **extra)
    trainer = Trainer(model=model, args=args, eval_dataset=Rows(), **kwargs)

    rss_before = status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset the high-water mark (VmHWM, ru_maxrss) to the current RSS
        f.write("5")
    start, cpu_start = time.perf_counter(), time.process_time()
    metrics = trainer.evaluate()
    eval_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hwm_kb = status_kb("VmHWM")
    acc = next(v for k, v in metrics.items() if k.endswith("accuracy"))
    result = {
        "config": config, "name": CONFIGS[config], "peak_mb": (peak_kb - rss_before) / 1024,
        "hwm_mb": (hwm_kb - rss_before) / 1024, "rss_before_mb": rss_before / 1024, "eval_s": eval_s,
        "cpu_s": cpu_s, "eval_loss": metrics["eval_loss"], "accuracy": float(acc), "metric_keys": sorted(metrics),
    }
    shutil.rmtree(out, ignore_errors=True)
    print("BENCH_RESULT " + json.dumps(result), flush=True)


THREADS = 1


def spawn(config, rows, glibc_default):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "BENCH_THREADS": str(THREADS)}
    if not glibc_default:
        env["MALLOC_MMAP_THRESHOLD_"] = "1048576"
    cmd = [sys.executable, os.path.abspath(__file__), "--config", config, "--rows", str(rows)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            return json.loads(line[len("BENCH_RESULT "):])
    sys.exit(f"config {config} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=CONFIGS, help="run one configuration in this process (child mode)")
    p.add_argument("--only", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    p.add_argument("--rows", type=int, default=ROWS, help=f"eval rows (default {ROWS})")
    p.add_argument("--repeats", type=int, default=1, help="runs per configuration (fresh process each); median")
    p.add_argument("--glibc-default", action="store_true", help="keep glibc's dynamic mmap threshold (see above)")
    p.add_argument("--threads", type=int, default=1, help="torch threads in every child (default 1, see above)")
    a = p.parse_args()
    global THREADS
    THREADS = a.threads
    if a.config:
        return child(a.config, a.rows)
    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, GPT-2 vocab {VOCAB} n_embd 64 2 layers, {a.rows} rows x "
          f"{SEQ} tokens, eval batch {BATCH}, torch threads {a.threads}; full logits would be "
          f"{a.rows * SEQ * VOCAB * 4 / 1e9:.2f} GB; "
          f"MALLOC_MMAP_THRESHOLD_: {'glibc default' if a.glibc_default else '1 MiB'}; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'config':<17} {'peak_MB':>8} {'hwm_MB':>8} {'rss_before':>10} {'eval_s':>7} {'cpu_s':>7} "
          f"{'eval_loss':>10} "
          f"{'accuracy':>9}")
    res = {}
    for c in a.only:
        runs = [spawn(c, a.rows, a.glibc_default) for _ in range(a.repeats)]
        r = res[c] = {k: (statistics.median(x[k] for x in runs) if isinstance(v, float) else v)
                      for k, v in runs[0].items()}
        if a.repeats > 1:
            print(f"  {c} peak_MB per run: {[round(x['peak_mb']) for x in runs]}", flush=True)
        print(f"{c} {r['name']:<15} {r['peak_mb']:>8.0f} {r['hwm_mb']:>8.0f} {r['rss_before_mb']:>10.0f} "
              f"{r['eval_s']:>7.2f} {r['cpu_s']:>7.2f} {r['eval_loss']:>10.6f} {r['accuracy']:>9.6f}", flush=True)
    if "b" in res:
        base = res["b"]["peak_mb"]
        for c in ("c", "d"):
            if c in res:
                print(f"{c} vs b: peak {res[c]['peak_mb'] - base:+.0f} MB ({res[c]['peak_mb'] / base:.2f}x), "
                      f"time {res[c]['eval_s'] / res['b']['eval_s']:.2f}x, "
                      f"cpu {res[c]['cpu_s'] / res['b']['cpu_s']:.2f}x  "
                      f"(goal: peak no more than b's: {'met' if res[c]['peak_mb'] <= base * 1.05 + 5 else 'MISSED'})")
    for x, y in (("e", "a"), ("c", "b")):
        if x in res and y in res:
            print(f"{x}/{y}: peak {res[x]['peak_mb'] / res[y]['peak_mb']:.2f}x, "
                  f"eval time {res[x]['eval_s'] / res[y]['eval_s']:.2f}x, cpu {res[x]['cpu_s'] / res[y]['cpu_s']:.2f}x")


if __name__ == "__main__":
    main()
