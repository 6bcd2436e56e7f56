"""The GPU check: bf16-mixed and fp16 training against transformers.Trainer, FSDP2 on one GPU with a checkpoint,
a throughput figure and, with ``--deepspeed``, DeepSpeed ZeRO-2/3 checkpoints resumed bit for bit and per-step
parity with transformers.Trainer under the same DeepSpeed config. Sized for a 10-minute slot on one H100/H200
(it took 74 s on an H200); writes one JSON report (``benchmarks/gpu/gpu_check_h200.json`` is one).

    python tests/gpu/gpu_check.py --out gpu_report.json            # on a CUDA machine (about 1-4 minutes)
    python tests/gpu/gpu_check.py --deepspeed --out gpu_report.json   # also the DeepSpeed checks (pip install deepspeed)
    python tests/gpu/gpu_check.py --smoke --out /tmp/smoke.json    # the same code paths on a CPU, tiny sizes

Each check prints one line and records its numbers; a failed check records its error and the others still run.
The exit status is 1 if any check failed. ``tests/gpu/test_gpu.py`` runs it under pytest when CUDA is present.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402


def _model(hidden: int, layers: int, vocab: int = 2000, dropout: float = 0.0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=max(hidden // 64, 2),
        intermediate_size=4 * hidden, num_labels=4, hidden_dropout_prob=dropout, attention_probs_dropout_prob=0.0,
        attn_implementation="eager",  # deterministic backward: a resume is compared bit for bit
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
            if name == "hftrain":  # HF leaves the weights and the optimizer state on the device after train()
                states = trainer.optimizer.state.values()
                after = {"model": next(trainer.model.parameters()).device.type, "optimizer_state": sorted(
                    {t.device.type for s in states for t in s.values() if torch.is_tensor(t) and t.dim() > 0})}
    diff = max(abs(a - b) / max(abs(b), 1e-8) for a, b in zip(runs["hftrain"], runs["transformers"]))
    stayed = smoke or after == {"model": "cuda", "optimizer_state": ["cuda"]}
    ok = len(runs["hftrain"]) == len(runs["transformers"]) and diff < size["rtol"] and stayed
    return {"ok": ok, "max_rel_loss_diff": diff, "steps": len(runs["hftrain"]), "last_loss": runs["hftrain"][-1],
            "devices_after_train": after}


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
            args = _args(module.TrainingArguments, out, smoke, bf16=not smoke, logging_strategy="no",
                         per_device_train_batch_size=32)
            trainer = module.Trainer(_model(size["hidden"], size["layers"]), args, train_dataset=data,
                                     callbacks=[Clock()])
            trainer.train()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            steps = trainer.state.global_step - 1
            result[f"{name}_samples_per_s"] = steps * 32 / (time.perf_counter() - clock["start"])
    result["ratio_hftrain_over_transformers"] = result["hftrain_samples_per_s"] / result["transformers_samples_per_s"]
    result["min_ratio"] = size["min_throughput_ratio"]
    result["ok"] = result["ratio_hftrain_over_transformers"] >= size["min_throughput_ratio"]
    return result


def check_fp16_overflow(smoke: bool, size: dict) -> dict:
    """fp16 with a loss scale that overflows the first steps: each overflowed step (an inf / nan grad_norm) skips
    the optimizer and does not advance the schedule, the scale comes down, and training goes on."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    import hftrain

    device = "cpu" if smoke else "cuda"
    scaler = torch.amp.GradScaler(device, init_scale=2.0**24)
    with tempfile.TemporaryDirectory() as out:
        args = _args(hftrain.TrainingArguments, out, smoke, max_steps=12, lr_scheduler_type="linear",
                     precision=MixedPrecision("16-mixed", device, scaler=scaler))
        trainer = hftrain.Trainer(_model(size["hidden"], size["layers"]), args,
                                  train_dataset=_rows(size["rows"], size["seq"]))
        trainer.train()
    logs = [(h["grad_norm"], h["learning_rate"]) for h in trainer.state.log_history if "loss" in h]
    skipped = [i for i, (norm, _) in enumerate(logs) if not math.isfinite(norm)]
    held = all(logs[i + 1][1] == logs[i][1] for i in skipped if i + 1 < len(logs))
    advanced = all(logs[i + 1][1] < logs[i][1] for i in range(len(logs) - 1) if i not in skipped)
    trained = len(logs) - len(skipped)
    return {"ok": bool(skipped) and trained > 0 and held and advanced and scaler.get_scale() < 2.0**24
            and len(logs) == 12,
            "overflowed_steps": [i + 1 for i in skipped], "schedule_held_on_overflow": held,
            "schedule_advanced_otherwise": advanced, "final_scale": scaler.get_scale()}


