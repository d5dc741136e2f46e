"""LoRA adapters that Hugging Face PEFT saved (``save_pretrained``), opened as slsviz tasks.

A PEFT folder holds ``adapter_config.json`` and ``adapter_model.safetensors`` (or ``.bin``) with keys
``base_model.model.<module>.lora_A.weight`` (r x in) and ``lora_B.weight`` (out x r), the head under its
own name when it is in ``modules_to_save``, and trained biases (``bias="lora_only"`` / ``"all"``) under
the module's name (``<module>.base_layer.bias`` for a LoRA layer's own). Modules are a timm ViT's
(``blocks.<i>.attn.qkv``, ``attn.proj``, ``mlp.fc1``, ``mlp.fc2``; head ``head``) or a transformers
ViT's or DINOv2's (``query``/``key``/``value`` or transformers 5's ``q_proj``/``k_proj``/``v_proj``,
which become thirds of timm's fused ``qkv``, the ``dense`` layers, ``fc1``/``fc2``; head
``classifier``). The update is PEFT's ``scaling * B A`` with ``scaling = lora_alpha / r`` (rsLoRA:
``lora_alpha / sqrt(r)``), on the blocks the keys name (``layers_to_transform``). What slsviz's LoRA
does not compute is refused with its reason: per-module ranks or alphas, LoRA biases, DoRA, other
PEFT types.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn as nn

from slsviz.errors import CheckpointError, SlsvizError
from slsviz.models import hf_vit
from slsviz.models.backbones import Backbone
from slsviz.models.petl import PetlConfig, petl_state_dict
from slsviz.models.petl.config import LORA_TARGETS
from slsviz.models.task import TaskMeta, build_task_model
from slsviz.models.weights import WeightsFile, read_folder_weights

CONFIG = "adapter_config.json"
WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
_PREFIX = "base_model.model."
_LORA = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])\.weight$")
# timm module -> LoRA target of slsviz (see slsviz.models.petl.lora.TARGETS)
_TIMM_TARGET = re.compile(r"^blocks\.(\d+)\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)$")
_TARGET_OF = {"attn.qkv": "qkv", "attn.proj": "proj", "mlp.fc1": "fc1", "mlp.fc2": "fc2"}


@dataclass(frozen=True)
class PeftLora:
    """What a PEFT LoRA folder says, from its config and tensor shapes.

    Attributes:
        path: the folder.
        rank: r.
        lora_alpha: PEFT's alpha.
        rslora: ``use_rslora`` (scaling ``lora_alpha / sqrt(r)``).
        dropout: ``lora_dropout``.
        num_classes: rows of the saved head.
        targets: slsviz's LoRA targets (timm names; q, k, v are thirds of qkv).
        layers: the blocks with LoRA (0-based).
        bias: PEFT's ``bias`` (``"none"``, ``"lora_only"``, ``"all"``).
        naming: ``"timm"`` or ``"transformers"``: whose module names the keys use.
        width: the token width the LoRA factors expect.
        base_model: ``base_model_name_or_path`` of the config (the model it was trained on), if set.
        tensors: its tensors under slsviz's names (see :func:`detect`).
    """

    path: Path
    rank: int
    lora_alpha: float
    rslora: bool
    dropout: float
    num_classes: int
    targets: tuple[str, ...]
    layers: tuple[int, ...]
    bias: str
    naming: str
    width: int
    base_model: str | None = None
    tensors: dict[str, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)
    kind: ClassVar[str] = "peft"
    records_dataset: ClassVar[bool] = False

    @property
    def needs(self) -> tuple[str, ...]:
        """What the folder leaves open: the backbone it adapts, the dataset."""
        return ("checkpoint",) + (() if self.naming == "transformers" else ("model",)) + ("data",)

    @property
    def missing(self) -> tuple[str, ...]:
        """:attr:`needs`, in words."""
        backbone = ("the transformers folder it adapts: --checkpoint" if self.naming == "transformers"
                    else "the timm backbone it adapts: --model and --checkpoint")
        return backbone, "the dataset: --data (the app: the Dataset field)"

    def input_size(self, asked: int | None) -> int | None:
        """The folder does not fix one: the backbone's, unless asked."""
        return asked

    def backbone(self, model: str, checkpoint: Any) -> tuple[str, Any]:
        """The backbone the user named (the folder does not hold one)."""
        return model, checkpoint

    def open(self, backbone: Backbone, options: Any = None) -> tuple[nn.Module, TaskMeta]:
        """The task model on ``backbone`` (see :func:`open_peft`)."""
        return open_peft(self, backbone)

    @property
    def scaling(self) -> float:
        """The factor on ``B A``, as PEFT computes it."""
        return self.lora_alpha / (math.sqrt(self.rank) if self.rslora else self.rank)

    def describe(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"format": "PEFT LoRA adapter", "method": "lora", "path": str(self.path), "rank": self.rank,
                "lora_alpha": self.lora_alpha, "rslora": self.rslora, "scaling": self.scaling, "dropout": self.dropout,
                "classes": self.num_classes, "targets": list(self.targets), "layers": list(self.layers),
                "bias": self.bias, "module_names": self.naming, "width": self.width, "base_model": self.base_model,
                "expects": f"a {self.width}-wide {self.naming} ViT with at least {max(self.layers) + 1} blocks"}


