"""FSDP for HF models: ``fsdp`` / ``fsdp_config`` (or ``strategy="fsdp"``) → Lightning's ``ModelParallelStrategy``
with ``fully_shard`` on every transformer layer (FSDP2, HF 5.x's default), and the full state dicts that keep
checkpoints in HF's layout (``save_pretrained`` files any ``from_pretrained`` can read).

``fsdp_config={"version": 1}`` gives Lightning's ``FSDPStrategy`` (FSDP1, CUDA only) with the same options.
Which modules are sharded follows HF: ``transformer_layer_cls_to_wrap``, else the model's ``_no_split_modules``;
``min_num_params > 0`` shards by size instead. Then the root module is sharded, as ``fully_shard`` requires.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True, slots=True)
class FsdpPlan:
    """What ``fully_shard`` is applied to, and how.

    Example:
        >>> from hftrain import TrainingArguments
        >>> args = TrainingArguments("out", fsdp=True, report_to="none",
        ...                          fsdp_config={"transformer_layer_cls_to_wrap": "BertLayer", "cpu_offload": True})
        >>> fsdp_plan(args, nn.Linear(2, 2))
        FsdpPlan(layer_classes=('BertLayer',), min_num_params=0, reshard_after_forward=True, cpu_offload=True)
    """

    layer_classes: tuple[str, ...]
    min_num_params: int
    reshard_after_forward: bool
    cpu_offload: bool


def fsdp_plan(args: Any, model: nn.Module) -> FsdpPlan:
    config = args.fsdp_config or {}
    layers = config.get("transformer_layer_cls_to_wrap") or getattr(model, "_no_split_modules", None) or ()
    return FsdpPlan(
        layer_classes=tuple(layers),
        min_num_params=int(config.get("min_num_params", 0)),
        reshard_after_forward=bool(config.get("reshard_after_forward", True)),
        cpu_offload=bool(config.get("cpu_offload", False)),
    )


# what hftrain reads (``activation_checkpointing``: in _model_setup), and HF's normalised defaults / XLA switches
_FSDP_CONFIG_KEYS = frozenset({
    "transformer_layer_cls_to_wrap", "min_num_params", "reshard_after_forward", "cpu_offload", "state_dict_type",
    "version", "activation_checkpointing", "auto_wrap_policy", "xla", "xla_fsdp_v2", "xla_fsdp_grad_ckpt",
})


def fsdp_strategy(args: Any, processes: int, ddp_options: dict[str, Any]) -> Any:
    """``ModelParallelStrategy`` over all processes (data parallel), or ``FSDPStrategy`` for ``version: 1``."""
    config = args.fsdp_config or {}
    if args.fp16 or args.precision in ("16-mixed", "16"):
        raise ValueError(
            "FSDP (`fsdp` / `strategy='fsdp'`) runs through Lightning's ModelParallelStrategy, which has no fp16 "
            "loss scaling: use `bf16=True` (or precision='bf16-mixed' / '16-true') instead of fp16."
        )
    ignored = sorted(set(config) - _FSDP_CONFIG_KEYS)
    if ignored:
        warnings.warn(f"`fsdp_config` keys with no effect in hftrain (FSDP2 through Lightning): {ignored}.",
                      UserWarning, stacklevel=2)
    full_checkpoint = str(config.get("state_dict_type", "FULL_STATE_DICT")).upper() != "SHARDED_STATE_DICT"
    if not full_checkpoint:
        raise ValueError(
            "`fsdp_config['state_dict_type']='SHARDED_STATE_DICT'` is not supported: hftrain writes HF-layout "
            "checkpoints from the full state dict (FULL_STATE_DICT, the default)."
        )
    if int(config.get("version", 2)) == 1:
        from lightning.pytorch.strategies import FSDPStrategy

        return FSDPStrategy(
            sharding_strategy="FULL_SHARD" if config.get("reshard_after_forward", True) else "SHARD_GRAD_OP",
            auto_wrap_policy=set(config.get("transformer_layer_cls_to_wrap") or ()) or None,
            cpu_offload=bool(config.get("cpu_offload", False)),
            state_dict_type="full",
            process_group_backend=ddp_options["process_group_backend"], timeout=ddp_options["timeout"],
        )
    from lightning.pytorch.strategies import ModelParallelStrategy

    return ModelParallelStrategy(
        data_parallel_size=processes, tensor_parallel_size=1, save_distributed_checkpoint=False,
        process_group_backend=ddp_options["process_group_backend"], timeout=ddp_options["timeout"],
    )


def shard_model(model: nn.Module, plan: FsdpPlan, mesh: Any) -> None:
    """``fully_shard`` the planned layers (innermost first), then the root; in place."""
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

    kwargs = {"mesh": mesh, "reshard_after_forward": plan.reshard_after_forward,
              "offload_policy": CPUOffloadPolicy() if plan.cpu_offload else OffloadPolicy()}
    for module in _layers_to_shard(model, plan):
        fully_shard(module, **kwargs)
    fully_shard(model, **kwargs)


def _layers_to_shard(model: nn.Module, plan: FsdpPlan) -> list[nn.Module]:
    if plan.min_num_params > 0:  # size-based, bottom-up: a module whose not-yet-sharded parameters reach the size
        chosen: list[nn.Module] = []
        claimed: set[int] = set()
        for module in _post_order(model):
            params = [p for p in module.parameters() if id(p) not in claimed]
            if module is not model and sum(p.numel() for p in params) >= plan.min_num_params:
                chosen.append(module)
                claimed.update(id(p) for p in params)
        return chosen
    return [m for m in model.modules() if type(m).__name__ in plan.layer_classes and m is not model]


def _post_order(module: nn.Module) -> list[nn.Module]:
    order: list[nn.Module] = []
    for child in module.children():
        order.extend(_post_order(child))
    order.append(module)
    return order


@contextlib.contextmanager
def gradient_sync_disabled(model: nn.Module | None) -> Iterator[None]:
    """FSDP2's ``no_sync``: gradients are not reduce-scattered in the block (a micro-batch inside a window)."""
    if model is None or not is_sharded(model) or not hasattr(model, "set_requires_gradient_sync"):
        yield
        return
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """The whole model's weights on the CPU of rank 0 (other ranks: ``{}``); None when ``model`` is not sharded.

    A collective: every process must call it.
    """
    if not is_sharded(model):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer state of all shards, keyed by parameter name, on rank 0 (a collective)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def load_full_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Full weights (e.g. the best checkpoint) into a sharded model: each process keeps its shard (a collective)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=False))


def plain_tensor(value: torch.Tensor) -> torch.Tensor:
    """A DTensor (e.g. the grad norm of sharded parameters) as an ordinary tensor; others unchanged."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value
