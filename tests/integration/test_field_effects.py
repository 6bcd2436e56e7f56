"""The effect of each TrainingArguments field that had none tested: side by side with transformers.Trainer where the
field changes numbers or objects transformers builds too, else the property the field promises.

Each test sets the field to a non-default value and checks something that would differ without it."""

from __future__ import annotations

import copy
import logging

import pytest
import torch

from tests.helpers import (
    ListDataset,
    accuracy,
    assert_histories_match,
    assert_same_parameters,
    classification_rows,
    lm_rows,
    pad_lm_batch,
    run_both,
    step_logs,
    tiny_bert_classifier,
    tiny_gpt2,
    tiny_llama,
)


def _trainers(tmp_path, model=None, **kwargs):
    """A transformers and an hftrain Trainer over the same model copy, arguments and data (not trained)."""
    import transformers

    import hftrain

    model = model if model is not None else tiny_bert_classifier()
    data = kwargs.pop("_data", None)
    made = {}
    for name, trainer_cls, args_cls in (("hf", transformers.Trainer, transformers.TrainingArguments),
                                        ("ours", hftrain.Trainer, hftrain.TrainingArguments)):
        args = args_cls(str(tmp_path / name), report_to="none", disable_tqdm=True, **kwargs)
        made[name] = trainer_cls(copy.deepcopy(model), args, train_dataset=data or classification_rows(16),
                                 eval_dataset=classification_rows(6, seed=1))
    return made["hf"], made["ours"]


# ---- optimisation -------------------------------------------------------------------------------------------------
def test_lr_scheduler_kwargs_reach_the_schedule(tmp_path):
    common = dict(per_device_train_batch_size=2, max_steps=8, logging_steps=1, lr_scheduler_type="cosine_with_restarts",
                  save_strategy="no", learning_rate=1e-3)
    runs = run_both(tiny_bert_classifier(), dict(common, lr_scheduler_kwargs={"num_cycles": 2}), str(tmp_path / "k"),
                    train_dataset=classification_rows(16))
    plain = run_both(tiny_bert_classifier(), common, str(tmp_path / "plain"), train_dataset=classification_rows(16))
    rates = [h["learning_rate"] for h in step_logs(runs["ours"]["history"])]
    assert rates == [h["learning_rate"] for h in step_logs(runs["hf"]["history"])]
    assert rates != [h["learning_rate"] for h in step_logs(plain["ours"]["history"])]  # two cycles, not one


def test_label_smoothing_factor_smooths_the_loss_as_transformers(tmp_path):
    common = dict(per_device_train_batch_size=4, max_steps=3, logging_steps=1, save_strategy="no", learning_rate=1e-3)
    runs = run_both(tiny_bert_classifier(), dict(common, label_smoothing_factor=0.2), str(tmp_path / "s"),
                    train_dataset=classification_rows(16))
    plain = run_both(tiny_bert_classifier(), common, str(tmp_path / "p"), train_dataset=classification_rows(16))
    assert_histories_match(step_logs(runs["hf"]["history"]), step_logs(runs["ours"]["history"]), ("loss", "grad_norm"))
    assert step_logs(runs["ours"]["history"])[0]["loss"] != step_logs(plain["ours"]["history"])[0]["loss"]
    assert_same_parameters(runs["hf"]["trainer"].model, runs["ours"]["trainer"].model)


@pytest.mark.parametrize("names", [("gradient_checkpointing", "gradient_checkpointing_kwargs"),
                                   ("activation_checkpointing", "activation_checkpointing_kwargs")])
def test_checkpointing_and_its_kwargs_reach_the_model(tmp_path, names):
    flag, kwargs_field = names
    hf, ours = _trainers(tmp_path, tiny_llama(), per_device_train_batch_size=4, max_steps=2, save_strategy="no",
                         _data=lm_rows(8), **{flag: True, kwargs_field: {"use_reentrant": False}})
    for trainer in (hf, ours):
        trainer.data_collator = pad_lm_batch
        trainer.train()
    for trainer in (hf, ours):
        assert trainer.model.is_gradient_checkpointing
        assert trainer.model.model.gradient_checkpointing
        assert trainer.model.model.layers[0]._gradient_checkpointing_func.keywords == {"use_reentrant": False}
    assert_same_parameters(hf.model, ours.model)


def test_use_cache_is_set_on_the_model_config(tmp_path):
    hf, ours = _trainers(tmp_path, tiny_gpt2(dropout=0.0), use_cache=False)
    assert ours.model.config.use_cache is False and hf.model.config.use_cache is False
    _, ours = _trainers(tmp_path / "on", tiny_gpt2(dropout=0.0), use_cache=True)
    assert ours.model.config.use_cache is True


