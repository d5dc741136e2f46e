"""Measuring a (pruned) model the way timm's benchmark does: throughput, latency, FLOPs, memory.

Eval mode, inference mode, warm-up, CUDA synchronisation around each timed step, ``perf_counter``
and a time budget; models that are compared are timed interleaved (:func:`benchmark_models`). RepAdapter/LoRA are merged into the backbone before timing (on a copy), since a
deployed task would run them merged. Every function returns plain numbers.
"""

from __future__ import annotations

import contextlib
import copy
import math
import statistics
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from slsviz.choices import PRECISIONS
from slsviz.device import bf16_autocast, check_timing_precision, describe_device
from slsviz.models.petl import count_params, merge_petl
from slsviz.progress import Progress

K = TypeVar("K")


@dataclass
class BenchmarkResult:
    """What one benchmark measured.

    Throughput is images over the total timed seconds, as timm reports it (its std is over the steps'
    own rates); latency is the mean (std) duration of a step.
    """

    depth: int
    batch_size: int
    images_per_s: float
    images_per_s_std: float
    latency_ms: float
    latency_ms_std: float
    steps: int
    params: int
    flops_per_image: int
    peak_memory_bytes: int | None
    memory_kind: str
    device: str
    precision: str
    torch: str
    timm: str

    def to_dict(self) -> dict:
        """JSON-ready."""
        return asdict(self)


@torch.inference_mode()
def count_flops(model: nn.Module, img_size: int, device: torch.device | str = "cpu") -> int:
    """FLOPs of one image's forward pass (``torch.utils.flop_counter``: a multiply-add counts 2)."""
    x = torch.zeros(1, 3, img_size, img_size, device=device)
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops())


def prepare_for_timing(model: nn.Module) -> nn.Module:
    """A copy with RepAdapter/LoRA merged and in eval mode; the input is not touched."""
    return merge_petl(copy.deepcopy(model)).eval()


