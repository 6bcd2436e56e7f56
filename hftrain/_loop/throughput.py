"""Training throughput in every training log, beyond transformers: tokens per second and model-FLOPs utilisation.

transformers logs ``train_tokens_per_second`` averaged from the start of training, evaluations and checkpoints
included. hftrain adds the rate of the last logging interval, training time only (the clock stops while the Trainer
evaluates or saves), as Lightning's ``ThroughputMonitor`` and Composer's ``SpeedMonitor`` measure it:

- ``tokens_per_second``: input tokens of every process (``include_num_input_tokens_seen``'s count) per second;
- ``tokens_per_second_per_device``: the same, divided by the number of processes;
- ``mfu``: model-FLOPs utilisation, a fraction: the interval's FLOPs (transformers' estimate, ``6 × tokens ×
  non-embedding parameters``, ``floating_point_ops``) per second over the peak of every device. The peak is
  ``peak_flops`` when given (per device, FLOP/s), else the device's known peak for the run's precision (Lightning's
  ``get_available_flops``: NVIDIA data-centre and RTX GPUs, TPUs; none for a CPU, which then logs no ``mfu``).

The counts are the ones the Trainer keeps anyway (``state.num_input_tokens_seen``, ``state.total_flos``, both summed
over processes at each log), so measuring adds no synchronisation.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator


class ThroughputMeter:
    """Rates between two training logs, over training time only.

    Example:
        >>> ticks = iter([0.0, 2.0, 3.0, 4.0])
        >>> meter = ThroughputMeter(world_size=2, peak_flops=1e3, clock=lambda: next(ticks))
        >>> meter.start(tokens=0, flos=0.0)                 # t = 0
        >>> with meter.paused():                            # an evaluation from t = 2 to t = 3
        ...     pass
        >>> meter.measure(tokens=600, flos=3000.0)          # t = 4: 3 s of training
        {'tokens_per_second': 200.0, 'tokens_per_second_per_device': 100.0, 'mfu': 0.5}
    """

    def __init__(self, world_size: int = 1, peak_flops: float | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.world_size = world_size
        self.peak_flops = peak_flops  # per device
        self.clock = clock
        self._tokens, self._flos, self._since, self._paused = 0, 0.0, 0.0, 0.0

    def start(self, tokens: int, flos: float) -> None:
        """Begin an interval at these totals."""
        self._tokens, self._flos, self._since, self._paused = tokens, flos, self.clock(), 0.0

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Time inside does not count (evaluation, checkpointing)."""
        begin = self.clock()
        try:
            yield
        finally:
            self._paused += self.clock() - begin

    def measure(self, tokens: int, flos: float, count_tokens: bool = True) -> dict[str, float]:
        """The rates since the interval began (``tokens`` and ``flos`` are totals over every process); starts the
        next interval."""
        now = self.clock()
        elapsed = now - self._since - self._paused
        rates: dict[str, float] = {}
        if elapsed > 0:
            if count_tokens:
                rates["tokens_per_second"] = round((tokens - self._tokens) / elapsed, 3)
                rates["tokens_per_second_per_device"] = round((tokens - self._tokens) / elapsed / self.world_size, 3)
            if self.peak_flops and flos > self._flos:
                mfu = (flos - self._flos) / elapsed / (self.peak_flops * self.world_size)
                rates["mfu"] = float(f"{mfu:.4g}")  # four significant digits: a small model's MFU is tiny
        self._tokens, self._flos, self._since, self._paused = tokens, flos, now, 0.0
        return rates


def device_peak_flops(device: "torch.device", precision_plugin: object | None) -> float | None:
    """The device's known peak FLOP/s for the precision the run computes in (None where Lightning does not know it)."""
    import torch
    from lightning.fabric.utilities.throughput import get_available_flops

    from hftrain._lightning_compat import compute_dtype

    if device.type not in ("cuda", "xla"):
        return None
    if device.type == "xla" and os.environ.get("PJRT_DEVICE", "TPU").upper() != "TPU":
        return None  # torch_xla on a CPU or GPU: Lightning would ask the TPU metadata server for its version
    dtype = compute_dtype(precision_plugin) if precision_plugin is not None else torch.float32
    flops = get_available_flops(device, dtype)
    return float(flops) if flops else None
