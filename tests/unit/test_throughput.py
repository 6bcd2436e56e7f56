"""The training-log rates (hftrain._loop.throughput): tokens per second and MFU over training time only."""

from __future__ import annotations

import doctest

import pytest
import torch

from hftrain._loop import throughput
from hftrain._loop.throughput import ThroughputMeter, device_peak_flops


def test_the_docstring_example_holds():
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner()
    for test in finder.find(ThroughputMeter, globs={"ThroughputMeter": ThroughputMeter}):
        runner.run(test)
    assert runner.failures == 0 and runner.tries > 0


def clock(*ticks: float):
    values = iter(ticks)
    return lambda: next(values)


def test_each_interval_starts_where_the_last_one_ended():
    meter = ThroughputMeter(world_size=1, clock=clock(0.0, 1.0, 3.0))
    meter.start(tokens=100, flos=0.0)
    assert meter.measure(tokens=300, flos=0.0) == {"tokens_per_second": 200.0, "tokens_per_second_per_device": 200.0}
    assert meter.measure(tokens=500, flos=0.0)["tokens_per_second"] == 100.0  # 200 tokens in the next 2 s


def test_pauses_do_not_count_and_are_forgotten_after_a_measure():
    meter = ThroughputMeter(world_size=1, clock=clock(0.0, 1.0, 5.0, 6.0, 8.0))
    meter.start(tokens=0, flos=0.0)
    with meter.paused():  # 1 → 5
        pass
    assert meter.measure(tokens=200, flos=0.0)["tokens_per_second"] == 100.0  # 2 s of training at t = 6
    assert meter.measure(tokens=400, flos=0.0)["tokens_per_second"] == 100.0  # 6 → 8, no pause left over


def test_mfu_needs_a_peak_and_flops_and_tokens_need_counting():
    meter = ThroughputMeter(world_size=4, peak_flops=None, clock=clock(0.0, 1.0))
    meter.start(tokens=0, flos=0.0)
    assert "mfu" not in meter.measure(tokens=40, flos=1e6)
    meter = ThroughputMeter(world_size=4, peak_flops=1e6, clock=clock(0.0, 2.0))
    meter.start(tokens=0, flos=0.0)
    assert meter.measure(tokens=0, flos=4e6, count_tokens=False) == {"mfu": 0.5}  # 2e6 FLOP/s of 4 × 1e6


def test_a_cpu_has_no_known_peak():
    assert device_peak_flops(torch.device("cpu"), None) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="a GPU's peak is Lightning's table of CUDA devices")
def test_a_known_gpu_has_its_peak():
    from lightning.pytorch.plugins.precision import MixedPrecision

    peak = device_peak_flops(torch.device("cuda", 0), MixedPrecision("bf16-mixed", device="cuda"))
    assert peak is None or peak > 1e12
