"""Swin: parameters, FLOPs and measured throughput of every depth, and the one-pass feature extraction.

For each architecture a timm Swin with seeded random weights (no pretrained Swin is reachable offline;
speed and FLOPs do not depend on the weights) is wrapped as slsviz wraps it (blocks 1..L across the
stages), given a PETL task, and cut at every depth the official way generalised (the stages before,
the first blocks of the cut stage, the patch merging after it). All depths are timed in turn at batch 1
(slsviz.pruning.bench.benchmark_models, as the Prune page times them). Then the one pass that gives
every block's feature (the official code's: token average after the next stage's merging) and the
head inputs of every depth is timed against a plain forward over the same batches.

Run: .venv/bin/python benchmarks/swin_depths.py [--archs swin_tiny_patch4_window7_224 swin_base_patch4_window7_224]
     [--device auto] [--img-size 224] [--seconds 2] [--rounds 8]
"""

from __future__ import annotations

import argparse

import timm
import torch
from p2_extraction_throughput import rates
from report import write_section

from slsviz.device import resolve_device
from slsviz.models.depth import depth_views
from slsviz.models.petl import PetlConfig, attach_petl
from slsviz.models.swin import SwinBlocks, stage_boundaries
from slsviz.pruning.bench import benchmark_models, prepare_for_timing, speedups


def stage_of(model: SwinBlocks, depth: int) -> int:
    return model.stage_of[depth - 1] + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["swin_tiny_patch4_window7_224", "swin_base_patch4_window7_224"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--method", default="convpass")
    parser.add_argument("--seconds", type=float, default=2.0, help="timing per depth in all")
    parser.add_argument("--rounds", type=int, default=8, help="times every depth is timed in turn")
    parser.add_argument("--images", type=int, default=64, help="images for the one-pass extraction")
    args = parser.parse_args()
    device = resolve_device(args.device)

    parts = []
    for arch in args.archs:
        torch.manual_seed(0)
        swin = timm.create_model(arch, pretrained=False, num_classes=100, img_size=args.img_size)
        model = attach_petl(SwinBlocks(swin), PetlConfig(args.method)).eval().to(device)
        num_layers = len(model.blocks)
        views = depth_views(prepare_for_timing(model), range(1, num_layers + 1))
        timed = benchmark_models(views, args.img_size, batch_size=1, device=device, time_budget_s=args.seconds,
                                 rounds=args.rounds, merged=True)
        full = timed[num_layers]
        rows = []
        for depth, cut in timed.items():
            s = speedups(full, cut)
            rows.append(f"| {depth} | {stage_of(model, depth)} | {cut.params / 1e6:.2f} | {cut.flops_per_image / 1e9:.3f} | "
                        f"{cut.images_per_s:.1f} +- {cut.images_per_s_std:.1f} | {cut.latency_ms:.1f} | "
                        f"{s['ideal_speedup']:.2f} | {s['measured_speedup']:.2f} | {s['efficiency']:.3f} |")
            print(rows[-1], flush=True)

        x = torch.randn(args.images, 3, args.img_size, args.img_size, generator=torch.Generator().manual_seed(1))
        batches = [(chunk.to(device), None) for chunk in x.split(16)]

        @torch.inference_mode()
        def plain(bs):
            for b, _ in bs:
                model(b)

        @torch.inference_mode()
        def one_pass(bs):
            for b, _ in bs:
                model.block_features(b)

        plain_rate, pass_rate = rates([plain, one_pass], batches, device, repeats=3)
        sizes = "-".join(map(str, model.stage_sizes))
        parts.append(
            f"### {arch} ({sizes} blocks, stages begin at blocks {', '.join(map(str, [1, *stage_boundaries(model)]))}), "
            f"{args.method}, {args.img_size} px\n\n"
            f"All {num_layers} depths timed in turn at batch 1 on {full.device}, {full.precision}, {args.rounds} rounds, "
            f"{args.seconds:g} s per depth in all.\n\n"
            "| depth | stage | params (M) | GFLOPs/image | images/s (mean +- std) | latency ms | ideal speedup | "
            "measured speedup | measured / ideal |\n|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
            f"One pass giving all {num_layers} block features and the head input of every depth, over {args.images} "
            f"images in batches of 16: {pass_rate:.1f} images/s against {plain_rate:.1f} for a plain forward "
            f"(**{pass_rate / plain_rate:.2f}x**; best of 3, in turn).\n")
    write_section("swin", "Swin - every depth, and the one-pass features",
                  "python benchmarks/swin_depths.py --archs " + " ".join(args.archs)
                  + f" --img-size {args.img_size} --seconds {args.seconds:g} --rounds {args.rounds}",
                  "\n".join(parts), device=device)


if __name__ == "__main__":
    main()
