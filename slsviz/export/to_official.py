"""The pruned task as the official SLS code (RuiZiHan/SLS) saves it: ``<name>_<D>blocks.pt``.

That code's ``pruning_train.save`` writes, with ``torch.save``, every parameter whose name holds
"adapter" or "head" of the model cut to the kept blocks; slsviz's Convpass and RepAdapter blocks use
its parameter names and forward passes (:mod:`slsviz.models.official`), so the file is the kept
blocks' adapter tensors and the head under those names. Beside it, ``<name>.yaml`` holds what the file
does not (the repository's ``configs/<method>/<dataset>.yaml``: ``name``, ``class_num``, ``scale``,
``xavier_init``). Only a task that code can run fits: Convpass or RepAdapter on a 768-wide ViT,
Convpass on a 14x14 patch grid (ViT-B/16 at 224 px).
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from torch import nn

from slsviz.errors import SlsvizError
from slsviz.export.handback import cut_cpu, file_stem
from slsviz.models import official
from slsviz.models.swin import SwinBlocks
from slsviz.models.task import TaskMeta

TITLE = "The pruned task for the official SLS code"


def refusal(model: nn.Module, meta: TaskMeta) -> str | None:
    """Why the official code cannot run the task, or ``None``."""
    method = meta.petl.get("method")
    if method not in ("convpass", "repadapter"):
        return (f"The official SLS code runs Convpass and RepAdapter tasks, not {method}: export it for timm, "
                "transformers or PEFT (LoRA), as the slsviz task or as ONNX.")
    if isinstance(model, SwinBlocks):
        return ("slsviz writes the official SLS code's ViT-B/16 tasks; its Swin path (timm 0.4's layout, depths 5 and "
                "up) is not one slsviz writes: export it for timm, as the slsviz task or as ONNX.")
    if int(model.embed_dim) != official.CONVPASS_WIDTH:
        return (f"The official SLS code's adapters are {official.CONVPASS_WIDTH} wide (ViT-B/16); {meta.backbone_arch} is "
                f"{model.embed_dim} wide: export it as the slsviz task or as ONNX.")
    grid = tuple(int(g) for g in model.patch_embed.grid_size)
    if method == "convpass" and grid != official.CONVPASS_GRID:
        return (f"The official Convpass works on a {official.CONVPASS_GRID[0]}x{official.CONVPASS_GRID[1]} patch grid "
                f"(ViT-B/16 at {official.IMG_SIZE} px); this backbone has {grid[0]}x{grid[1]}: export it as the slsviz "
                "task or as ONNX.")
    return None


def write(model: nn.Module, meta: TaskMeta, depth: int, folder: Path) -> tuple[str, list[str]]:
    """``<name>_<depth>blocks.pt`` and ``<name>.yaml``, checked with slsviz's reader of official files."""
    name = file_stem(meta)
    cut = cut_cpu(model, depth)
    tensors = {k: p.detach().clone() for k, p in cut.named_parameters() if "adapter" in k or "head" in k}
    found = official.inspect(folder / f"{name}_{depth}blocks.pt", tensors)
    if not official.is_official(tensors) or found.depth != depth or not found.both_adapters:
        raise SlsvizError(f"The {meta.petl.get('method')} task's tensors are not what the official code saves "
                          f"({found.depth} blocks with adapters): export it as the slsviz task or as ONNX.")
    torch.save(tensors, found.path)
    task_config = {"name": name, "class_num": meta.num_classes, "scale": float(meta.petl["scale"]),
                   "xavier_init": meta.petl.get("init") == "xavier"}
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(task_config, sort_keys=False), encoding="utf-8")
    return (f"the adapters of the first {depth} blocks and the head, under the official code's names, and the task "
            f"config with the adapter scale; the backbone is the {meta.backbone_arch} the task was trained on "
            f"({meta.backbone_id})."), [
        f"In the SLS repository, as its `pruning_train.py` does after pruning: build its ViT-B/16 with the "
        f"{meta.petl.get('method')} adapters (`set_{'Convpass' if meta.petl.get('method') == 'convpass' else 'RepAdapter'}`"
        f", bottleneck {meta.petl.get('bottleneck')}, scale from `{name}.yaml`), load the backbone, keep the first "
        f"{depth} blocks and load this file:", "",
        "```python", f"model.blocks = model.blocks[:{depth}]",
        f"model.load_state_dict(torch.load({found.path.name!r}), strict=False)", "```", "",
        f"slsviz opens it again: `slsviz evaluate --task {found.path.name} --task-config {name}.yaml --model "
        f"{meta.backbone_arch} --checkpoint <the backbone>`."]
