"""Task checkpoints written by the official SLS code (RuiZiHan/SLS), opened as slsviz tasks.

That code saves, with ``torch.save``, a dict of every parameter of a timm ViT whose name contains
"adapter" or "head" (its ``utils.save``; ``pruning_train.save`` writes ``<dataset>_<blocks>blocks.pt``
after pruning, with the adapters of the kept blocks only). Convpass keys are
``blocks.{i}.adapter_{attn,mlp}.{adapter_down,adapter_conv,adapter_up}.{weight,bias}``; RepAdapter
("repblock") keys ``blocks.{i}.adapter_{attn,mlp}.conv_{A,B}.{weight,bias}``; the head ``head.{weight,bias}``.
Our Convpass and RepAdapter blocks use the same names and compute the same forward passes, so the
tensors load as they are. What the file does not hold comes from the repository's YAML
(``configs/<method>/<dataset>.yaml``: ``name``, ``class_num``, ``scale``, ``xavier_init``) or a
``scale`` given by hand; the bottleneck, groups, class count and depth come from the tensor shapes.

The official code feeds images resized (bicubic) to 224 px and normalised with ImageNet's mean and
std; a task opened from it records that preprocessing.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn as nn

from slsviz.errors import CheckpointError, SlsvizError
from slsviz.models.backbones import Backbone
from slsviz.models.depth import prune_to_depth
from slsviz.models.petl import PetlConfig
from slsviz.models.task import TaskMeta, build_task_model
from slsviz.models.weights import WeightsFile

# What the official code's data pipeline does (timm's IMAGENET_DEFAULT_*, bicubic Resize((224, 224))).
IMG_SIZE = 224
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
# The official Convpass lays patch tokens on a fixed grid of a fixed width (convpass.py: reshape(B, 14, 14, dim),
# nn.Linear(768, dim)).
CONVPASS_GRID, CONVPASS_WIDTH = (14, 14), 768

_KEY = re.compile(r"^blocks\.(\d+)\.adapter_(attn|mlp)\.(adapter_down|adapter_conv|adapter_up|conv_A|conv_B)\.(weight|bias)$")
_HEAD = {"head.weight", "head.bias"}
_METHOD_OF = {"adapter_down": "convpass", "adapter_conv": "convpass", "adapter_up": "convpass",
              "conv_A": "repadapter", "conv_B": "repadapter"}


@dataclass(frozen=True)
class OfficialCheckpoint:
    """What an official SLS checkpoint says about itself, from its keys and shapes (format
    ``"official"`` of :mod:`slsviz.models.formats`).

    Attributes:
        path: the file.
        method: ``"convpass"`` or ``"repadapter"``.
        bottleneck: adapter width b.
        groups: RepAdapter's groups of ``conv_B`` (1 for Convpass).
        width: the token width D the adapters expect.
        num_classes: rows of the head.
        depth: blocks with adapters (fewer than the backbone's after the official pruning).
        both_adapters: adapters beside attention and MLP (``False``: attention only, the code's other mode).
        tensors: the file's tensors.
    """

    path: Path
    method: str
    bottleneck: int
    groups: int
    width: int
    num_classes: int
    depth: int
    both_adapters: bool
    tensors: dict[str, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)
    kind: ClassVar[str] = "official"
    records_dataset: ClassVar[bool] = False
    needs: ClassVar[tuple[str, ...]] = ("scale", "data")
    missing: ClassVar[tuple[str, ...]] = (
        "the adapter scale s: --task-config configs/<method>/<dataset>.yaml or --scale (the app: the Model page's "
        "task config or scale)", "the dataset: --data (the app: the Dataset field)")

    def describe(self) -> dict[str, Any]:
        """JSON-ready, with the preprocessing the official code trains with."""
        grid = (f", a {CONVPASS_GRID[0]}x{CONVPASS_GRID[1]} patch grid ({IMG_SIZE} px)" if self.method == "convpass"
                else "")
        said = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "tensors"}
        return {"format": "official SLS checkpoint", **{k: (str(v) if isinstance(v, Path) else v) for k, v in said.items()},
                "expects": f"a {self.width}-wide timm ViT with at least {self.depth} blocks{grid} (the paper: ViT-B/16)",
                "preprocessing": {"img_size": IMG_SIZE, "mean": list(MEAN), "std": list(STD)}}

    def input_size(self, asked: int | None) -> int:
        """What the official code trains at, unless asked otherwise."""
        return asked or IMG_SIZE

    def backbone(self, model: str, checkpoint: Any) -> tuple[str, Any]:
        """The backbone the user named (the file does not hold one)."""
        return model, checkpoint

    def open(self, backbone: Backbone, options: Any) -> tuple[nn.Module, TaskMeta]:
        """The task model on ``backbone`` (see :func:`open_official`)."""
        return open_official(self, backbone, task_config=options.task_config, scale=options.scale)


def detect(file: WeightsFile) -> OfficialCheckpoint | None:
    """What ``file`` says when it is an official SLS checkpoint, else ``None``."""
    path = file.path
    if path.suffix.lower() not in (".pt", ".pth", ".bin") or not path.is_file():
        return None
    try:
        state_dict = file.state_dict()
    except CheckpointError:  # not a file of tensors: another format's reader says why
        return None
    if not is_official(state_dict):
        return None
    return dataclasses.replace(inspect(path, state_dict), tensors=state_dict)


def is_official(state_dict: dict[str, torch.Tensor]) -> bool:
    """Whether every key is an official adapter or head key, and there are adapters and a head."""
    keys = set(state_dict)
    return _HEAD <= keys and any(_KEY.match(k) for k in keys) and all(_KEY.match(k) or k in _HEAD for k in keys)


def inspect(path: str | os.PathLike, state_dict: dict[str, torch.Tensor]) -> OfficialCheckpoint:
    """Method, bottleneck, groups, width, classes and depth, from the keys and shapes.

    Raises:
        CheckpointError: keys of two methods, blocks that are not 0..N-1, or shapes that disagree.
    """
    path = Path(path)
    matches = [m for m in map(_KEY.match, state_dict) if m]
    methods = {_METHOD_OF[m.group(3)] for m in matches}
    if len(methods) != 1:
        raise CheckpointError(f"{path} mixes Convpass and RepAdapter keys: it is not one official SLS task.")
    method = methods.pop()
    blocks = sorted({int(m.group(1)) for m in matches})
    if blocks != list(range(len(blocks))):
        raise CheckpointError(f"{path} has adapters in blocks {blocks}; the official code keeps blocks 0..N-1.")
    both = {m.group(2) for m in matches} == {"attn", "mlp"}
    head = state_dict["head.weight"]
    if method == "convpass":
        down = state_dict["blocks.0.adapter_attn.adapter_down.weight"]  # (b, D)
        bottleneck, width, groups = int(down.shape[0]), int(down.shape[1]), 1
    else:
        conv_a = state_dict["blocks.0.adapter_attn.conv_A.weight"]  # (b, D, 1)
        conv_b = state_dict["blocks.0.adapter_attn.conv_B.weight"]  # (D, b / groups, 1)
        bottleneck, width = int(conv_a.shape[0]), int(conv_a.shape[1])
        groups = bottleneck // int(conv_b.shape[1])
    if int(head.shape[1]) != width:
        raise CheckpointError(f"{path}: the head reads {int(head.shape[1])} features but the adapters are {width} wide.")
    return OfficialCheckpoint(path=path, method=method, bottleneck=bottleneck, groups=groups, width=width,
                              num_classes=int(head.shape[0]), depth=len(blocks), both_adapters=both)


def read_task_config(path: str | os.PathLike) -> dict[str, Any]:
    """The official repository's ``configs/<method>/<dataset>.yaml``: ``name``, ``class_num``, ``scale``, ``xavier_init``.

    Raises:
        SlsvizError: a missing or unreadable file, or no ``scale`` in it.
    """
    import yaml

    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SlsvizError(f"Task config {path} cannot be read ({type(exc).__name__}): give the official "
                          "configs/<method>/<dataset>.yaml.") from None
    if not isinstance(config, dict) or "scale" not in config:
        raise SlsvizError(f"Task config {path} has no 'scale': the official configs/<method>/<dataset>.yaml holds "
                          "name, class_num, scale and xavier_init.")
    return config


def open_official(
    checkpoint: OfficialCheckpoint,
    backbone: Backbone,
    *,
    task_config: str | os.PathLike | None = None,
    scale: float | None = None,
) -> tuple[nn.Module, TaskMeta]:
    """The task model of an official checkpoint on ``backbone`` (cut to the checkpoint's depth) and its meta.

    Raises:
        SlsvizError: no scale (neither ``task_config`` nor ``scale``), two scales that disagree, or a
            class count that disagrees with the config.
        CheckpointError: a backbone the checkpoint does not fit (width, grid, depth), named on both sides.
    """
    config = read_task_config(task_config) if task_config is not None else {}
    if scale is None and "scale" not in config:
        raise SlsvizError(f"{checkpoint.path} is an official SLS {checkpoint.method} checkpoint, which does not store "
                          "the adapter scale s: give --task-config configs/<method>/<dataset>.yaml (from the SLS "
                          "repository) or --scale (in the app: the task config or scale fields of the Model page).")
    if scale is not None and "scale" in config and float(config["scale"]) != float(scale):
        raise SlsvizError(f"--scale {scale} disagrees with the scale {config['scale']} in {task_config}: give one.")
    s = float(scale if scale is not None else config["scale"])
    if "class_num" in config and int(config["class_num"]) != checkpoint.num_classes:
        raise SlsvizError(f"{task_config} says {config['class_num']} classes but the head of {checkpoint.path} has "
                          f"{checkpoint.num_classes}: is it the config of this task?")
    _check_fits(checkpoint, backbone)
    state_dict = checkpoint.tensors
    if not checkpoint.both_adapters:
        raise SlsvizError(f"{checkpoint.path} has adapters beside attention only (the official code's 'attn' mode); "
                          "slsviz opens the block mode the paper uses (adapters beside attention and MLP). That "
                          "mode's forward (forward_block_attn / forward_vit_attn_adapter) calls timm 0.4's "
                          "block.drop_path, which the timm 0.9.10 the code names does not have.")
    petl = PetlConfig(checkpoint.method, bottleneck=checkpoint.bottleneck, scale=s,
                      groups=checkpoint.groups if checkpoint.method == "repadapter" else 2,
                      init="xavier" if config.get("xavier_init") and checkpoint.method == "convpass" else "default")
    model = build_task_model(backbone, petl, checkpoint.num_classes)
    if checkpoint.depth < backbone.num_layers:
        model = prune_to_depth(model, checkpoint.depth)
    expected = {k: v for k, v in model.state_dict().items() if "adapter" in k or k.startswith("head.")}
    wrong = sorted(k for k in expected if k not in state_dict or tuple(state_dict[k].shape) != tuple(expected[k].shape))
    if wrong or set(state_dict) - set(expected):
        raise CheckpointError(f"{checkpoint.path} does not fit a {checkpoint.method} task on {backbone.arch}: "
                              f"{len(wrong)} tensors missing or of another shape (e.g. {', '.join(wrong[:3])}).")
    model.load_state_dict(state_dict, strict=False)
    name = str(config.get("name", checkpoint.path.stem))
    meta = TaskMeta(
        backbone_id=backbone.id, backbone_arch=backbone.arch, backbone_checksum=backbone.checksum,
        petl=petl.to_dict(), class_names=[str(c) for c in range(checkpoint.num_classes)], img_size=backbone.img_size,
        mean=list(MEAN), std=list(STD), dataset=f"official:{name}", split_seed=None, num_layers=backbone.num_layers,
        recipe={"source": f"official SLS checkpoint {checkpoint.path}", "class_names": "label indices",
                "task_config": str(task_config) if task_config is not None else None},
        depth=checkpoint.depth if checkpoint.depth < backbone.num_layers else None,
        source={"format": "official SLS checkpoint", "path": str(checkpoint.path),
                "task_config": str(task_config) if task_config is not None else None, "scale": s})
    return model.eval(), meta


def _check_fits(checkpoint: OfficialCheckpoint, backbone: Backbone) -> None:
    grid = tuple(int(g) for g in backbone.model.patch_embed.grid_size)
    side = f"{backbone.arch} ({backbone.embed_dim} wide, {backbone.num_layers} blocks, {grid[0]}x{grid[1]} patches at {backbone.img_size} px)"
    if checkpoint.width != backbone.embed_dim:
        raise CheckpointError(f"{checkpoint.path} has {checkpoint.width}-wide adapters; the backbone is {side}: load "
                              "the backbone the task was trained on (the SLS paper: ViT-B/16).")
    if checkpoint.depth > backbone.num_layers:
        raise CheckpointError(f"{checkpoint.path} has adapters in {checkpoint.depth} blocks; the backbone is {side}.")
    if checkpoint.method == "convpass" and (grid != CONVPASS_GRID or checkpoint.width != CONVPASS_WIDTH):
        raise CheckpointError(f"The official Convpass code works on a {CONVPASS_GRID[0]}x{CONVPASS_GRID[1]} grid of a "
                              f"{CONVPASS_WIDTH}-wide ViT (ViT-B/16 at {IMG_SIZE} px); the backbone is {side}. "
                              f"Use --img-size {IMG_SIZE} with a ViT-B/16.")
