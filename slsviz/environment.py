"""What a measurement ran on: machine, accelerator and library versions."""

from __future__ import annotations

import os
import platform

import torch

from slsviz.device import describe_device


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device | None = None) -> dict[str, str | int | bool]:
    """Versions and machine facts, JSON-ready; ``device`` adds the device that computed."""
    import timm

    from slsviz import __version__

    info: dict[str, str | int | bool] = {
        "slsviz": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count() or 0,
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = str(torch.version.cuda)
    if device is not None:
        info["device"] = describe_device(device)
    return info