def detect(file: WeightsFile) -> PeftLora | None:
    """What ``file`` says, its tensors under slsviz's names, when it is a PEFT adapter folder, else ``None``.

    q/k/v tensors of a transformers model keep a ``#q``/``#k``/``#v`` suffix for :func:`open_peft` to
    place; LoRA factors are named ``<module>.lora_A`` / ``lora_B`` per target, e.g. ``blocks.0.attn.q.lora_A``.

    Raises:
        SlsvizError: a PEFT folder slsviz cannot open, with the reason.
        CheckpointError: unreadable files, or tensors that disagree with the config.
    """
    path = file.path
    if not (path.is_dir() and (path / CONFIG).is_file()):
        return None
    try:
        config = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path / CONFIG} cannot be read ({type(exc).__name__}).") from None
    _check_config(path, config)
    rank = int(config["r"])
    ours: dict[str, torch.Tensor] = {}
    per_block: dict[int, set[str]] = {}
    naming = "timm"  # becomes "transformers" at the first transformers module name
    for key, value in file.reading("adapter", lambda p: read_folder_weights(p, WEIGHTS, CONFIG)).items():
        if ".original_module." in key:
            continue  # the frozen head PEFT keeps beside the trained copy (saved with bias="all")
        name = re.sub(r"\.modules_to_save(?:\.default)?\.", ".", key.removeprefix(_PREFIX)).replace(".base_layer.", ".")
        lora = _LORA.match(name)
        if lora:
            block, target, names = _target(path, key, lora.group("module"))
            naming = "transformers" if names == "transformers" else naming
            if lora.group("ab") == "A" and value.shape[0] != rank:
                raise CheckpointError(f"{path}: {key} has rank {value.shape[0]}, not r = {rank} of {CONFIG}.")
            per_block.setdefault(block, set()).add(target)
            ours[f"blocks.{block}.{target}.lora_{lora.group('ab')}"] = value
            continue
        mapped = (name, None) if _is_timm(name) else hf_vit.timm_name(name)
        if mapped is None or not (mapped[0].endswith(".bias") or mapped[0].startswith("head.")):
            raise CheckpointError(f"{path}: tensor {key} is neither a LoRA factor, a bias nor the head of a timm or "
                                  "transformers ViT.")
        if mapped[0] != name:
            naming = "transformers"
        ours[mapped[0] + (f"#{mapped[1]}" if mapped[1] else "")] = value
    if not per_block:
        raise CheckpointError(f"{path} holds no LoRA factors.")
    targets = set.union(*per_block.values())
    uneven = sorted(b for b, t in per_block.items() if t != targets)
    if uneven:
        raise SlsvizError(f"{path} adapts other modules in block {uneven[0]} than in the others; slsviz's LoRA adapts "
                          f"the same modules ({', '.join(sorted(targets))}) in every adapted block.")
    if "head.weight" not in ours:
        head = "classifier" if naming == "transformers" else "head"
        raise SlsvizError(f"{path} saves no head: train with modules_to_save=['{head}'] so the task's classifier is saved.")
    a = next(v for k, v in ours.items() if k.endswith("lora_A"))
    found = PeftLora(path=path, rank=rank, lora_alpha=float(config["lora_alpha"]), rslora=bool(config.get("use_rslora")),
                     dropout=float(config.get("lora_dropout") or 0.0), num_classes=int(ours["head.weight"].shape[0]),
                     targets=tuple(t for t in LORA_TARGETS if t in targets), layers=tuple(sorted(per_block)),
                     bias=str(config.get("bias", "none")), naming=naming, width=int(a.shape[1]),
                     base_model=config.get("base_model_name_or_path"), tensors=ours)
    return found


