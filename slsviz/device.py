"""Choosing the compute device. Every function that computes takes a device; none hard-codes one."""

from __future__ import annotations

import contextlib
import os
import platform

import torch

from slsviz.errors import DeviceError


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """Turn a user's device choice into a ``torch.device``.

    Args:
        spec: ``"auto"`` (CUDA if available, then Apple MPS, else CPU), or any torch device string
            such as ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``; ``None`` means ``"auto"``.

    Raises:
        DeviceError: the device does not exist on this machine.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise DeviceError(f"Unknown device {spec!r}: use auto, cpu, cuda, cuda:N or mps.") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"Device {spec!r} was asked for, but CUDA is not available here: use auto or cpu.")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"Device {spec!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)."
            )
    elif device.type == "mps" and not _mps_available():
        raise DeviceError(f"Device {spec!r} was asked for, but Apple MPS is not available here: use auto or cpu.")
    elif device.type not in {"cpu", "cuda", "mps"}:
        raise DeviceError(f"Unsupported device {spec!r}: use auto, cpu, cuda, cuda:N or mps.")
    return device


def describe_device(device: torch.device) -> str:
    """A human name for the device, e.g. ``"cuda:0 (NVIDIA H100 80GB HBM3)"`` or ``"cpu (x86_64, 2 threads)"``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "mps":
        return "mps (Apple GPU)"
    return f"cpu ({platform.machine() or 'unknown'}, {torch.get_num_threads()} threads)"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively: CUDA with bf16, or a CPU with AVX-512 BF16 or AMX.
    Elsewhere bf16 is emulated and slower than fp32 (BENCHMARKS.md, "A cheaper pass?")."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return any(getattr(torch.cpu, check, lambda: False)() for check in ("_is_avx512_bf16_supported",
                                                                             "_is_amx_tile_supported"))
    return False


def timing_precisions(device: torch.device) -> tuple[str, ...]:
    """The precisions a timing is offered in on ``device``: fp32, and bf16 where it is native."""
    return ("fp32", "bf16") if bf16_native(device) else ("fp32",)


def check_timing_precision(device: torch.device, precision: str, fix: str | None = None) -> None:
    """Raise :class:`DeviceError`, in one line, where ``device`` is not offered ``precision`` timing
    (:func:`timing_precisions`); ``fix`` says what to do instead (default: the precisions it has)."""
    offered = timing_precisions(device)
    if precision not in offered:
        raise DeviceError(f"{precision} timing is not offered on {describe_device(device)}: it needs a device that "
                          f"computes {precision} natively (CUDA, or a CPU with AVX-512 BF16 or AMX). "
                          + (fix or f"Time in {' or '.join(offered)}."))


def bf16_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` (CUDA or CPU), what a deployment in bf16 runs."""
    return torch.autocast(device.type, dtype=torch.bfloat16)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; plain float32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def free_memory_bytes(device: torch.device) -> int | None:
    """Memory a new allocation could use now on ``device`` (``None`` where it cannot be told).

    CUDA: ``torch.cuda.mem_get_info``; CPU: the kernel's ``MemAvailable`` estimate (Linux), else
    the free physical pages.
    """
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (CPU or CUDA), as torch and Python raise them."""
    if isinstance(exc, MemoryError) or isinstance(exc, getattr(torch, "OutOfMemoryError", ())):
        return True
    # CPU allocations fail with a plain RuntimeError from c10's allocator.
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)
