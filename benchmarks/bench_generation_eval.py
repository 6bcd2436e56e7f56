"""Evaluation with generation: Seq2SeqTrainer.evaluate() with predict_with_generate, hftrain vs transformers.

Both evaluate the same small T5 (built from a T5Config: d_model 128, d_ff 256, 4 heads, 2 encoder + 2 decoder
layers, vocab 1000, untrained, fixed seed) on the same 512 rows of a copy task (4-16 words -> the words reversed,
word-level tokenizer built in memory), eval batch 32, generation_num_beams=2, generation_max_length=32, with a numpy
compute_metrics (exact match + the number of generated non-pad tokens, a checksum that the two generate the same).
Each run is a fresh subprocess: one warm-up evaluate() on the first 32 rows, then the timed evaluate() on all 512.

    python benchmarks/bench_generation_eval.py                 # 3 repeats per framework (alternating), median
    python benchmarks/bench_generation_eval.py --repeats 1     # quick
    python benchmarks/bench_generation_eval.py --framework hftrain   # one child run (prints BENCH_RESULT json)

Columns, per run:
  seq/s      rows / wall time of the timed evaluate()
  eval_s     wall time of the timed evaluate()
  cpu_s      CPU time of the process during it (all threads): less sensitive to other load on the machine
  first_s    wall time of the warm-up evaluate() (32 rows; includes one-time setup such as lazy imports)
  load1      1-minute load average at the end of the run (above the 2 cores: something else was competing)

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

SEED, WORDS, ROWS, BATCH, BEAMS, MAX_LEN = 1234, 997, 512, 32, 2, 32
FRAMEWORKS = ("hftrain", "transformers")


def word_tokenizer(words):
    """<pad>=0, </s>=1, <unk>=2, w0..w{n-1}: as tests/helpers.word_tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{f"w{i}": i + 3 for i in range(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def copy_rows(tokenizer, n):
    import torch

    g = torch.Generator().manual_seed(SEED)
    rows = []
    for _ in range(n):
        length = int(torch.randint(4, 17, (1,), generator=g))
        words = [f"w{int(i)}" for i in torch.randint(0, WORDS, (length,), generator=g)]
        source, target = tokenizer(" ".join(words)), tokenizer(" ".join(reversed(words)))
        rows.append({"input_ids": source["input_ids"], "attention_mask": source["attention_mask"],
                     "labels": target["input_ids"]})
    return rows


def compute_metrics(eval_pred):
    import numpy as np

    preds, labels = eval_pred.predictions, eval_pred.label_ids
    labels = np.where(labels == -100, 0, labels)
    width = max(preds.shape[1], labels.shape[1])
    preds = np.pad(preds, ((0, 0), (0, width - preds.shape[1])))
    labels = np.pad(labels, ((0, 0), (0, width - labels.shape[1])))
    return {"exact_match": float((preds == labels).all(axis=1).mean()), "gen_tokens": int((preds > 1).sum())}


def child(framework):
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))

    if framework == "hftrain":
        from hftrain import Seq2SeqTrainer, Seq2SeqTrainingArguments
    else:
        from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments
    from transformers import DataCollatorForSeq2Seq, T5Config, T5ForConditionalGeneration

    tokenizer = word_tokenizer(WORDS)
    config = T5Config(vocab_size=len(tokenizer), d_model=128, d_kv=32, d_ff=256, num_layers=2, num_decoder_layers=2,
                      num_heads=4, dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(SEED)
    model = T5ForConditionalGeneration(config)
    rows = copy_rows(tokenizer, ROWS)
    out = tempfile.mkdtemp(prefix="bench_generation_eval_")  # nothing is written there; removed at the end
    args = Seq2SeqTrainingArguments(
        output_dir=out, per_device_eval_batch_size=BATCH, predict_with_generate=True, generation_num_beams=BEAMS,
        generation_max_length=MAX_LEN, report_to="none", disable_tqdm=True, use_cpu=True, seed=SEED,
    )
    trainer = Seq2SeqTrainer(model=model, args=args, data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
                             processing_class=tokenizer, compute_metrics=compute_metrics)
    start = time.perf_counter()
    trainer.evaluate(eval_dataset=rows[:BATCH])
    first_s = time.perf_counter() - start
    start, cpu_start = time.perf_counter(), time.process_time()
    metrics = trainer.evaluate(eval_dataset=rows)
    eval_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    result = {
        "framework": framework, "seq_per_s": ROWS / eval_s, "eval_s": eval_s, "cpu_s": cpu_s, "first_s": first_s,
        "eval_loss": metrics["eval_loss"], "exact_match": metrics["eval_exact_match"],
        "gen_tokens": metrics["eval_gen_tokens"], "load1": os.getloadavg()[0], "threads": torch.get_num_threads(),
    }
    shutil.rmtree(out, ignore_errors=True)
    print("BENCH_RESULT " + json.dumps(result), flush=True)


THREADS = 1


def spawn(framework):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "BENCH_THREADS": str(THREADS)}
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--framework", framework], env=env, check=False,
                          capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            return json.loads(line[len("BENCH_RESULT "):])
    sys.exit(f"{framework} run failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


COLS = [("seq_per_s", "seq/s", "{:>7.1f}"), ("eval_s", "eval_s", "{:>7.2f}"), ("cpu_s", "cpu_s", "{:>7.2f}"),
        ("first_s", "first_s", "{:>7.2f}"), ("eval_loss", "eval_loss", "{:>10.6f}"),
        ("exact_match", "exact", "{:>6.3f}"), ("gen_tokens", "gen_tok", "{:>7.0f}"), ("load1", "load1", "{:>5.1f}")]
HEADER = f"{'framework':<13}" + "".join(f" {h:>{len(f.format(0))}}" for _, h, f in COLS)


def row(name, r):
    return f"{name:<13}" + "".join(" " + f.format(r[k]) for k, _, f in COLS)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--framework", choices=FRAMEWORKS, help="run one framework in this process (child mode)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads in every child (default 1, see above)")
    a = p.parse_args()
    global THREADS
    THREADS = a.threads
    if a.framework:
        return child(a.framework)
    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, T5 d_model 128 2+2 layers vocab {WORDS + 3}, "
          f"{ROWS} rows, eval batch {BATCH}, num_beams {BEAMS}, max_length {MAX_LEN}, {a.repeats} repeat(s)")
    print(HEADER)
    runs = {f: [] for f in FRAMEWORKS}
    for r in range(a.repeats):
        for f in FRAMEWORKS if r % 2 == 0 else FRAMEWORKS[::-1]:  # alternate the order against drift
            runs[f].append(spawn(f))
            print(row(f, runs[f][-1]) + f"   (run {r + 1})", flush=True)
    med = {f: {k: statistics.median(x[k] for x in runs[f]) for k, _, _ in COLS} for f in FRAMEWORKS}
    print(f"\nmedian of {a.repeats}:\n{HEADER}")
    for f in FRAMEWORKS:
        print(row(f, med[f]))
    h, t = med["hftrain"], med["transformers"]
    ratio = h["seq_per_s"] / t["seq_per_s"]
    print(f"hftrain/transformers  seq/s {ratio:.3f}x (goal >= 1.0x: {'met' if ratio >= 1.0 else 'MISSED'})"
          f"   per CPU-second {t['cpu_s'] / h['cpu_s']:.3f}x   first call {t['first_s'] / h['first_s']:.3f}x")


if __name__ == "__main__":
    main()
