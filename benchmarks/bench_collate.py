"""The data path of a tokenized ``datasets.Dataset``: rows → collator vs columnar batches (issue 17), in one process.

Part 1 (``fetch``): CPU time per batch of the original fetch + collate, ``collator(dataset.__getitems__(indices))``,
against hftrain's ``ColumnarDataset.__getitems__(indices)`` (one Arrow take, numpy padding), for 2048 rows of
16–64 tokens (input_ids, token_type_ids, attention_mask, label; seen through an indices mapping as after
``train_test_split``), batch 8 and 32, the collators hftrain reproduces. The two alternate in rounds of random
batches; the figure is the median over the rounds. Each round also checks that both give the same tensors.

Part 2 (``train``): CPU time per optimizer step of a small BERT (hidden 128, 2 layers, 64 tokens at most,
batch 32, 1 torch thread) trained by ``hftrain.Trainer`` on that dataset with ``DataCollatorWithPadding``, the
columnar batches against the rows path (a subclass overriding ``_remove_unused_columns``, which keeps it), runs
alternating in this process; for each run the median per-step CPU time (steps 2..N) and, of it, the CPU time
spent in torch's fetcher (``dataset.__getitems__`` + ``collate_fn``, timed by wrapping ``_MapDatasetFetcher.fetch``),
which is robust to the machine's noise where whole steps are not; then the medians over the runs, and the runs'
per-step losses compared.

    python benchmarks/bench_collate.py                 # both parts
    python benchmarks/bench_collate.py fetch --rounds 50
    python benchmarks/bench_collate.py train --repeats 3 --rows 1024
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer, models  # noqa: E402
from transformers import (  # noqa: E402
    DataCollatorForLanguageModeling, DataCollatorWithPadding, PreTrainedTokenizerFast, default_data_collator,
)

from hftrain._loop.fast_collate import columnar_batches  # noqa: E402

VOCAB, SEED = 2000, 1234


def tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, **{f"w{i}": i + 4 for i in range(VOCAB - 4)}}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="[UNK]")),
                                   pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]")


def dataset(rows: int, fixed: bool = False) -> datasets.Dataset:
    """A BERT tokenizer's output for ``rows`` texts of 16–64 tokens (all 64 with ``fixed``), and a label."""
    rng = np.random.default_rng(SEED)
    lengths = np.full(rows + 64, 64) if fixed else rng.integers(16, 65, rows + 64)
    ids = [[2, *rng.integers(4, VOCAB, n - 2).tolist(), 3] for n in lengths]
    table = {"input_ids": ids, "token_type_ids": [[0] * len(r) for r in ids],
             "attention_mask": [[1] * len(r) for r in ids], "label": [int(r[1] < VOCAB // 2) for r in ids]}
    return datasets.Dataset.from_dict(table).train_test_split(test_size=64, seed=SEED)["train"]


def same(a, b) -> bool:
    return type(a) is type(b) and list(a) == list(b) and all(
        a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def bench_fetch(rounds: int, per_round: int) -> None:
    tok = tokenizer()
    varying, fixed = dataset(2048), dataset(2048, fixed=True)
    cases = [("DataCollatorWithPadding", varying, DataCollatorWithPadding(tok)),
             ("DataCollatorWithPadding(pad_to_multiple_of=8)", varying,
              DataCollatorWithPadding(tok, pad_to_multiple_of=8)),
             ("DataCollatorForLanguageModeling(mlm=False)", varying.remove_columns("label"),
              DataCollatorForLanguageModeling(tok, mlm=False)),
             ("default_data_collator (64 tokens)", fixed, default_data_collator)]
    print(f"{'collator':48} {'batch':>5} {'rows→collator ms':>17} {'columns ms':>11} {'speed-up':>9}")
    for name, data, collator in cases:
        fast, _ = columnar_batches(data, collator)
        assert type(fast).__name__ == "ColumnarDataset", name
        for batch in (8, 32):
            rng = np.random.default_rng(batch)
            rows_ms, columns_ms = [], []
            for _ in range(rounds):
                batches = [rng.integers(0, len(data), batch).tolist() for _ in range(per_round)]
                assert same(fast.__getitems__(batches[0]), collator(data.__getitems__(batches[0])))
                t0 = time.process_time()
                for indices in batches:
                    collator(data.__getitems__(indices))
                t1 = time.process_time()
                for indices in batches:
                    fast.__getitems__(indices)
                t2 = time.process_time()
                rows_ms.append((t1 - t0) / per_round * 1e3)
                columns_ms.append((t2 - t1) / per_round * 1e3)
            a, b = statistics.median(rows_ms), statistics.median(columns_ms)
            print(f"{name:48} {batch:5d} {a:17.3f} {b:11.3f} {a / b:8.1f}×", flush=True)


def bench_train(rows: int, repeats: int) -> None:
    from torch.utils.data._utils import fetch
    from transformers import BertConfig, BertForSequenceClassification

    from hftrain import Trainer, TrainerCallback, TrainingArguments
    from hftrain.trainer_callback import PrinterCallback

    torch.set_num_threads(1)
    fetch_cpu = [0.0]  # CPU seconds in torch's fetcher (dataset.__getitems__ + collate_fn): the data path
    original_fetch = fetch._MapDatasetFetcher.fetch

    def timed_fetch(self, indices):
        start = time.process_time()
        try:
            return original_fetch(self, indices)
        finally:
            fetch_cpu[0] += time.process_time() - start

    fetch._MapDatasetFetcher.fetch = timed_fetch

    class RowsTrainer(Trainer):  # an override of a loader seam keeps the rows → collator path
        def _remove_unused_columns(self, dataset, description=None):
            return super()._remove_unused_columns(dataset, description)

    class StepClock(TrainerCallback):
        def __init__(self):
            self.cpu, self.fetch = [], []

        def on_step_end(self, args, state, control, **kwargs):
            self.cpu.append(time.process_time())
            self.fetch.append(fetch_cpu[0])

    train_set, tok = dataset(rows), tokenizer()
    config = BertConfig(vocab_size=VOCAB, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=256, max_position_embeddings=64, num_labels=2)
    step_ms: dict[str, list[float]] = {"columns": [], "rows": []}
    fetch_ms: dict[str, list[float]] = {"columns": [], "rows": []}
    losses: dict[str, list[float]] = {}
    print(f"small BERT, {rows} rows of 16-64 tokens, batch 32, {torch.get_num_threads()} torch thread; CPU ms per "
          "optimizer step and of it in the fetch + collate (medians of steps 2..N), run by run:")
    for repeat in range(repeats):
        for name, trainer_cls in (("columns", Trainer), ("rows", RowsTrainer)) if repeat % 2 == 0 else (
                ("rows", RowsTrainer), ("columns", Trainer)):
            torch.manual_seed(SEED)
            model, clock = BertForSequenceClassification(config), StepClock()
            with tempfile.TemporaryDirectory() as out:
                args = TrainingArguments(out, per_device_train_batch_size=32, num_train_epochs=1, save_strategy="no",
                                         report_to="none", disable_tqdm=True, logging_steps=1, seed=SEED,
                                         use_cpu=True)
                trainer = trainer_cls(model, args, train_dataset=train_set, processing_class=tok, callbacks=[clock])
                trainer.remove_callback(PrinterCallback)
                trainer.train()
            step_ms[name].append(1e3 * statistics.median(b - a for a, b in zip(clock.cpu, clock.cpu[1:])))
            fetch_ms[name].append(1e3 * statistics.median(b - a for a, b in zip(clock.fetch, clock.fetch[1:])))
            losses[name] = [h["loss"] for h in trainer.state.log_history if "loss" in h]
            print(f"  {name:8} {step_ms[name][-1]:8.2f} ms/step, fetch + collate {fetch_ms[name][-1]:6.3f} ms/step "
                  f"({len(clock.cpu)} steps)", flush=True)
    fetch._MapDatasetFetcher.fetch = original_fetch
    (a, b), (fa, fb) = ((statistics.median(d["rows"]), statistics.median(d["columns"])) for d in (step_ms, fetch_ms))
    print(f"median per step: rows→collator {a:.2f} ms (fetch + collate {fa:.3f} ms, {100 * fa / a:.1f}%), columns "
          f"{b:.2f} ms (fetch + collate {fb:.3f} ms, {100 * fb / b:.1f}%): the data path saves {fa - fb:.3f} ms, "
          f"{100 * (fa - fb) / a:.1f}% of the rows path's step; whole steps differ by {100 * (a - b) / a:+.1f}%")
    print(f"per-step losses of the two paths: {'identical' if losses['rows'] == losses['columns'] else 'DIFFERENT'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", nargs="?", choices=["fetch", "train", "all"], default="all")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--per-round", type=int, default=20)
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=4)
    options = parser.parse_args()
    if options.part in ("fetch", "all"):
        bench_fetch(options.rounds, options.per_round)
    if options.part in ("train", "all"):
        bench_train(options.rows, options.repeats)
