"""One optimizer step, as transformers' inner loop runs it: the whole gradient-accumulation contract in one file.

Lightning runs the epochs and calls ``HFModule.training_step`` once per optimizer step (manual optimization); that
call is :meth:`TrainingStepMethods._run_update_step`, which is transformers' ``Trainer._run_epoch`` loop body:

1. ``get_batch_samples(epoch_iterator, num_batches, device)`` fetches the window of micro-batches and counts its
   label tokens (``num_items_in_batch``);
2. for each micro-batch, ``training_step(model, inputs, num_items_in_batch)``: ``model.train()``,
   ``_prepare_inputs``, ``compute_loss`` under ``compute_loss_context_manager``, the GA / process-share scaling,
   ``accelerator.backward`` (Lightning's ``manual_backward``: the precision plugin and the strategy apply), with
   the processes synchronising gradients only on the window's last micro-batch;
3. the pre-clip ``grad_norm`` (``_clip_grad_norm`` / ``_get_grad_norm``), ``on_pre_optimizer_step``, the optimizer
   step (Lightning's optimizer: GradScaler, DeepSpeed), ``on_optimizer_step``, the scheduler, ``zero_grad``;
4. ``global_step += 1``, ``on_step_end`` and ``_maybe_log_save_evaluate`` (log → ``_evaluate`` → ``evaluate`` /
   ``_save_checkpoint`` → ``save_model`` → ``_save``).

These are the Trainer's methods (this class is mixed into it), so a subclass overriding any of them runs where it
runs in transformers.

Where the numbers differ from transformers on purpose (README, "Where hftrain differs"): with several processes
``num_items_in_batch`` is the window's token count over all processes divided by their number (transformers passes
the sum and multiplies the loss by the number of processes), and a mean loss is weighted by this process's share of
the global batch, so that every result equals the one-process result.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hftrain._backends import ddp
from hftrain._logging import trainer_logger
from hftrain._loop import model_setup
from hftrain._loop.loss import normalises_by_num_items, scale_loss
from hftrain._loop.optim import is_metric_driven
from hftrain._loop.overrides import overrides

if TYPE_CHECKING:
    from hftrain._loop.train import EpochRun

logger = trainer_logger()


class TrainingStepMethods:
    """transformers.Trainer's step methods: ``training_step``, ``compute_loss``, ``get_batch_samples``…"""

    # transformers 5.x: a subclass whose compute_loss already normalises for gradient accumulation sets True
    loss_is_scaled_for_ga: bool | None = None

    # ---- the micro-batch -------------------------------------------------------------------------------------------
    def training_step(
        self, model: nn.Module, inputs: dict[str, torch.Tensor | Any], num_items_in_batch: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        """One micro-batch: forward, loss, backward. Returns the detached loss, scaled as it was backpropagated."""
        model.train()
        if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
            self.optimizer.train()
        inputs = self._prepare_inputs(inputs)
        share = self.accelerator.gradient_state.share  # this process's share of the global batch (1: one process)
        scaled_for_ga, normalises = self._loss_normalisation(model, inputs, num_items_in_batch, share)
        with self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
        del inputs
        every = self.args.torch_empty_cache_steps
        if every is not None and self.state.global_step % every == 0:
            model_setup.empty_device_cache()
        loss = scale_loss(
            loss, scaled_for_ga=scaled_for_ga, accumulation_steps=self.current_gradient_accumulation_steps,
            share=share, normalises_by_num_items=normalises,
        )
        self.accelerator.backward(loss)
        return loss.detach()

    def _loss_normalisation(self, model: nn.Module, inputs: Any, num_items: Any, share: float) -> tuple[bool, bool]:
        """``(scaled_for_ga, normalised_by_count)``: whether this micro-batch's loss is already normalised for the
        accumulation window (so it is not divided by the number of micro-batches), and whether by the window's
        ``num_items_in_batch`` (so it needs no weighing by this process's share). Decided before the forward.

        transformers takes any model whose ``forward`` has ``**kwargs`` for one whose loss divides by
        ``num_items_in_batch``, so a classifier's mean loss is summed over the window (transformers #47688). Here,
        unless the model declares ``accepts_loss_kwargs``, its loss is probed once (:func:`normalises_by_num_items`).
        A subclass's own ``compute_loss`` keeps transformers' rule (``loss_is_scaled_for_ga`` says otherwise)."""
        several = ddp.world_size() > 1  # the share matters only then; every process probes at the same batch
        if self.loss_is_scaled_for_ga is not None:
            scaled = self.loss_is_scaled_for_ga
            return scaled, scaled and several and self._model_normalises_by_num_items(model, inputs, num_items)
        if self.compute_loss_func is not None:  # the user's loss function receives the count
            return True, num_items is not None
        if not self.model_accepts_loss_kwargs or num_items is None:
            return False, False
        if self.label_smoother is not None and "labels" in inputs:  # LabelSmoother divides by num_items_in_batch
            return True, True
        if overrides(self, "compute_loss"):
            return True, several and self._model_normalises_by_num_items(model, inputs, num_items)
        if self.current_gradient_accumulation_steps == 1 and not several:
            return True, True  # nothing to divide or to weigh: no probe
        uses = self._model_normalises_by_num_items(model, inputs, num_items)
        return uses, uses

    def _model_normalises_by_num_items(self, model: nn.Module, inputs: Any, num_items: Any) -> bool:
        """Whether the model's loss divides by ``num_items_in_batch``: its ``accepts_loss_kwargs`` where it declares
        one, else probed once per model, on the unwrapped model (no DDP collective) and agreed by the processes
        (a batch that cannot tell, e.g. with a zero loss, counts as dividing: transformers' assumption)."""
        if num_items is None or not self.model_accepts_loss_kwargs:
            return False
        unwrapped = self.accelerator.unwrap_model(model)
        if "accepts_loss_kwargs" in vars(type(unwrapped)) or "accepts_loss_kwargs" in vars(unwrapped):
            return True  # the model says its loss takes the count (transformers' switch)
        if self._uses_num_items is None:
            found = normalises_by_num_items(unwrapped, inputs, num_items)
            votes = torch.tensor(1.0 if found is None or found else 0.0, device=self.accelerator.device)
            self._uses_num_items = bool(ddp.all_reduce(votes, op="max").item() > 0)
        return self._uses_num_items

    def compute_loss(
        self, model: nn.Module, inputs: dict[str, torch.Tensor | Any], return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """The model's loss (its first output), or ``compute_loss_func`` / the label smoother's."""
        if (self.label_smoother is not None or self.compute_loss_func is not None) and "labels" in inputs:
            labels = inputs.pop("labels")
        else:
            labels = None
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            inputs = {**inputs, "num_items_in_batch": num_items_in_batch}
        outputs = model(**inputs)
        if self.compute_loss_func is not None:
            if labels is None:
                logger.warning("Trainer: `compute_loss_func` is defined but `labels=None`. "
                               "Your custom loss function will still be called with labels=None. ")
            loss = self.compute_loss_func(outputs, labels, num_items_in_batch=num_items_in_batch)
        elif labels is not None:
            from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

            name = self.accelerator.unwrap_model(model)._get_name()
            shift = name in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()
            loss = self.label_smoother(outputs, labels, shift_labels=shift, num_items_in_batch=num_items_in_batch)
        else:
            if isinstance(outputs, dict) and "loss" not in outputs:
                raise ValueError(
                    "The model did not return a loss from the inputs, only the following keys: "
                    f"{','.join(outputs.keys())}. For reference, the inputs it received are {','.join(inputs.keys())}."
                    " Pass the labels under a name listed in `label_names`, or return the loss first from forward()."
                )
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs[0]
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise ValueError(
                    f"{type(model).__name__} returned no loss for inputs {sorted(inputs)}: its first output is not a "
                    "scalar loss. Pass labels (see `TrainingArguments.label_names`), return the loss first from "
                    "forward(), or pass a `compute_loss_func` to the Trainer."
                )
        if self.args.average_tokens_across_devices and (
            self.model_accepts_loss_kwargs or self.compute_loss_func) and num_items_in_batch is not None:
            # transformers multiplies by the data-parallel processes (processes // tensor-parallel size), its count
            # being their sum; hftrain's count is already divided by the number of processes (module docstring)
            loss_scale = self.accelerator.num_processes // self.get_tp_size()
            if loss_scale != ddp.world_size():
                loss = loss * (loss_scale / ddp.world_size())
        return (loss, outputs) if return_outputs else loss

    def compute_loss_context_manager(self) -> contextlib.ExitStack:
        """The contexts the loss is computed in (``autocast_smart_context_manager``'s, when it is not a no-op)."""
        stack = contextlib.ExitStack()
        autocast = self.autocast_smart_context_manager()
        if not isinstance(autocast, contextlib.nullcontext):
            stack.enter_context(autocast)
        return stack

    def autocast_smart_context_manager(self, cache_enabled: bool | None = True) -> contextlib.AbstractContextManager:
        """A no-op, as in transformers: the precision plugin autocasts around the whole step."""
        return contextlib.nullcontext()

    # ---- the window ------------------------------------------------------------------------------------------------
    def get_batch_samples(
        self, epoch_iterator: Iterator, num_batches: int, device: torch.device
    ) -> tuple[list, torch.Tensor | int | None]:
        """The next ``num_batches`` micro-batches (fewer at the end of the data) and their ``num_items_in_batch``."""
        batch_samples = []
        for _ in range(num_batches):
            try:
                batch_samples.append(next(epoch_iterator))
            except StopIteration:
                break
        return batch_samples, self._get_num_items_in_batch(batch_samples, device)

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> torch.Tensor | int | None:
        """The label tokens of the window (``labels[..., 1:]`` for causal LMs), when the model or the loss function
        takes ``num_items_in_batch``; over several processes, their total divided by the number of processes."""
        count = (
            len(batch_samples) > 0 and isinstance(batch_samples[0], Mapping) and "labels" in batch_samples[0]
            and (self.model_accepts_loss_kwargs or self.compute_loss_func is not None)
        )
        if not count:
            return None
        try:
            per_batch = [
                b["shift_labels"] if "shift_labels" in b else b["labels"][..., 1:] if self._loss_shifts_labels
                else b["labels"] for b in batch_samples
            ]
            counts = [labels.ne(-100).sum() for labels in per_batch]
        except (TypeError, AttributeError):
            return None
        epoch = self._epoch_run
        if epoch is not None:  # stand-in rows of a process with nothing left (weight 0) count for nothing
            counts = [c * int(epoch.share_of(b) > 0) for c, b in zip(counts, batch_samples)]
        num_items = sum(counts)
        # a training window (grad enabled; evaluation runs under no_grad, each process normalising its own batch):
        # the count over every process, divided by their number
        across = ddp.world_size() > 1 and self.args.average_tokens_across_devices and torch.is_grad_enabled()
        if across:
            num_items = ddp.all_reduce(num_items.to(device).clone()) / ddp.world_size()
        if torch.is_tensor(num_items):  # processes that see the same batch (tensor / context / sequence parallel)
            num_items = num_items.to(device) / (self.get_tp_size() * self.get_cp_size() * self.get_sp_size())
        return num_items

    def _prepare_input(self, data: torch.Tensor | Any) -> torch.Tensor | Any:
        """``data`` (nested dicts / lists / tensors) on the device of this process."""
        if isinstance(data, Mapping):
            return type(data)({k: self._prepare_input(v) for k, v in data.items()})
        if isinstance(data, (tuple, list)):
            return type(data)(self._prepare_input(v) for v in data)
        if isinstance(data, torch.Tensor):
            return data.to(device=self.accelerator.device)
        return data

    def _prepare_inputs(self, inputs: dict[str, torch.Tensor | Any]) -> dict[str, torch.Tensor | Any]:
        inputs = self._prepare_input(inputs)
        if len(inputs) == 0:
            raise ValueError(
                "The batch received was empty, your model won't be able to train on it. Double-check that your "
                f"training dataset contains keys expected by the model: {','.join(self._signature_columns or [])}."
            )
        return inputs

    def _track_num_input_tokens(self, inputs: Any) -> None:
        """``include_num_input_tokens_seen``: add the micro-batch's input tokens (all, or the non-padding ones) of
        every process to ``state.num_input_tokens_seen``."""
        if self.args.include_num_input_tokens_seen == "no":
            return
        main_input_name = getattr(self.model, "main_input_name", "input_ids")
        if main_input_name not in inputs:
            logger.warning(
                "Tried to track the number of tokens seen, however the current model is not configured properly to "
                "know what item is the input. To fix this, add a `main_input_name` attribute to the model class you "
                "are using."
            )
            return
        if self.args.include_num_input_tokens_seen == "non_padding":
            pad_token_id = getattr(self.processing_class, "pad_token_id", None)
            if "attention_mask" in inputs:
                input_tokens = inputs["attention_mask"].sum()
            elif pad_token_id is not None:
                input_tokens = (inputs[main_input_name] != pad_token_id).sum()
            else:
                logger.warning(
                    "Could not determine method to count non-padding tokens, falling back to counting all tokens."
                )
                input_tokens = inputs[main_input_name].numel()
        else:  # all of them, padding included: as one process would have padded the whole batch
            self.state.num_input_tokens_seen += self._one_process_numel(inputs)
            return
        if self.accelerator.gradient_state.share == 0.0:
            input_tokens = 0  # a stand-in row of a process with nothing left: not data
        input_tokens = torch.as_tensor(input_tokens, device=self.accelerator.device, dtype=torch.int64)
        self.state.num_input_tokens_seen += self.accelerator.gather(input_tokens).sum().item()

    def _one_process_numel(self, inputs: Any) -> int:
        """The main input's element count as one process would see this micro-batch: the rows of every process,
        padded to the longest of their lengths (what one process's collator pads the whole global batch to), so
        that padding-inclusive counts do not change with the number of processes. Once per micro-batch."""
        name = getattr(self.model, "main_input_name", "input_ids")
        tensor = inputs.get(name) if isinstance(inputs, Mapping) else None
        if not torch.is_tensor(tensor):
            return 0
        if ddp.world_size() == 1:
            return tensor.numel()
        cached = getattr(self, "_numel_of", None)  # flos and tokens ask for the same micro-batch
        if cached is not None and cached[0] == id(inputs):
            return cached[1]
        rows = tensor.shape[0] if tensor.dim() else 1
        length = tensor.shape[1] if tensor.dim() >= 2 else 1
        rest = math.prod(tensor.shape[2:]) if tensor.dim() >= 2 else 1
        if self.accelerator.gradient_state.share == 0.0:
            rows = 0  # a stand-in row of a process with nothing left: not data
        shapes = ddp.all_gather(torch.tensor([rows, length], device=self.accelerator.device))
        used = shapes[shapes[:, 0] > 0]
        numel = int(used[:, 0].sum()) * int(used[:, 1].max()) * rest if len(used) else 0
        self._numel_of = (id(inputs), numel)
        return numel

    def _flos_as_one_process(self, inputs: Any, flos: float) -> float:
        """This process's part of the micro-batch's FLOPs, such that the parts add up to one process's count of the
        whole batch (transformers' estimate is per padded token: each process pads its own slice). A subclass's
        own ``floating_point_ops`` is taken as it is."""
        if ddp.world_size() == 1 or overrides(self, "floating_point_ops"):
            return flos
        name = getattr(self.model, "main_input_name", "input_ids")
        local = inputs[name].numel() if isinstance(inputs, Mapping) and torch.is_tensor(inputs.get(name)) else 0
        if not local or not flos:
            return flos
        return flos / local * self._one_process_numel(inputs) / ddp.world_size()

    # ---- the optimizer step ----------------------------------------------------------------------------------------
    def _clip_grad_norm(self, model: nn.Module) -> torch.Tensor | None:
        """Clip to ``max_grad_norm``; the norm before clipping."""
        return self.accelerator.clip_grad_norm_(model.parameters(), self.args.max_grad_norm)

    def _get_grad_norm(self, model: nn.Module, grad_norm: torch.Tensor | None = None) -> torch.Tensor | float | None:
        if grad_norm is None:
            grad_norm = self.accelerator.clip_grad_norm_(model.parameters(), float("inf"))
        return grad_norm

    def _get_learning_rate(self) -> float:
        if is_metric_driven(self.lr_scheduler):
            last_lr = self.optimizer.param_groups[0]["lr"]
        else:
            last_lr = self.lr_scheduler.get_last_lr()[0]
        return last_lr.item() if torch.is_tensor(last_lr) else last_lr

    def _run_update_step(self, epoch: EpochRun) -> None:
        """One iteration of transformers' ``_run_epoch`` loop: a window of micro-batches, then the optimizer step."""
        args, model = self.args, self.model_wrapped  # the compiled model under torch_compile, as in transformers
        num_batches = args.gradient_accumulation_steps if not epoch.last_update() else epoch.remainder
        batch_samples, num_items_in_batch = self.get_batch_samples(
            epoch.iterator, num_batches, self.accelerator.device
        )
        epoch.update_step += 1
        if not batch_samples:  # the data ran out before the planned number of steps (an IterableDataset)
            epoch.exhausted = True
            self._end_epoch(epoch)
            return
        self.current_gradient_accumulation_steps = len(batch_samples)
        if epoch.rng_to_sync:  # a resumed epoch: the RNG as it was after this window was drawn
            self._load_rng_state(epoch.resume_from_checkpoint)
            epoch.rng_to_sync = False
        state = self.accelerator.gradient_state
        for i, inputs in enumerate(batch_samples):
            epoch.step += 1
            do_sync_step = (epoch.step + 1) % args.gradient_accumulation_steps == 0 or (
                epoch.step + 1 == epoch.steps_in_epoch
            )
            state._set_sync_gradients(do_sync_step)
            state.share = epoch.share_of(inputs)
            if epoch.step % args.gradient_accumulation_steps == 0:
                self.control = self.callback_handler.on_step_begin(args, self.state, self.control)
            sync_now = i == len(batch_samples) - 1 or epoch.deepspeed or state.plugin_kwargs.get("sync_each_batch")
            sync = contextlib.nullcontext() if sync_now else self.accelerator.no_sync(model)
            with sync:
                tr_loss_step = self.training_step(model, inputs, num_items_in_batch)
            if self._tr_loss.device != tr_loss_step.device:
                raise ValueError(
                    f"Calculated loss must be on the original device: {self._tr_loss.device} but device in use "
                    f"is {tr_loss_step.device}"
                )
            if args.logging_nan_inf_filter:  # a nan / inf loss counts as the average so far: decided on the device,
                # where transformers asks the host (a synchronisation at every micro-batch on a GPU)
                average = self._tr_loss / (1 + self.state.global_step - self._globalstep_last_logged)
                tr_loss_step = torch.where(torch.isfinite(tr_loss_step), tr_loss_step, average)
            self._tr_loss += tr_loss_step
            self.current_flos += self._flos_as_one_process(inputs, float(self.floating_point_ops(inputs)))
            self._track_num_input_tokens(inputs)
            self._numel_of = None  # the next micro-batch's dict may reuse this one's id
            if do_sync_step:
                self._optimizer_step(epoch)
            else:
                self.control = self.callback_handler.on_substep_end(args, self.state, self.control)
            if self.control.should_epoch_stop or self.control.should_training_stop:
                break
        if epoch.is_over(self.control):
            self._end_epoch(epoch)

    def _end_epoch(self, epoch: EpochRun) -> None:
        """transformers' end of ``_run_epoch``: ``on_epoch_end``, then log / evaluate / save if asked."""
        epoch.ended = True
        if epoch.step < 0:
            logger.warning(
                "There seems not to be a single sample in your epoch_iterator, stopping training at step"
                f" {self.state.global_step}! This is expected if you're using an IterableDataset and set"
                f" num_steps ({self.state.max_steps}) higher than the number of available samples."
            )
            self.control.should_training_stop = True
        self.control = self.callback_handler.on_epoch_end(self.args, self.state, self.control)
        self._maybe_log_save_evaluate(
            self._tr_loss, epoch.grad_norm, self.model_wrapped, epoch.trial, epoch.epoch, epoch.ignore_keys_for_eval,
            epoch.start_time, learning_rate=epoch.learning_rate,
        )

    def _optimizer_step(self, epoch: EpochRun) -> None:
        """Clip, step, schedule, then transformers' log / evaluate / save decision."""
        args, model = self.args, self.model_wrapped
        grad_norm = self._clip_grad_norm(model) if args.max_grad_norm > 0 else None
        grad_norm = self._get_grad_norm(model, grad_norm=grad_norm)
        self.control = self.callback_handler.on_pre_optimizer_step(args, self.state, self.control)
        # Lightning's optimizer: the precision plugin (GradScaler) and the strategy. Under DeepSpeed the engine
        # already stepped in the last backward, as accelerate's does.
        epoch.step_optimizer()
        self.control = self.callback_handler.on_optimizer_step(args, self.state, self.control)
        learning_rate = self._get_learning_rate()
        epoch.grad_norm, epoch.learning_rate = grad_norm, learning_rate  # _run_epoch's locals, for its end
        if not self.accelerator.optimizer_step_was_skipped and not is_metric_driven(self.lr_scheduler):
            self.lr_scheduler.step()  # plateau schedulers step after an evaluation (_evaluate)
        model.zero_grad()
        self.state.global_step += 1
        self.state.epoch = epoch.epoch + (epoch.step + 1) / epoch.steps_in_epoch
        self.control = self.callback_handler.on_step_end(args, self.state, self.control)
        self._maybe_log_save_evaluate(
            self._tr_loss, grad_norm, model, epoch.trial, epoch.epoch, epoch.ignore_keys_for_eval, epoch.start_time,
            learning_rate=learning_rate,
        )

    def _maybe_log_save_evaluate(
        self, tr_loss: torch.Tensor, grad_norm: torch.Tensor | float | None, model: nn.Module, trial: Any,
        epoch: float, ignore_keys_for_eval: list[str] | None, start_time: float, learning_rate: float | None = None,
    ) -> None:
        """Log, evaluate and save where the control (``DefaultFlowCallback``'s decisions) says so."""
        if self.control.should_log and self.state.global_step > self._globalstep_last_logged:
            logs: dict[str, float] = {}
            tr_loss_scalar = (ddp.all_reduce(tr_loss.detach().clone()) / ddp.world_size()).item()  # mean over processes
            tr_loss -= tr_loss
            logs["loss"] = tr_loss_scalar / (self.state.global_step - self._globalstep_last_logged)
            if grad_norm is not None:
                logs["grad_norm"] = grad_norm.item() if isinstance(grad_norm, torch.Tensor) else grad_norm
            logs["learning_rate"] = learning_rate if learning_rate is not None else self._get_learning_rate()
            self._total_loss_scalar += tr_loss_scalar
            self._globalstep_last_logged = self.state.global_step
            self.store_flos()
            self.log(logs, start_time)
        with self._throughput.paused():  # the training rates of the next log count training time only
            if self.control.should_evaluate:
                metrics = self._evaluate(trial, ignore_keys_for_eval)
                is_new_best_metric = self._determine_best_metric(metrics=metrics, trial=trial)
                if self.args.save_strategy == "best":
                    self.control.should_save = is_new_best_metric
            if self.control.should_save:
                self._save_checkpoint(model, trial)
                self.control = self.callback_handler.on_save(self.args, self.state, self.control)
