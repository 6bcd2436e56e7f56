"""Training features taken from transformers as they are: NEFTune, memory metrics, tokens seen."""

from __future__ import annotations

import pytest

from tests.helpers import (
    assert_histories_match,
    assert_same_parameters,
    classification_rows,
    run_both,
    step_logs,
    tiny_bert_classifier,
)


def test_neftune_adds_transformers_noise_only_while_training(tmp_path):
    runs = run_both(
        tiny_bert_classifier(), dict(per_device_train_batch_size=4, max_steps=4, logging_steps=1, learning_rate=1e-3,
                                     neftune_noise_alpha=5.0, seed=3, save_strategy="no"),
        str(tmp_path), train_dataset=classification_rows(20),
    )
    hf, ours = runs["hf"], runs["ours"]
    assert_histories_match(step_logs(hf["history"]), step_logs(ours["history"]), ("loss", "grad_norm"))
    assert_same_parameters(hf["trainer"].model, ours["trainer"].model)
    embeddings = ours["trainer"].model.get_input_embeddings()
    assert not embeddings._forward_hooks  # the hook is removed after train()
    evaluation = classification_rows(6, seed=1)
    assert ours["trainer"].evaluate(evaluation)["eval_loss"] == pytest.approx(
        hf["trainer"].evaluate(evaluation)["eval_loss"])


def test_noise_differs_from_a_run_without_neftune(tmp_path):
    plain = run_both(tiny_bert_classifier(), dict(per_device_train_batch_size=4, max_steps=2, logging_steps=1,
                                                  seed=3, save_strategy="no"),
                     str(tmp_path / "plain"), train_dataset=classification_rows(20))["ours"]
    noisy = run_both(tiny_bert_classifier(), dict(per_device_train_batch_size=4, max_steps=2, logging_steps=1,
                                                  seed=3, save_strategy="no", neftune_noise_alpha=5.0),
                     str(tmp_path / "noisy"), train_dataset=classification_rows(20))["ours"]
    assert step_logs(plain["history"])[0]["loss"] != step_logs(noisy["history"])[0]["loss"]


def test_memory_metrics_have_transformers_keys(tmp_path):
    runs = run_both(
        tiny_bert_classifier(), dict(per_device_train_batch_size=4, max_steps=2, skip_memory_metrics=False,
                                     save_strategy="no"),
        str(tmp_path), train_dataset=classification_rows(20),
    )
    hf, ours = runs["hf"], runs["ours"]
    hf_keys = {k for k in hf["output"].metrics if "_mem_" in k}
    assert hf_keys and {k for k in ours["output"].metrics if "_mem_" in k} == hf_keys
    assert ours["output"].metrics["train_mem_cpu_peaked_delta"] >= 0
    evaluation = classification_rows(6, seed=1)
    hf_eval = {k for k in hf["trainer"].evaluate(evaluation) if "_mem_" in k}
    assert {k for k in ours["trainer"].evaluate(evaluation) if "_mem_" in k} == hf_eval == {
        "eval_mem_cpu_alloc_delta", "eval_mem_cpu_peaked_delta"}


@pytest.mark.parametrize("mode", ["all", "non_padding"])
def test_tokens_seen_equal_transformers(tmp_path, mode):
    runs = run_both(
        tiny_bert_classifier(), dict(per_device_train_batch_size=4, max_steps=3, logging_steps=1,
                                     include_num_input_tokens_seen=mode, save_strategy="no"),
        str(tmp_path), train_dataset=classification_rows(20),
    )
    hf, ours = runs["hf"], runs["ours"]
    assert ours["trainer"].state.num_input_tokens_seen == hf["trainer"].state.num_input_tokens_seen > 0
    assert [h["num_input_tokens_seen"] for h in step_logs(ours["history"])] == [
        h["num_input_tokens_seen"] for h in step_logs(hf["history"])]


class SlowEvaluation:
    """An ``on_evaluate`` that takes ``seconds``: time the training rates must not count."""

    def __new__(cls, seconds: float):
        import time

        from hftrain import TrainerCallback

        class Slow(TrainerCallback):
            def on_evaluate(self, args, state, control, **kwargs):
                time.sleep(seconds)

        return Slow()


def test_every_training_log_has_its_intervals_tokens_per_second_and_mfu(tmp_path):
    from hftrain import Trainer, TrainingArguments

    model = tiny_bert_classifier()
    args = TrainingArguments(str(tmp_path), report_to="none", disable_tqdm=True, per_device_train_batch_size=4,
                             max_steps=6, logging_steps=2, eval_strategy="steps", eval_steps=2, save_strategy="no",
                             include_num_input_tokens_seen="all", peak_flops=1e12)
    trainer = Trainer(model, args, train_dataset=classification_rows(24), eval_dataset=classification_rows(4, seed=1),
                      callbacks=[SlowEvaluation(1.5)])
    trainer.train()
    logs = step_logs(trainer.state.log_history)
    assert len(logs) == 3
    flops_per_token = 6 * model.num_parameters(exclude_embeddings=True)  # transformers' floating_point_ops
    previous = 0
    for log in logs:
        tokens = log["num_input_tokens_seen"] - previous
        previous = log["num_input_tokens_seen"]
        seconds = tokens / log["tokens_per_second"]
        # the 1.5 s evaluations before the 2nd and 3rd logs are not counted; the two tiny steps take milliseconds
        # (0.66 s on a machine running five other jobs, which a 0.5 s evaluation could not tell apart)
        assert 0 < seconds < 1.5
        assert log["tokens_per_second_per_device"] == log["tokens_per_second"]  # one process
        assert log["mfu"] * 1e12 / log["tokens_per_second"] == pytest.approx(flops_per_token, rel=1e-3)
    eval_logs = [h for h in trainer.state.log_history if "eval_loss" in h]
    assert eval_logs and not any("tokens_per_second" in h or "mfu" in h for h in eval_logs)


def test_without_token_counting_or_a_peak_the_logs_stay_transformers(tmp_path):
    runs = run_both(tiny_bert_classifier(), dict(per_device_train_batch_size=4, max_steps=2, logging_steps=1,
                                                 save_strategy="no"),
                    str(tmp_path), train_dataset=classification_rows(20))
    hf, ours = (step_logs(runs[name]["history"]) for name in ("hf", "ours"))
    assert [set(log) for log in ours] == [set(log) for log in hf]  # a CPU has no known peak: no mfu either


def test_peak_flops_must_be_a_positive_number(tmp_path):
    from hftrain import TrainingArguments

    with pytest.raises(ValueError, match="peak_flops.*positive number.*got -1"):
        TrainingArguments(str(tmp_path), peak_flops=-1)
    with pytest.raises(ValueError, match="peak_flops.*'fast'"):
        TrainingArguments(str(tmp_path), peak_flops="fast")
    assert TrainingArguments(str(tmp_path), peak_flops="312e12").peak_flops == 312e12
