"""Lightning callbacks and loggers drop straight into `callbacks=`, next to HF callbacks."""

from __future__ import annotations

import os

import pytest
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import (
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    ModelSummary,
    RichProgressBar,
    StochasticWeightAveraging,
)
from lightning.pytorch.loggers import CSVLogger

from hftrain import Trainer, TrainingArguments
from hftrain.trainer_callback import ProgressCallback
from tests.helpers import accuracy, classification_rows, tiny_bert_classifier

pytestmark = pytest.mark.integration


def _trainer(tmp_path, callbacks, **kwargs):
    args = TrainingArguments(
        str(tmp_path / "out"), **{**dict(per_device_train_batch_size=4, num_train_epochs=3, learning_rate=1e-3,
                                         logging_steps=1, eval_strategy="epoch", save_strategy="no",
                                         report_to="none", disable_tqdm=True), **kwargs}
    )
    return Trainer(tiny_bert_classifier(), args, train_dataset=classification_rows(16),
                   eval_dataset=classification_rows(8, seed=1), compute_metrics=accuracy, callbacks=callbacks)


def test_model_checkpoint_sees_mid_epoch_evaluations(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), monitor="eval_loss", mode="min", save_top_k=-1)
    trainer = _trainer(tmp_path, [checkpoint], eval_strategy="steps", eval_steps=1, num_train_epochs=1)
    trainer.train()
    assert len(os.listdir(tmp_path / "ckpt")) == 4  # one per evaluation, not one per epoch


def test_model_checkpoint_and_early_stopping_monitor_hf_metric_names(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), monitor="eval_loss", mode="min", save_top_k=1)
    stop = EarlyStopping(monitor="eval_accuracy", mode="max", patience=0, min_delta=1.0)  # stops at the 2nd eval
    trainer = _trainer(tmp_path, [checkpoint, stop])
    trainer.train()
    assert trainer.state.global_step == 8  # 2 of the 3 epochs
    assert checkpoint.best_model_path.endswith(".ckpt") and os.path.isfile(checkpoint.best_model_path)
    assert float(checkpoint.best_model_score) == pytest.approx(
        min(h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h)
    )


def test_learning_rate_monitor_logger_swa_summary_and_own_callback(tmp_path):
    seen = []

    class Mine(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append(trainer.global_step)

    logger = CSVLogger(str(tmp_path / "csv"), name="run", version=0)
    trainer = _trainer(tmp_path, [LearningRateMonitor(logging_interval="step"), logger,
                                  StochasticWeightAveraging(swa_lrs=1e-3, swa_epoch_start=2), ModelSummary(), Mine()])
    trainer.train()
    assert seen == list(range(1, 13))
    metrics = (tmp_path / "csv" / "run" / "version_0" / "metrics.csv").read_text()
    assert "lr-AdamW" in metrics and "train/loss" in metrics and "eval/loss" in metrics


def test_a_lightning_progress_bar_replaces_hf_progress(tmp_path):
    pytest.importorskip("rich")
    trainer = _trainer(tmp_path, [RichProgressBar()], disable_tqdm=False, num_train_epochs=1)
    assert not any(isinstance(cb, ProgressCallback) for cb in trainer.callback_handler.callbacks)
    trainer.train()
    assert trainer.lightning_trainer.progress_bar_callback is not None


def test_report_to_tensorboard_writes_hf_names_at_hf_steps(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = _trainer(tmp_path, [], report_to="tensorboard", run_name="run1", num_train_epochs=1)
    trainer.train()
    run_dir = tmp_path / "out" / "runs" / "run1"
    events = EventAccumulator(str(run_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/learning_rate", "train/grad_norm", "eval/loss", "eval/accuracy"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(losses)


def test_report_to_mlflow_writes_a_local_store(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    trainer = _trainer(tmp_path, [], report_to="mlflow", run_name="run1", num_train_epochs=1)
    trainer.train()
    client = MlflowClient(tracking_uri=(tmp_path / "out" / "mlruns").resolve().as_uri())  # a file store
    (experiment,) = [e for e in client.search_experiments() if e.name == "huggingface"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "run1"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [1, 2, 3, 4]
    assert "eval/accuracy" in run.data.metrics


def test_unknown_or_missing_logger_packages_are_clear_errors(tmp_path, monkeypatch):
    from hftrain._loop import loggers

    with pytest.raises(ValueError, match="comet_ml.*not supported by hftrain yet"):
        loggers.build_loggers(["comet_ml"], str(tmp_path))
    monkeypatch.setattr(loggers.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match="pip install wandb"):
        loggers.build_loggers(["wandb"], str(tmp_path))
