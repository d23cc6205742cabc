"""Parameter counts, serialised size, and latency statistics with a fake clock."""

import itertools

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from kdforge.metrics import latency_stats, measure_latencies, measure_latency, parameter_count, weights_size_bytes


def test_parameter_count_and_size_on_disk(tmp_path):
    model = nn.Sequential(nn.Linear(10, 5), nn.BatchNorm1d(5), nn.Linear(5, 2))
    assert parameter_count(model) == 10 * 5 + 5 + 2 * 5 + 5 * 2 + 2
    path = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    assert weights_size_bytes(model) == path.stat().st_size
    floats = sum(v.numel() for v in model.state_dict().values() if v.is_floating_point())
    assert weights_size_bytes(model) > 4 * floats


def test_latency_stats_hand_values():
    seconds = [i / 1000 for i in range(1, 21)]  # 1..20 ms
    stats = latency_stats(seconds, batch_size=8)
    assert stats["p50_ms"] == pytest.approx(10.5)
    assert stats["p95_ms"] == pytest.approx(19.05)  # numpy's linear rule: 19 + 0.05 * (20 - 19)
    assert stats["throughput"] == pytest.approx(8 / 0.0105)
    assert stats["p95_ms"] == pytest.approx(1000 * np.percentile(seconds, 95))


def test_measure_latency_with_fake_clock():
    ticks = itertools.count()
    durations = iter([0.002, 0.004, 0.006, 0.008])
    clock_value = [0.0]

    def timer():
        next(ticks)
        return clock_value[0]

    calls = []

    def call():
        calls.append(1)
        if len(calls) > 2:  # after the two warm-up calls, each call "takes" the next duration
            clock_value[0] += next(durations)

    stats = measure_latency(call, batch_size=4, repeats=4, warmup=2, timer=timer)
    assert len(calls) == 6
    assert stats["p50_ms"] == pytest.approx(5.0)
    assert stats["repeats"] == 4


def test_measure_latency_runs_a_model_and_rejects_zero_repeats():
    model = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    stats = measure_latency(lambda: model(x), batch_size=4, repeats=2, warmup=0)
    assert stats["p50_ms"] >= 0 and stats["batch_size"] == 4
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(lambda: None, batch_size=1, repeats=0)


def test_measure_latencies_interleaves_models():
    order = []
    now = [0.0]

    def timer():
        return now[0]

    def make(name, duration):
        def call():
            order.append(name)
            now[0] += duration
        return call

    stats = measure_latencies({"teacher": make("t", 0.010), "student": make("s", 0.001)}, batch_size=2, repeats=3,
                              warmup=1, timer=timer)
    assert order == ["t", "s"] * 4  # one warm-up round, then alternating timed calls
    assert stats["teacher"]["p50_ms"] == pytest.approx(10.0)
    assert stats["student"]["p50_ms"] == pytest.approx(1.0)
    assert stats["student"]["throughput"] == pytest.approx(2000.0)
