"""Optimizer groups, optim names, schedulers and the seeded data order, against transformers/accelerate."""

from __future__ import annotations

import pytest
import torch

from hftrain import TrainingArguments
from hftrain._loop.data import SeededRandomSampler, skip_first_batches
from hftrain._loop.loss import scale_loss
from hftrain._loop.train import EpochIterator
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


def test_get_batch_samples_counts_the_window_as_transformers(tmp_path):
    import transformers

    from hftrain import Trainer

    batches = [{"input_ids": torch.ones(1, 3, dtype=torch.long), "labels": torch.tensor([[1, 2, -100]])},
               {"input_ids": torch.ones(1, 3, dtype=torch.long), "labels": torch.tensor([[3, -100, -100]])},
               {"input_ids": torch.ones(1, 3, dtype=torch.long), "labels": torch.tensor([[4, 5, 6]])}]
    windows = {}
    for name, cls, args_cls in (("hf", transformers.Trainer, transformers.TrainingArguments),
                                ("ours", Trainer, TrainingArguments)):
        trainer = cls(tiny_llama(), args_cls(str(tmp_path / name), report_to="none"))
        iterator = iter(batches)
        windows[name] = [trainer.get_batch_samples(iterator, 2, torch.device("cpu")) for _ in range(2)]
    for (hf_batches, hf_items), (our_batches, our_items) in zip(windows["hf"], windows["ours"]):
        assert our_batches == hf_batches and int(our_items) == int(hf_items)
    # a causal LM counts labels[..., 1:]: 1 + 0, then 2
    assert [int(items) for _, items in windows["ours"]] == [1, 2]


def test_epoch_iterator_collates_one_batch_ahead_as_accelerate():
    collated = []

    def collate(rows):
        collated.append(rows)
        return {"x": torch.tensor(rows)}

    loader = torch.utils.data.DataLoader(list(range(6)), batch_size=2, collate_fn=collate)
    iterator = EpochIterator(loader, to_device=lambda batch: batch)
    first = next(iterator)
    assert first["x"].tolist() == [0, 1] and len(collated) == 2  # the next batch is collated already
    assert [b["x"].tolist() for b in iterator] == [[2, 3], [4, 5]]
    resumed = EpochIterator(skip_first_batches(loader, 2), to_device=lambda batch: batch)
    assert [b["x"].tolist() for b in resumed] == [[4, 5]]


@pytest.mark.parametrize(
    ("scaled", "share", "normalises", "expected"),
    [
        (False, 1.0, False, 0.5),  # a mean divided by the window's 4 micro-batches
        (False, 0.5, False, 0.25),  # ... and weighted by this process's half share of the global batch
        (True, 1.0, True, 2.0),  # normalised by num_items_in_batch already
        (True, 0.5, True, 2.0),  # ... over every process: no share
        (True, 0.5, False, 1.0),  # a mean that ignored num_items_in_batch: weighted like a mean
        (True, 0.0, True, 0.0),  # a stand-in row counts for nothing
    ],
)
def test_scale_loss(scaled, share, normalises, expected):
    loss = scale_loss(torch.tensor(2.0), scaled_for_ga=scaled, accumulation_steps=4, share=share,
                      normalises_by_num_items=normalises)
    assert float(loss) == expected


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


def test_a_resumed_sharded_epoch_keeps_each_batch_with_its_own_share():
    from hftrain._backends.ddp import ShardedBatchSampler

    sampler = ShardedBatchSampler(list(range(11)), 2, 2, 1, drop_last=False, pad_empty=True)
    loader = torch.utils.data.DataLoader(list(range(11)), batch_sampler=sampler)
    resumed = skip_first_batches(loader, 2)  # the batches of 4 rows are skipped; the last one has 3 rows
    assert len(resumed) == 1
    iterator = EpochIterator(resumed, to_device=lambda batch: batch)
    (batch,) = list(iterator)
    # rank 1 holds 1 of the batch's 3 rows (world size 1 here: the share is rows / global rows), not 2 of 4
    assert batch.tolist() == [10] and iterator.share_of(batch) == pytest.approx(1 / 3)
    assert not sampler.slices  # every record consumed: none is left for the next epoch


@pytest.mark.parametrize("optim", ["adamw_8bit", "rmsprop_bnb_8bit"])
def test_bitsandbytes_8bit_optimizers_keep_the_embeddings_in_32_bits_as_transformers(tmp_path, optim):
    pytest.importorskip("bitsandbytes")  # in the dev extra (galore-torch needs it)
    from hftrain import Trainer, TrainingArguments
    from tests.helpers import tiny_bert_classifier

    model = tiny_bert_classifier()
    trainer = Trainer(model, TrainingArguments(str(tmp_path), report_to="none", optim=optim))
    overrides = trainer.create_optimizer().mng.module_weight_config_triple
    embeddings = {id(m) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    assert {id(module) for module, name, config in overrides if name == "weight" and config == {"optim_bits": 32}} \
        >= embeddings and embeddings
