"""The pruned model handed back in the formats of the user's own tools, each loaded there without slsviz.

Each format is one module, ``slsviz.export.to_<format>``, with ``TITLE`` (what the folder is for),
``refusal(model, meta)`` (why it cannot hold this task, or ``None``) and ``write(model, meta, depth,
folder)``, which writes its files into ``folder``, checks them with the tool itself and returns the
model card's description and "Load it" lines. :func:`export_as` runs one: every file reaches ``out``
only once all are written and checked, each by a rename, with a model card (``README.md``) beside them.

    >>> refusals(model, meta)            # {"timm": None, "official": "...", "peft": None, ...}
    >>> export_as("peft", model, meta, 6, "eurosat-peft", config=config)
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from slsviz.choices import EXPORT_FORMATS
from slsviz.errors import SlsvizError
from slsviz.models.depth import check_depth, prune_to_depth
from slsviz.models.petl import count_params
from slsviz.models.task import TaskMeta
from slsviz.pruning.bench import count_flops
from slsviz.storage import staged_folder

FORMATS = EXPORT_FORMATS
# How close the tool's logits must be to slsviz's pruned model's before a file is written.
TOLERANCE = 1e-4
# Methods whose adapters are modules of their own: no plain ViT (timm's or transformers') holds them.
UNMERGEABLE = ("convpass", "adaptformer")
_ELSEWHERE = "export it as the slsviz task (`slsviz export`, the default) or as ONNX (the Export page), which hold it"


def format_module(name: str) -> ModuleType:
    """The module of format ``name``.

    Raises:
        SlsvizError: an unknown format, with the known ones.
    """
    if name not in FORMATS:
        raise SlsvizError(f"Unknown export format {name!r}: use one of {', '.join(FORMATS)}.")
    return importlib.import_module(f"slsviz.export.to_{name}")


def refusals(model: nn.Module, meta: TaskMeta) -> dict[str, str | None]:
    """Per format, why it cannot hold ``model`` (``None``: it can), in :data:`FORMATS` order."""
    return {name: format_module(name).refusal(model, meta) for name in FORMATS}


def export_as(fmt: str, model: nn.Module, meta: TaskMeta, depth: int, out: str | os.PathLike, *,
              config: dict[str, Any] | None = None) -> list[Path]:
    """Write ``model`` cut at ``depth`` blocks into the folder ``out`` in format ``fmt``, with a model card.

    Args:
        fmt: one of :data:`FORMATS`.
        model: the task model (adapters and head), full depth or cut; not changed.
        meta: its metadata.
        depth: blocks kept.
        out: the folder (made if missing).
        config: an SLS configuration (:func:`slsviz.export.build_config`) whose criterion, scores and
            accuracies the card shows; ``None`` leaves them out.

    Returns:
        The files written, in ``out``.

    Raises:
        SlsvizError: a format that cannot hold the task (the reason and what holds it), a depth out of
            range, or a tool that does not give the pruned model's logits; nothing is written then.
    """
    module = format_module(fmt)
    refusal = module.refusal(model, meta)
    if refusal is not None:
        raise SlsvizError(refusal)
    depth = check_depth(depth, len(model.blocks))
    out = Path(out)
    with staged_folder(out) as folder:
        description, load = module.write(model, meta, depth, folder)
        (folder / "README.md").write_text(card(model, meta, depth, module.TITLE, description, load, config),
                                          encoding="utf-8")
        written = sorted(out / p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    return written


def unmergeable(meta: TaskMeta, holder: str) -> str | None:
    """Why ``holder`` (a plain ViT of some tool) cannot hold ``meta``'s adapters, or ``None``."""
    method = meta.petl.get("method")
    if method in UNMERGEABLE:
        return f"A {method} task's adapters are modules of their own, which {holder} does not have: {_ELSEWHERE}."
    return None


def cut_cpu(model: nn.Module, depth: int) -> nn.Module:
    """``model`` cut at ``depth`` blocks, in eval mode, on the CPU (the tools' files are CPU tensors)."""
    return prune_to_depth(model, depth).eval().cpu()


