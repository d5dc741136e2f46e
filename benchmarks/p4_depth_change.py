"""P4: a depth change -> accuracy (as-is and head re-fit) from the cached features (target < 0.2 s).

What the app does: once the features are extracted, the accuracies of ALL depths are computed from
that one cached pass (`Study.depths.table`, a one-off cost, reported here); a move of the depth
slider then reads its row. Reported beside it: computing one depth from the cache with no table.

Run: .venv/bin/python benchmarks/p4_depth_change.py [--device auto]
"""

from __future__ import annotations

import argparse
import statistics
import time

from common import default_task
from report import write_section

from slsviz.pruning.accuracy import accuracy_at_depth
from slsviz.study import Study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--moves", type=int, default=200, help="slider moves timed")
    args = parser.parse_args()

    study = Study(default_task(args.device))
    train, test = study.features.bank("train"), study.features.bank("test")  # the one feature pass (disk-cached)
    t = time.perf_counter()
    table = study.depths.table()
    one_off = time.perf_counter() - t

    moves = []
    for i in range(args.moves):  # what the slider callback does: look the new depth up
        depth = 1 + (i * 5) % study.num_layers
        t = time.perf_counter()
        row = study.depths.table().iloc[depth - 1]
        _ = (float(row["accuracy_as_is"]), float(row["accuracy_head_refit"]))
        moves.append(time.perf_counter() - t)

    single = []
    for depth in range(1, study.num_layers + 1):
        t = time.perf_counter()
        accuracy_at_depth(study.loaded.model, train, test, depth)
        single.append(time.perf_counter() - t)

    rows = "\n".join(f"| {int(r.depth)} | {r.accuracy_as_is:.4f} | {r.accuracy_head_refit:.4f} | {1000 * s:.0f} |"
                     for r, s in zip(table.itertuples(), single))
    body = (
        f"Default task, {train.num_samples} train / {test.num_samples} test cached features.\n\n"
        f"- Depth change in the app (row of the all-depth table), {args.moves} moves: mean "
        f"**{1e3 * statistics.fmean(moves):.3f} ms**, max **{1e3 * max(moves):.3f} ms** (target < 200 ms).\n"
        f"- One-off, when the features are ready: accuracies of all {study.num_layers} depths from the cache "
        f"**{one_off:.1f} s** (no backbone pass).\n"
        f"- Without the table, one depth from the cache (head re-fit included): mean {statistics.fmean(single):.2f} s, "
        f"max {max(single):.2f} s (the shallow blocks' re-fit takes longest).\n\n"
        "| depth | accuracy as is | accuracy head re-fit | ms, one depth without the table |\n|---|---|---|---|\n"
        + rows + "\n"
    )
    write_section("p4", "P4 - depth change to accuracy from cache", "python benchmarks/p4_depth_change.py", body,
                  device=study.loaded.backbone.device)


if __name__ == "__main__":
    main()
