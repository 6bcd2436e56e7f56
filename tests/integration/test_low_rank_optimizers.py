"""GaLore and APOLLO (``optim="galore_*"`` / ``"apollo_*"`` with ``optim_target_modules``), through transformers'
optimizer handlers and the galore-torch / apollo-torch packages, side by side with transformers.Trainer."""

from __future__ import annotations

import pytest

from tests.helpers import (
    assert_histories_match,
    assert_same_parameters,
    lm_rows,
    pad_lm_batch,
    run_both,
    step_logs,
    tiny_llama,
)

pytest.importorskip("galore_torch")  # both are in the dev extra: installed wherever the suite runs
pytest.importorskip("apollo_torch")

COMMON = dict(per_device_train_batch_size=4, max_steps=4, logging_steps=1, learning_rate=1e-3, save_strategy="no",
              seed=3, optim_target_modules=["attn", "mlp"], optim_args="rank=4,update_proj_gap=2")


@pytest.mark.parametrize("optim", ["galore_adamw", "galore_adafactor", "apollo_adamw"])
def test_low_rank_optimizers_train_as_transformers(tmp_path, optim):
    runs = run_both(tiny_llama(), dict(COMMON, optim=optim), str(tmp_path), train_dataset=lm_rows(16),
                    data_collator=pad_lm_batch)
    hf, ours = runs["hf"], runs["ours"]
    assert_histories_match(step_logs(hf["history"]), step_logs(ours["history"]), ("loss", "grad_norm", "learning_rate"))
    assert_same_parameters(hf["trainer"].model, ours["trainer"].model)
    projected = [group for group in ours["trainer"].optimizer.param_groups if "rank" in group]
    assert projected and projected[0]["rank"] == 4  # the low-rank group holds the target modules' matrices


def test_layerwise_galore_schedules_every_layer(tmp_path):
    """Each layer's optimizer follows the schedule the log shows; transformers 5.24 logs the decay while every
    layer keeps the initial rate (its layer-wise scheduler branch never runs)."""
    runs = run_both(tiny_llama(), dict(COMMON, optim="galore_adamw_layerwise"), str(tmp_path),
                    train_dataset=lm_rows(16), data_collator=pad_lm_batch)
    hf, ours = runs["hf"], runs["ours"]
    assert [h["learning_rate"] for h in step_logs(ours["history"])] == [
        h["learning_rate"] for h in step_logs(hf["history"])] == [1e-3, 7.5e-4, 5e-4, 2.5e-4]
    assert step_logs(ours["history"])[0]["loss"] == pytest.approx(step_logs(hf["history"])[0]["loss"])
    ours_rates = {layer.param_groups[0]["lr"] for layer in ours["trainer"].optimizer.optimizer_dict.values()}
    hf_rates = {layer.param_groups[0]["lr"] for layer in hf["trainer"].optimizer.optimizer.optimizer_dict.values()}
    assert ours_rates == {0.0} and hf_rates == {1e-3}  # four linear-decay steps end at 0