def check_logits(theirs: Callable[[torch.Tensor], torch.Tensor], ours: nn.Module, img_size: int, what: str) -> None:
    """Raise unless ``theirs`` gives ``ours``' logits within :data:`TOLERANCE` on a fixed random batch.

    Raises:
        SlsvizError: naming ``what`` (the tool's model) and the largest difference.
    """
    x = torch.randn(2, 3, img_size, img_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        gap = float((theirs(x) - ours.eval()(x)).abs().max())
    if not gap <= TOLERANCE:
        raise SlsvizError(f"{what} gives other logits than slsviz's pruned model (max difference {gap:.2g}): its "
                          f"backbone is not one that tool rebuilds; {_ELSEWHERE}.")


def file_stem(meta: TaskMeta) -> str:
    """A file-name-safe name of the task: its dataset, without the format prefix slsviz gives opened tasks."""
    name = re.sub(r"^(?:official|peft|full):", "", meta.dataset).rstrip("/\\")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).name).strip("._")
    return name or "task"


def preprocessing(meta: TaskMeta) -> dict[str, Any]:
    """The preprocessing the task was trained with, JSON-ready."""
    return {"img_size": meta.img_size, "mean": list(meta.mean), "std": list(meta.std), "interpolation": meta.resample}


def card(full: nn.Module, meta: TaskMeta, depth: int, title: str, description: str, load: list[str],
         config: dict[str, Any] | None) -> str:
    """The model card: what the folder is, what was cut, what it gives, how to load it."""
    total, size = meta.num_layers, meta.img_size
    cut = prune_to_depth(full, depth)
    device = next(full.parameters()).device
    flops_full, flops_cut = count_flops(full, size, device), count_flops(cut, size, device)
    params_full, params_cut = count_params(full), count_params(cut)
    kept = f"{depth} of {total} blocks" + (f" (the task as opened kept {len(full.blocks)})" if len(full.blocks) != total else "")
    lines = [f"# {meta.dataset}: {meta.petl.get('method')} on {meta.backbone_arch}, {kept}", "",
             f"{title}. Exported by slsviz from {meta.source.get('path') if meta.source else meta.dataset}: "
             f"{description}", "",
             "| | as opened | kept |", "|---|---|---|", f"| blocks | {len(full.blocks)} | {depth} |",
             f"| parameters | {params_full:,} | {params_cut:,} ({100 * (1 - params_cut / params_full):.1f}% fewer) |",
             f"| GFLOPs per image ({size} px) | {flops_full / 1e9:.3f} | {flops_cut / 1e9:.3f} "
             f"({100 * (1 - flops_cut / flops_full):.1f}% fewer) |"]
    if config is not None:
        results = config.get("results", {})
        lines += ["", f"Chosen with SLS: {config['metric']} of the {config['projection']} map of each block's "
                  f"features, alpha {config['alpha']}; recommended depth {results.get('recommended_depth')}.", ""]
        measured = {k: v for k, v in results.items() if "accuracy" in k and isinstance(v, (int, float))}
        if measured:
            lines += [f"| measured at depth {depth} | value |", "|---|---|",
                      *(f"| {k} | {v:.4f} |" for k, v in sorted(measured.items()))]
        scores = [s for s in config.get("scores", []) if isinstance(s, dict) and "layer" in s]
        if scores:
            key = config["metric"]
            lines += ["", "Per block: " + ", ".join(f"{s['layer']}: {s.get(key, s.get('score'))}" for s in scores)]
    pre = preprocessing(meta)
    lines += ["", "## Load it", "", *load, "",
              f"Inputs: RGB resized to {pre['img_size']} x {pre['img_size']} ({pre['interpolation']}), scaled to "
              f"[0, 1], normalised with mean {pre['mean']} and std {pre['std']}. Classes, in the head's order: "
              f"{', '.join(map(str, meta.class_names))}.", ""]
    return "\n".join(lines)
