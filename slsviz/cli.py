"""Command-line interface: ``python -m slsviz <command>`` or ``slsviz <command>``.

Results go to stdout (JSON) or to files; progress and errors to stderr. Bad input ends with a
one-line reason and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from slsviz.errors import SlsvizError


def _add_backbone_args(p: argparse.ArgumentParser) -> None:
    from slsviz.backbones import DEFAULT_BACKBONE

    p.add_argument("--model", default=DEFAULT_BACKBONE, help="'default' (DINOv2 ViT-S/14, embedded) or a timm ViT name")
    p.add_argument("--checkpoint", help="local weights for --model: .npz, .pth/.pt or .safetensors")
    p.add_argument("--hub", action="store_true", help="fetch --model's pretrained weights from the model hub")
    p.add_argument("--img-size", type=int, help="input size in pixels (default: 112 for the default backbone)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")


def _cmd_info(args: argparse.Namespace) -> dict:
    from slsviz.device import resolve_device
    from slsviz.environment import environment

    return environment(resolve_device(args.device))


def _cmd_backbone(args: argparse.Namespace) -> dict:
    from slsviz.backbones import load_backbone
    from slsviz.device import describe_device, resolve_device

    device = resolve_device(args.device)
    backbone = load_backbone(args.model, args.checkpoint, img_size=args.img_size, hub=args.hub, device=device)
    return {**backbone.describe(), "device": describe_device(device)}


def _cmd_data(args: argparse.Namespace) -> dict:
    from slsviz.data import load_dataset

    return load_dataset(args.data, seed=args.seed).describe()


def _cmd_train(args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    from slsviz.backbones import load_backbone
    from slsviz.data import load_dataset
    from slsviz.device import describe_device, resolve_device
    from slsviz.petl import PetlConfig
    from slsviz.task import fit_task, save_task
    from slsviz.train import Recipe

    device = resolve_device(args.device)
    petl = PetlConfig(method=args.method, bottleneck=args.bottleneck, scale=args.scale)
    recipe = Recipe(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                    warmup_epochs=args.warmup_epochs, seed=args.train_seed)
    backbone = load_backbone(args.model, args.checkpoint, img_size=args.img_size, hub=args.hub, device=device)
    data = load_dataset(args.data, seed=args.seed)
    with tqdm(total=recipe.epochs, desc=f"train {petl.method}", unit="epoch", file=sys.stderr) as bar:
        def progress(epoch: int, total: int, info: dict) -> None:
            bar.set_postfix(loss=f"{info['loss']:.3f}", val=f"{info['val_accuracy']:.3f}")
            bar.update(1)

        model, meta, result = fit_task(backbone, data, petl, recipe, device=device, progress=progress, limit=args.limit)
    path = save_task(args.out, model, meta)
    return {"checkpoint": str(path), "bytes": path.stat().st_size, "device": describe_device(device),
            "seconds": round(result.seconds, 1), **meta.to_dict(), "history": result.history}


def _cmd_evaluate(args: argparse.Namespace) -> dict:
    import time

    from slsviz.data import Preprocess, load_dataset, make_loader
    from slsviz.device import describe_device, resolve_device
    from slsviz.task import load_task_with_backbone
    from slsviz.train import evaluate

    device = resolve_device(args.device)
    backbone, model, meta = load_task_with_backbone(args.task, device=device)
    data = load_dataset(args.data or meta.dataset, seed=meta.split_seed if meta.split_seed is not None else 0)
    loader = make_loader(data, args.split, Preprocess(meta.img_size, meta.mean, meta.std), args.batch_size, limit=args.limit)
    start = time.perf_counter()
    accuracy = evaluate(model, loader, device)
    return {"task": str(args.task), "dataset": data.name, "split": args.split, "num_images": len(loader.dataset),
            "accuracy": accuracy, "recorded_test_accuracy": meta.test_accuracy, "depth": len(model.blocks),
            "seconds": round(time.perf_counter() - start, 2), "device": describe_device(device)}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    from slsviz import __version__
    from slsviz.data import DEFAULT_DATASET

    parser = argparse.ArgumentParser(prog="slsviz", description="SLS layer-wise pruning analysis for PETL vision transformers.")
    parser.add_argument("--version", action="version", version=f"slsviz {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("info", help="versions and the compute device that would be used")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("backbone", help="load a backbone (converting the default once) and describe it")
    _add_backbone_args(p)
    p.set_defaults(func=_cmd_backbone)

    p = sub.add_parser("data", help="load a dataset and describe its classes and splits")
    p.add_argument("--data", default=DEFAULT_DATASET, help="mnist5k, digits, an image-folder path or a VTAB-1k root")
    p.add_argument("--seed", type=int, default=0, help="split seed (built-ins and image folders)")
    p.set_defaults(func=_cmd_data)

    p = sub.add_parser("train", help="train a PETL task (adapters + head) and save its task checkpoint")
    _add_backbone_args(p)
    p.add_argument("--data", default=DEFAULT_DATASET, help="mnist5k, digits, an image-folder path or a VTAB-1k root")
    p.add_argument("--seed", type=int, default=0, help="split seed (built-ins and image folders)")
    p.add_argument("--method", default="convpass", help="convpass, repadapter, lora, adaptformer or linear")
    p.add_argument("--bottleneck", type=int, default=8, help="adapter width / LoRA rank (default 8)")
    p.add_argument("--scale", type=float, help="adapter scale s (default: the method's own)")
    p.add_argument("--epochs", type=int, default=100, help="epochs (paper: 100)")
    p.add_argument("--warmup-epochs", type=int, default=10, help="linear warm-up epochs (paper: 10)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (paper: 1e-3)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (paper: 64)")
    p.add_argument("--train-seed", type=int, default=0, help="seed of shuffling, dropout and head init")
    p.add_argument("--limit", type=int, help="use only the first N images of each split (quick runs)")
    p.add_argument("--out", required=True, help="task checkpoint to write (.safetensors)")
    p.set_defaults(func=_cmd_train)

    from slsviz.task import DEFAULT_TASK_PATH

    p = sub.add_parser("evaluate", help="accuracy of a task checkpoint on a split of its dataset")
    p.add_argument("--task", default=str(DEFAULT_TASK_PATH), help="task checkpoint (default: the shipped one)")
    p.add_argument("--data", help="dataset (default: the one the task was trained on)")
    p.add_argument("--split", default="test", help="train, val or test (default: test)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--limit", type=int, help="only the first N images of the split")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    p.set_defaults(func=_cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except SlsvizError as exc:
        print(f"slsviz: error: {exc}", file=sys.stderr)
        return 2
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