@pytest.mark.parametrize("tf32", [False, True])
def test_tf32_sets_the_tf32_switch_where_a_gpu_has_tf32(tmp_path, monkeypatch, tf32):
    from hftrain._loop import model_setup

    switched = []
    monkeypatch.setattr(model_setup, "tf32_available", lambda: True)
    monkeypatch.setattr(model_setup, "enable_tf32", switched.append)

    class Args:
        log_level, log_level_replica, should_log = "passive", "warning", True

        @staticmethod
        def get_process_log_level():
            return -1

    Args.tf32 = tf32
    model_setup.apply_process_settings(Args())
    Args.tf32 = None  # None leaves the switch alone
    model_setup.apply_process_settings(Args())
    assert switched == [tf32]


# ---- logging ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("field", "level"), [("log_level", "error"), ("log_level_replica", "error")])
def test_log_levels_set_transformers_verbosity(tmp_path, field, level, monkeypatch):
    from transformers.utils import logging as hf_logging

    from hftrain import Trainer, TrainingArguments

    before = hf_logging.get_verbosity()
    try:
        args = TrainingArguments(str(tmp_path), report_to="none", **{field: level})
        if field == "log_level_replica":  # a replica: a process that does not log
            monkeypatch.setattr(type(args), "should_log", property(lambda self: False))
        Trainer(tiny_bert_classifier(), args)
        assert hf_logging.get_verbosity() == logging.ERROR
    finally:
        hf_logging.set_verbosity(before)


def test_log_on_each_node_makes_every_nodes_first_process_log(tmp_path, monkeypatch):
    from hftrain import TrainingArguments

    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")  # the first process of the second node
    assert TrainingArguments(str(tmp_path), log_on_each_node=True).should_log
    assert not TrainingArguments(str(tmp_path), log_on_each_node=False).should_log


