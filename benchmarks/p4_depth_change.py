"""P4: a depth change -> both cached-feature accuracies (as-is, head re-fit) at the new depth (target < 0.2 s).

Features of the default task are extracted once (as the app does on load); then, for every depth,
the time from "new depth" to both accuracies is measured, computing them from the cached features
(no lookup in a precomputed table; that would take microseconds).

Run: .venv/bin/python benchmarks/p4_depth_change.py [--device auto]
"""

from __future__ import annotations

import argparse
import statistics
import time

from common import default_task
from report import write_section

from slsviz.accuracy import accuracy_at_depth
from slsviz.features import feature_bank


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    loaded = default_task(args.device)
    banks = {split: feature_bank(loaded.model, loaded.data, split, loaded.preprocess,
                                 backbone_checksum=loaded.backbone.checksum) for split in ("train", "test")}
    times, rows = [], []
    for depth in range(1, len(loaded.model.blocks) + 1):
        for _ in range(args.repeats):
            t = time.perf_counter()
            acc = accuracy_at_depth(loaded.model, banks["train"], banks["test"], depth)
            times.append(time.perf_counter() - t)
        rows.append(f"| {depth} | {acc['accuracy_as_is']:.4f} | {acc['accuracy_head_refit']:.4f} | {times[-1] * 1000:.0f} |")
    body = (
        f"Default task, {banks['train'].num_samples} train / {banks['test'].num_samples} test cached features, "
        f"{args.repeats} repeats per depth.\n\n"
        "| depth | accuracy as is | accuracy head re-fit | ms (last repeat) |\n|---|---|---|---|\n" + "\n".join(rows)
        + f"\n\nDepth change -> accuracy: mean **{statistics.fmean(times):.3f} s**, max **{max(times):.3f} s** "
        "(target < 0.2 s).\n"
    )
    write_section("p4", "P4 - depth change to accuracy from cache", "python benchmarks/p4_depth_change.py", body,
                  device=loaded.backbone.device)


if __name__ == "__main__":
    main()
