"""HF callbacks see what they would see under transformers.Trainer: same events, order, state and log keys."""

from __future__ import annotations

import copy

import pytest
import transformers

import hftrain
from tests.helpers import accuracy, classification_rows, tiny_bert_classifier

pytestmark = pytest.mark.integration

EVENTS = [
    "on_init_end", "on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_step_begin",
    "on_substep_end", "on_pre_optimizer_step", "on_optimizer_step", "on_step_end", "on_evaluate", "on_predict",
    "on_save", "on_log", "on_prediction_step",
]


def recorder(base: type) -> type:
    """A callback class (subclassing `base`) that records every event with the state it saw."""

    def make(name):
        def handler(self, args, state, control, **kwargs):
            logs = kwargs.get("logs") or kwargs.get("metrics") or {}
            self.seen.append((name, state.global_step, round(state.epoch or 0, 4), tuple(sorted(logs))))
            if name == "on_step_end" and state.global_step == 1:
                control.should_log = True  # a callback may ask for a log at any step
            assert kwargs["model"] is not None and "train_dataloader" in kwargs
        return handler

    namespace = {name: make(name) for name in EVENTS}
    namespace["__init__"] = lambda self: setattr(self, "seen", [])
    return type("Recorder", (base,), namespace)


def _run(trainer_cls, args_cls, callback_base, tmp_path, name):
    rec = recorder(callback_base)()
    early = (transformers if callback_base is transformers.TrainerCallback else hftrain).EarlyStoppingCallback(
        early_stopping_patience=1, early_stopping_threshold=1.0
    )
    args = args_cls(
        output_dir=str(tmp_path / name), per_device_train_batch_size=4, gradient_accumulation_steps=2,
        num_train_epochs=3, learning_rate=1e-3, logging_steps=2, eval_strategy="epoch", save_strategy="epoch",
        load_best_model_at_end=True, metric_for_best_model="accuracy", report_to="none", disable_tqdm=True,
        per_device_eval_batch_size=4, seed=3,
    )
    trainer = trainer_cls(
        model=copy.deepcopy(tiny_bert_classifier()), args=args, train_dataset=classification_rows(20),
        eval_dataset=classification_rows(8, seed=1), compute_metrics=accuracy, callbacks=[rec, early],
    )
    trainer.train()
    trainer.predict(classification_rows(4, seed=2))
    return rec.seen, trainer


def test_event_sequence_matches_transformers(tmp_path):
    hf_seen, hf_trainer = _run(transformers.Trainer, transformers.TrainingArguments, transformers.TrainerCallback,
                               tmp_path, "hf")
    our_seen, our_trainer = _run(hftrain.Trainer, hftrain.TrainingArguments, hftrain.TrainerCallback,
                                 tmp_path, "ours")
    # early stopping with a threshold no improvement can beat stops after the second evaluation
    assert our_trainer.state.global_step == hf_trainer.state.global_step < 9
    assert our_seen == hf_seen


def test_transformers_callbacks_run_unchanged_on_hftrain(tmp_path):
    """Callbacks written against transformers' classes (what a ported script has) see the same sequence."""
    our_seen, _ = _run(hftrain.Trainer, hftrain.TrainingArguments, transformers.TrainerCallback, tmp_path, "ours")
    hf_seen, _ = _run(transformers.Trainer, transformers.TrainingArguments, transformers.TrainerCallback,
                      tmp_path, "hf")
    assert our_seen == hf_seen
