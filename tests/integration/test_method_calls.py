"""The extension contract: every transformers.Trainer method a subclass may override runs as often under hftrain.

Each public method and the private ones subclasses commonly override or call is wrapped in a counter, in a subclass
of transformers.Trainer and in the same subclass of hftrain.Trainer. The same run (construction, a training with
accumulation, evaluations, checkpoints and the best model, a resumed training, evaluate, predict, save_model)
must call each method the same number of times, and end with the same numbers.
"""

from __future__ import annotations

import collections
import copy
import inspect

import pytest
import torch

from tests.helpers import accuracy, assert_same_parameters, classification_rows, tiny_bert_classifier

PRIVATE_SEAMS = (
    "_prepare_inputs", "_prepare_input", "_get_train_sampler", "_get_eval_sampler", "_remove_unused_columns",
    "_get_collator_with_removed_columns", "_set_signature_columns_if_needed", "_get_dataloader",
    "_maybe_log_save_evaluate", "_evaluate", "_determine_best_metric", "_save", "_save_checkpoint",
    "_save_rng_state", "_save_optimizer_and_scheduler", "_save_scaler", "_get_output_dir", "_load_from_checkpoint",
    "_load_best_model", "_load_rng_state", "_load_optimizer_and_scheduler", "_load_scaler", "_load_callback_state",
    "_issue_warnings_after_load", "_get_num_items_in_batch", "_clip_grad_norm", "_get_grad_norm",
    "_get_learning_rate", "_init_training_state", "_finalize_training", "_track_num_input_tokens", "_hp_search_setup",
    "_report_to_hp_search", "_finish_current_push", "_validate_args",
)


def public_methods(cls: type) -> list[str]:
    return sorted(
        name for name, value in inspect.getmembers(cls)
        if not name.startswith("_") and inspect.isfunction(inspect.getattr_static(cls, name))
    )


def counting(base: type, names: list[str]) -> type:
    """A subclass of ``base`` counting each call of ``names`` (in ``cls.calls``, a class-level Counter)."""
    calls: collections.Counter = collections.Counter()

    def wrap(name: str):
        def method(self, *args, **kwargs):
            calls[name] += 1
            return getattr(super(subclass, self), name)(*args, **kwargs)

        method.__name__ = name
        return method

    subclass = type(f"Counting{base.__name__}", (base,), {name: wrap(name) for name in names})
    subclass.calls = calls
    return subclass


def run(trainer_cls, args_cls, tmp_path, name: str):
    common = dict(report_to="none", disable_tqdm=True, per_device_train_batch_size=4, per_device_eval_batch_size=3,
                  gradient_accumulation_steps=2, learning_rate=5e-3, logging_steps=1, seed=7, eval_strategy="steps",
                  eval_steps=2, save_strategy="steps", save_steps=2, load_best_model_at_end=True,
                  metric_for_best_model="accuracy", num_train_epochs=2, include_num_input_tokens_seen=True)
    import datasets

    # a datasets.Dataset (with a column the model does not take) to train, a torch Dataset to evaluate: both ways
    # of removing unused columns run
    rows = [{**{k: v.tolist() if torch.is_tensor(v) else v for k, v in row.items()}, "text": "x"}
            for row in classification_rows(22)]
    train, evaluation = datasets.Dataset.from_list(rows), classification_rows(7, seed=1)
    args = args_cls(str(tmp_path / name / "a"), **common)
    trainer = trainer_cls(tiny_bert_classifier(dropout=0.1), args, train_dataset=train, eval_dataset=evaluation,
                          compute_metrics=accuracy)
    trainer.train()
    metrics = trainer.evaluate()
    predictions = trainer.predict(classification_rows(5, seed=2))
    trainer.save_model(str(tmp_path / name / "final"))
    resumed = trainer_cls(tiny_bert_classifier(dropout=0.1), args_cls(str(tmp_path / name / "a"), **common),
                          train_dataset=train, eval_dataset=evaluation, compute_metrics=accuracy)
    resumed.train(resume_from_checkpoint=str(tmp_path / name / "a" / "checkpoint-4"))
    return trainer, resumed, metrics, predictions


