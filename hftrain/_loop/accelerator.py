"""``trainer.accelerator``: the part of accelerate's ``Accelerator`` that Trainer subclasses use, on Lightning.

HF's Trainer code and its users' subclasses call ``self.accelerator.backward(loss)``, ``gather_for_metrics``,
``unwrap_model``, ``is_main_process``… This adapter answers each from the Lightning strategy of the run in progress
(from the arguments before a run starts): ``backward`` goes through ``LightningModule.manual_backward``, so the
precision plugin (GradScaler) and the strategy (DDP, FSDP, DeepSpeed's engine) apply; collectives go through the
strategy. It is not accelerate: hftrain does not import it.

A name accelerate has and this adapter has not raises ``AttributeError`` listing what it supports.
"""

from __future__ import annotations

import contextlib
import enum
import gc
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from hftrain._backends import ddp


class DistributedType(str, enum.Enum):
    """accelerate's names for the kind of run (the values compare equal to ``accelerate.DistributedType``'s)."""

    NO = "NO"
    MULTI_CPU = "MULTI_CPU"
    MULTI_GPU = "MULTI_GPU"
    DEEPSPEED = "DEEPSPEED"
    FSDP = "FSDP"
    XLA = "XLA"


@dataclass
class GradientState:
    """accelerate's ``GradientState`` as HF's loop uses it: set by the step before each micro-batch.

    ``share`` is hftrain's: this process's share of the current micro-batch's global batch (``rows × world size /
    global rows``; 1 on one process, 0 for a stand-in row), which makes results independent of the process count.
    """

    num_steps: int = 1
    sync_gradients: bool = True
    end_of_dataloader: bool = False
    share: float = 1.0
    plugin_kwargs: dict[str, Any] = field(default_factory=dict)

    def _set_sync_gradients(self, sync_gradients: bool) -> None:
        self.sync_gradients = sync_gradients


