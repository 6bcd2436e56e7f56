"""What hftrain does with each HF ``TrainingArguments`` / ``Seq2SeqTrainingArguments`` field.

``FIELD_SUPPORT`` classifies every field of the installed transformers (a unit test holds the keys to it):

* ``Mapped(target)``: hftrain implements it; ``target`` says what it becomes in Lightning / hftrain.
* ``Ignored(reason)``: accepted, has no numerical effect here; a non-default value warns once per process.
* ``Unsupported(reason)``: a non-default value raises, so a run never silently differs from HF's.

``check_supported(args)`` applies the table. "Default" means HF's default after ``__post_init__`` normalisation
(``report_to="none"`` → ``[]``, ``debug=""`` → ``[]``, ...), read from a default-constructed arguments object.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from hftrain.training_args import TrainingArguments
from hftrain.training_args_seq2seq import Seq2SeqTrainingArguments

__all__ = ["FIELD_SUPPORT", "FieldSupport", "Ignored", "Mapped", "Unsupported", "check_supported"]


@dataclass(frozen=True, slots=True)
class Mapped:
    target: str  # what the field becomes in Lightning / hftrain


@dataclass(frozen=True, slots=True)
class Ignored:
    reason: str  # why it has no numerical effect here


@dataclass(frozen=True, slots=True)
class Unsupported:
    reason: str  # why hftrain cannot honour it (yet)


FieldSupport = Mapped | Ignored | Unsupported

_SCRIPT_FLAG = Mapped("stored as HF does; read by the user's script, not by the Trainer")
_TRACKER = Ignored("tracker metadata; hftrain's loggers do not read it")
_SINGLE_PROCESS = Ignored("one node; hftrain gathers evaluation results itself")
_COMPILE = Mapped("torch.compile(model, backend, mode) where transformers compiles (hftrain._loop.model_setup)")
_HUB = Mapped("push_to_hub / init_hf_repo / _push_from_checkpoint, through huggingface_hub")

FIELD_SUPPORT: dict[str, FieldSupport] = {
    # -- output, length, batching
    "output_dir": Mapped("lightning.Trainer(default_root_dir) and the checkpoint-N/ directory"),
    "per_device_train_batch_size": Mapped("train DataLoader(batch_size)"),
    "per_device_eval_batch_size": Mapped("eval/predict DataLoader(batch_size)"),
    # Lightning's max_epochs is an int: both become max_steps = ceil(epochs * updates_per_epoch), max_epochs=-1.
    "num_train_epochs": Mapped("lightning.Trainer(max_steps) via HF's step arithmetic"),
    "max_steps": Mapped("lightning.Trainer(max_steps), with max_epochs=-1"),
    "gradient_accumulation_steps": Mapped("hftrain._loop.step: get_batch_samples windows, one optimizer step each"),
    # Token count of the accumulation window, all-reduced across ranks (HF `_get_num_items_in_batch`).
    "average_tokens_across_devices": Mapped("Trainer._get_num_items_in_batch: the window's count over processes"),
    # -- optimizer and schedule (built in LightningModule.configure_optimizers, exactly as HF builds them)
    "learning_rate": Mapped("optimizer lr"),
    "lr_scheduler_type": Mapped("transformers.get_scheduler(name), stepped every optimizer step"),
    "lr_scheduler_kwargs": Mapped("transformers.get_scheduler(scheduler_specific_kwargs)"),
    "warmup_steps": Mapped("get_scheduler(num_warmup_steps=args.get_warmup_steps(max_steps))"),
    "optim": Mapped("optimizer class from transformers' OptimizerNames handlers"),
    "optim_args": Mapped("extra optimizer kwargs parsed as HF does"),
    "weight_decay": Mapped("decay parameter group (bias and norm weights get 0.0, as in HF)"),
    "adam_beta1": Mapped("optimizer betas[0]"),
    "adam_beta2": Mapped("optimizer betas[1]"),
    "adam_epsilon": Mapped("optimizer eps"),
    "max_grad_norm": Mapped("Trainer._clip_grad_norm (accelerator.clip_grad_norm_) in the step; grad_norm logged"),
    # HF's LabelSmoother replaces the model loss, in Trainer.compute_loss as in transformers.
    "label_smoothing_factor": Mapped("Trainer.label_smoother = LabelSmoother(epsilon), used by compute_loss"),
    # -- precision and memory
    "bf16": Mapped("lightning.Trainer(precision='bf16-mixed')"),
    # HF trains fp16=True on CPU in fp32; Lightning would switch to bf16, so the CPU case maps to '32-true'.
    "fp16": Mapped("lightning.Trainer(precision='16-mixed'), '32-true' on CPU"),
    "tf32": Mapped("torch TF32 switches set by the Trainer before fit"),
    "activation_checkpointing": Mapped("model.activation_checkpointing_enable() at train start"),
    "activation_checkpointing_kwargs": Mapped("activation_checkpointing_enable(**kwargs)"),
    # Deprecated HF aliases; __post_init__ mirrors them onto activation_checkpointing*.
    "gradient_checkpointing": Mapped("alias of activation_checkpointing"),
    "gradient_checkpointing_kwargs": Mapped("alias of activation_checkpointing_kwargs"),
    "use_cache": Mapped("model.config.use_cache at Trainer init"),
    # -- logging
    "logging_strategy": Mapped("DefaultFlowCallback sets control.should_log; _maybe_log_save_evaluate logs"),
    "logging_steps": Mapped("DefaultFlowCallback (Lightning's log_every_n_steps stays 1: hftrain logs itself)"),
    "logging_first_step": Mapped("DefaultFlowCallback: a log after the first step"),
    "logging_nan_inf_filter": Mapped("the step's running loss: a nan/inf step loss counts as the mean so far"),
    "log_level": Mapped("transformers verbosity on the process that logs (get_process_log_level)"),
    "log_level_replica": Mapped("transformers verbosity on the other processes"),
    "disable_tqdm": Mapped("ProgressCallback (in a notebook NotebookProgressCallback) or PrinterCallback, as "
                           "transformers (Lightning's bar stays off)"),
    "report_to": Mapped("lightning loggers (tensorboard, wandb, ...)"),
    # -- evaluation
    "eval_strategy": Mapped("DefaultFlowCallback sets control.should_evaluate; Trainer.evaluate runs"),
    "eval_steps": Mapped("DefaultFlowCallback"),
    "eval_delay": Mapped("DefaultFlowCallback: no evaluation before the delay"),
    "prediction_loss_only": Mapped("evaluate/predict skip gathering logits and labels"),
    "eval_on_start": Mapped("one evaluation before the first training step"),
    "eval_do_concat_batches": Mapped("pad-and-concat (True) or per-batch lists (False) of predictions"),
    "eval_accumulation_steps": Mapped("move gathered predictions to CPU every N eval steps"),
    "include_for_metrics": Mapped("EvalPrediction.inputs / .losses"),
    # -- checkpoints and best model
    "save_strategy": Mapped("DefaultFlowCallback sets control.should_save; _save_checkpoint writes checkpoint-N"),
    "save_steps": Mapped("DefaultFlowCallback"),
    "save_total_limit": Mapped("HF checkpoint rotation"),
    "save_only_model": Mapped("checkpoint without optimizer/scheduler/RNG state"),
    "load_best_model_at_end": Mapped("reload state.best_model_checkpoint after fit"),
    "metric_for_best_model": Mapped("best-checkpoint tracking (and ReduceLROnPlateau monitor)"),
    "greater_is_better": Mapped("best-checkpoint tracking mode"),
    # -- reproducibility and hardware
    "seed": Mapped("transformers.set_seed at HF's points (Trainer init, before model_init)"),
    "data_seed": Mapped("train sampler generator seed"),
    "full_determinism": Mapped("transformers.enable_full_determinism(seed) instead of set_seed"),
    "use_cpu": Mapped("lightning.Trainer(accelerator='cpu')"),
    "fsdp": Mapped("FSDP2: ModelParallelStrategy + fully_shard per layer (hftrain/_backends/fsdp.py); version 1: FSDPStrategy"),
    "fsdp_config": Mapped("layers to shard, min_num_params, reshard_after_forward, cpu_offload, version"),
    "deepspeed": Mapped("DeepSpeedStrategy with HF's \"auto\" values filled (hftrain/_backends/deepspeed_xla.py)"),
    # -- data
    "dataloader_drop_last": Mapped("DataLoader(drop_last)"),
    "dataloader_num_workers": Mapped("DataLoader(num_workers, worker_init_fn=seed_worker)"),
    "dataloader_pin_memory": Mapped("DataLoader(pin_memory)"),
    "dataloader_persistent_workers": Mapped("DataLoader(persistent_workers)"),
    "dataloader_prefetch_factor": Mapped("DataLoader(prefetch_factor)"),
    "dataloader_multiprocessing_context": Mapped("DataLoader(multiprocessing_context)"),
    "dataloader_in_order": Mapped("DataLoader(in_order)"),
    "remove_unused_columns": Mapped("columns not in model.forward are dropped before collation"),
    "label_names": Mapped("batch keys treated as labels"),
    "train_sampling_strategy": Mapped("train sampler: random / sequential / group_by_length / batch_rebalance"),
    # -- script-only flags: the Trainer never reads them, HF stores them for the user's script
    "do_train": _SCRIPT_FLAG,
    "do_eval": _SCRIPT_FLAG,
    "do_predict": _SCRIPT_FLAG,
    "resume_from_checkpoint": _SCRIPT_FLAG,
    "local_rank": _SCRIPT_FLAG,
    # -- runs, processes, the Hub
    "run_name": Mapped("the version (run) name of report_to's Lightning loggers"),
    "project": Mapped("experiment/project name of the mlflow and wandb loggers"),
    "log_on_each_node": Mapped("args.should_log / log level: each node's local rank 0 logs, else only global rank 0"),
    "save_on_each_node": Mapped("each node's local rank 0 writes and rotates checkpoints (args.should_save)"),
    "ddp_find_unused_parameters": Mapped("DDPStrategy option when several processes run"),
    "ddp_bucket_cap_mb": Mapped("DDPStrategy option when several processes run"),
    "ddp_broadcast_buffers": Mapped("DDPStrategy option when several processes run"),
    "ddp_static_graph": Mapped("DDPStrategy option when several processes run"),
    "ddp_backend": Mapped("DDPStrategy option when several processes run"),
    "ddp_timeout": Mapped("DDPStrategy option when several processes run"),
    # split_batches and use_seedable_sampler shape the loaders (hftrain._loop.data.prepare_dataloader),
    # gradient_accumulation_kwargs the step (num_steps, sync_each_batch); dispatch_batches, even_batches and
    # non_blocking are accepted and change no number: hftrain shards every global batch itself, each sample once.
    "accelerator_config": Mapped("trainer.accelerator (split_batches, use_seedable_sampler, gradient_accumulation_kwargs)"),
    "push_to_hub": Mapped("Trainer.push_to_hub and hub_strategy pushes, through huggingface_hub (needs the network)"),
    "hub_token": _HUB,
    "hub_private_repo": _HUB,
    "hub_model_id": _HUB,
    "hub_strategy": _HUB,
    "hub_always_push": _HUB,
    "hub_revision": _HUB,
    # -- evaluation, resume, generation
    "bf16_full_eval": Mapped("model cast to bf16 for evaluate()/predict() outside train(), as HF"),
    "fp16_full_eval": Mapped("model cast to fp16 for evaluate()/predict() outside train(), as HF"),
    "include_num_input_tokens_seen": Mapped("Trainer._track_num_input_tokens, every micro-batch, summed over processes"),
    "batch_eval_metrics": Mapped("compute_metrics(batch, compute_result=is_last) per eval batch"),
    "restore_callback_states_from_checkpoint": Mapped("resuming rebuilds the checkpointed stateful callbacks"),
    "ignore_data_skip": Mapped("resume starts the interrupted epoch from its first batch instead of skipping"),
    "skip_memory_metrics": Mapped("False: transformers' TrainerMemoryTracker adds the *_mem_* metrics (needs psutil)"),
    "torch_empty_cache_steps": Mapped("Trainer.training_step empties the accelerator's cache every N steps"),
    # refused with the reason where Liger's Triton kernels cannot run (no CUDA), before anything starts
    "use_liger_kernel": Mapped("transformers' apply_liger_kernel at the start of train() (CUDA + Triton only)"),
    "liger_kernel_config": Mapped("the kernels apply_liger_kernel patches in"),
    "auto_find_batch_size": Mapped("on OOM: the next smaller micro-batch, more accumulation, the same global batch"),
    "torch_compile": _COMPILE,
    "torch_compile_backend": _COMPILE,
    "torch_compile_mode": _COMPILE,
    "neftune_noise_alpha": Mapped("transformers' NEFTune hook on the input embeddings during train(), removed after"),
    # Read by the group_by_length / batch_rebalance samplers, which compute lengths when the column is absent.
    "length_column_name": Mapped("Trainer._get_train_sampler / _get_eval_sampler: the lengths to group by"),
    "predict_with_generate": Mapped("Seq2SeqTrainer.prediction_step calls model.generate() in the eval loop"),
    "generation_max_length": Mapped("max_length for generate() unless max_length/max_new_tokens are passed"),
    "generation_num_beams": Mapped("num_beams for generate() unless passed to evaluate()/predict()"),
    "generation_config": Mapped("replaces model.generation_config (object, directory or JSON file)"),
    "optim_target_modules": Mapped("GaLore / APOLLO: transformers' optimizer handlers (galore-torch / apollo-torch)"),
    "enable_jit_checkpoint": Mapped("JITCheckpointCallback: on SIGTERM (jit_checkpoint_signals) every process saves "
                                    "after the same step and stops (hftrain._loop.preemption)"),
    "debug": Mapped("underflow_overflow: transformers' DebugUnderflowOverflow at train(); tpu_metrics_debug: "
                    "torch_xla's metrics report after evaluate()"),
    # -- Ignored
    "sortish_sampler": Ignored("dead in transformers 5.24 too: declared but never read"),
    "trackio_space_id": _TRACKER,
    "trackio_bucket_id": _TRACKER,
    "trackio_static_space_id": _TRACKER,
    "eval_use_gather_object": _SINGLE_PROCESS,
    # -- Unsupported
    "parallelism_config": Unsupported(
        "accelerate's ParallelismConfig (tensor/context parallel): pass a Lightning ModelParallelStrategy as "
        "`strategy` and shard the model in a `configure_model` override"
    ),
}

_warned_ignored: set[str] = set()  # Ignored fields already warned about in this process


def _default_args(args: Any) -> TrainingArguments:
    """A default-constructed (hence normalised) arguments object of hftrain's class matching ``args``."""
    return Seq2SeqTrainingArguments() if isinstance(args, Seq2SeqTrainingArguments) else TrainingArguments()


