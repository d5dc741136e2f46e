"""Default backbone: one-off ONNX conversion time, then the cached load time (target < 2 s).

Run: .venv/bin/python benchmarks/backbone_load.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile

from report import ROOT, write_section

# Each load runs in a fresh interpreter, as a user's new CLI call or app start would.
_PROBE = (
    "import time; t=time.perf_counter(); from slsviz.models.backbones import load_backbone; "
    "t1=time.perf_counter(); load_backbone('default'); print(t1-t, time.perf_counter()-t1)"
)


def _timed_load(cache: str) -> tuple[float, float]:
    env = {**os.environ, "SLSVIZ_CACHE_DIR": cache}
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, cwd=ROOT, check=True, capture_output=True, text=True)
    imports, load = map(float, out.stdout.split())
    return imports, load


def main(repeats: int = 5) -> None:
    with tempfile.TemporaryDirectory() as cache:
        first_import, first = _timed_load(cache)  # converts from ONNX, then caches
        later = [_timed_load(cache)[1] for _ in range(repeats)]
    body = (
        "| step | seconds |\n|---|---|\n"
        f"| first load (ONNX -> safetensors conversion + load) | {first:.2f} |\n"
        f"| later load, mean of {repeats} fresh processes (target < 2 s) | {statistics.mean(later):.2f} "
        f"(min {min(later):.2f}, max {max(later):.2f}) |\n"
        f"| `import slsviz.models.backbones` (torch, timm; not part of the load) | {first_import:.2f} |\n"
    )
    write_section("backbone_load", "Default backbone load", "python benchmarks/backbone_load.py", body)


if __name__ == "__main__":
    main()
