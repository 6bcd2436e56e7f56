"""The GPU check: bf16-mixed and fp16 training against transformers.Trainer, FSDP2 on one GPU with a checkpoint,
and a throughput figure. Sized for a 10-minute slot on one H100/H200; writes one JSON report.

    python tests/gpu/gpu_check.py --out gpu_report.json            # on a CUDA machine (about 2-4 minutes)
    python tests/gpu/gpu_check.py --smoke --out /tmp/smoke.json    # the same code paths on a CPU, tiny sizes

Each check prints one line and records its numbers; a failed check records its error and the others still run.
The exit status is 1 if any check failed. ``tests/gpu/test_gpu.py`` runs it under pytest when CUDA is present.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402


def _model(hidden: int, layers: int, vocab: int = 2000):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=max(hidden // 64, 2),
        intermediate_size=4 * hidden, num_labels=4, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    ))


def _rows(n: int, seq: int, vocab: int = 2000) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, vocab, (n, seq), generator=g)
    return [{"input_ids": ids[i], "attention_mask": torch.ones(seq, dtype=torch.long), "labels": int(ids[i, 1] % 4)}
            for i in range(n)]


def _args(cls, out: str, smoke: bool, **kwargs):
    common = dict(per_device_train_batch_size=16, num_train_epochs=1, learning_rate=1e-4, logging_steps=1, seed=0,
                  save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=smoke)
    return cls(out, **{**common, **kwargs})


def _losses(history: list[dict]) -> list[float]:
    return [h["loss"] for h in history if "loss" in h]


def check_precision(flag: str, smoke: bool, size: dict) -> dict:
    """hftrain and transformers.Trainer with ``bf16=True`` / ``fp16=True``: the per-step losses agree."""
    import transformers

    import hftrain

    data = _rows(size["rows"], size["seq"])
    runs = {}
    for name, module in (("hftrain", hftrain), ("transformers", transformers)):
        with tempfile.TemporaryDirectory() as out:
            trainer = module.Trainer(_model(size["hidden"], size["layers"]),
                                     _args(module.TrainingArguments, out, smoke, **{flag: True}), train_dataset=data)
            trainer.train()
            runs[name] = _losses(trainer.state.log_history)
    diff = max(abs(a - b) / max(abs(b), 1e-8) for a, b in zip(runs["hftrain"], runs["transformers"]))
    ok = len(runs["hftrain"]) == len(runs["transformers"]) and diff < size["rtol"]
    return {"ok": ok, "max_rel_loss_diff": diff, "steps": len(runs["hftrain"]), "last_loss": runs["hftrain"][-1]}


def check_fsdp(smoke: bool, size: dict) -> dict:
    """``strategy="fsdp"`` on one device: trains, writes an HF-layout checkpoint that ``from_pretrained`` loads."""
    from transformers import BertForSequenceClassification

    import hftrain

    with tempfile.TemporaryDirectory() as out:
        args = _args(hftrain.TrainingArguments, out, smoke, strategy="fsdp", devices=1, save_strategy="steps",
                     save_steps=4, max_steps=8, bf16=not smoke)
        trainer = hftrain.Trainer(_model(size["hidden"], size["layers"]), args,
                                  train_dataset=_rows(size["rows"], size["seq"]))
        trainer.train()
        sharded = type(trainer.model).__name__.startswith("FSDP")
        loaded = BertForSequenceClassification.from_pretrained(f"{out}/checkpoint-8")
        files = sorted(p.name for p in Path(out, "checkpoint-8").iterdir())
    return {"ok": sharded and trainer.state.global_step == 8 and loaded is not None,
            "sharded": sharded, "strategy": type(trainer.lightning_trainer.strategy).__name__, "files": files}


def check_throughput(smoke: bool, size: dict) -> dict:
    """samples/s of steps 2..N, hftrain vs transformers.Trainer, bf16, the same model and data."""
    import transformers

    import hftrain

    data = _rows(size["throughput_rows"], size["seq"])
    result = {}
    for name, module in (("hftrain", hftrain), ("transformers", transformers)):
        clock = {}

        class Clock(module.TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == 1:
                    if torch.cuda.is_available():
                        torch.cuda.synchronize()
                    clock["start"] = time.perf_counter()

        with tempfile.TemporaryDirectory() as out:
            args = _args(module.TrainingArguments, out, smoke, bf16=not smoke, logging_steps=10_000,
                         per_device_train_batch_size=32)
            trainer = module.Trainer(_model(size["hidden"], size["layers"]), args, train_dataset=data,
                                     callbacks=[Clock()])
            trainer.train()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            steps = trainer.state.global_step - 1
            result[f"{name}_samples_per_s"] = steps * 32 / (time.perf_counter() - clock["start"])
    result["ratio_hftrain_over_transformers"] = result["hftrain_samples_per_s"] / result["transformers_samples_per_s"]
    result["ok"] = True
    return result


GPU = {"hidden": 256, "layers": 4, "seq": 128, "rows": 512, "throughput_rows": 8192, "rtol": 2e-2}
SMOKE = {"hidden": 32, "layers": 1, "seq": 16, "rows": 64, "throughput_rows": 256, "rtol": 1e-4}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_report.json")
    parser.add_argument("--smoke", action="store_true", help="run on the CPU with tiny sizes")
    cli = parser.parse_args()
    if not cli.smoke and not torch.cuda.is_available():
        print("no CUDA device: run with --smoke for a CPU pass", file=sys.stderr)
        return 2
    size = SMOKE if cli.smoke else GPU
    report = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() and not cli.smoke else "cpu",
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    checks = {"bf16": lambda: check_precision("bf16", cli.smoke, size),
              "fp16": lambda: check_precision("fp16", cli.smoke, size),
              "fsdp": lambda: check_fsdp(cli.smoke, size),
              "throughput": lambda: check_throughput(cli.smoke, size)}
    for name, check in checks.items():
        start = time.time()
        try:
            report[name] = check()
        except Exception as exc:  # record it and go on: one slot, every figure counts
            report[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
        report[name]["seconds"] = round(time.time() - start, 1)
        print(name, json.dumps({k: v for k, v in report[name].items() if k != "trace"}), flush=True)
    Path(cli.out).write_text(json.dumps(report, indent=2))
    return 0 if all(report[name]["ok"] for name in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