DEEPSPEED_CONFIG = {"zero_optimization": {"stage": 2}, "bf16": {"enabled": "auto"},
                    "train_micro_batch_size_per_gpu": "auto", "gradient_clipping": "auto"}


def _deepspeed_config(stage: int) -> dict:
    return {**DEEPSPEED_CONFIG, "zero_optimization": {"stage": stage}}


def _safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def check_deepspeed(stage: int, size: dict) -> dict:
    """``deepspeed=`` ZeRO-``stage``, bf16, GA 2, dropout on: checkpoints hold the engine's ``global_stepN`` folder
    and ``from_pretrained`` loads them; a run resumed from ``checkpoint-4`` writes the same ``checkpoint-8`` as the
    uninterrupted run; ``load_best_model_at_end`` leaves the best checkpoint's weights (read back by ``save_model``)."""
    from transformers import BertForSequenceClassification

    import hftrain

    data, held_out = _rows(size["rows"], size["seq"]), _rows(64, size["seq"])
    result: dict = {}
    with tempfile.TemporaryDirectory() as root:
        runs = {}
        for name, resume in (("whole", None), ("resumed", "checkpoint-4")):
            out = Path(root, name)
            if resume:  # the resumed run starts from a copy of the whole run's checkpoint-4
                import shutil

                shutil.copytree(Path(root, "whole", resume), out / resume)
            args = _args(hftrain.TrainingArguments, str(out), False, deepspeed=_deepspeed_config(stage), bf16=True,
                         gradient_accumulation_steps=2, max_steps=8, save_strategy="steps", save_steps=4,
                         eval_strategy="steps", eval_steps=4, load_best_model_at_end=True,
                         metric_for_best_model="loss", greater_is_better=False, per_device_train_batch_size=8)
            trainer = hftrain.Trainer(_model(size["hidden"], size["layers"], dropout=0.1), args, train_dataset=data,
                                      eval_dataset=held_out)
            trainer.train(resume_from_checkpoint=str(out / resume) if resume else None)
            trainer.save_model(str(out / "final"))
            runs[name] = trainer.state
        whole, resumed = Path(root, "whole"), Path(root, "resumed")
        result["files"] = sorted(p.name for p in (whole / "checkpoint-8").iterdir())
        result["engine_files"] = sorted(p.name for p in next((whole / "checkpoint-8").glob("global_step*")).iterdir())
        loaded = BertForSequenceClassification.from_pretrained(str(whole / "checkpoint-8"))
        result["from_pretrained"] = loaded is not None
        result["resume_max_weight_diff"] = _max_diff(_safetensors(whole / "checkpoint-8" / "model.safetensors"),
                                                     _safetensors(resumed / "checkpoint-8" / "model.safetensors"))
        losses = {n: [h["loss"] for h in s.log_history if "loss" in h and h["step"] > 4] for n, s in runs.items()}
        result["resume_losses"] = losses
        best = runs["whole"].best_model_checkpoint
        result["best"] = best and Path(best).name
        result["best_max_weight_diff"] = _max_diff(_safetensors(Path(best) / "model.safetensors"),
                                                   _safetensors(whole / "final" / "model.safetensors"))
        result["grad_norm_logged"] = any("grad_norm" in h for h in runs["whole"].log_history)
        result["steps"] = runs["whole"].global_step
    result["ok"] = (result["resume_max_weight_diff"] == 0.0 and losses["whole"] == losses["resumed"]
                    and result["best_max_weight_diff"] == 0.0 and any(f.startswith("global_step") for f in result["files"])
                    and result["steps"] == 8)
    return result