class HFAccelerator:
    """accelerate's ``Accelerator`` API over the Lightning strategy of the current run.

    Example:
        >>> from hftrain import Trainer, TrainingArguments
        >>> trainer = Trainer(torch.nn.Linear(2, 2), TrainingArguments("out", report_to="none"))
        >>> trainer.accelerator.num_processes, trainer.accelerator.is_main_process
        (1, True)
        >>> trainer.accelerator.unwrap_model(trainer.model) is trainer.model
        True
    """

    SUPPORTED = (
        "backward", "gather", "gather_for_metrics", "pad_across_processes", "reduce", "unwrap_model",
        "wait_for_everyone", "print", "autocast", "accumulate", "no_sync", "sync_gradients",
        "gradient_accumulation_steps", "gradient_state", "clip_grad_norm_", "device", "num_processes",
        "process_index", "local_process_index", "is_main_process", "is_local_main_process", "state",
        "distributed_type", "mixed_precision", "use_distributed", "scaler", "optimizer_step_was_skipped",
        "free_memory", "prepare", "end_training", "split_batches", "dispatch_batches", "even_batches",
        "use_seedable_sampler", "non_blocking",
    )

    def __init__(self, args: Any, plugin_kwargs: dict[str, Any] | None = None) -> None:
        self._args = args
        self._lightning: Any = None  # the lightning.Trainer of the run in progress
        self._scale_before_step: float | None = None
        self.gradient_state = GradientState(num_steps=args.gradient_accumulation_steps,
                                            plugin_kwargs=dict(plugin_kwargs or {}))
        # HF's AcceleratorConfig (TrainingArguments.accelerator_config): what it means here is in
        # hftrain._loop.data.prepare_dataloader (split_batches, use_seedable_sampler) and the step (sync_each_batch)
        config = args.accelerator_config or {}
        self.split_batches: bool = bool(config.get("split_batches", False))
        self.dispatch_batches: bool | None = config.get("dispatch_batches")
        self.even_batches: bool = bool(config.get("even_batches", True))
        self.use_seedable_sampler: bool = bool(config.get("use_seedable_sampler", True))
        self.non_blocking: bool = bool(config.get("non_blocking", False))

    def _attach(self, lightning_trainer: Any) -> None:
        """The run in progress (fit / validate / predict); its strategy answers from now on."""
        self._lightning = lightning_trainer

    def _detach(self) -> None:
        self._lightning = None

    # ---- who and where ---------------------------------------------------------------------------------------------
    @property
    def _strategy(self) -> Any:
        return self._lightning.strategy if self._lightning is not None else None

    @property
    def device(self) -> torch.device:
        strategy = self._strategy
        return strategy.root_device if strategy is not None else self._args.device

    @property
    def num_processes(self) -> int:
        strategy = self._strategy
        return strategy.world_size if strategy is not None else self._args.world_size

    @property
    def process_index(self) -> int:
        strategy = self._strategy
        return strategy.global_rank if strategy is not None else self._args.process_index

    @property
    def local_process_index(self) -> int:
        strategy = self._strategy
        return strategy.local_rank if strategy is not None else self._args.local_process_index

    @property
    def is_main_process(self) -> bool:
        return self.process_index == 0

    @property
    def is_local_main_process(self) -> bool:
        return self.local_process_index == 0

    @property
    def use_distributed(self) -> bool:
        return self.num_processes > 1

    @property
    def distributed_type(self) -> DistributedType:
        name = type(self._strategy).__name__ if self._strategy is not None else ""
        if "DeepSpeed" in name or self._args.deepspeed:
            return DistributedType.DEEPSPEED
        if "FSDP" in name or "ModelParallel" in name or self._args.fsdp:
            return DistributedType.FSDP
        if "XLA" in name:
            return DistributedType.XLA
        if self.num_processes > 1:
            return DistributedType.MULTI_GPU if self.device.type == "cuda" else DistributedType.MULTI_CPU
        return DistributedType.NO

    @property
    def mixed_precision(self) -> str:
        args = self._args
        return "bf16" if args.bf16 else "fp16" if args.fp16 else "no"

    @property
    def state(self) -> SimpleNamespace:
        """accelerate's ``AcceleratorState``: the same facts under the same names (no plugins: Lightning's)."""
        return SimpleNamespace(
            device=self.device, num_processes=self.num_processes, process_index=self.process_index,
            local_process_index=self.local_process_index, distributed_type=self.distributed_type,
            mixed_precision=self.mixed_precision, is_main_process=self.is_main_process,
            is_local_main_process=self.is_local_main_process, deepspeed_plugin=None, fsdp_plugin=None,
        )

    @property
    def sync_gradients(self) -> bool:
        return self.gradient_state.sync_gradients

    @property
    def gradient_accumulation_steps(self) -> int:
        return self.gradient_state.num_steps

    @gradient_accumulation_steps.setter
    def gradient_accumulation_steps(self, value: int) -> None:
        self.gradient_state.num_steps = value

    # ---- the step --------------------------------------------------------------------------------------------------
    def backward(self, loss: torch.Tensor, **kwargs: Any) -> None:
        """``loss.backward()`` through Lightning: the precision plugin scales it (fp16) and the strategy runs it
        (DeepSpeed's engine, which is also stepped here on every micro-batch, as accelerate does)."""
        kwargs.pop("learning_rate", None)  # LOMO's keyword: no LOMO optimizer under Lightning
        kwargs.pop("scale_wrt_gas", None)  # hftrain's DeepSpeed plugin never scales by GA (the loss already is)
        if self._lightning is None:  # outside a run: plain autograd, as accelerate without a prepared model
            loss.backward(**kwargs)
            return
        module = self._lightning.lightning_module
        module.manual_backward(loss, **kwargs)
        engine = self._deepspeed_engine()
        if engine is None:
            return
        # the engine is stepped on every micro-batch and updates at its accumulation boundary (accelerate's
        # DeepSpeedEngineWrapper.backward); the boundary's step goes through Lightning's optimizer, which counts it
        if self.sync_gradients:
            module.optimizers().step()
        else:
            engine.step()

    def _deepspeed_engine(self) -> Any:
        from hftrain._backends.deepspeed_checkpoint import deepspeed_engine

        return deepspeed_engine(self._lightning)  # None without DeepSpeed (or outside a run)

    @contextlib.contextmanager
    def no_sync(self, model: nn.Module | None = None) -> Iterator[None]:
        """No gradient synchronisation across processes inside the block (a micro-batch that is not the last of its
        window): DDP's ``no_sync``, FSDP2's ``set_requires_gradient_sync(False)``; nothing on one process."""
        strategy = self._strategy
        if strategy is None or self.num_processes == 1:
            yield
            return
        from hftrain._backends.fsdp import gradient_sync_disabled

        with strategy.block_backward_sync(), gradient_sync_disabled(model):
            yield

    @contextlib.contextmanager
    def accumulate(self, *models: nn.Module) -> Iterator[None]:
        """accelerate's ``accumulate``: skip the synchronisation unless this micro-batch ends the window."""
        if self.sync_gradients:
            yield
        else:
            with self.no_sync(models[0] if models else None):
                yield

    @contextlib.contextmanager
    def autocast(self, autocast_handler: Any = None) -> Iterator[None]:
        """The precision plugin's autocast (a no-op in fp32 and outside a run)."""
        plugin = getattr(self._lightning, "precision_plugin", None)
        with plugin.forward_context() if plugin is not None else contextlib.nullcontext():
            yield

    @property
    def scaler(self) -> torch.amp.GradScaler | None:
        return getattr(getattr(self._lightning, "precision_plugin", None), "scaler", None)

    def clip_grad_norm_(self, parameters: Any, max_norm: float, norm_type: float = 2) -> torch.Tensor | None:
        """The total gradient norm before clipping, after unscaling fp16 gradients once (as accelerate does).
        Under DeepSpeed the engine clips, and its norm is returned (after its step, as accelerate's)."""
        engine = self._deepspeed_engine()
        if engine is not None:
            norm = engine.get_global_grad_norm()
            return torch.as_tensor(float(norm)) if norm is not None else None
        scaler, optimizer = self.scaler, self._optimizer()
        if scaler is not None and optimizer is not None:
            from hftrain._lightning_compat import gradients_unscaled

            if not gradients_unscaled(scaler, optimizer):
                self._scale_before_step = scaler.get_scale()
                scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm, norm_type=norm_type)
        from hftrain._backends.fsdp import plain_tensor

        return plain_tensor(norm)  # sharded (FSDP) parameters give a DTensor norm

    def _optimizer(self) -> Any:
        optimizers = getattr(self._lightning, "optimizers", None) or []
        return optimizers[0] if optimizers else None

    @property
    def optimizer_step_was_skipped(self) -> bool:
        """fp16: the scaler found inf/NaN gradients, lowered its scale and skipped the optimizer step."""
        scaler, before = self.scaler, self._scale_before_step
        self._scale_before_step = None
        return scaler is not None and before is not None and scaler.get_scale() < before

    # ---- collectives -----------------------------------------------------------------------------------------------
    def gather(self, tensor: Any) -> Any:
        """Every process's ``tensor`` concatenated along the first dimension (a scalar becomes one row each)."""
        if self.num_processes == 1:
            return tensor
        return _apply(tensor, self._gather_one)

    def _gather_one(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor[None] if tensor.dim() == 0 else tensor
        gathered = self._strategy.all_gather(tensor) if self._strategy is not None else ddp.all_gather(tensor)
        return gathered.reshape(-1, *tensor.shape[1:])

    def gather_for_metrics(self, input_data: Any, use_gather_object: bool = False) -> Any:
        """``gather``; hftrain's evaluation batches hold no duplicated samples, so nothing is dropped."""
        if use_gather_object:
            return [item for part in ddp.all_gather_objects(input_data) for item in part]
        return self.gather(input_data)

    def pad_across_processes(self, tensor: Any, dim: int = 0, pad_index: int = 0, pad_first: bool = False) -> Any:
        """Pad ``tensor`` along ``dim`` to the largest size among processes (so that it can be gathered)."""
        if self.num_processes == 1:
            return tensor
        return _apply(tensor, lambda t: _pad_to(t, dim, pad_index, pad_first))

    def reduce(self, tensor: Any, reduction: str = "sum", scale: float = 1.0) -> Any:
        if self.num_processes == 1:
            return _apply(tensor, lambda t: t * scale if scale != 1.0 else t)
        op = "mean" if reduction == "mean" else "sum"
        return _apply(tensor, lambda t: ddp.all_reduce(t.clone(), op) * scale)

    def wait_for_everyone(self) -> None:
        ddp.barrier()

    def print(self, *args: Any, **kwargs: Any) -> None:
        if self.is_local_main_process:
            print(*args, **kwargs)

    # ---- models and memory -----------------------------------------------------------------------------------------
    def unwrap_model(self, model: nn.Module, keep_fp32_wrapper: bool = True, keep_torch_compile: bool = True) -> nn.Module:
        """The model without DDP / DataParallel / Lightning / ``torch.compile`` wrappers (``keep_torch_compile=False``)."""
        while True:
            wrapped = isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel))
            inner = getattr(model, "module", None) if wrapped else None
            inner = inner if inner is not None else getattr(model, "_forward_module", None)  # Lightning's wrapper
            if inner is None and type(model).__name__ == "HFModule":
                inner = model.model
            if inner is None and not keep_torch_compile:
                inner = getattr(model, "_orig_mod", None)
            if inner is None:
                return model
            model = inner

    def prepare(self, *objects: Any, device_placement: Any = None) -> Any:
        """Training loaders get hftrain's seeded order and per-process slices (as the Trainer's own); models,
        optimizers and schedulers are prepared by Lightning when the run starts, so they come back unchanged."""
        from hftrain._loop.data import prepare_dataloader

        prepared = tuple(
            prepare_dataloader(obj, self._args, split_batches=self.split_batches,
                               seedable=self.use_seedable_sampler)
            if isinstance(obj, torch.utils.data.DataLoader) else obj
            for obj in objects
        )
        return prepared[0] if len(prepared) == 1 else prepared

    def free_memory(self, *objects: Any) -> list[None]:
        """Collect garbage and empty the device cache; the objects passed are released (accelerate's semantics)."""
        objects = [None for _ in objects]
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return objects

    def end_training(self) -> None:
        ddp.destroy_process_group()

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"hftrain's `trainer.accelerator` is an adapter over the Lightning strategy, not accelerate's Accelerator, "
            f"and has no `{name}`. It supports: {', '.join(self.SUPPORTED)}. For anything else, use the Lightning "
            "objects directly: `trainer.lightning_trainer.strategy`."
        )


def _apply(data: Any, fn: Any) -> Any:
    if isinstance(data, torch.Tensor):
        return fn(data)
    if isinstance(data, (list, tuple)):
        return type(data)(_apply(d, fn) for d in data)
    if isinstance(data, dict):
        return type(data)({k: _apply(v, fn) for k, v in data.items()})
    return data


def _pad_to(tensor: torch.Tensor, dim: int, pad_index: int, pad_first: bool) -> torch.Tensor:
    if tensor.dim() == 0 or dim >= tensor.dim():
        return tensor
    size = torch.tensor(tensor.shape[dim], device=tensor.device)
    largest = int(ddp.all_reduce(size, "max"))
    if largest == tensor.shape[dim]:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = largest
    padded = tensor.new_full(shape, pad_index)
    index = [slice(None)] * tensor.dim()
    index[dim] = slice(largest - tensor.shape[dim], largest) if pad_first else slice(0, tensor.shape[dim])
    padded[tuple(index)] = tensor
    return padded
