"""Optimizer groups, optim names, schedulers and the seeded data order, against transformers/accelerate."""

from __future__ import annotations

import pytest
import torch

from hftrain import TrainingArguments
from hftrain._loop.data import AccumulationWindows, SeededRandomSampler, count_label_items
from hftrain._loop.optim import create_optimizer, create_scheduler, decay_parameter_names, optimizer_cls_and_kwargs
from tests.helpers import tiny_llama


def test_decay_groups_match_transformers():
    import transformers

    model = tiny_llama()
    hf = transformers.Trainer.get_decay_parameter_names(None, model)
    assert decay_parameter_names(model) == hf
    assert "model.embed_tokens.weight" in hf and not any("norm" in n for n in hf)


@pytest.mark.parametrize(
    ("optim", "optim_args", "cls_name", "extra"),
    [
        ("adamw_torch_fused", None, "AdamW", {"fused": True, "betas": (0.9, 0.999), "eps": 1e-8}),
        ("adamw_torch", None, "AdamW", {"betas": (0.9, 0.999), "eps": 1e-8}),
        ("sgd", "momentum=0.9,nesterov=True", "SGD", {"momentum": 0.9, "nesterov": True}),
        ("adagrad", "lr_decay=0.1", "Adagrad", {"lr_decay": 0.1}),
        ("rmsprop", "alpha=0.9", "RMSprop", {"alpha": 0.9}),
        ("adafactor", None, "Adafactor", {"scale_parameter": False, "relative_step": False}),
    ],
)
def test_optimizer_table_matches_transformers(optim, optim_args, cls_name, extra):
    import transformers

    ours_cls, ours_kwargs = optimizer_cls_and_kwargs(TrainingArguments("o", optim=optim, optim_args=optim_args))
    hf_cls, hf_kwargs = transformers.Trainer.get_optimizer_cls_and_kwargs(
        transformers.TrainingArguments("o", optim=optim, optim_args=optim_args)
    )
    assert ours_cls is hf_cls and ours_cls.__name__ == cls_name
    assert ours_kwargs == hf_kwargs
    assert extra.items() <= ours_kwargs.items()


def test_package_gated_optimizer_names_the_package():
    with pytest.raises(ValueError, match="bitsandbytes"):
        optimizer_cls_and_kwargs(TrainingArguments("o", optim="adamw_bnb_8bit"))


@pytest.mark.parametrize("kind", ["linear", "cosine", "cosine_with_restarts", "polynomial", "constant_with_warmup",
                                  "inverse_sqrt"])
def test_scheduler_lrs_match_transformers(kind):
    import transformers

    model = torch.nn.Linear(2, 2)
    args = TrainingArguments("o", lr_scheduler_type=kind, warmup_steps=0.2, learning_rate=1e-2)
    opt = create_optimizer(model, args)
    ours = create_scheduler(opt, args, 10)
    hf_opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1e-2)
    hf = transformers.get_scheduler(kind, hf_opt, num_warmup_steps=2, num_training_steps=10)
    for _ in range(10):
        assert ours.get_last_lr()[0] == pytest.approx(hf.get_last_lr()[0])
        opt.step(), ours.step(), hf_opt.step(), hf.step()


def test_seeded_sampler_matches_accelerate_order():
    from accelerate.data_loader import SeedableRandomSampler

    data = list(range(23))
    ours = SeededRandomSampler(data, seed=42)
    theirs = SeedableRandomSampler(data, data_seed=42)
    for epoch in range(3):
        ours.set_epoch(epoch), theirs.set_epoch(epoch)
        assert list(ours) == list(theirs)


def test_windows_count_items_over_the_whole_window():
    batches = [{"labels": torch.tensor([[1, 2, -100]])}, {"labels": torch.tensor([[3, -100, -100]])},
               {"labels": torch.tensor([[4, 5, 6]])}]
    windows = AccumulationWindows(batches, 2, lambda w: count_label_items(w, shift_labels=False))
    seen = []
    for batch in windows:
        seen.append(windows.windows.popleft())
    assert [(int(w.num_items_in_batch), w.window_size, w.share) for w in seen] == [(3, 2, 1), (3, 2, 1), (3, 1, 1)]
    assert count_label_items(batches[:1], shift_labels=True) == 1  # labels[..., 1:] for causal LMs


def test_sharded_batches_are_slices_of_the_single_process_batches():
    from hftrain._backends.ddp import ShardedBatchSampler

    order = list(range(11))
    single = [order[i : i + 4] for i in range(0, 11, 4)]
    ranks = [list(ShardedBatchSampler(order, 2, 2, r, drop_last=False, pad_empty=True)) for r in (0, 1)]
    for step, batch in enumerate(single):
        assert sorted(ranks[0][step] + ranks[1][step]) == batch or len(batch) < 2
    # the last global batch has 3 rows: 2 on rank 0, 1 on rank 1, with their shares of the loss
    sampler = ShardedBatchSampler(order, 2, 2, 1, drop_last=False, pad_empty=True)
    list(sampler)
    assert [(s.rows, s.global_rows) for s in sampler.slices] == [(2, 4), (2, 4), (1, 3)]
    # a short batch smaller than the world: the empty rank trains on a stand-in row with weight 0
    lonely = ShardedBatchSampler(list(range(5)), 2, 2, 1, drop_last=False, pad_empty=True)
    assert list(lonely)[-1] == [4] and lonely.slices[-1].rows == 0
