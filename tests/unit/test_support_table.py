"""The field-support table against the installed transformers, and check_supported's warnings and errors."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import transformers
from transformers import GenerationConfig

from hftrain._args import support as _support
from hftrain._args.support import FIELD_SUPPORT, Ignored, Mapped, Unsupported, check_supported
from hftrain.training_args import TrainingArguments
from hftrain.training_args_seq2seq import Seq2SeqTrainingArguments

REPO = Path(__file__).resolve().parents[2]


def _names(text: str) -> set[str]:
    return {name.strip() for name in text.split(",")}


# The classification decided for the facade, pinned so a change to the table is a deliberate one.
MAPPED = _names(
    "output_dir, per_device_train_batch_size, per_device_eval_batch_size, num_train_epochs, max_steps, learning_rate, "
    "lr_scheduler_type, lr_scheduler_kwargs, warmup_steps, optim, optim_args, weight_decay, adam_beta1, adam_beta2, "
    "adam_epsilon, gradient_accumulation_steps, average_tokens_across_devices, max_grad_norm, label_smoothing_factor, "
    "bf16, fp16, tf32, activation_checkpointing, activation_checkpointing_kwargs, gradient_checkpointing, "
    "gradient_checkpointing_kwargs, use_cache, logging_strategy, logging_steps, logging_first_step, "
    "logging_nan_inf_filter, log_level, log_level_replica, disable_tqdm, report_to, eval_strategy, eval_steps, "
    "eval_delay, prediction_loss_only, eval_on_start, eval_do_concat_batches, eval_accumulation_steps, "
    "include_for_metrics, save_strategy, save_steps, save_total_limit, save_only_model, load_best_model_at_end, "
    "metric_for_best_model, greater_is_better, seed, data_seed, full_determinism, use_cpu, dataloader_drop_last, "
    "dataloader_num_workers, dataloader_pin_memory, dataloader_persistent_workers, dataloader_prefetch_factor, "
    "dataloader_multiprocessing_context, dataloader_in_order, remove_unused_columns, label_names, "
    "train_sampling_strategy, do_train, do_eval, do_predict, resume_from_checkpoint, local_rank, ignore_data_skip, "
    "predict_with_generate, generation_max_length, generation_num_beams, generation_config, bf16_full_eval, "
    "fp16_full_eval, batch_eval_metrics, run_name, ddp_find_unused_parameters, ddp_bucket_cap_mb, "
    "ddp_broadcast_buffers, ddp_static_graph, ddp_backend, ddp_timeout, project, "
    "restore_callback_states_from_checkpoint, fsdp, fsdp_config, deepspeed, save_on_each_node, push_to_hub, "
    "hub_token, hub_private_repo, hub_model_id, hub_strategy, hub_always_push, hub_revision, "
    "include_num_input_tokens_seen, length_column_name, accelerator_config, skip_memory_metrics, "
    "log_on_each_node, torch_empty_cache_steps, neftune_noise_alpha, torch_compile, torch_compile_backend, torch_compile_mode, "
    "use_liger_kernel, liger_kernel_config, auto_find_batch_size"
)
IGNORED = _names(
    "sortish_sampler, trackio_space_id, trackio_bucket_id, trackio_static_space_id, "
    "eval_use_gather_object"
)
UNSUPPORTED = _names(
    "parallelism_config, optim_target_modules, "
    ""
    "enable_jit_checkpoint, debug"
)


@pytest.fixture(autouse=True)
def _fresh_warned_set(monkeypatch):
    """check_supported warns once per process; give each test its own memory of what was warned."""
    monkeypatch.setattr(_support, "_warned_ignored", set())


def test_table_covers_every_field_of_the_installed_transformers():
    hf_names = {f.name for f in dataclasses.fields(transformers.TrainingArguments)}
    hf_names |= {f.name for f in dataclasses.fields(transformers.Seq2SeqTrainingArguments)}
    assert set(FIELD_SUPPORT) == hf_names
    assert len(FIELD_SUPPORT) == 119


def test_table_keeps_the_decided_classification():
    kinds = {k: {n for n, s in FIELD_SUPPORT.items() if isinstance(s, k)} for k in (Mapped, Ignored, Unsupported)}
    assert kinds == {Mapped: MAPPED, Ignored: IGNORED, Unsupported: UNSUPPORTED}
    assert all((s.target if isinstance(s, Mapped) else s.reason).strip() for s in FIELD_SUPPORT.values())


def test_entries_are_frozen_values():
    with pytest.raises(dataclasses.FrozenInstanceError):
        FIELD_SUPPORT["debug"].reason = "x"


@pytest.mark.parametrize("cls", [TrainingArguments, Seq2SeqTrainingArguments])
def test_defaults_are_silent(cls):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_supported(cls())
        check_supported(cls("out", report_to="none", debug="", fsdp=False, learning_rate=1e-3, use_cpu=True))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"trackio_bucket_id": "secret"}, "trackio_bucket_id"),
        ({"trackio_space_id": "exp"}, "trackio_space_id"),
        ({"eval_use_gather_object": True}, "eval_use_gather_object"),
    ],
)
def test_ignored_field_warns_once_per_process(kwargs, field):
    args = TrainingArguments(**kwargs)
    with pytest.warns(UserWarning, match=f"`{field}` is ignored by hftrain: ") as record:
        check_supported(args)
    assert "secret" not in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_supported(args)  # already warned in this process


def test_unsupported_fields_raise_once_listing_each():
    args = TrainingArguments(debug="underflow_overflow", parallelism_config=object(), enable_jit_checkpoint=True,
                             optim_target_modules=["attn"])
    with pytest.raises(ValueError) as error:
        check_supported(args)
    message = str(error.value)
    for field in ("optim_target_modules", "debug", "parallelism_config", "enable_jit_checkpoint"):
        assert f"- `{field}`: {FIELD_SUPPORT[field].reason}" in message
    assert message.count("\n- ") == 4


@pytest.mark.parametrize(
    "kwargs",
    [
        {"parallelism_config": object()},
        {"optim_target_modules": ["attn"]},
    ],
)
def test_each_unsupported_value_raises(kwargs):
    with pytest.raises(ValueError, match=f"`{next(iter(kwargs))}`: "):
        check_supported(TrainingArguments(**kwargs))


def test_falsy_values_of_none_default_unsupported_fields_are_off():
    check_supported(TrainingArguments(fsdp="", deepspeed=None, liger_kernel_config={}))
    check_supported(TrainingArguments(accelerator_config={"split_batches": False}))  # HF's default value


@pytest.mark.parametrize(
    "kwargs",
    [
        {"predict_with_generate": True},
        {"generation_num_beams": 2},
        {"generation_max_length": 16},
        {"generation_config": GenerationConfig(num_beams=2)},
    ],
)
def test_seq2seq_generation_fields_are_accepted(kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_supported(Seq2SeqTrainingArguments(**kwargs))


def test_sortish_sampler_is_ignored():
    with pytest.warns(UserWarning, match="`sortish_sampler` is ignored by hftrain: dead in transformers 5.24"):
        check_supported(Seq2SeqTrainingArguments(sortish_sampler=True))


def test_importing_the_arguments_does_not_import_accelerate_or_lightning():
    code = (
        "import sys, hftrain.training_args, hftrain.training_args_seq2seq, hftrain._args.support\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('accelerate', 'transformers.training_args',"
        " 'transformers.trainer_callback', 'lightning')) or m == 'transformers.trainer')\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
