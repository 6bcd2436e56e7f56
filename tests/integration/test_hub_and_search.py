"""The model card, the Hub (with huggingface_hub's API patched: no network here) and hyperparameter search's checks."""

from __future__ import annotations

import os
import types

import pytest

from tests.helpers import accuracy, classification_rows, tiny_bert_classifier


def _train(trainer_cls, args_cls, output_dir, **kwargs):
    args = args_cls(output_dir, report_to="none", disable_tqdm=True, max_steps=4, eval_strategy="steps", eval_steps=2,
                    logging_steps=2, per_device_train_batch_size=4, save_strategy="no", **kwargs)
    trainer = trainer_cls(tiny_bert_classifier(), args, train_dataset=classification_rows(20),
                          eval_dataset=classification_rows(6, seed=1), compute_metrics=accuracy)
    trainer.train()
    return trainer


def test_model_card_is_transformers(tmp_path):
    import transformers

    import hftrain

    cards = {}
    for name, trainer_cls, args_cls in (("hf", transformers.Trainer, transformers.TrainingArguments),
                                        ("ours", hftrain.Trainer, hftrain.TrainingArguments)):
        trainer = _train(trainer_cls, args_cls, str(tmp_path / name / "run"))
        trainer.create_model_card(model_name="tiny", tasks="text-classification", tags=["demo"])
        cards[name] = (tmp_path / name / "run" / "README.md").read_text()
    assert cards["ours"] == cards["hf"]
    assert "| Training Loss | Epoch | Step | Validation Loss | Accuracy |" in cards["ours"]


class FakeHub:
    """What push_to_hub uses of huggingface_hub's HfApi, recording the calls."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, token=None, private=None, exist_ok=False):
        self.calls.append(("create_repo", repo_id, private))
        return types.SimpleNamespace(repo_id=f"user/{repo_id}")

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs["repo_id"], sorted(os.listdir(kwargs["folder_path"])),
                           kwargs["commit_message"], kwargs.get("ignore_patterns")))
        return "commit-info"


def test_push_to_hub_saves_writes_the_card_and_uploads(tmp_path, monkeypatch):
    from hftrain import Trainer, TrainingArguments
    from hftrain._loop import hub

    fake = FakeHub()
    monkeypatch.setattr(hub, "hf_api", lambda: fake)
    trainer = _train(Trainer, TrainingArguments, str(tmp_path / "tiny-bert"), push_to_hub=True,
                     hub_private_repo=True)
    assert fake.calls[0] == ("create_repo", "tiny-bert", True) and trainer.hub_model_id == "user/tiny-bert"
    assert trainer.push_to_hub(commit_message="done") == "commit-info"
    _, repo, files, message, ignored = fake.calls[-1]
    assert (repo, message, ignored) == ("user/tiny-bert", "done", ["_*", "checkpoint-*"])
    assert {"README.md", "model.safetensors", "config.json", "training_args.bin"} <= set(files)


def test_pushing_offline_says_what_to_do(tmp_path, monkeypatch):
    from hftrain import Trainer, TrainingArguments

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="push_to_hub / init_hf_repo needs the Hugging Face Hub"):
        Trainer(tiny_bert_classifier(), TrainingArguments(str(tmp_path), report_to="none", push_to_hub=True))


def test_hyperparameter_search_needs_model_init(tmp_path):
    from hftrain import Trainer, TrainingArguments

    trainer = Trainer(tiny_bert_classifier(), TrainingArguments(str(tmp_path), report_to="none"))
    with pytest.raises(RuntimeError, match="you need to pass your model through a model_init function"):
        trainer.hyperparameter_search(backend="optuna")
    with pytest.raises(RuntimeError, match="ray"):  # transformers' backend check: Ray Tune is not installed here
        trainer.hyperparameter_search(backend="ray")



def test_hyperparameter_search_runs_the_same_trials_as_transformers(tmp_path):
    import optuna
    import transformers

    import hftrain

    results = {}
    for name, trainer_cls, args_cls in (("hf", transformers.Trainer, transformers.TrainingArguments),
                                        ("ours", hftrain.Trainer, hftrain.TrainingArguments)):
        args = args_cls(str(tmp_path / name), report_to="none", disable_tqdm=True, max_steps=3, eval_strategy="steps",
                        eval_steps=3, per_device_train_batch_size=4, save_strategy="no", logging_steps=1)
        trainer = trainer_cls(model_init=lambda: tiny_bert_classifier(), args=args,
                              train_dataset=classification_rows(16), eval_dataset=classification_rows(6, seed=1))
        objectives = []

        def hp_space(trial):
            return {"learning_rate": trial.suggest_float("learning_rate", 1e-3, 1e-1, log=True)}

        def compute_objective(metrics):
            objectives.append(metrics["eval_loss"])
            return metrics["eval_loss"]

        best = trainer.hyperparameter_search(hp_space=hp_space, compute_objective=compute_objective, n_trials=3,
                                             direction="minimize", backend="optuna",
                                             sampler=optuna.samplers.TPESampler(seed=0))
        results[name] = (best, objectives)
    (hf_best, hf_objectives), (best, objectives) = results["hf"], results["ours"]
    assert best.run_id == hf_best.run_id and best.hyperparameters == hf_best.hyperparameters
    assert objectives == pytest.approx(hf_objectives) and len(objectives) == 3
    assert best.objective == pytest.approx(hf_best.objective)


class RecordingHub:
    """huggingface_hub's HfApi as both Trainers use it, recording what each upload would send."""

    def __init__(self):
        self.uploads = []

    def create_repo(self, repo_id, token=None, private=None, exist_ok=False):
        return types.SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, **kwargs):
        from concurrent.futures import Future

        files = set(os.listdir(kwargs["folder_path"])) & {"model.safetensors", "config.json", "training_args.bin",
                                                          "optimizer.pt", "trainer_state.json"}
        self.uploads.append({**{k: kwargs.get(k) for k in ("repo_id", "path_in_repo", "token", "revision",
                                                         "commit_message", "run_as_future")}, "files": sorted(files)})
        done = Future()
        done.set_result("commit-info")
        return done