def open_peft(adapter: PeftLora, backbone: Backbone) -> tuple[nn.Module, TaskMeta]:
    """The task model of a PEFT LoRA adapter on ``backbone``, and its meta.

    Raises:
        CheckpointError: an adapter for another backbone (width, blocks), named on both sides.
    """
    side = f"the backbone {backbone.arch} is {backbone.embed_dim} wide with {backbone.num_layers} blocks"
    if adapter.width != backbone.embed_dim or max(adapter.layers) >= backbone.num_layers:
        raise CheckpointError(f"{adapter.path} adapts a {adapter.width}-wide ViT in blocks "
                              f"{_ranges(adapter.layers)} (0-based); {side}: load the backbone it was trained on.")
    every = adapter.layers == tuple(range(backbone.num_layers))
    petl = PetlConfig("lora", bottleneck=adapter.rank, alpha=adapter.lora_alpha, rslora=adapter.rslora,
                      dropout=adapter.dropout, targets=adapter.targets, layers=None if every else adapter.layers,
                      bias=adapter.bias)
    model = build_task_model(backbone, petl, adapter.num_classes)
    expected = petl_state_dict(model)
    loaded = _place(adapter, adapter.tensors, expected)
    lora = {k for k in expected if "lora_" in k}
    wrong = sorted(k for k in lora | {"head.weight"} if k not in loaded or loaded[k].shape != expected[k].shape)
    if wrong:
        shown = wrong[0]
        got = tuple(loaded[shown].shape) if shown in loaded else "absent"
        raise CheckpointError(f"{adapter.path} does not fit LoRA on {backbone.arch} ({backbone.embed_dim} wide): "
                              f"{shown} is {got}, the model needs {tuple(expected[shown].shape)}.")
    strays = sorted(set(loaded) - set(expected))
    if strays:
        raise CheckpointError(f"{adapter.path}: {strays[0]} is not among what bias={adapter.bias!r} trains.")
    model.load_state_dict(loaded, strict=False)
    meta = TaskMeta(
        backbone_id=backbone.id, backbone_arch=backbone.arch, backbone_checksum=backbone.checksum, petl=petl.to_dict(),
        class_names=[str(c) for c in range(adapter.num_classes)], img_size=backbone.img_size,
        mean=list(backbone.mean), std=list(backbone.std), resample=backbone.resample,
        dataset=f"peft:{adapter.path.name}", split_seed=None,
        num_layers=backbone.num_layers,
        recipe={"source": f"PEFT LoRA adapter {adapter.path}", "class_names": "label indices",
                "peft": {"r": adapter.rank, "lora_alpha": adapter.lora_alpha, "use_rslora": adapter.rslora,
                         "bias": adapter.bias, "module_names": adapter.naming}},
        source={"format": "PEFT LoRA adapter", "path": str(adapter.path), "backbone": backbone.id})
    return model.eval(), meta


