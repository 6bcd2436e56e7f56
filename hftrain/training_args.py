"""``TrainingArguments``: HF's fields, defaults and validation, without device setup or accelerate.

The field declarations come from ``_hf_fields.py`` (generated from the installed transformers). This module adds what
HF's ``__post_init__`` does to them (normalisation and the checks of its ``TrainingArguments.__post_init__``, in the same
order and with the same messages; the value-level helpers are in ``_args_normalise.py``), the properties and
helpers HF exposes, and (through ``_removed_args.py``) the 4.x keywords removed in 5.x.

What it does not do, on purpose: probe or set devices (``device`` is computed lazily from the environment), build
accelerate's ``AcceleratorConfig`` / FSDP / DeepSpeed plugins, or touch ``torch.backends`` (the Trainer decides
about TF32). ``accelerator_config`` stays a plain dict; ``fsdp_config`` is normalised into a dict the way HF does.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import logging
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import timedelta
from enum import Enum
from typing import Any

import torch
from transformers.debug_utils import DebugOption
from transformers.trainer_utils import HubStrategy, IntervalStrategy, SaveStrategy, SchedulerType
from transformers.utils import logging as hf_logging
from typing_extensions import Self

from hftrain._args.enums import ParallelMode, log_levels, str_to_bool, trainer_log_levels  # noqa: F401
from hftrain._args.fields import _TRAINER_LOG_LEVELS, OptimizerNames
from hftrain._args.lightning import LIGHTNING_FIELDS, _LightningFields, describe
from hftrain._args.normalise import (
    accelerator_config_dict,
    bf16_gpu_available,
    dict_dtype_to_str,
    fsdp_config_dict,
    installed_reporting_integrations,
    kubeflow_job,
    load_json_dict,
    tf32_available,
    to_enum,
)
from hftrain._args.removed import accept_removed_names
from hftrain._args.validate import check_field_values, intervals_given, numeric_fields

__all__ = ["OptimizerNames", "ParallelMode", "TrainingArguments"]

logger = logging.getLogger(__name__)



_LIGHTNING_DEFAULTS = {f.name: f.default for f in fields(_LightningFields) if f.name in LIGHTNING_FIELDS}


@functools.cache
def _numeric_kinds(cls: type) -> dict[str, str]:
    return numeric_fields(cls)


@accept_removed_names
@dataclass(repr=False)
class TrainingArguments(_LightningFields):
    """HF's ``TrainingArguments`` (transformers 5.24): same fields, defaults, checks and helpers.

    Every field, with its help text, is declared in ``hftrain/_args/fields.py``. ``HfArgumentParser`` accepts this
    class as it accepts HF's. Differences, all because hftrain runs one device per process under Lightning:
    ``n_gpu`` is 0 or 1 and ``train_batch_size == per_device_train_batch_size`` (no ``nn.DataParallel``);
    ``device``, ``world_size`` and the process indices come from ``LOCAL_RANK`` / ``RANK`` / ``WORLD_SIZE``;
    ``accelerator_config`` is a dict. 4.x keywords removed in 5.x still work, with a ``FutureWarning``.

    Example:
        >>> args = TrainingArguments("out", per_device_train_batch_size=16, eval_strategy="steps", eval_steps=50)
        >>> args.do_eval, args.eval_strategy.value
        (True, 'steps')
        >>> args = args.set_optimizer(name="adamw_torch", learning_rate=1e-4)
    """

    def __post_init__(self) -> None:
        kinds = {k: v for k, v in _numeric_kinds(type(self)).items() if k not in LIGHTNING_FIELDS}  # own parsing
        check_field_values({name: getattr(self, name) for name in kinds} | {"save_strategy": self.save_strategy},
                           kinds)  # the types and ranges, before any comparison below needs them
        self._intervals_given = intervals_given(vars(self))  # checked against the run's length by train()
        self._normalise()
        self._normalise_lightning_fields()
        self._validate_args()
        self._finish()

    # -- 1. normalisation (transformers' __post_init__) ---------------------------------------------------------------
    def _normalise(self) -> None:
        if self.output_dir is None:
            self.output_dir = "trainer_output"
            logger.info("No output directory specified, defaulting to 'trainer_output'.")
        for name in self._VALID_DICT_FIELDS:  # a JSON string from the command line
            value = getattr(self, name)
            if isinstance(value, str) and value.startswith("{"):
                setattr(self, name, load_json_dict(value, name))
        for old, new in (
            ("gradient_checkpointing", "activation_checkpointing"),
            ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"),
        ):
            if getattr(self, new) is None and getattr(self, old) is not None:
                message = f"`{old}` is deprecated and will be removed in v6. Use `{new}` instead."
                warnings.warn(message, FutureWarning, stacklevel=5)  # the caller of TrainingArguments(...)
                setattr(self, new, getattr(self, old))
            setattr(self, old, getattr(self, new))  # the old name mirrors the new one
        if self.activation_checkpointing is None:
            self.activation_checkpointing = self.gradient_checkpointing = False
        self.output_dir = os.path.expanduser(self.output_dir)
        if self.disable_tqdm is None:
            self.disable_tqdm = hf_logging.get_verbosity() > logging.WARN
        if isinstance(self.include_num_input_tokens_seen, bool):
            self.include_num_input_tokens_seen = "all" if self.include_num_input_tokens_seen else "no"

        self.eval_strategy = to_enum(IntervalStrategy, "eval_strategy", self.eval_strategy)
        self.logging_strategy = to_enum(IntervalStrategy, "logging_strategy", self.logging_strategy)
        self.save_strategy = to_enum(SaveStrategy, "save_strategy", self.save_strategy)
        self.hub_strategy = to_enum(HubStrategy, "hub_strategy", self.hub_strategy)
        self.lr_scheduler_type = to_enum(SchedulerType, "lr_scheduler_type", self.lr_scheduler_type)
        self.optim = to_enum(OptimizerNames, "optim", self.optim)
        if isinstance(self.debug, str):
            self.debug = [to_enum(DebugOption, "debug", option) for option in self.debug.split()]
        elif self.debug is None:
            self.debug = []

        if self.do_eval is False and self.eval_strategy != IntervalStrategy.NO:
            self.do_eval = True
        if self.eval_strategy == IntervalStrategy.STEPS and (self.eval_steps is None or self.eval_steps == 0):
            if self.logging_steps > 0:
                logger.info(f"using `logging_steps` to initialize `eval_steps` to {self.logging_steps}")
                self.eval_steps = self.logging_steps
            else:
                raise ValueError(
                    f"evaluation strategy {self.eval_strategy} requires either non-zero --eval_steps or --logging_steps "
                    "(give a positive eval_steps, or eval_strategy='no')"
                )
        if (
            self.load_best_model_at_end
            or self.lr_scheduler_type in (SchedulerType.REDUCE_ON_PLATEAU, SchedulerType.GREEDY)
        ) and self.metric_for_best_model is None:
            self.metric_for_best_model = "loss"
        if self.greater_is_better is None and self.metric_for_best_model is not None:
            self.greater_is_better = not self.metric_for_best_model.endswith("loss")

        if self.report_to == "all" or self.report_to == ["all"]:
            self.report_to = installed_reporting_integrations()
        elif self.report_to == "none" or self.report_to == ["none"]:
            self.report_to = []
        elif not isinstance(self.report_to, list):
            self.report_to = [self.report_to]
        if kubeflow_job() and "kubeflow" not in self.report_to:
            self.report_to = [*self.report_to, "kubeflow"]

    # -- 2. checks (transformers' __post_init__), HF's messages verbatim ---------------------------------------------
    def _validate_args(self) -> None:
        steps = self.torch_empty_cache_steps
        if steps is not None and not (isinstance(steps, int) and steps > 0):
            raise ValueError(f"`torch_empty_cache_steps` must be an integer bigger than 0, got {steps}.")
        if self.logging_strategy == IntervalStrategy.STEPS and self.logging_steps == 0:
            raise ValueError(f"logging strategy {self.logging_strategy} requires non-zero --logging_steps "
                             "(`logging_steps=0` never logs: give a positive logging_steps, or logging_strategy='no')")
        for name, strategy, steps_strategy in (
            ("logging", self.logging_strategy, IntervalStrategy.STEPS),
            ("eval", self.eval_strategy, IntervalStrategy.STEPS),
            ("save", self.save_strategy, SaveStrategy.STEPS),
        ):
            value = getattr(self, f"{name}_steps")
            if strategy == steps_strategy and value > 1:
                if value != int(value):
                    raise ValueError(f"--{name}_steps must be an integer if bigger than 1: {value}")
                setattr(self, f"{name}_steps", int(value))
        if self.load_best_model_at_end and self.save_strategy != SaveStrategy.BEST:
            self._validate_best_model_steps()

        on_cpu = self.use_cpu or self.accelerator == "cpu"
        if (self.bf16 or self.bf16_full_eval) and not on_cpu and not bf16_gpu_available():
            name = "bf16" if self.bf16 else "bf16_full_eval"
            message = (
                "Your setup doesn't support bf16/gpu. You need to assign use_cpu if you want to train the model on CPU."
            )
            if torch.cuda.is_available():
                message += " You need Ampere+ GPU with cuda>=11.0."
            raise ValueError(f"`{name}=True`: {message}")
        if self.fp16 and self.bf16:
            raise ValueError(
                "At most one of fp16 and bf16 can be True, but not both (choose one; bf16 is preferred on Ampere+)"
            )
        if self.fp16_full_eval and self.bf16_full_eval:
            raise ValueError("At most one of fp16 and bf16 can be True for full eval, but not both")
        for scheduler in (SchedulerType.REDUCE_ON_PLATEAU, SchedulerType.GREEDY):
            if self.lr_scheduler_type == scheduler and self.eval_strategy == IntervalStrategy.NO:
                raise ValueError(
                    f"lr_scheduler_type {scheduler.value} requires an eval strategy "
                    '(set `eval_strategy="steps"` or `"epoch"`)'
                )
        if self.warmup_steps < 0:
            raise ValueError(f"Got warmup_steps = {self.warmup_steps}, Expected value warmup_steps >= 0")
        if self.dataloader_num_workers == 0 and self.dataloader_prefetch_factor is not None:
            raise ValueError(
                "--dataloader_prefetch_factor can only be set when data is loaded in a different process, i.e."
                " when --dataloader_num_workers > 0."
            )

    def _validate_best_model_steps(self) -> None:
        if self.eval_strategy != self.save_strategy:
            raise ValueError(
                "--load_best_model_at_end requires the save and eval strategy to match, except when "
                '--save_strategy="best", but found\n- Evaluation '
                f"strategy: {self.eval_strategy}\n- Save strategy: {self.save_strategy}"
            )
        save, evaluate = self.save_steps, self.eval_steps
        if self.eval_strategy != IntervalStrategy.STEPS or save % evaluate == 0:
            return
        if evaluate >= 1 and save >= 1:
            raise ValueError(
                "--load_best_model_at_end requires the saving steps to be a round multiple of the evaluation "
                f"steps, but found {save}, which is not a round multiple of {evaluate}."
            )
        if not (evaluate < 1 and save < 1):
            raise ValueError(
                "--load_best_model_at_end requires the saving steps to be a multiple of the evaluation "
                "steps, which cannot get guaranteed when mixing ratio and absolute steps for save_steps "
                f"{save} and eval_steps {evaluate}."
            )
        if (save * 1_000_000) % (evaluate * 1_000_000) != 0:  # HF's integer arithmetic for two ratios
            raise ValueError(
                "--load_best_model_at_end requires the saving steps to be a multiple of the evaluation "
                f"steps, but found {save}, which is not a multiple of {evaluate}."
            )

    # -- 3. derived values (transformers' __post_init__), minus devices, plugins and torch.backends ------------------
    def _finish(self) -> None:
        # Only from the fields: hftrain does not read accelerate's ACCELERATE_MIXED_PRECISION like HF does.
        self.mixed_precision = "fp16" if self.fp16 else "bf16" if self.bf16 else "no"
        if self.torch_compile_mode is not None or self.torch_compile_backend is not None:
            self.torch_compile = True
        if self.torch_compile and self.torch_compile_backend is None:
            self.torch_compile_backend = "inductor"
        self.accelerator_config = accelerator_config_dict(self.accelerator_config)
        if self.tf32 and not tf32_available():
            raise ValueError(
                "--tf32 requires Ampere or a newer GPU arch, cuda>=11 and torch>=1.7 "
                "(leave `tf32=None` or set `tf32=False` on this machine)"
            )
        if self.use_cpu:
            self.dataloader_pin_memory = False
        if (
            self.dataloader_multiprocessing_context is None
            and self.dataloader_num_workers > 1
            and torch.backends.mps.is_available()
        ):
            self.dataloader_multiprocessing_context = "fork"  # MPS needs forked workers
        if self.fsdp:  # HF's `_process_fsdp_args`, minus building accelerate's plugin arguments
            self.fsdp_config = fsdp_config_dict(self.fsdp, self.fsdp_config, self.activation_checkpointing)
            self.fsdp = True

    # -- properties (one device per process: hftrain never uses nn.DataParallel) ---------------------------------
    @property
    def train_batch_size(self) -> int:
        """Batch size of one training step on one process: ``per_device_train_batch_size`` (HF multiplies it by
        ``n_gpu`` for ``nn.DataParallel``, which hftrain never uses)."""
        return self.per_device_train_batch_size

    @property
    def eval_batch_size(self) -> int:
        """Evaluation batch size on one process: ``per_device_eval_batch_size``."""
        return self.per_device_eval_batch_size

    @property
    def ddp_timeout_delta(self) -> timedelta:
        return timedelta(seconds=self.ddp_timeout)

    @property
    def n_gpu(self) -> int:
        """GPUs used by this process: 0 with ``use_cpu`` or without CUDA, else 1."""
        return 0 if self.use_cpu or not torch.cuda.is_available() else 1

    @property
    def device(self) -> torch.device:
        """``cuda:LOCAL_RANK`` when CUDA is available and ``use_cpu`` is off, else ``cpu``. Computed, never set up."""
        return torch.device("cuda", self.local_process_index) if self.n_gpu else torch.device("cpu")

    @property
    def parallel_mode(self) -> ParallelMode:
        return ParallelMode.DISTRIBUTED if self.world_size > 1 else ParallelMode.NOT_PARALLEL

    @property
    def should_log(self) -> bool:
        """Whether this process logs: local rank 0 of each node with ``log_on_each_node``, else global rank 0."""
        return (self.local_process_index if self.log_on_each_node else self.process_index) == 0

    @property
    def should_save(self) -> bool:
        """Whether this process writes to disk: like ``should_log`` with ``save_on_each_node``."""
        return (self.local_process_index if self.save_on_each_node else self.process_index) == 0

    @property
    def place_model_on_device(self) -> bool | None:
        return None  # as HF: the Trainer decides

    def get_process_log_level(self) -> int:
        """``log_level`` on the process that logs, ``log_level_replica`` elsewhere; "passive" keeps the current one."""
        level = _TRAINER_LOG_LEVELS[self.log_level if self.should_log else self.log_level_replica]
        return hf_logging.get_verbosity() if level == -1 else level

    @contextlib.contextmanager
    def main_process_first(self, local: bool = True, desc: str = "work") -> Iterator[None]:
        """Run the block on the main (local, by default) process first; the others wait at a barrier.

        Only waits when ``torch.distributed`` is initialised and ``world_size > 1``; otherwise a plain block.
        """
        if not (self.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()):
            yield
            return
        is_main = (self.local_process_index if local else self.process_index) == 0
        try:
            if not is_main:
                logger.debug(f"{self.process_index}: waiting for the main process to perform {desc}")
                torch.distributed.barrier()
            yield
        finally:
            if is_main:
                torch.distributed.barrier()

    def get_warmup_steps(self, num_training_steps: int) -> int:
        """Warmup steps: ``int(warmup_steps)`` when >= 1, else ``ceil(num_training_steps * warmup_steps)``."""
        if self.warmup_steps >= 1:
            return int(self.warmup_steps)
        return math.ceil(num_training_steps * self.warmup_steps)

    # -- serialisation ---------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The fields, with enums as their values and ``*_token`` values masked (as HF's ``to_dict``)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        for key, value in d.items():
            if isinstance(value, Enum):
                d[key] = value.value
            if isinstance(value, list) and value and isinstance(value[0], Enum):
                d[key] = [item.value for item in value]
            if key.endswith("_token"):
                d[key] = f"<{key.upper()}>"
            if key == "accelerator_config" and isinstance(value, dict):
                d[key] = copy.deepcopy(value)  # HF returns a copy of its AcceleratorConfig
            if key == "parallelism_config" and value is not None and hasattr(value, "to_json"):
                d[key] = value.to_json()
            if key in LIGHTNING_FIELDS:
                d[key] = describe(value)
        for key in LIGHTNING_FIELDS:  # hftrain's own fields: shown when used, so the dict stays HF's otherwise
            if d[key] == _LIGHTNING_DEFAULTS[key]:
                del d[key]
        dict_dtype_to_str(d)
        return d

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_sanitized_dict(self) -> dict[str, Any]:
        """``to_dict()`` plus the batch sizes, with non-primitive values as strings (for TensorBoard hparams)."""
        d = {**self.to_dict(), "train_batch_size": self.train_batch_size, "eval_batch_size": self.eval_batch_size}
        valid_types = (bool, int, float, str, torch.Tensor)
        return {key: value if type(value) in valid_types else str(value) for key, value in d.items()}

    def __str__(self) -> str:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in LIGHTNING_FIELDS:  # shown when used, as in to_dict()
            values[key] = describe(values[key])
            if values[key] == _LIGHTNING_DEFAULTS[key]:
                del values[key]
        values = {k: f"<{k.upper()}>" if k.endswith("_token") else v for k, v in values.items()}
        attrs = "".join(f"{k}={v},\n" for k, v in sorted(values.items()))
        return f"{self.__class__.__name__}(\n{attrs})"

    __repr__ = __str__

    @classmethod
    def from_hf(cls, hf_args: Any) -> Self:
        """Convert a ``transformers.TrainingArguments`` (or any dataclass with its fields) into this class.

        Values are read from ``dataclasses.fields(hf_args)`` and validated again here. Fields this class does not
        have (a user subclass's own) are copied as plain attributes, so code that reads them keeps working.

        Example:
            >>> import transformers
            >>> args = TrainingArguments.from_hf(transformers.TrainingArguments("out", learning_rate=1e-4))
        """
        if not dataclasses.is_dataclass(hf_args) or isinstance(hf_args, type):
            raise TypeError(f"`from_hf` expects a TrainingArguments instance, got {type(hf_args).__name__}")
        own = {f.name for f in fields(cls) if f.init}
        values, extras = {}, {}
        for f in fields(hf_args):
            value = getattr(hf_args, f.name)
            value = copy.deepcopy(value) if isinstance(value, (list, dict)) else value
            (values if f.name in own else extras)[f.name] = value
        args = cls(**values)
        for name, value in extras.items():
            setattr(args, name, value)
        return args

    # -- fluent setters (HF's signatures; like HF they do not re-run the checks of __post_init__) ---------------
    def set_training(
        self,
        learning_rate: float = 5e-5,
        batch_size: int = 8,
        weight_decay: float = 0,
        num_epochs: float = 3,
        max_steps: int = -1,
        gradient_accumulation_steps: int = 1,
        seed: int = 42,
        activation_checkpointing: bool = False,
        gradient_checkpointing: bool | None = None,
    ) -> Self:
        """Set the basic training arguments and ``do_train=True``."""
        self.do_train = True
        self.learning_rate = learning_rate
        self.per_device_train_batch_size = batch_size
        self.weight_decay = weight_decay
        self.num_train_epochs = num_epochs
        self.max_steps = max_steps
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.seed = seed
        if gradient_checkpointing is not None:
            warnings.warn(
                "`gradient_checkpointing` is deprecated and will be removed in v6. "
                "Use `activation_checkpointing` instead.",
                FutureWarning,
                stacklevel=2,
            )
            activation_checkpointing = gradient_checkpointing
        self.activation_checkpointing = self.gradient_checkpointing = activation_checkpointing
        return self

    def set_evaluate(
        self,
        strategy: str | IntervalStrategy = "no",
        steps: int = 500,
        batch_size: int = 8,
        accumulation_steps: int | None = None,
        delay: float | None = None,
        loss_only: bool = False,
    ) -> Self:
        """Set the evaluation arguments; ``do_eval`` follows the strategy."""
        self.eval_strategy = to_enum(IntervalStrategy, "strategy", strategy)
        if self.eval_strategy == IntervalStrategy.STEPS and steps == 0:
            raise ValueError("Setting `strategy` as 'steps' requires a positive value for `steps`.")
        self.do_eval = self.eval_strategy != IntervalStrategy.NO
        self.eval_steps = steps
        self.per_device_eval_batch_size = batch_size
        self.eval_accumulation_steps = accumulation_steps
        self.eval_delay = delay
        self.prediction_loss_only = loss_only
        return self

    def set_testing(self, batch_size: int = 8, loss_only: bool = False) -> Self:
        """Set the prediction arguments and ``do_predict=True``."""
        self.do_predict = True
        self.per_device_eval_batch_size = batch_size
        self.prediction_loss_only = loss_only
        return self

    def set_save(
        self,
        strategy: str | IntervalStrategy = "steps",
        steps: int = 500,
        total_limit: int | None = None,
        on_each_node: bool = False,
    ) -> Self:
        """Set the checkpoint-saving arguments."""
        self.save_strategy = to_enum(SaveStrategy, "strategy", strategy)
        if self.save_strategy == SaveStrategy.STEPS and steps == 0:
            raise ValueError("Setting `strategy` as 'steps' requires a positive value for `steps`.")
        self.save_steps = steps
        self.save_total_limit = total_limit
        self.save_on_each_node = on_each_node
        return self

    def set_logging(
        self,
        strategy: str | IntervalStrategy = "steps",
        steps: int = 500,
        report_to: str | list[str] = "none",
        level: str = "passive",
        first_step: bool = False,
        nan_inf_filter: bool = False,
        on_each_node: bool = False,
        replica_level: str = "passive",
    ) -> Self:
        """Set the logging arguments (``report_to`` is stored as given, as HF does)."""
        self.logging_strategy = to_enum(IntervalStrategy, "strategy", strategy)
        if self.logging_strategy == IntervalStrategy.STEPS and steps == 0:
            raise ValueError("Setting `strategy` as 'steps' requires a positive value for `steps`.")
        self.logging_steps = steps
        self.report_to = report_to
        self.log_level = level
        self.logging_first_step = first_step
        self.logging_nan_inf_filter = nan_inf_filter
        self.log_on_each_node = on_each_node
        self.log_level_replica = replica_level
        return self

    def set_push_to_hub(
        self,
        model_id: str,
        strategy: str | HubStrategy = "every_save",
        token: str | None = None,
        private_repo: bool | None = None,
        always_push: bool = False,
        revision: str | None = None,
    ) -> Self:
        """Set the Hub arguments and ``push_to_hub=True`` (pushing needs network access to the Hub)."""
        self.push_to_hub = True
        self.hub_model_id = model_id
        self.hub_strategy = to_enum(HubStrategy, "strategy", strategy)
        self.hub_token = token
        self.hub_private_repo = private_repo
        self.hub_always_push = always_push
        self.hub_revision = revision
        return self

    def set_optimizer(
        self,
        name: str | OptimizerNames = "adamw_torch",
        learning_rate: float = 5e-5,
        weight_decay: float = 0,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
        args: str | None = None,
    ) -> Self:
        """Set the optimizer and its hyperparameters."""
        self.optim = to_enum(OptimizerNames, "name", name)
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.adam_beta1 = beta1
        self.adam_beta2 = beta2
        self.adam_epsilon = epsilon
        self.optim_args = args
        return self

    def set_lr_scheduler(
        self,
        name: str | SchedulerType = "linear",
        num_epochs: float = 3.0,
        max_steps: int = -1,
        warmup_steps: float = 0,
    ) -> Self:
        """Set the learning-rate schedule (and the training length it is computed from)."""
        self.lr_scheduler_type = to_enum(SchedulerType, "name", name)
        self.num_train_epochs = num_epochs
        self.max_steps = max_steps
        self.warmup_steps = warmup_steps
        return self

    def set_dataloader(
        self,
        train_batch_size: int = 8,
        eval_batch_size: int = 8,
        drop_last: bool = False,
        num_workers: int = 0,
        pin_memory: bool = True,
        persistent_workers: bool = False,
        prefetch_factor: int | None = None,
        multiprocessing_context: str | None = None,
        in_order: bool = True,
        auto_find_batch_size: bool = False,
        ignore_data_skip: bool = False,
        sampler_seed: int | None = None,
    ) -> Self:
        """Set the dataloader arguments."""
        self.per_device_train_batch_size = train_batch_size
        self.per_device_eval_batch_size = eval_batch_size
        self.dataloader_drop_last = drop_last
        self.dataloader_num_workers = num_workers
        self.dataloader_pin_memory = pin_memory
        self.dataloader_persistent_workers = persistent_workers
        self.dataloader_prefetch_factor = prefetch_factor
        self.dataloader_multiprocessing_context = multiprocessing_context
        self.dataloader_in_order = in_order
        self.auto_find_batch_size = auto_find_batch_size
        self.ignore_data_skip = ignore_data_skip
        self.data_seed = sampler_seed
        return self