@pytest.mark.parametrize("strategy", ["every_save", "checkpoint", "all_checkpoints", "end"])
def test_hub_strategy_token_and_revision_upload_what_transformers_uploads(tmp_path, monkeypatch, strategy):
    import transformers

    import hftrain
    from hftrain._loop import hub

    uploads = {}
    for name, trainer_cls, args_cls in (("hf", transformers.Trainer, transformers.TrainingArguments),
                                        ("ours", hftrain.Trainer, hftrain.TrainingArguments)):
        fake = RecordingHub()
        monkeypatch.setattr(transformers.trainer, "hf_api", lambda: fake)
        monkeypatch.setattr(hub, "hf_api", lambda: fake)
        args = args_cls(str(tmp_path / name / "run"), report_to="none", disable_tqdm=True, max_steps=4, save_steps=2,
                        per_device_train_batch_size=4, push_to_hub=True, hub_model_id="user/run", hub_token="tok",
                        hub_revision="dev", hub_strategy=strategy)
        trainer_cls(tiny_bert_classifier(), args, train_dataset=classification_rows(16)).train()
        uploads[name] = fake.uploads
    assert uploads["ours"] == uploads["hf"]
    assert all(u["token"] == "tok" and u["revision"] == "dev" for u in uploads["ours"])
    expected = {"every_save": 2, "checkpoint": 4, "all_checkpoints": 4, "end": 0}[strategy]
    assert len(uploads["ours"]) == expected


@pytest.mark.parametrize("always_push", [False, True])
def test_hub_always_push_pushes_while_a_push_is_in_progress(tmp_path, monkeypatch, always_push):
    from concurrent.futures import Future

    from transformers.utils.hub import PushInProgress

    from hftrain import Trainer, TrainingArguments
    from hftrain._loop import hub

    fake = RecordingHub()
    monkeypatch.setattr(hub, "hf_api", lambda: fake)
    args = TrainingArguments(str(tmp_path / "run"), report_to="none", push_to_hub=True, hub_model_id="user/run",
                             hub_always_push=always_push)
    trainer = Trainer(tiny_bert_classifier(), args)
    trainer.push_in_progress = PushInProgress([Future()])  # an upload that has not finished
    checkpoint = tmp_path / "run" / "checkpoint-1"
    checkpoint.mkdir(parents=True)
    trainer._push_from_checkpoint(str(checkpoint))
    assert len(fake.uploads) == (1 if always_push else 0)
