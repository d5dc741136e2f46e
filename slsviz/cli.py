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
