"""Run by test_deepspeed_cpu.py in its own process: a real DeepSpeed engine on the CPU (gloo, one process) saves
and resumes through hftrain's functions under ZeRO-1, 2 and 3 (bf16), and the resumed engine holds the same weights
and optimizer state. Lightning runs DeepSpeed on CUDA only, so this drives the engine directly."""

from __future__ import annotations

import os
import sys

import deepspeed
import torch
from transformers import get_linear_schedule_with_warmup

from hftrain._backends.deepspeed_checkpoint import load_engine_state, save_engine_state
from tests.helpers import tiny_bert_classifier


def engine_for(stage: int):
    torch.manual_seed(0)
    model = tiny_bert_classifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    config = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1, "gradient_clipping": 1.0,
              "zero_optimization": {"stage": stage}, "bf16": {"enabled": True},
              "zero_allow_untested_optimizer": True, "zero_force_ds_cpu_optimizer": False}
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer,
                                      lr_scheduler=get_linear_schedule_with_warmup(optimizer, 1, 10), config=config)
    return engine


def fingerprint(engine) -> list[torch.Tensor]:
    """The fp32 master weights and Adam moments of this process's partition."""
    optimizer = engine.optimizer
    flat = getattr(optimizer, "single_partition_of_fp32_groups", None) or optimizer.fp32_partitioned_groups_flat
    moments = [v for state in optimizer.optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
    return [t.detach().float().clone() for t in [*flat, *moments]]


def main(out: str) -> None:
    for stage in (1, 2, 3):
        engine = engine_for(stage)
        generator = torch.Generator().manual_seed(1)
        for _ in range(3):
            ids = torch.randint(0, 50, (2, 6), generator=generator)
            engine.backward(engine(input_ids=ids, labels=torch.tensor([0, 1])).loss)
            engine.step()
        checkpoint = os.path.join(out, f"zero{stage}", "checkpoint-3")
        save_engine_state(engine, checkpoint, global_step=3)
        resumed = engine_for(stage)
        load_engine_state(resumed, checkpoint)
        before, after = fingerprint(engine), fingerprint(resumed)
        assert len(before) == len(after) > 2, (stage, len(before))
        worst = max((a - b).abs().max().item() for a, b in zip(before, after, strict=True))
        print(f"zero{stage} resumed max difference {worst}")


if __name__ == "__main__":
    main(sys.argv[1])