def benchmark_models(
    models: Mapping[K, nn.Module],
    img_size: int,
    *,
    batch_size: int = 1,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    warmup_steps: int = 5,
    time_budget_s: float = 2.0,
    rounds: int = 10,
    min_steps: int = 5,
    max_steps: int = 1000,
    merged: bool = False,
    progress: Progress | None = None,
) -> dict[K, BenchmarkResult]:
    """Time several models on the same input, interleaved, so that their ratios can be trusted.

    Each model is warmed up, then ``rounds`` rounds time every model in turn for
    ``time_budget_s / rounds`` (at least one step each). A machine whose speed drifts (clock
    boost, other processes, a shared VM) then slows every model alike, where timing one model after
    another would pin the drift on whichever ran at the wrong moment: on a 2-core CPU VM, timing the
    12 depths one after the other gave measured/ideal speedups from 0.85 to 1.20, interleaved 10
    rounds from 0.95 to 1.05.

    Args:
        models: the models to time, by any key (e.g. depth); each copied and merged unless ``merged``.
        img_size: input size; the input is one random batch, the same for every model.
        batch_size: images per step.
        device: where to run.
        precision: ``"fp32"`` or ``"bf16"`` (autocast; where the device computes bf16 natively,
            :func:`slsviz.device.check_timing_precision`).
        warmup_steps: untimed steps per model first (allocator, kernels, caches).
        merged: the models are already merged copies in eval mode (skip copy-and-merge).
        time_budget_s: timing per model, over all rounds.
        rounds: how many times to cycle through the models.
        min_steps: fewest timed steps per model, spread over the rounds.
        max_steps: most timed steps per model.
        progress: called as ``progress(done, total)`` after each model's turn in a round.

    Returns:
        The same keys, each with what was measured for that model.
    """
    import timm

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds!r}")
    device = torch.device(device)
    check_timing_precision(device, precision)
    prepared = {key: (model if merged else prepare_for_timing(model)).to(device) for key, model in models.items()}
    x = torch.randn(batch_size, 3, img_size, img_size, device=device)
    context = bf16_autocast(device) if precision == "bf16" else contextlib.nullcontext()

    times: dict[K, list[float]] = {key: [] for key in prepared}
    peaks: dict[K, int | None] = {key: None for key in prepared}
    kind = ""
    per_round_s = time_budget_s / rounds
    per_round_min = -(-min_steps // rounds)  # ceil
    per_round_max = max(1, max_steps // rounds)
    done, total = 0, rounds * len(prepared)
    with torch.inference_mode(), context:
        for key, model in prepared.items():
            _start_memory(device)
            for _ in range(warmup_steps):
                model(x)
                _sync(device)
                peaks[key] = _max_or_none(peaks[key], _memory(device)[0])
        for _ in range(rounds):
            for key, model in prepared.items():
                _start_memory(device)
                steps, started = times[key], time.perf_counter()
                first = len(steps)
                while len(steps) - first < per_round_max and (
                        len(steps) - first < per_round_min or time.perf_counter() - started < per_round_s):
                    t0 = time.perf_counter()
                    model(x)
                    _sync(device)
                    steps.append(time.perf_counter() - t0)
                    peak, kind = _memory(device)  # outside the timed span
                    peaks[key] = _max_or_none(peaks[key], peak)
                done += 1
                if progress is not None:
                    progress(done, total)
    return {key: _result(model, times[key], batch_size, img_size, device, precision, peaks[key], kind, timm.__version__)
            for key, model in prepared.items()}


def _result(model: nn.Module, times: list[float], batch_size: int, img_size: int, device: torch.device,
            precision: str, peak: int | None, kind: str, timm_version: str) -> BenchmarkResult:
    rates = [batch_size / t for t in times]
    return BenchmarkResult(
        depth=len(model.blocks),
        batch_size=batch_size,
        images_per_s=batch_size * len(times) / sum(times),  # as timm: images over total time
        images_per_s_std=statistics.stdev(rates) if len(rates) > 1 else 0.0,
        latency_ms=1000 * statistics.fmean(times),
        latency_ms_std=1000 * statistics.stdev(times) if len(times) > 1 else 0.0,
        steps=len(times),
        params=count_params(model),
        flops_per_image=count_flops(model, img_size, device),
        peak_memory_bytes=peak,
        memory_kind=kind or "not measurable here",
        device=describe_device(device),
        precision=precision,
        torch=torch.__version__,
        timm=timm_version,
    )


def _max_or_none(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def speedups(full: BenchmarkResult, pruned: BenchmarkResult) -> dict[str, float]:
    """Measured speedup (throughput ratio) beside the ideal one (FLOP ratio), and their quotient.

    ``measured_speedup_se`` and ``efficiency_se`` are standard errors from the steps' spread (delta
    method: relative errors of the two mean step times add in quadrature), to say how far a
    measured figure can be trusted.
    """
    measured = pruned.images_per_s / full.images_per_s
    ideal = full.flops_per_image / pruned.flops_per_image
    relative = math.hypot(_relative_se(full), _relative_se(pruned))
    return {"measured_speedup": measured, "ideal_speedup": ideal, "efficiency": measured / ideal,
            "measured_speedup_se": measured * relative, "efficiency_se": measured / ideal * relative}


def _relative_se(result: BenchmarkResult) -> float:
    """Standard error of the mean step time, relative to it (0 with fewer than 2 steps)."""
    if result.steps < 2 or result.latency_ms <= 0:
        return 0.0
    return result.latency_ms_std / math.sqrt(result.steps) / result.latency_ms


def _start_memory(device: torch.device) -> None:
    """CUDA: restart the allocator's peak (benchmarks run alone: see ``Study.benchmarks``). The CPU
    needs nothing: its figure is sampled, and the process's own peak (VmHWM) is never reset."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _memory(device: torch.device) -> tuple[int | None, str]:
    """Memory in use now (CPU: resident set size) or at the peak since :func:`_start_memory` (CUDA)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "CUDA peak allocated"
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024, "process RSS, the most seen after a step (CPU)"
    except OSError:
        pass
    return None, "not measurable here"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