def check_deepspeed_parity(size: dict) -> dict:
    """hftrain and transformers.Trainer with the same ZeRO-2 config, bf16, GA 2: the per-step losses and grad
    norms agree (DeepSpeed must not divide the loss by GA a second time)."""
    import transformers

    import hftrain

    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1"),
                        ("MASTER_PORT", "29533")):
        os.environ.setdefault(name, value)  # transformers + DeepSpeed in a plain python process
    data = _rows(size["rows"], size["seq"])
    runs = {}
    for name, module in (("hftrain", hftrain), ("transformers", transformers)):
        with tempfile.TemporaryDirectory() as out:
            args = _args(module.TrainingArguments, out, False, deepspeed=_deepspeed_config(2), bf16=True,
                         gradient_accumulation_steps=2, max_steps=8)
            model = _model(size["hidden"], size["layers"])
            if module is transformers:  # BERT's mean loss: transformers must be told to divide it by GA, as hftrain
                model.accepts_loss_kwargs = False
            trainer = module.Trainer(model, args, train_dataset=data)
            trainer.train()
            runs[name] = [(h["loss"], h.get("grad_norm"), h["learning_rate"]) for h in trainer.state.log_history
                          if "loss" in h]
    diff = max(abs(a[0] - b[0]) / abs(b[0]) for a, b in zip(runs["hftrain"], runs["transformers"]))
    norms = [(a[1], b[1]) for a, b in zip(runs["hftrain"], runs["transformers"])]
    lrs_equal = [a[2] for a in runs["hftrain"]] == [b[2] for b in runs["transformers"]]
    return {"ok": len(runs["hftrain"]) == len(runs["transformers"]) == 8 and diff < size["rtol"] and lrs_equal,
            "max_rel_loss_diff": diff, "grad_norms_hftrain_vs_transformers": norms, "learning_rates_equal": lrs_equal,
            "losses": runs}


# rtol: the per-step losses against transformers.Trainer, as the README claims (identical on an H200 so far);
# min_throughput_ratio: hftrain's samples/s over transformers' (0.94-0.97 measured on an H200; a CPU pass is noisy)
GPU = {"hidden": 256, "layers": 4, "seq": 128, "rows": 512, "throughput_rows": 8192, "rtol": 1e-4,
       "min_throughput_ratio": 0.85}
SMOKE = {"hidden": 32, "layers": 1, "seq": 16, "rows": 64, "throughput_rows": 256, "rtol": 1e-4,
         "min_throughput_ratio": 0.3}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_report.json")
    parser.add_argument("--smoke", action="store_true", help="run on the CPU with tiny sizes")
    parser.add_argument("--deepspeed", action="store_true", help="add the DeepSpeed checks (needs deepspeed)")
    parser.add_argument("--only", default="", help="comma-separated names of the checks to run")
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
              "throughput": lambda: check_throughput(cli.smoke, size),
              "fp16_overflow": lambda: check_fp16_overflow(cli.smoke, size)}
    if not cli.smoke and cli.deepspeed:  # needs the deepspeed package and CUDA (Lightning refuses it elsewhere)
        checks.update({"deepspeed_zero2": lambda: check_deepspeed(2, size),
                       "deepspeed_zero3": lambda: check_deepspeed(3, size),
                       "deepspeed_parity": lambda: check_deepspeed_parity(size)})
    if cli.only:
        checks = {name: check for name, check in checks.items() if name in cli.only.split(",")}
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
