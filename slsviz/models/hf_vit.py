"""Hugging Face transformers ViT folders (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``,
optional ``preprocessor_config.json``) as timm ViT backbones.

``ViTModel`` and ``ViTForImageClassification`` map onto timm's ``VisionTransformer`` tensor by tensor:
query, key and value are stacked into timm's fused ``qkv``; the layer-norm epsilon (1e-12 in
transformers, 1e-6 in timm), the input size and the normalisation come from the folder. Files written
by transformers 4 and 5 use the same names on disk (``encoder.layer.<i>.attention.attention.query``);
transformers 5's in-memory names (``layers.<i>.attention.q_proj``) are read too.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from slsviz.errors import CheckpointError, SlsvizError
from slsviz.models.weights import read_state_dict

WEIGHTS = ("model.safetensors", "pytorch_model.bin")
# Sizes timm has names for: (hidden, layers, heads) -> name part.
_SIZES = {(192, 12, 3): "tiny", (384, 12, 6): "small", (768, 12, 12): "base", (1024, 24, 16): "large",
          (1280, 32, 16): "huge"}
_RENAMES = [  # (transformers pattern, timm name); {i} is the layer
    (r"embeddings\.cls_token", "cls_token"),
    (r"embeddings\.position_embeddings", "pos_embed"),
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"(?:encoder\.layer|layers)\.(\d+)\.layernorm_before\.(weight|bias)", r"blocks.\1.norm1.\2"),
    (r"(?:encoder\.layer|layers)\.(\d+)\.layernorm_after\.(weight|bias)", r"blocks.\1.norm2.\2"),
    (r"(?:encoder\.layer\.(\d+)\.attention\.output\.dense|layers\.(\d+)\.attention\.o_proj)\.(weight|bias)",
     r"blocks.\1\2.attn.proj.\3"),
    (r"(?:encoder\.layer\.(\d+)\.intermediate\.dense|layers\.(\d+)\.mlp\.fc1)\.(weight|bias)", r"blocks.\1\2.mlp.fc1.\3"),
    (r"(?:encoder\.layer\.(\d+)\.output\.dense|layers\.(\d+)\.mlp\.fc2)\.(weight|bias)", r"blocks.\1\2.mlp.fc2.\3"),
    (r"layernorm\.(weight|bias)", r"norm.\1"),
]
_QKV = re.compile(r"^(?:encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)|layers\.(\d+)\.attention\.([qkv])_proj)"
                  r"\.(weight|bias)$")


def is_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a transformers model folder (a config and weights)."""
    path = Path(path)
    return path.is_dir() and (path / "config.json").is_file() and any((path / w).is_file() for w in WEIGHTS)


def read_folder(path: str | os.PathLike) -> dict[str, Any]:
    """The timm side of a transformers ViT folder.

    Returns:
        ``{"arch", "kwargs" (for timm.create_model), "img_size", "mean", "std", "state_dict" (timm names,
        no head), "classifier" (the folder's head, or None), "source"}``.

    Raises:
        SlsvizError: a model type slsviz does not convert yet.
        CheckpointError: unreadable files, or tensors that do not map.
    """
    path = Path(path)
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path / 'config.json'} cannot be read ({type(exc).__name__}).") from None
    kind = config.get("model_type")
    if kind != "vit":
        raise SlsvizError(f"{path} holds a transformers {kind!r} model; slsviz converts ViT (ViTModel, "
                          "ViTForImageClassification) folders so far.")
    hidden, layers, heads = int(config["hidden_size"]), int(config["num_hidden_layers"]), int(config["num_attention_heads"])
    patch, size = int(config["patch_size"]), int(config["image_size"])
    if config.get("hidden_act", "gelu") != "gelu" or int(config.get("num_channels", 3)) != 3:
        raise SlsvizError(f"{path}: slsviz converts ViTs with GELU and 3 input channels.")
    named = _SIZES.get((hidden, layers, heads))
    arch = f"vit_{named}_patch{patch}_{size}" if named else None
    import timm

    if arch not in timm.list_models():
        arch = "vit_base_patch16_224"  # the constructor; the sizes below make the model
    kwargs = {"patch_size": patch, "embed_dim": hidden, "depth": layers, "num_heads": heads,
              "mlp_ratio": int(config["intermediate_size"]) / hidden, "qkv_bias": bool(config.get("qkv_bias", True)),
              "norm_layer": functools.partial(nn.LayerNorm, eps=float(config.get("layer_norm_eps", 1e-12)))}
    tensors = _read_weights(path)
    state_dict, classifier = _to_timm(path, tensors, layers)
    pre = _read_json(path / "preprocessor_config.json")
    mean = tuple(float(x) for x in pre.get("image_mean", (0.5, 0.5, 0.5)))
    std = tuple(float(x) for x in pre.get("image_std", (0.5, 0.5, 0.5)))
    source = f"transformers ViT folder {path} ({hidden} wide, {layers} blocks, {heads} heads, patch {patch})"
    return {"arch": arch, "kwargs": kwargs, "img_size": size, "mean": mean, "std": std, "state_dict": state_dict,
            "classifier": classifier, "source": source}


def _to_timm(path: Path, tensors: dict[str, torch.Tensor], layers: int) -> tuple[dict, dict | None]:
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    classifier: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        name = key.removeprefix("vit.")
        if name.startswith("classifier."):
            classifier[name.removeprefix("classifier.")] = value
            continue
        if name.startswith("pooler.") or name == "embeddings.mask_token":
            continue  # ViTModel's pooler and masked-image token: not part of the timm backbone
        m = _QKV.match(name)
        if m:
            layer = int(m.group(1) or m.group(3))
            which = (m.group(2) or m.group(4))[0]  # q, k or v
            qkv.setdefault((layer, m.group(5)), {})[which] = value
            continue
        for pattern, target in _RENAMES:
            if re.fullmatch(pattern, name):
                out[re.sub(pattern, target, name)] = value
                break
        else:
            raise CheckpointError(f"{path}: tensor {key} has no place in a timm ViT.")
    for (layer, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"{path}: layer {layer} lacks one of query, key, value ({kind}).")
        out[f"blocks.{layer}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out, (classifier or None)


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    for name in WEIGHTS:
        if (path / name).is_file():
            return read_state_dict(path / name)
    raise CheckpointError(f"{path} has a config.json but no {' or '.join(WEIGHTS)}.")


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} cannot be read ({type(exc).__name__}).") from None
