"""The paper's scale: ViT-B/16 at 224 px, 1,000 scored images (train 800 + val 200) and a 10,000-image
test split, through the app's engine in the order a first visit asks for it.

The backbone is `vit_base_patch16_224` with seeded random weights (no checkpoint is reachable offline;
the time of a pass does not depend on the weights) and a Convpass task on it. The images are mnist5k's
5,000 digits, repeated with a one-pixel shift per repeat (no two alike) up to 11,000, split 800 / 200 /
10,000 as VTAB splits a task. Each step is timed in turn, on an empty cache:

1. the provisional recommendation: the first scored images' features, the maps its scan needs, its spread;
2. provisional accuracies at every depth: the first test images, heads re-fit on the first train images;
3. every depth timed (batch 1), as the Prune page does: fp32, and bf16 where the device computes it natively;
4. the exact recommendation: the rest of train + val in the same pass, its maps;
5. exact accuracies at every depth: the rest of the test split, heads re-fit on the whole train split.

Run: .venv/bin/python benchmarks/paper_scale.py [--test 10000] [--device auto] [--arch vit_base_patch16_224]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import timm
import torch
from common import fresh_cache
from report import write_section

from slsviz.data import LabelledImages, load_mnist5k, split_indices
from slsviz.device import describe_device, resolve_device
from slsviz.layers.analysis import AnalysisSettings
from slsviz.models.backbones import Backbone, weights_checksum
from slsviz.models.petl import PetlConfig
from slsviz.models.task import build_task_model
from slsviz.study import LoadedTask, Study

ARCH = "vit_base_patch16_224"


def images(test: int, seed: int = 0) -> LabelledImages:
    """mnist5k repeated (each repeat shifted one pixel further) to 1,000 + ``test`` images, split 800/200/rest."""
    base = load_mnist5k(seed)
    total = 1000 + test
    repeats = -(-total // len(base.labels))
    pixels = np.concatenate([np.roll(base.pixels, r, axis=2) for r in range(repeats)])[:total]
    labels = np.tile(base.labels, repeats)[:total]
    splits = split_indices(labels, 800, 200, seed)
    return LabelledImages(name=f"mnist5k x{repeats}, shifted ({total} images)", labels=labels,
                          class_names=base.class_names, splits=splits,
                          split_info={"method": "vtab1k-stratified", "seed": seed,
                                      "sizes": {k: int(len(v)) for k, v in splits.items()}}, pixels=pixels)


def backbone(device: torch.device, arch: str = ARCH, seed: int = 0) -> Backbone:
    """``arch`` (ViT-B/16 at 224 px) with seeded random weights, on ``device``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = timm.create_model(arch, pretrained=False, num_classes=0).eval()
    cfg = model.pretrained_cfg
    return Backbone(model=model.to(device), id=f"{arch}:random({seed})", arch=arch,
                    checksum=weights_checksum(model.state_dict()), source=f"random init, seed {seed} (benchmark)",
                    img_size=int(model.patch_embed.img_size[0]), mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))


def peak_memory_mib(device: torch.device) -> str:
    """The process's peak resident memory, and the accelerator's peak allocation where there is one."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    extra = f"; GPU {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB" if device.type == "cuda" else ""
    return f"{rss:.0f} MiB resident{extra}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test", type=int, default=10_000, help="test images (the paper's scale: 10,000)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--arch", default=ARCH, help="a timm ViT (default: the paper's ViT-B/16 at 224 px)")
    parser.add_argument("--print-only", action="store_true", help="print the table; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    device = resolve_device(args.device)
    settings = AnalysisSettings()
    rows = []
    with fresh_cache():
        started = time.perf_counter()
        bone = backbone(device, args.arch)
        data = images(args.test)
        study = Study(LoadedTask(bone, build_task_model(bone, PetlConfig("convpass"), data.num_classes), None, data))
        store = study.features
        rows.append(("backbone, task and data built", time.perf_counter() - started))

        def step(name: str, work) -> object:
            out = work()
            rows.append((name, time.perf_counter() - started))
            print(f"{rows[-1][1]:8.1f} s  {name}", flush=True)
            return out

        early = step(f"provisional recommendation (first {store.first_scored()[0].shape[1]} scored images)",
                     lambda: study.layers.provisional(settings))
        table, _ = step(f"provisional accuracies at every depth (first {store.preview_size('test')} test images, "
                        "heads on the first train images)", lambda: study.depths.table_soon())
        timed = {precision: step(f"every depth timed (batch 1, {precision})",
                                 lambda precision=precision: study.timing.benchmarks(precision=precision))
                 for precision in study.timing.precisions()}  # bf16 beside fp32 where the device computes it natively
        rule = step(f"exact recommendation ({store.scored_size()} scored images)", lambda: study.layers.recommend(settings))
        exact = step(f"exact accuracies at every depth ({store.split_size('test')} test images)", lambda: study.depths.table())
    memory = peak_memory_mib(device)
    L = study.num_layers
    body = (f"`{args.arch}` (seeded random weights) + Convpass at {bone.img_size} px, on {describe_device(device)}, fp32; "
            f"{data.name}: {', '.join(f'{k} {len(v)}' for k, v in data.splits.items())}. Seconds since the start, each "
            "step after the one before (the order a first visit asks for them), on an empty cache:\n\n"
            "| moment | seconds since start |\n|---|---|\n"
            + "\n".join(f"| {name} | {s:.1f} |" for name, s in rows)
            + f"\n\nPeak memory: {memory}. Provisional depth {early.rule.depth_}, exact depth {rule.depth_} of {L} "
            f"(random weights: the depths say nothing about ViT-B; the times do). At batch 1, "
            + "; ".join(f"{precision}: full model {t[L].images_per_s:.2f} images/s, depth {rule.depth_} "
                        f"{t[int(rule.depth_)].images_per_s:.2f}" for precision, t in timed.items()) + ". "
            f"Head re-fit accuracy of the full model, provisional {100 * table['accuracy_head_refit'].iloc[-1]:.1f}% "
            f"against exact {100 * exact['accuracy_head_refit'].iloc[-1]:.1f}%.")
    if args.print_only:
        print(body)
        return
    command = ("python benchmarks/paper_scale.py" + (f" --test {args.test}" if args.test != 10_000 else "")
               + (f" --arch {args.arch}" if args.arch != ARCH else ""))
    write_section("paper_scale", f"The paper's scale - {args.arch}, 1,000 scored and {args.test:,} test images", command,
                  body, device=device)


if __name__ == "__main__":
    main()