def _place(adapter: PeftLora, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The adapter's tensors under the task model's names: per-target factors stacked into the fused
    qkv's (q, k, v in that order), q/k/v biases written into a copy of the backbone's qkv bias."""
    out: dict[str, torch.Tensor] = {}
    for name, value in tensors.items():
        m = re.match(r"^(blocks\.\d+)\.([qkv])\.(lora_[AB])$", name)
        if m or "#" in name:
            continue
        out[re.sub(r"^(blocks\.\d+)\.(qkv|proj|fc1|fc2)\.", lambda g: f"{g.group(1)}.{_MODULE[g.group(2)]}.", name)] = value
    for block in adapter.layers:
        parts = [p for p in "qkv" if p in adapter.targets]
        if parts:
            for ab in ("A", "B"):
                out[f"blocks.{block}.attn.qkv.lora_{ab}"] = torch.cat(
                    [tensors[f"blocks.{block}.{p}.lora_{ab}"] for p in parts if f"blocks.{block}.{p}.lora_{ab}" in tensors])
    for name, value in tensors.items():
        if "#" in name:
            target, part = name.split("#")
            fused = out.setdefault(target, expected[target].clone()) if target in expected else None
            if fused is None:
                raise CheckpointError(f"{adapter.path}: the {part} bias of {target} is not among what "
                                      f"bias={adapter.bias!r} trains.")
            width = fused.shape[0] // 3
            index = "qkv".index(part)
            fused[index * width:(index + 1) * width] = value
    return out


_MODULE = {"qkv": "attn.qkv", "proj": "attn.proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}


def _target(path: Path, key: str, module: str) -> tuple[int, str, str]:
    """``(block, slsviz target, naming)`` of a LoRA module name, timm's or transformers'."""
    m = _TIMM_TARGET.match(module)
    if m:
        return int(m.group(1)), _TARGET_OF[m.group(2)], "timm"
    mapped = hf_vit.timm_name(module + ".weight")
    if mapped is not None:
        t = _TIMM_TARGET.match(mapped[0].removesuffix(".weight"))
        if t:
            target = mapped[1] or _TARGET_OF[t.group(2)]
            return int(t.group(1)), target, "transformers"
    if re.match(r"^layers\.\d+\.blocks\.\d+\.", module):
        raise SlsvizError(f"{path}: {key} adapts {module}, a Swin's layer; slsviz writes PEFT adapters for a Swin but "
                          "opens those of a ViT only: open the same task's timm export or its slsviz task instead.")
    raise SlsvizError(f"{path}: {key} adapts {module}; slsviz's LoRA adapts a ViT block's attention (qkv or query/key/"
                      "value, output projection) and MLP layers only.")


def _is_timm(name: str) -> bool:
    return name.startswith(("blocks.", "head.", "norm.", "patch_embed.", "fc_norm."))


def _ranges(layers: tuple[int, ...]) -> str:
    return ", ".join(map(str, layers)) if len(layers) < 6 else f"{layers[0]}..{layers[-1]}"


def _check_config(path: Path, config: dict[str, Any]) -> None:
    kind = config.get("peft_type")
    if kind != "LORA":
        raise SlsvizError(f"{path} holds a PEFT {kind} adapter; slsviz opens LoRA adapters.")
    if config.get("use_dora"):
        raise SlsvizError(f"{path} is a DoRA adapter (use_dora): its magnitude vectors change the weights in a way "
                          "slsviz's LoRA does not compute.")
    unsupported = {"lora_bias": bool(config.get("lora_bias")), "rank_pattern": bool(config.get("rank_pattern")),
                   "alpha_pattern": bool(config.get("alpha_pattern")), "fan_in_fan_out": bool(config.get("fan_in_fan_out")),
                   "layer_replication": bool(config.get("layer_replication")),
                   "target_parameters": bool(config.get("target_parameters"))}
    named = [k for k, on in unsupported.items() if on]
    if named:
        raise SlsvizError(f"{path} sets {', '.join(named)} in {CONFIG}; slsviz's LoRA has one rank and alpha for every "
                          "module and no bias of its own on lora_B, so it does not open this adapter.")
    if config.get("bias", "none") not in ("none", "lora_only", "all"):
        raise SlsvizError(f"{path}: bias {config.get('bias')!r} in {CONFIG} is not one of PEFT's none, lora_only, all.")