@pytest.mark.parametrize(("logger", "key"), [("MLFlowLogger", "experiment_name"), ("WandbLogger", "project")])
def test_project_names_the_mlflow_and_wandb_experiment(tmp_path, monkeypatch, logger, key):
    import lightning.pytorch.loggers

    from hftrain._loop import loggers

    made = {}
    monkeypatch.setattr(loggers, "_require", lambda *names: None)
    monkeypatch.setattr(lightning.pytorch.loggers, logger, lambda **kwargs: made.update(kwargs))
    for name in ("MLFLOW_EXPERIMENT_NAME", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    loggers.build_loggers(["mlflow" if logger == "MLFlowLogger" else "wandb"], str(tmp_path), "first", "my-project")
    assert made[key] == "my-project"


# ---- data ---------------------------------------------------------------------------------------------------------
def test_dataloader_options_reach_the_dataloaders_as_in_transformers(tmp_path):
    options = dict(dataloader_num_workers=2, dataloader_persistent_workers=True, dataloader_prefetch_factor=3,
                   dataloader_multiprocessing_context="spawn", dataloader_drop_last=True,
                   dataloader_pin_memory=False, dataloader_in_order=False)
    hf, ours = _trainers(tmp_path, per_device_train_batch_size=3, **options)
    for get in ("get_train_dataloader", "get_eval_dataloader"):
        theirs, mine = getattr(hf, get)(), getattr(ours, get)()
        for attribute in ("num_workers", "persistent_workers", "prefetch_factor", "pin_memory", "in_order"):
            assert getattr(mine, attribute) == getattr(theirs, attribute), (get, attribute)
        assert mine.multiprocessing_context.get_start_method() == "spawn"
        assert mine.batch_sampler is None or mine.batch_sampler.drop_last == theirs.batch_sampler.drop_last
    assert len(ours.get_train_dataloader()) == len(hf.get_train_dataloader()) == 16 // 3  # the last 1 row dropped


def test_dataloader_drop_last_drops_the_short_batch(tmp_path):
    runs = run_both(tiny_bert_classifier(), dict(per_device_train_batch_size=4, num_train_epochs=1, logging_steps=1,
                                                 save_strategy="no", dataloader_drop_last=True),
                    str(tmp_path), train_dataset=classification_rows(10))
    assert runs["ours"]["trainer"].state.global_step == runs["hf"]["trainer"].state.global_step == 2
    assert_histories_match(step_logs(runs["hf"]["history"]), step_logs(runs["ours"]["history"]), ("loss",))


def test_remove_unused_columns_false_hands_every_column_to_the_collator(tmp_path):
    seen = {}

    def collate(features):
        seen.setdefault("keys", set(features[0]))
        return pad_lm_batch(features)

    rows = ListDataset([{**row, "note": "kept"} for row in lm_rows(4)])
    for remove in (True, False):
        seen.clear()
        hf, ours = _trainers(tmp_path / str(remove), tiny_llama(), per_device_train_batch_size=2, _data=rows,
                             remove_unused_columns=remove)
        keys = {}
        for name, trainer in (("hf", hf), ("ours", ours)):
            seen.clear()
            trainer.data_collator = collate
            next(iter(trainer.get_train_dataloader()))
            keys[name] = seen["keys"]
        assert keys["ours"] == keys["hf"]
        assert ("note" in keys["ours"]) is not remove or isinstance(rows, ListDataset)


class TargetModel(torch.nn.Module):
    """A model whose labels are called ``target``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x, target=None):
        logits = self.linear(x)
        loss = torch.nn.functional.cross_entropy(logits, target) if target is not None else None
        return {"loss": loss, "logits": logits}


def test_label_names_choose_the_label_column(tmp_path):
    import transformers

    import hftrain

    rows = ListDataset([{"x": torch.randn(4), "target": i % 2} for i in range(8)])
    outputs = {}
    for name, trainer_cls, args_cls in (("hf", transformers.Trainer, transformers.TrainingArguments),
                                        ("ours", hftrain.Trainer, hftrain.TrainingArguments)):
        args = args_cls(str(tmp_path / name), report_to="none", label_names=["target"], per_device_eval_batch_size=4)
        outputs[name] = trainer_cls(TargetModel(), args).predict(rows)
    assert outputs["ours"].label_ids.tolist() == outputs["hf"].label_ids.tolist() == [0, 1] * 4
    assert outputs["ours"].metrics["test_loss"] == pytest.approx(outputs["hf"].metrics["test_loss"])


def test_length_column_name_gives_the_lengths_to_group_by(tmp_path):
    import datasets

    rows = lm_rows(24).rows
    data = datasets.Dataset.from_list([{**row, "n_tokens": 10 - len(row["input_ids"])} for row in rows])  # reversed

    def grouped_order(column):
        hf, ours = _trainers(tmp_path / column, tiny_llama(), per_device_train_batch_size=4, _data=data,
                             train_sampling_strategy="group_by_length", length_column_name=column)
        orders = {}
        for name, trainer in (("hf", hf), ("ours", ours)):
            torch.manual_seed(4)  # both samplers draw their permutation from the global generator
            orders[name] = list(trainer._get_train_sampler())
        return orders

    by_column, by_default = grouped_order("n_tokens"), grouped_order("length")
    assert by_column["ours"] == by_column["hf"] and by_default["ours"] == by_default["hf"]
    first_batch = [len(rows[i]["input_ids"]) for i in by_column["ours"][:4]]
    assert first_batch[0] == min(len(row["input_ids"]) for row in rows)  # the column's longest: the shortest row


def test_ignore_data_skip_restarts_the_epoch_on_resume(tmp_path):
    import transformers

    import hftrain

    losses = {}
    for name, trainer_cls, args_cls in (("hf", transformers.Trainer, transformers.TrainingArguments),
                                        ("ours", hftrain.Trainer, hftrain.TrainingArguments)):
        common = dict(report_to="none", disable_tqdm=True, per_device_train_batch_size=4, num_train_epochs=1,
                      logging_steps=1, save_steps=2, seed=5, learning_rate=1e-3)
        first = trainer_cls(tiny_bert_classifier(), args_cls(str(tmp_path / name), **common),
                            train_dataset=classification_rows(16))
        first.train()
        for skip in (False, True):
            resumed = trainer_cls(tiny_bert_classifier(), args_cls(str(tmp_path / name), ignore_data_skip=skip,
                                                                   **common), train_dataset=classification_rows(16))
            resumed.train(resume_from_checkpoint=str(tmp_path / name / "checkpoint-2"))
            losses[name, skip] = [h["loss"] for h in step_logs(resumed.state.log_history) if h["step"] > 2]
    for skip in (False, True):
        assert losses["ours", skip] == pytest.approx(losses["hf", skip], rel=1e-5)
    assert losses["ours", True] != losses["ours", False]  # batches 1-2 again instead of 3-4


# ---- evaluation ---------------------------------------------------------------------------------------------------
def test_fp16_full_eval_evaluates_in_half_precision_as_transformers(tmp_path):
    hf, ours = _trainers(tmp_path, per_device_eval_batch_size=3, fp16_full_eval=True)
    half = ours.evaluate()["eval_loss"]
    assert half == pytest.approx(hf.evaluate()["eval_loss"], rel=1e-3)
    _, full = _trainers(tmp_path / "full", per_device_eval_batch_size=3)
    assert half != full.evaluate()["eval_loss"]
    assert next(ours.model.parameters()).dtype == torch.float16  # as transformers leaves it after evaluate()


# ---- distributed --------------------------------------------------------------------------------------------------
def test_ddp_static_graph_and_backend_reach_the_ddp_strategy():
    from hftrain import TrainingArguments
    from hftrain._translate.env import Env
    from hftrain._translate.strategy import lightning_strategy

    torchrun = Env(world_size=2, local_world_size=2)
    strategy = lightning_strategy(TrainingArguments("out", report_to="none", ddp_static_graph=True,
                                                    ddp_backend="mpi"), torchrun)
    assert strategy._ddp_kwargs["static_graph"] is True and strategy._process_group_backend == "mpi"


@pytest.mark.parametrize("across", [True, False])
def test_average_tokens_across_devices_counts_every_process_label_tokens(tmp_path, monkeypatch, across):
    from hftrain import Trainer, TrainingArguments
    from hftrain._loop import step

    monkeypatch.setattr(step.ddp, "world_size", lambda: 2)
    monkeypatch.setattr(step.ddp, "all_reduce", lambda count: count + 10)  # the other process: 10 label tokens
    args = TrainingArguments(str(tmp_path), report_to="none", average_tokens_across_devices=across)
    trainer = Trainer(tiny_llama(), args)
    batch = pad_lm_batch(lm_rows(2).rows)
    own = int(batch["labels"][..., 1:].ne(-100).sum())  # a causal LM: the shifted labels are counted
    _, num_items = trainer.get_batch_samples(iter([batch]), 1, torch.device("cpu"))
    assert float(num_items) == ((own + 10) / 2 if across else own)


# ---- memory, compile, kernels, debugging --------------------------------------------------------------------------
def test_torch_empty_cache_steps_empties_the_cache_every_n_steps(tmp_path, monkeypatch):
    from hftrain import Trainer, TrainingArguments
    from hftrain._loop import model_setup

    emptied = []
    monkeypatch.setattr(model_setup, "empty_device_cache", lambda: emptied.append(1))
    args = TrainingArguments(str(tmp_path), report_to="none", disable_tqdm=True, per_device_train_batch_size=4,
                             max_steps=6, save_strategy="no", torch_empty_cache_steps=3)
    trainer = Trainer(tiny_bert_classifier(), args, train_dataset=classification_rows(24))
    trainer.train()
    assert len(emptied) == 2  # in the steps that start at global_step 0 and 3 (transformers: global_step % 3 == 0)


def test_torch_compile_mode_reaches_torch_compile(tmp_path, monkeypatch):
    from hftrain import Trainer, TrainingArguments

    calls = []
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: calls.append(kwargs) or model)
    args = TrainingArguments(str(tmp_path), report_to="none", disable_tqdm=True, max_steps=1, save_strategy="no",
                             torch_compile_mode="reduce-overhead", per_device_train_batch_size=4)
    Trainer(tiny_bert_classifier(), args, train_dataset=classification_rows(8)).train()
    assert calls and calls[0]["mode"] == "reduce-overhead" and calls[0]["backend"] == "inductor"


def test_liger_kernel_config_is_handed_to_liger(tmp_path, monkeypatch):
    from hftrain._loop import model_setup

    seen = {}
    monkeypatch.setattr(model_setup, "check_liger", lambda args: None)
    monkeypatch.setattr("transformers.integrations.liger.apply_liger_kernel",
                        lambda model, config: seen.update(config=config), raising=False)

    class Args:
        use_liger_kernel, liger_kernel_config = True, {"rms_norm": False}

    model_setup.apply_liger(tiny_llama(), Args())
    assert seen["config"] == {"rms_norm": False}


def test_debug_underflow_overflow_stops_at_the_first_inf(tmp_path):
    from hftrain import Trainer, TrainingArguments

    model = tiny_bert_classifier()
    with torch.no_grad():
        model.bert.embeddings.word_embeddings.weight[5] = float("inf")
    rows = classification_rows(8)
    rows.rows[0]["input_ids"][0] = 5
    args = TrainingArguments(str(tmp_path), report_to="none", disable_tqdm=True, max_steps=2, save_strategy="no",
                             per_device_train_batch_size=4, debug="underflow_overflow", seed=0)
    trainer = Trainer(model, args, train_dataset=rows)
    with pytest.raises(ValueError, match="inf/nan detected"):
        trainer.train()


def test_debug_tpu_metrics_without_torch_xla_warns(tmp_path):
    from hftrain import Trainer, TrainingArguments
    from hftrain._loop import model_setup

    model_setup._warned_tpu_metrics = False
    args = TrainingArguments(str(tmp_path), report_to="none", debug="tpu_metrics_debug")
    trainer = Trainer(tiny_bert_classifier(), args, eval_dataset=classification_rows(4), compute_metrics=accuracy)
    with pytest.warns(UserWarning, match="tpu_metrics_debug.*torch_xla is not installed"):
        trainer.evaluate()