def _asks_for_feature(value: Any, default: Any) -> bool:
    """An Unsupported field raises only when it turns its feature on: ``fsdp=False`` is as off as ``None``."""
    return value != default and not (default is None and not value)


def check_supported(args: TrainingArguments) -> None:
    """Warn about Ignored fields and raise for Unsupported ones whose value differs from HF's default.

    Raises:
        ValueError: one message listing every Unsupported field that is set, with the reason.

    Example:
        >>> check_supported(TrainingArguments("out"))  # defaults: nothing to say
    """
    defaults = _default_args(args)
    problems = []
    for name, support in FIELD_SUPPORT.items():
        if not hasattr(args, name):  # a TrainingArguments has no Seq2Seq fields
            continue
        value, default = getattr(args, name), getattr(defaults, name)
        if isinstance(support, Ignored) and value != default and name not in _warned_ignored:
            _warned_ignored.add(name)
            warnings.warn(f"`{name}` is ignored by hftrain: {support.reason}.", UserWarning, stacklevel=2)
        elif isinstance(support, Unsupported) and _asks_for_feature(value, default):
            problems.append(f"`{name}`: {support.reason}")
    if problems:
        raise ValueError(
            "hftrain does not support these TrainingArguments yet; leave them at their defaults:\n"
            + "\n".join(f"- {problem}" for problem in problems)
        )
