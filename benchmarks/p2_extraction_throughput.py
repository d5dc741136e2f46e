"""P2: one-pass extraction of every block's features vs plain `forward_features` (target >= 0.95).

Both run the default task model over the same pre-loaded batches (image decoding excluded), in
inference mode, in turn (which one goes first alternates between repeats, so drift of the machine
hits both alike); the best repeat is kept for each.

Run: .venv/bin/python benchmarks/p2_extraction_throughput.py [--device auto] [--images 512]
"""

from __future__ import annotations

import argparse
import time

import torch
from common import default_task
from report import write_section

from slsviz.data import make_loader
from slsviz.layers.features import extract_features


def rates(fns, batches, device, repeats) -> list[float]:
    """Best images/s of each of ``fns`` over all batches, the functions run in turn ``repeats`` times."""
    n = sum(len(b[0]) for b in batches)
    best = [0.0] * len(fns)
    for r in range(repeats):
        order = range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))
        for i in order:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fns[i](batches)
            if device.type == "cuda":
                torch.cuda.synchronize()
            best[i] = max(best[i], n / (time.perf_counter() - t))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()

    loaded = default_task(args.device)
    model, device = loaded.model.eval(), loaded.backbone.device
    batches = [(x.to(device), y) for x, y in make_loader(loaded.data, "test", loaded.preprocess, args.batch_size, limit=args.images)]

    @torch.inference_mode()
    def plain(bs):
        for x, _ in bs:
            model.forward_features(x)

    def one_pass(bs):
        extract_features(model, bs, device=device)

    class Batches(list):  # extract_features reads len(loader.dataset) for progress
        dataset = range(args.images)

    plain(batches[:1])  # warm-up
    one_pass(Batches(batches[:1]))
    rate_plain, rate_one = rates([plain, lambda bs: one_pass(Batches(bs))], batches, device, args.repeats)
    body = (
        f"Default task, {args.images} test images at {loaded.backbone.img_size} px, batch {args.batch_size}, "
        f"run in turn, best of {args.repeats} each.\n\n"
        "| forward | images/s |\n|---|---|\n"
        f"| plain `forward_features` (last block only) | {rate_plain:.1f} |\n"
        f"| slsviz one pass, CLS of all {len(model.blocks)} blocks | {rate_one:.1f} |\n\n"
        f"Ratio one-pass / plain: **{rate_one / rate_plain:.3f}** (target >= 0.95).\n"
    )
    write_section("p2", "P2 - one-pass extraction vs plain forward_features",
                  f"python benchmarks/p2_extraction_throughput.py --images {args.images}", body, device=device)


if __name__ == "__main__":
    main()
