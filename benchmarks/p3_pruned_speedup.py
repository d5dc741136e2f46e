"""P3: measured speedup of the pruned model vs its ideal (FLOP-ratio) speedup, every depth (target >= 0.95).

For each batch size, the default task model cut at every depth d is timed the way timm's benchmark
does (see slsviz.pruning.bench), all depths in turn over several rounds (slsviz.pruning.bench.benchmark_models), and
each depth's measured speedup over the full model is compared with its FLOP ratio.

Run: .venv/bin/python benchmarks/p3_pruned_speedup.py [--device auto] [--batch-sizes 1 64] [--seconds 4] [--rounds 30]
"""

from __future__ import annotations

import argparse

from common import default_task
from report import write_section

from slsviz.models.depth import depth_views
from slsviz.pruning.bench import benchmark_models, prepare_for_timing, speedups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--seconds", type=float, default=4.0, help="timing per depth and batch size")
    # At batch 64 a step takes up to 1 s here: 30 rounds give each depth >= 30 steps, a standard
    # error of about 2% per depth (the target leaves 5%).
    parser.add_argument("--rounds", type=int, default=30, help="times every depth is timed in turn")
    args = parser.parse_args()

    loaded = default_task(args.device)
    size, device, num_layers = loaded.backbone.img_size, loaded.backbone.device, len(loaded.model.blocks)
    lines = []
    worst, worst_se = {}, {}
    views = depth_views(prepare_for_timing(loaded.model), range(1, num_layers + 1))
    for batch in args.batch_sizes:
        timed = benchmark_models(views, size, batch_size=batch, device=device, time_budget_s=args.seconds,
                                 rounds=args.rounds, merged=True)
        full = timed[num_layers]
        for depth, cut in timed.items():
            s = speedups(full, cut)
            if s["efficiency"] < worst.get(batch, 9.9):
                worst[batch], worst_se[batch] = s["efficiency"], s["efficiency_se"]
            lines.append(f"| {batch} | {depth} | {cut.images_per_s:.1f} +- {cut.images_per_s_std:.1f} | "
                         f"{cut.latency_ms:.1f} | {cut.flops_per_image / 1e9:.3f} | {s['ideal_speedup']:.2f} | "
                         f"{s['measured_speedup']:.2f} | {s['efficiency']:.3f} +- {s['efficiency_se']:.3f} |")
            print(lines[-1], flush=True)
    body = (
        f"Default task at {size} px on {full.device}, {full.precision}. All {num_layers} depths timed in turn, "
        f"{args.rounds} rounds, {args.seconds:g} s per depth in all (at least one step per round); images/s is "
        "images over timed seconds, +- the std of the steps' rates.\n\n"
        "| batch | depth | images/s (mean +- std) | latency ms | GFLOPs/image | ideal speedup | measured speedup "
        "| measured / ideal (+- standard error) |\n|---|---|---|---|---|---|---|---|\n" + "\n".join(lines) + "\n\n"
        + "Lowest measured / ideal: " + ", ".join(f"batch {b}: **{w:.3f}** (+- {worst_se[b]:.3f})"
                                                  for b, w in worst.items())
        + " (target >= 0.95).\n"
    )
    write_section("p3", "P3 - pruned speedup vs FLOP-ratio speedup",
                  "python benchmarks/p3_pruned_speedup.py --batch-sizes " + " ".join(map(str, args.batch_sizes))
                  + f" --seconds {args.seconds:g} --rounds {args.rounds}", body, device=device)


if __name__ == "__main__":
    main()
