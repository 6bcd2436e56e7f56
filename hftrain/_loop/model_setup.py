"""Process and model switches HF's Trainer sets from the arguments: log verbosity, TF32, activation checkpointing."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from transformers.utils import logging as hf_logging
from transformers.utils.import_utils import enable_tf32

from hftrain._args.normalise import tf32_available


def apply_process_settings(args: Any) -> None:
    """``log_level`` (``passive`` leaves transformers' verbosity alone) and ``tf32`` (None leaves it alone)."""
    level = args.get_process_log_level()
    if level != -1 and args.log_level != "passive" or not args.should_log:
        hf_logging.set_verbosity(level)
    if args.tf32 is not None and tf32_available():
        enable_tf32(args.tf32)  # transformers' switch: torch's fp32_precision API, or the allow_tf32 flags


def enable_activation_checkpointing(model: torch.nn.Module, args: Any) -> None:
    """HF's ``Trainer.train``: ``every_n_layers`` and ``offload`` are taken out, the rest goes to torch's checkpoint.

    ``fsdp_config["activation_checkpointing"]`` (FSDP's own switch in HF) checkpoints the same layers.
    """
    if not (args.activation_checkpointing or (args.fsdp_config or {}).get("activation_checkpointing")):
        return
    kwargs = dict(args.activation_checkpointing_kwargs or {})
    every_n_layers, offload = kwargs.pop("every_n_layers", 1), kwargs.pop("offload", False)
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(
            activation_checkpointing_kwargs=kwargs or None, every_n_layers=every_n_layers, offload=offload
        )
    elif hasattr(model, "gradient_checkpointing_enable"):
        warnings.warn(
            f"`{type(model).__name__}` only defines `gradient_checkpointing_enable`, which is deprecated; define "
            "`activation_checkpointing_enable` instead.", FutureWarning, stacklevel=3,
        )
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs or None)
    else:
        raise ValueError(
            f"`activation_checkpointing=True` but {type(model).__name__} has no activation_checkpointing_enable(): "
            "set activation_checkpointing=False or use a transformers PreTrainedModel."
        )


def memory_tracker(skip_memory_metrics: bool) -> Any:
    """transformers' ``TrainerMemoryTracker`` (the ``*_mem_*`` metrics of ``skip_memory_metrics=False``), which
    reads memory through psutil: without it transformers reports nothing, silently; hftrain says so."""
    import importlib.util

    from transformers.trainer_utils import TrainerMemoryTracker

    if not skip_memory_metrics and importlib.util.find_spec("psutil") is None:
        raise ValueError(
            "`skip_memory_metrics=False` reports memory through psutil, which is not installed: pip install psutil "
            "(or leave skip_memory_metrics=True)."
        )
    return TrainerMemoryTracker(skip_memory_metrics)


def activate_neftune(model: torch.nn.Module, noise_alpha: float, accelerator: Any) -> Any:
    """NEFTune: transformers' forward hook adding uniform noise to the input embeddings while training."""
    from transformers.integrations.neftune import activate_neftune as transformers_activate_neftune

    return transformers_activate_neftune(model, noise_alpha, accelerator)


def deactivate_neftune(model: torch.nn.Module, hook_handle: Any, accelerator: Any) -> None:
    from transformers.integrations.neftune import deactivate_neftune as transformers_deactivate_neftune

    transformers_deactivate_neftune(model, hook_handle, accelerator)


def empty_device_cache() -> None:
    """``torch_empty_cache_steps``: return the accelerator's cached, unused memory to it (accelerate's
    ``clear_device_cache``, which transformers calls: nothing to do on a CPU)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif hasattr(torch, "xpu") and torch.xpu.is_available():
        torch.xpu.empty_cache()
    elif torch.backends.mps.is_available():
        torch.mps.empty_cache()


def compiled(model: torch.nn.Module, args: Any) -> torch.nn.Module:
    """``torch_compile``: ``torch.compile(model)`` with ``torch_compile_backend`` / ``torch_compile_mode``, the
    arguments accelerate's dynamo plugin gives it for transformers (the mode only when not "default")."""
    if not args.torch_compile or isinstance(model, torch._dynamo.eval_frame.OptimizedModule):
        return model
    kwargs = {"backend": args.torch_compile_backend}
    if args.torch_compile_mode not in (None, "default"):
        kwargs["mode"] = args.torch_compile_mode
    return torch.compile(model, **kwargs)


def check_liger(args: Any) -> None:
    """``use_liger_kernel`` patches the model with Liger's Triton kernels, which run on CUDA only: refuse it, with
    the reason, before anything starts where they cannot run."""
    if not args.use_liger_kernel:
        return
    import importlib.util

    if importlib.util.find_spec("liger_kernel") is None:
        raise ValueError("`use_liger_kernel=True` needs liger-kernel (and CUDA with Triton): pip install liger-kernel")
    if args.use_cpu or not torch.cuda.is_available():
        raise ValueError(
            "`use_liger_kernel=True`: Liger's kernels are Triton kernels for CUDA GPUs, and this run has no CUDA "
            "device (use_cpu or no GPU). Set use_liger_kernel=False here."
        )
    if importlib.util.find_spec("triton") is None:
        raise ValueError("`use_liger_kernel=True` needs Triton, which is not installed: pip install triton")


def apply_liger(model: torch.nn.Module, args: Any) -> None:
    """transformers' ``apply_liger_kernel``: Liger's kernels patched into the model, at the start of train()."""
    from transformers.integrations.liger import apply_liger_kernel

    apply_liger_kernel(model, args.liger_kernel_config)


def watch_underflow_overflow(model: torch.nn.Module, args: Any) -> None:
    """``debug="underflow_overflow"``: transformers' ``DebugUnderflowOverflow`` hooks on every module, which stop the
    run with a report of the last frames when an activation or weight becomes ``inf`` / ``nan`` (transformers, at
    the same point of ``train()``)."""
    from transformers.debug_utils import DebugOption, DebugUnderflowOverflow

    if DebugOption.UNDERFLOW_OVERFLOW in args.debug:
        DebugUnderflowOverflow(model)


_warned_tpu_metrics = False


def report_tpu_metrics(args: Any) -> None:
    """``debug="tpu_metrics_debug"``: torch_xla's metrics report after an evaluation, as transformers prints it.
    Without torch_xla there is nothing to report: a warning says so once (transformers fails with a NameError)."""
    global _warned_tpu_metrics
    from transformers.debug_utils import DebugOption

    if DebugOption.TPU_METRICS_DEBUG not in args.debug:
        return
    try:
        import torch_xla.core.xla_model as xm
        import torch_xla.debug.metrics as met
    except ImportError:
        if not _warned_tpu_metrics:
            warnings.warn("debug='tpu_metrics_debug' reports torch_xla's metrics, and torch_xla is not installed: "
                          "nothing is reported. Run on an XLA device (accelerator='tpu') to see them.", stacklevel=2)
            _warned_tpu_metrics = True
        return
    xm.master_print(met.metrics_report())
