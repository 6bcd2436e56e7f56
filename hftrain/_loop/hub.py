"""The Hub and hyperparameter search: ``create_model_card``, ``init_hf_repo``, ``push_to_hub``,
``hyperparameter_search``, as transformers' Trainer has them.

The model card is transformers' ``TrainingSummary``; uploads go through ``huggingface_hub`` (offline, its error says
so); optuna searches run :mod:`hftrain._loop.hpo` (transformers' driver, without accelerate), Ray Tune and W&B
sweeps transformers' own backends, each driving this Trainer's ``train`` with a trial.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, HPSearchBackend, default_compute_objective

from hftrain._logging import trainer_logger

logger = trainer_logger()

_MODELING_FILES = ("config.json", "generation_config.json", "pytorch_model.bin", "model.safetensors")


def hf_api() -> Any:
    from transformers.utils.hub import hf_api as transformers_hf_api

    return transformers_hf_api()


class HubMethods:
    """transformers.Trainer's Hub and hyperparameter-search methods."""

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """Create (or reuse) the Hub repo ``hub_model_id`` (default: the name of ``output_dir``)."""
        if not self.is_world_process_zero():
            return
        repo_name = Path(self.args.output_dir).absolute().name if self.args.hub_model_id is None else self.args.hub_model_id
        token = token if token is not None else self.args.hub_token
        private = private if private is not None else self.args.hub_private_repo
        try:
            repo_url = hf_api().create_repo(repo_name, token=token, private=private, exist_ok=True)
        except OSError as exc:  # offline (HF_HUB_OFFLINE), no route to the Hub...
            raise OSError(
                f"push_to_hub / init_hf_repo needs the Hugging Face Hub, which cannot be reached to create "
                f"{repo_name!r}: {exc}. Set push_to_hub=False to train without it."
            ) from exc
        self.hub_model_id = repo_url.repo_id
        self.push_in_progress = None

    def create_model_card(
        self, language: str | None = None, license: str | None = None, tags: str | list[str] | None = None,
        model_name: str | None = None, finetuned_from: str | None = None, tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None, dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
    ) -> None:
        """Write ``output_dir/README.md``: transformers' model card from this run (hyperparameters, results)."""
        if not self.is_world_process_zero():
            return
        from huggingface_hub import ModelCard
        from transformers.modelcard import TrainingSummary

        model_card_filepath = os.path.join(self.args.output_dir, "README.md")
        is_peft_library = False
        if os.path.exists(model_card_filepath):
            card = ModelCard.load(model_card_filepath)
            is_peft_library = card.data.get("library_name") == "peft"
            existing_tags = card.data.tags
            if tags is not None and existing_tags is not None:
                tags = [tags] if isinstance(tags, str) else tags
                tags.extend(tag for tag in existing_tags if tag not in tags)
        summary = TrainingSummary.from_trainer(
            self, language=language, license=license, tags=tags, model_name=model_name,
            finetuned_from=finetuned_from, tasks=tasks, dataset_tags=dataset_tags, dataset=dataset,
            dataset_args=dataset_args,
        )
        os.makedirs(self.args.output_dir, exist_ok=True)
        with open(model_card_filepath, "w", encoding="utf-8") as f:
            f.write(summary.to_model_card())
        if is_peft_library:
            self.accelerator.unwrap_model(self.model).create_or_update_model_card(self.args.output_dir)

    def push_to_hub(
        self, commit_message: str | None = "End of training", blocking: bool = True, token: str | None = None,
        revision: str | None = None, private: bool | None = None, **kwargs: Any,
    ) -> Any:
        """Save the model, write the model card and upload ``output_dir`` to ``hub_model_id``."""
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        model_name = kwargs.pop("model_name", None)
        if model_name is None and self.args.should_save:
            if self.args.hub_model_id is None:
                model_name = Path(self.args.output_dir).name
            else:
                model_name = self.args.hub_model_id.split("/")[-1]
        token = token if token is not None else self.args.hub_token
        if self.hub_model_id is None:
            self.init_hf_repo(token=token, private=private)
        self.save_model(_internal_call=True)
        if not self.is_world_process_zero():
            return None
        if getattr(self.model, "model_tags", None) is not None:
            kwargs.setdefault("tags", [])
            if isinstance(kwargs["tags"], str):
                kwargs["tags"] = [kwargs["tags"]]
            kwargs["tags"].extend(tag for tag in self.model.model_tags if tag not in kwargs["tags"])
        self.create_model_card(model_name=model_name, **kwargs)
        if revision is None:
            revision = self.args.hub_revision
        self._finish_current_push()
        return hf_api().upload_folder(
            repo_id=self.hub_model_id, folder_path=self.args.output_dir, commit_message=commit_message,
            token=token, run_as_future=not blocking, ignore_patterns=["_*", f"{PREFIX_CHECKPOINT_DIR}-*"],
            revision=revision,
        )

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """``hub_strategy``: upload the checkpoint's model files (and the checkpoint itself) in the background."""
        if not self.is_world_process_zero() or self.args.hub_strategy == "end":
            return
        if not self.args.hub_always_push and self.push_in_progress is not None and not self.push_in_progress.is_done():
            return
        from transformers.utils.hub import PushInProgress

        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        output_dir = self.args.output_dir
        modeling_files = list(_MODELING_FILES)
        for index_file in ("pytorch_model.bin.index.json", "model.safetensors.index.json"):
            index_path = os.path.join(checkpoint_folder, index_file)
            if os.path.isfile(index_path):
                modeling_files.append(index_file)
                with open(index_path, encoding="utf-8") as f:
                    modeling_files.extend(set(json.load(f)["weight_map"].values()))
        for name in modeling_files:
            if os.path.isfile(os.path.join(checkpoint_folder, name)):
                shutil.copy(os.path.join(checkpoint_folder, name), os.path.join(output_dir, name))
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args.for_saving() if hasattr(self.args, "for_saving") else self.args,
                   os.path.join(output_dir, "training_args.bin"))
        if self.args.save_strategy == "steps":
            commit_message = f"Training in progress, step {self.state.global_step}"
        else:
            commit_message = f"Training in progress, epoch {int(self.state.epoch)}"
        jobs = [hf_api().upload_folder(
            repo_id=self.hub_model_id, folder_path=output_dir, commit_message=commit_message,
            token=self.args.hub_token, run_as_future=True, ignore_patterns=["_*", f"{PREFIX_CHECKPOINT_DIR}-*"],
            revision=self.args.hub_revision,
        )]
        if self.args.hub_strategy in ("checkpoint", "all_checkpoints"):
            path_in_repo = "last-checkpoint" if self.args.hub_strategy == "checkpoint" else Path(checkpoint_folder).name
            jobs.append(hf_api().upload_folder(
                repo_id=self.hub_model_id, folder_path=checkpoint_folder, path_in_repo=path_in_repo,
                commit_message=commit_message + ", checkpoint", token=self.args.hub_token, run_as_future=True,
                revision=self.args.hub_revision,
            ))
        if self.push_in_progress is None or self.push_in_progress.is_done():
            self.push_in_progress = PushInProgress(jobs)
        else:
            self.push_in_progress.jobs.extend(jobs)

    def _finish_current_push(self) -> None:
        if getattr(self, "push_in_progress", None) is not None and not self.push_in_progress.is_done():
            logger.info("Waiting for the current checkpoint push to be finished, this might take a couple of minutes.")
            self.push_in_progress.wait_until_done()

    # ---- hyperparameter search -------------------------------------------------------------------------------------
    def hyperparameter_search(
        self, hp_space: Callable[[Any], dict[str, float]] | None = None,
        compute_objective: Callable[[dict[str, float]], float] | None = None, n_trials: int = 20,
        direction: str | list[str] = "minimize", backend: str | HPSearchBackend | None = None,
        hp_name: Callable[[Any], str] | None = None, **kwargs: Any,
    ) -> Any:
        """Search hyperparameters with optuna or Ray Tune (transformers' backends), re-creating the model from
        ``model_init`` for every trial; returns the ``BestRun`` (a list of them for several objectives)."""
        from transformers.hyperparameter_search import ALL_HYPERPARAMETER_SEARCH_BACKENDS, default_hp_search_backend

        if backend is None:
            backend = default_hp_search_backend()
        backend = HPSearchBackend(backend)
        backend_obj = ALL_HYPERPARAMETER_SEARCH_BACKENDS[backend]()
        backend_obj.ensure_available()
        self.hp_search_backend = backend
        if self.model_init is None:
            raise RuntimeError("To use hyperparameter search, you need to pass your model through a model_init function.")
        self.hp_space = backend_obj.default_hp_space if hp_space is None else hp_space
        self.hp_name = hp_name
        self.compute_objective = default_compute_objective if compute_objective is None else compute_objective
        if backend == HPSearchBackend.OPTUNA:  # transformers' optuna driver needs accelerate; hftrain's does not
            from hftrain._loop.hpo import run_optuna

            best_run = run_optuna(self, n_trials, direction, **kwargs)
        else:
            best_run = backend_obj.run(self, n_trials, direction, **kwargs)
        self.hp_search_backend = None
        return best_run

    def call_model_init(self, trial: Any = None) -> nn.Module:
        """A fresh model from ``model_init`` (given the trial when it takes an argument)."""
        from transformers.trainer_utils import number_of_arguments

        argcount = number_of_arguments(self.model_init)
        if argcount == 0:
            model = self.model_init()
        elif argcount == 1:
            model = self.model_init(trial)
        else:
            raise RuntimeError("model_init should have 0 or 1 argument.")
        if model is None:
            raise RuntimeError("model_init should not return None.")
        return model

    def _hp_search_setup(self, trial: Any) -> None:
        """A trial's hyperparameters into the arguments (cast to each field's type)."""
        self._trial = trial
        if self.hp_search_backend is None or trial is None:
            return
        params = self.hp_space(trial) if self.hp_search_backend == HPSearchBackend.OPTUNA else dict(trial)
        params.pop("wandb", None)
        for key, value in params.items():
            if not hasattr(self.args, key):
                logger.warning(
                    f"Trying to set {key} in the hyperparameter search but there is no corresponding field in"
                    " `TrainingArguments`."
                )
                continue
            old_attr = getattr(self.args, key, None)
            if old_attr is not None:
                value = type(old_attr)(value)
            setattr(self.args, key, value)
        if self.hp_search_backend == HPSearchBackend.OPTUNA:
            logger.info(f"Trial: {trial.params}")
        self._train_batch_size = self.args.train_batch_size
        self.create_accelerator_and_postprocess()

    def _report_to_hp_search(self, trial: Any, step: int, metrics: dict[str, float]) -> None:
        """The trial's objective after an evaluation; optuna may prune it here."""
        if self.hp_search_backend is None or trial is None:
            return
        metrics = metrics.copy()
        self.objective = self.compute_objective(metrics)
        if self.hp_search_backend == HPSearchBackend.OPTUNA:
            import optuna

            prune = False
            if hasattr(trial, "study") and not trial.study._is_multi_objective():
                trial.report(self.objective, step)
                prune = trial.should_prune()
            if self.args.world_size > 1:  # the first process decides; every process leaves the trial here
                from hftrain._backends import ddp

                prune = ddp.broadcast_object(prune)
            if prune:
                self.callback_handler.on_train_end(self.args, self.state, self.control)
                raise optuna.TrialPruned()
        elif self.hp_search_backend == HPSearchBackend.RAY:
            import tempfile

            import ray.tune

            with tempfile.TemporaryDirectory() as temp_checkpoint_dir:
                checkpoint = None
                if self.control.should_save:
                    self._tune_save_checkpoint(checkpoint_dir=temp_checkpoint_dir)
                    checkpoint = ray.tune.Checkpoint.from_directory(temp_checkpoint_dir)
                metrics["objective"] = self.objective
                ray.tune.report(metrics, checkpoint=checkpoint)

    def _tune_save_checkpoint(self, checkpoint_dir: str) -> None:
        output_dir = os.path.join(checkpoint_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        self.save_model(output_dir, _internal_call=True)
        if self.args.should_save:
            self.state.stateful_callbacks["TrainerControl"] = self.control.state()
            self.state.save_to_json(os.path.join(output_dir, "trainer_state.json"))
            torch.save(self.optimizer.state_dict(), os.path.join(output_dir, "optimizer.pt"))
            torch.save(self.lr_scheduler.state_dict(), os.path.join(output_dir, "scheduler.pt"))
