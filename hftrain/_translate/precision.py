"""HF's precision flags (``bf16``, ``fp16``) or Lightning's ``precision`` field → the Lightning precision to run."""

from __future__ import annotations

from typing import Any

from hftrain._translate.env import Env


def precision(args: Any, env: Env) -> Any:
    """``precision`` as given (a Lightning string or plugin), else HF's flags as a Lightning precision string.

    ``fp16`` on a machine without CUDA trains in fp32, as HF does (Lightning would silently switch to bf16).
    """
    if getattr(args, "precision", None) is not None:
        return args.precision
    if args.bf16:
        return "bf16-mixed"
    if args.fp16:
        return "16-mixed" if env.has_cuda and not args.use_cpu else "32-true"
    return "32-true"
