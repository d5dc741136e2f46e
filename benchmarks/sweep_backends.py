"""A sweep on both backends: wall time of examples/sweep_quick.yaml in this process and on a Ray
cluster started here, and whether their answers are the same (depths and scores to 1e-9).

Each run starts from an empty cache and its own output folder, so neither reuses the other's
features or maps, nor trained checkpoints: the Ray run trains its tasks again.

Run: .venv/bin/python benchmarks/sweep_backends.py [--spec examples/sweep_quick.yaml] [--num-cpus N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from common import fresh_cache
from report import ROOT, write_section

from slsviz.sweep import load_spec, run_sweep


def _answers(out: Path) -> dict:
    """Per task: every pick's (criterion, alpha, seed, depth), and every score."""
    found = {}
    for path in sorted((out / "tasks").glob("*/report.json")):
        report = json.loads(path.read_text())
        found[path.parent.name] = ([(p["name"], p["alpha"], p["seed"], p["depth"]) for p in report["picks"]],
                                   report["scores"])
    return found


def _largest_gap(a: dict, b: dict) -> float:
    """The largest difference between any two matching scores (inf where the depths or keys differ)."""
    gap = 0.0
    for task in a.keys() | b.keys():
        if task not in a or task not in b or a[task][0] != b[task][0]:
            return float("inf")
        for seed, scores in a[task][1].items():
            other = b[task][1][seed]
            pairs = [(scores, other)] if seed == "oracle" else [(scores[k], other[k]) for k in scores]
            for x, y in pairs:
                x, y = np.array(x, float), np.array(y, float)
                same_nan = np.isnan(x) == np.isnan(y)
                if not same_nan.all():
                    return float("inf")
                gap = max(gap, float(np.nanmax(np.abs(x - y), initial=0.0)))
    return gap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "examples" / "sweep_quick.yaml"))
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the Ray cluster (default: all)")
    parser.add_argument("--keep", help="write the two results folders here (DIR/local, DIR/ray) and keep them")
    args = parser.parse_args()
    # Benchmarks talk only to 127.0.0.1: Ray 2.60 binds a one-machine instance there only with multi-node
    # clusters off (README, "Sweeps"); where the nodes ran is reported below.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    spec = load_spec(args.spec)
    if args.keep and any((Path(args.keep) / b).exists() for b in ("local", "ray")):
        parser.error(f"{args.keep} holds a sweep already (a run would skip its finished tasks): give an empty folder")
    runs = {}
    with contextlib.nullcontext(args.keep) if args.keep else tempfile.TemporaryDirectory(prefix="slsviz-sweep-") as folder:
        for backend in ("local", "ray"):
            with fresh_cache():
                start = time.perf_counter()
                run = run_sweep(spec, Path(folder) / backend, backend=backend, num_cpus=args.num_cpus)
                runs[backend] = (time.perf_counter() - start, run, _answers(run.out))
        where = json.loads((Path(folder) / "ray" / "sweep.json").read_text())["where"]
        gap = _largest_gap(runs["local"][2], runs["ray"][2])
        table = runs["local"][1].results
    sls = table[(table.criterion == "sls") & (table.alpha == spec.alphas[0])]
    lines = "\n".join(f"| {r.task} | {r.method} | {r.dataset} | {int(r.depth)} of {int(r.num_layers)} | "
                      f"{100 * r.accuracy_head_refit:.1f}% / {100 * r.accuracy_head_refit_full:.1f}% |"
                      for r in sls.itertuples())
    oracle = table[table.criterion == "oracle"].set_index("task")["depth"]
    body = (
        f"Spec `{Path(args.spec).relative_to(ROOT) if Path(args.spec).is_relative_to(ROOT) else args.spec}`: "
        f"{len(spec.tasks)} tasks, {len(spec.criteria)} criteria, alphas {list(spec.alphas)}, seeds {list(spec.seeds)}, "
        f"benchmarks {'on' if spec.benchmarks else 'off'}; each backend from an empty cache (training included).\n\n"
        "| backend | wall time | tasks finished | failed |\n|---|---|---|---|\n"
        + "\n".join(f"| {name} | {seconds / 60:.1f} min | {len(run.finished)} | {len(run.failed)} |"
                    for name, (seconds, run, _) in runs.items())
        + f"\n\nRay's nodes ran at {', '.join(where['node_addresses'])}."
        + f"\n\nSame answers: every depth equal, largest score difference **{gap:.1e}** (the test's bound: 1e-9).\n\n"
        "SLS (the paper's, alpha "
        f"{spec.alphas[0]:g}) per task, local run; test accuracy with a re-fit head at the depth / full:\n\n"
        "| task | method | dataset | SLS depth | accuracy (head re-fit) at the depth / full |\n|---|---|---|---|---|\n"
        + lines + "\n\nThe oracle's depths: " + ", ".join(f"{t} {int(d)}" for t, d in oracle.items()) + ".\n"
    )
    write_section("sweep", "Sweep - local vs Ray backend on the quick example", "python benchmarks/sweep_backends.py", body)


if __name__ == "__main__":
    main()
