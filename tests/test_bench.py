"""Benchmark utilities: plain numbers that behave as they must."""

from __future__ import annotations

import pytest
import torch
from helpers import benchmark, random_backbone

from slsviz.models.depth import prune_to_depth
from slsviz.models.petl import PetlConfig, count_params
from slsviz.models.task import build_task_model
from slsviz.pruning.bench import (
    benchmark_models,
    count_flops,
    speedups,
)


@pytest.fixture(scope="module")
def model():
    backbone = random_backbone("vit_tiny_patch16_224", img_size=32, depth=4, seed=0)
    return build_task_model(backbone, PetlConfig("repadapter"), 10)


def test_flops_scale_with_depth(model):
    full, half = count_flops(model, 32), count_flops(prune_to_depth(model, 2), 32)
    assert full > half > 0
    per_block = (full - half) / 2
    assert count_flops(prune_to_depth(model, 1), 32) == pytest.approx(half - per_block, rel=1e-6)


def test_benchmark_reports_plain_numbers_and_leaves_the_model_alone(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = benchmark(model, 32, batch_size=4, time_budget_s=0.2, min_steps=3, warmup_steps=1)
    assert result.steps >= 3 and result.images_per_s > 0 and result.latency_ms > 0
    assert result.images_per_s == pytest.approx(4 / (result.latency_ms / 1000), rel=0.5)
    assert result.depth == 4 and result.batch_size == 4 and result.precision == "fp32"
    assert result.params < count_params(model)  # RepAdapter merged away before timing
    assert result.device.startswith("cpu")
    assert result.to_dict()["flops_per_image"] < count_flops(model, 32)  # ... and its FLOPs with it
    # the task model itself is not merged or modified
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_speedups(model):
    full = benchmark(model, 32, time_budget_s=0.1, min_steps=3)
    pruned = benchmark(prune_to_depth(model, 1), 32, time_budget_s=0.1, min_steps=3)
    s = speedups(full, pruned)
    assert s["ideal_speedup"] == pytest.approx(full.flops_per_image / pruned.flops_per_image)
    assert s["ideal_speedup"] > 2 and s["measured_speedup"] == pytest.approx(pruned.images_per_s / full.images_per_s)
    assert s["efficiency"] == pytest.approx(s["measured_speedup"] / s["ideal_speedup"])
    rel = ((full.latency_ms_std / full.steps ** 0.5 / full.latency_ms) ** 2
           + (pruned.latency_ms_std / pruned.steps ** 0.5 / pruned.latency_ms) ** 2) ** 0.5
    assert s["measured_speedup_se"] == pytest.approx(s["measured_speedup"] * rel)
    assert s["efficiency_se"] == pytest.approx(s["efficiency"] * rel) and s["efficiency_se"] > 0


def test_bf16_is_timed_only_where_the_device_computes_it_natively_and_then_runs_in_bf16(model, monkeypatch):
    import slsviz.device
    import slsviz.pruning.bench as bench
    from slsviz.errors import DeviceError

    monkeypatch.setattr(slsviz.device, "bf16_native", lambda device: False)
    with pytest.raises(DeviceError, match="computes bf16 natively"):
        benchmark(model, 32, precision="bf16")
    monkeypatch.setattr(slsviz.device, "bf16_native", lambda device: True)  # CPU autocast runs anywhere, emulated here
    prepared = bench.prepare_for_timing(model)
    dtypes = []
    prepared.blocks[0].mlp.fc1.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    result = benchmark(prepared, 32, precision="bf16", merged=True, time_budget_s=0.05)
    assert result.precision == "bf16" and result.images_per_s > 0
    assert dtypes.count(torch.bfloat16) >= result.steps  # every timed step in bf16 (the FLOP count runs in fp32)


class _Logged(torch.nn.Module):
    """Records its name in a shared log on every forward; ``blocks`` gives it a depth."""

    def __init__(self, name: str, depth: int, log: list[str]) -> None:
        super().__init__()
        self.name, self.log = name, log
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(2, 2) for _ in range(depth))

    def forward(self, x):
        self.log.append(self.name)
        return x.mean()


def test_benchmark_models_interleaves_the_models_round_by_round():
    log: list[str] = []
    models = {"full": _Logged("full", 4, log), "cut": _Logged("cut", 2, log)}
    ticks = []
    results = benchmark_models(models, 8, rounds=3, min_steps=6, time_budget_s=0.0, warmup_steps=1, merged=True,
                               progress=lambda done, total: ticks.append((done, total)))
    timed = log[2:2 + results["full"].steps + results["cut"].steps]  # after one warm-up step each
    assert log[:2] == ["full", "cut"]
    assert timed[:1] == ["full"] and timed.count("full") >= 6 and timed.count("cut") >= 6
    # turns alternate: full's steps, cut's, full's, ... three rounds
    turns = [name for i, name in enumerate(timed) if i == 0 or timed[i - 1] != name]
    assert turns == ["full", "cut"] * 3
    assert ticks == [(i, 6) for i in range(1, 7)]
    assert results["full"].depth == 4 and results["cut"].depth == 2
    assert log[2 + len(timed):] == ["full", "cut"]  # then one more each, untimed, to count FLOPs


def test_benchmark_models_rejects_zero_rounds(model):
    with pytest.raises(ValueError, match="rounds"):
        benchmark_models({1: model}, 32, rounds=0)