def test_every_method_runs_as_often_as_under_transformers(tmp_path):
    import transformers

    import hftrain

    names = sorted(set(public_methods(transformers.Trainer)) - {"hyperparameter_search", "push_to_hub",
                                                                "init_hf_repo", "create_model_card"})
    names += [name for name in PRIVATE_SEAMS if hasattr(transformers.Trainer, name)]
    hf_cls = counting(transformers.Trainer, names)
    ours_cls = counting(hftrain.Trainer, names)
    hf = run(hf_cls, transformers.TrainingArguments, tmp_path, "hf")
    ours = run(ours_cls, hftrain.TrainingArguments, tmp_path, "ours")
    differing = {name: (hf_cls.calls[name], ours_cls.calls[name]) for name in names
                 if hf_cls.calls[name] != ours_cls.calls[name]}
    assert differing == {}, f"(transformers, hftrain) call counts differ: {differing}"
    assert sum(ours_cls.calls.values()) > 500  # the wrappers really were called
    for seam in ("_remove_unused_columns", "_get_collator_with_removed_columns", "training_step", "_save",
                 "evaluation_loop", "_load_from_checkpoint", "_load_best_model", "get_batch_samples"):
        assert ours_cls.calls[seam] > 0, seam
    for hf_trainer, our_trainer in zip(hf[:2], ours[:2]):
        assert_same_parameters(hf_trainer.model, our_trainer.model)
    assert ours[2]["eval_accuracy"] == hf[2]["eval_accuracy"]
    torch.testing.assert_close(torch.tensor(ours[2]["eval_loss"]), torch.tensor(hf[2]["eval_loss"]))
    torch.testing.assert_close(torch.from_numpy(ours[3].predictions), torch.from_numpy(hf[3].predictions))
    assert ours[1].state.num_input_tokens_seen == hf[1].state.num_input_tokens_seen


def test_signatures_are_transformers(tmp_path):
    import transformers

    import hftrain

    for hf_cls, ours_cls in ((transformers.Trainer, hftrain.Trainer),
                             (transformers.Seq2SeqTrainer, hftrain.Seq2SeqTrainer)):
        names = public_methods(hf_cls) + [n for n in PRIVATE_SEAMS if hasattr(hf_cls, n)]
        for name in names:
            assert hasattr(ours_cls, name), f"{ours_cls.__name__}.{name} is missing"
            hf_sig, our_sig = (inspect.signature(getattr(c, name)) for c in (hf_cls, ours_cls))
            hf_params = [(p.name, p.kind, p.default) for p in hf_sig.parameters.values()]
            our_params = [(p.name, p.kind, p.default) for p in our_sig.parameters.values()]
            assert our_params == hf_params, f"{ours_cls.__name__}.{name}{our_sig} != transformers' {hf_sig}"
            hf_static = isinstance(inspect.getattr_static(hf_cls, name), staticmethod)
            assert isinstance(inspect.getattr_static(ours_cls, name), staticmethod) == hf_static, name


@pytest.mark.parametrize("method", ["_inner_training_loop", "_run_epoch", "_wrap_model", "_prepare_for_training"])
def test_an_override_hftrain_never_calls_is_refused_at_construction(tmp_path, method):
    import hftrain

    subclass = type("Custom", (hftrain.Trainer,), {method: lambda self, *a, **k: None})
    with pytest.raises(TypeError, match=f"Custom overrides `{method}`, which hftrain's Trainer never calls"):
        subclass(torch.nn.Linear(2, 2), hftrain.TrainingArguments(str(tmp_path), report_to="none"))


def test_the_refused_methods_exist_in_transformers():
    import transformers

    from hftrain._loop.overrides import NOT_CALLED, NOT_CALLED_BY_TRANSFORMERS

    for name in (*NOT_CALLED, *NOT_CALLED_BY_TRANSFORMERS):
        assert hasattr(transformers.Trainer, name), name
