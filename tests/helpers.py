"""Tiny models, datasets and a side-by-side runner for transformers.Trainer and hftrain.Trainer."""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

VOCAB = 64
NOTEBOOK_EXECUTOR = Path(__file__).resolve().parents[1] / "scripts" / "execute_notebooks.py"


def notebook_executor() -> Any:
    """scripts/execute_notebooks.py as a module: the kernel environment and the code hash the committed notebooks
    were executed with."""
    spec = importlib.util.spec_from_file_location("execute_notebooks", NOTEBOOK_EXECUTOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ListDataset(Dataset):
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


def classification_rows(n: int, seq_len: int = 8, num_labels: int = 3, seed: int = 0) -> ListDataset:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, seq_len), generator=g)
    labels = (ids[:, 0] % num_labels).tolist()  # learnable: the first token decides the class
    return ListDataset([
        {"input_ids": ids[i], "attention_mask": torch.ones(seq_len, dtype=torch.long), "labels": labels[i]}
        for i in range(n)
    ])


def lm_rows(n: int, min_len: int = 3, max_len: int = 9, seed: int = 0) -> ListDataset:
    """Variable-length rows (padded by `pad_lm_batch`), so token counts differ between micro-batches."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        length = int(torch.randint(min_len, max_len + 1, (1,), generator=g))
        ids = torch.randint(1, VOCAB, (length,), generator=g)
        rows.append({"input_ids": ids})
    return ListDataset(rows)


def pad_lm_batch(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    width = max(len(f["input_ids"]) for f in features)
    ids = torch.zeros(len(features), width, dtype=torch.long)
    mask = torch.zeros(len(features), width, dtype=torch.long)
    for i, f in enumerate(features):
        ids[i, : len(f["input_ids"])] = f["input_ids"]
        mask[i, : len(f["input_ids"])] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def tiny_bert_classifier(dropout: float = 0.0, num_labels: int = 3) -> torch.nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=32, num_labels=num_labels, hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    torch.manual_seed(1)
    return BertForSequenceClassification(config)


def tiny_llama() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=32,
    )
    torch.manual_seed(1)
    return LlamaForCausalLM(config)


def tiny_gpt2(dropout: float = 0.1) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=VOCAB, n_positions=32, n_embd=16, n_layer=2, n_head=2,
        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
    )
    torch.manual_seed(1)
    return GPT2LMHeadModel(config)


def accuracy(eval_pred: Any) -> dict[str, float]:
    logits, labels = eval_pred
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


# tiny models whose loss is a plain mean although their forward takes **kwargs (their loss ignores
# num_items_in_batch): transformers 5.24 then skips the division by gradient_accumulation_steps (transformers #47688)
MEAN_LOSS_MODELS = ("BertForSequenceClassification", "T5ForConditionalGeneration")


def for_transformers(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` for transformers.Trainer in a side-by-side run: a mean-loss model says
    ``accepts_loss_kwargs = False``, so that transformers divides its loss by the accumulation steps, as hftrain
    does on its own (the README's "differs" section)."""
    model = copy.deepcopy(model)
    if type(model).__name__ in MEAN_LOSS_MODELS:
        model.accepts_loss_kwargs = False
    return model


def run_both(
    model: torch.nn.Module, args_kwargs: dict[str, Any], output_root: str, **trainer_kwargs: Any
) -> dict[str, Any]:
    """Train a copy of ``model`` with transformers.Trainer and one with hftrain.Trainer; return both runs."""
    import transformers

    import hftrain

    runs = {}
    for name, trainer_cls, args_cls in (
        ("hf", transformers.Trainer, transformers.TrainingArguments),
        ("ours", hftrain.Trainer, hftrain.TrainingArguments),
    ):
        args = args_cls(output_dir=f"{output_root}/{name}", report_to="none", disable_tqdm=True, **args_kwargs)
        copied = for_transformers(model) if name == "hf" else copy.deepcopy(model)
        trainer = trainer_cls(model=copied, args=args, **trainer_kwargs)
        output = trainer.train()
        runs[name] = {"trainer": trainer, "output": output, "history": trainer.state.log_history}
    return runs


def step_logs(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [h for h in history if "loss" in h]


def assert_histories_match(hf: list[dict], ours: list[dict], keys: tuple[str, ...], rtol: float = 1e-4) -> None:
    assert [h["step"] for h in hf] == [h["step"] for h in ours], (hf, ours)
    for a, b in zip(hf, ours):
        for key in keys:
            assert key in b, (key, b)
            torch.testing.assert_close(
                torch.tensor(float(b[key]), dtype=torch.float64), torch.tensor(float(a[key]), dtype=torch.float64),
                rtol=rtol, atol=1e-7, msg=lambda m, k=key, s=a["step"]: f"step {s} {k}: {m}",
            )


def assert_same_parameters(a: torch.nn.Module, b: torch.nn.Module, rtol: float = 1e-4, atol: float = 1e-6) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sb[key].cpu(), sa[key].cpu(), rtol=rtol, atol=atol, msg=lambda m, k=key: f"{k}: {m}")


ComputeMetrics = Callable[[Any], dict[str, float]]


def word_tokenizer(words: int = 60):
    """A small word-level fast tokenizer built in memory (no Hub): <pad>=0, </s>=1, <unk>=2, w0..w{n-1}."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{f"w{i}": i + 3 for i in range(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def tokenized_rows(n: int, seed: int = 0, labels: bool = True) -> Any:
    """A ``datasets.Dataset`` of sentences of 2–20 words through :func:`word_tokenizer` (input_ids, attention_mask),
    a learnable ``label`` and a ``text`` column (``remove_unused_columns`` drops it), seen through an indices mapping
    as after ``train_test_split``: what ``DataCollatorWithPadding`` pads in a fine-tuning script."""
    import datasets

    rng = np.random.default_rng(seed)
    tok = word_tokenizer()
    texts = [" ".join(f"w{i}" for i in rng.integers(0, 60, int(rng.integers(2, 21)))) for _ in range(n + 4)]
    dataset = datasets.Dataset.from_dict({"text": texts}).map(lambda batch: tok(batch["text"]), batched=True)
    if labels:
        dataset = dataset.add_column("label", [int(ids[0]) % 3 for ids in dataset["input_ids"]])
    return dataset.select(rng.permutation(n + 4)[:n].tolist())


def tiny_t5(vocab: int = 63) -> torch.nn.Module:
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=vocab, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_decoder_layers=2, num_heads=2,
                      dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(1)
    return T5ForConditionalGeneration(config)


def copy_task(tokenizer, n: int, seed: int = 0) -> ListDataset:
    """text → the same words reversed: learnable by a tiny seq2seq model; variable lengths."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        length = int(torch.randint(2, 7, (1,), generator=g))
        words = [f"w{int(i)}" for i in torch.randint(0, 20, (length,), generator=g)]
        source = tokenizer(" ".join(words))
        target = tokenizer(" ".join(reversed(words)))
        rows.append({"input_ids": source["input_ids"], "attention_mask": source["attention_mask"],
                     "labels": target["input_ids"]})
    return ListDataset(rows)
