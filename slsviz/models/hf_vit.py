"""Hugging Face transformers ViT and DINOv2 folders (``config.json`` + ``model.safetensors`` or
``pytorch_model.bin``, optional ``preprocessor_config.json``) as timm ViT backbones.

``ViTModel`` / ``ViTForImageClassification`` and ``Dinov2Model`` / ``Dinov2ForImageClassification``
map onto timm's ``VisionTransformer`` tensor by tensor: query, key and value are stacked into timm's
fused ``qkv``, DINOv2's layer scales become ``ls1``/``ls2``; the layer-norm epsilon (1e-12 in
transformers' ViT, 1e-6 in timm), the input size and the normalisation come from the folder. At
another input size the position embeddings are resampled as transformers does (bicubic, no
antialiasing). Files written by transformers 4 and 5 use the same names on disk
(``encoder.layer.<i>.attention.attention.query``); transformers 5's in-memory names
(``layers.<i>.attention.q_proj``) are read too. The same names map PEFT adapters on these models
(:func:`timm_name`).
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
from slsviz.models.weights import read_folder_weights

WEIGHTS = ("model.safetensors", "pytorch_model.bin")
MODEL_TYPES = ("vit", "dinov2")
# Sizes timm has names for: (hidden, layers, heads) -> name part.
_SIZES = {(192, 12, 3): "tiny", (384, 12, 6): "small", (768, 12, 12): "base", (1024, 24, 16): "large",
          (1280, 32, 16): "huge", (1536, 40, 24): "giant"}
_LAYER = r"(?:encoder\.layer|layers)\.(\d+)"
_RENAMES = [  # (transformers pattern, timm name); \1 is the layer
    (r"embeddings\.cls_token", "cls_token"),
    (r"embeddings\.position_embeddings", "pos_embed"),
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (rf"{_LAYER}\.(?:layernorm_before|norm1)\.(weight|bias)", r"blocks.\1.norm1.\2"),
    (rf"{_LAYER}\.(?:layernorm_after|norm2)\.(weight|bias)", r"blocks.\1.norm2.\2"),
    (rf"{_LAYER}\.attention\.(?:output\.dense|o_proj)\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (rf"{_LAYER}\.(?:intermediate\.dense|mlp\.fc1)\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    (rf"{_LAYER}\.(?:output\.dense|mlp\.fc2)\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
    (rf"{_LAYER}\.layer_scale1\.lambda1", r"blocks.\1.ls1.gamma"),
    (rf"{_LAYER}\.layer_scale2\.lambda1", r"blocks.\1.ls2.gamma"),
    (r"layernorm\.(weight|bias)", r"norm.\1"),
    (r"classifier\.(weight|bias)", r"head.\1"),
]
_QKV = re.compile(rf"^{_LAYER}\.attention\.(?:attention\.(query|key|value)|([qkv])_proj)\.(weight|bias)$")
_PIL_FILTERS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
_SKIPPED = ("pooler.", "embeddings.mask_token")  # ViTModel's pooler, the masked-image token: not in a timm ViT


def timm_name(name: str) -> tuple[str, str | None] | None:
    """timm's name for a transformers ViT / DINOv2 tensor name (the ``vit.``/``dinov2.`` prefix removed),
    and for query/key/value the third of timm's fused ``qkv`` it is (``"q"``, ``"k"``, ``"v"``);
    ``None`` where it has no place in a timm ViT. The classifier maps to ``head``."""
    name = re.sub(r"^(?:vit|dinov2)\.", "", name)
    m = _QKV.match(name)
    if m:
        return f"blocks.{m.group(1)}.attn.qkv.{m.group(4)}", (m.group(2) or m.group(3))[0]
    for pattern, target in _RENAMES:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, target, name), None
    return None


def is_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a transformers model folder (a config and weights)."""
    path = Path(path)
    return path.is_dir() and (path / "config.json").is_file() and any((path / w).is_file() for w in WEIGHTS)


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The folder's ``config.json``.

    Raises:
        CheckpointError: unreadable.
    """
    return _read_json(Path(path) / "config.json", required=True)


def read_folder(path: str | os.PathLike) -> dict[str, Any]:
    """The timm side of a transformers ViT or DINOv2 folder.

    Returns:
        ``{"arch", "kwargs" (for timm.create_model), "img_size", "mean", "std", "state_dict" (timm names,
        no head), "classifier" (the folder's head under timm's names ``weight``/``bias``, or None),
        "class_names" (from ``id2label``, or None when they are transformers' ``LABEL_<i>``),
        "head_note" (why the classifier is not timm's CLS head, or None), "model_type", "source",
        "resample" (the preprocessor's resize filter: transformers' ViT default bilinear)}``. A
        preprocessor that crops (DINOv2's resize to 256, crop 224) is read for its filter, mean and
        std; slsviz resizes the whole image to the input size.

    Raises:
        SlsvizError: a model type or variant slsviz does not convert yet.
        CheckpointError: unreadable files, or tensors that do not map.
    """
    path = Path(path)
    config = read_config(path)
    kind = config.get("model_type")
    if kind == "deit":
        raise SlsvizError(f"{path} holds a distilled DeiT (model_type 'deit'): its distillation token and second "
                          "head have no place in slsviz's tasks, so it is not converted. Non-distilled DeiT checkpoints "
                          "are ViT folders (model_type 'vit') and open.")
    if kind not in MODEL_TYPES:
        raise SlsvizError(f"{path} holds a transformers {kind!r} model; slsviz converts ViT (ViTModel, "
                          "ViTForImageClassification) and DINOv2 (Dinov2Model) folders so far.")
    hidden, layers, heads = int(config["hidden_size"]), int(config["num_hidden_layers"]), int(config["num_attention_heads"])
    patch, size = int(config["patch_size"]), int(config["image_size"])
    if config.get("hidden_act", "gelu") != "gelu" or int(config.get("num_channels", 3)) != 3:
        raise SlsvizError(f"{path}: slsviz converts ViTs with GELU and 3 input channels.")
    if kind == "dinov2" and config.get("use_swiglu_ffn"):
        raise SlsvizError(f"{path}: a DINOv2 with a SwiGLU MLP (giant) is not converted yet; the small, base and "
                          "large DINOv2 are.")
    named = _SIZES.get((hidden, layers, heads))
    arch = f"vit_{named}_patch{patch}_{'dinov2' if kind == 'dinov2' else size}" if named else None
    import timm

    if arch not in timm.list_models():
        arch = "vit_base_patch16_224"  # the constructor; the sizes below make the model
    if kind == "dinov2":
        mlp_ratio, eps = float(config.get("mlp_ratio", 4)), float(config.get("layer_norm_eps", 1e-6))
        extra = {"init_values": float(config.get("layerscale_value", 1.0))}
    else:
        mlp_ratio, eps = int(config["intermediate_size"]) / hidden, float(config.get("layer_norm_eps", 1e-12))
        extra = {}
    kwargs = {"patch_size": patch, "embed_dim": hidden, "depth": layers, "num_heads": heads, "mlp_ratio": mlp_ratio,
              "qkv_bias": bool(config.get("qkv_bias", True)), "norm_layer": functools.partial(nn.LayerNorm, eps=eps),
              **extra}
    state_dict = _to_timm(path, read_folder_weights(path, WEIGHTS, "a config.json"))
    classifier = {k.removeprefix("head."): state_dict.pop(k) for k in list(state_dict) if k.startswith("head.")} or None
    head_note = None
    if classifier is not None and classifier["weight"].shape[1] != hidden:
        head_note = (f"its classifier reads {classifier['weight'].shape[1]} features (DINOv2's CLS token and mean patch "
                     f"token side by side), not the {hidden} of the CLS token that a timm head reads")
    pre = _read_json(path / "preprocessor_config.json")
    default_norm = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)) if kind == "dinov2" else ((0.5,) * 3, (0.5,) * 3)
    mean = tuple(float(x) for x in pre.get("image_mean", default_norm[0]))
    std = tuple(float(x) for x in pre.get("image_std", default_norm[1]))
    resample = _PIL_FILTERS.get(pre.get("resample", 3 if kind == "dinov2" else 2), "bicubic")
    labels = config.get("id2label") or {}
    names = [str(labels.get(str(i), labels.get(i, ""))) for i in range(len(labels))]
    generic = not names or all(n == f"LABEL_{i}" for i, n in enumerate(names))
    title = "DINOv2" if kind == "dinov2" else "ViT"
    source = f"transformers {title} folder {path} ({hidden} wide, {layers} blocks, {heads} heads, patch {patch})"
    return {"arch": arch, "kwargs": kwargs, "img_size": size, "mean": mean, "std": std, "state_dict": state_dict,
            "classifier": classifier, "class_names": None if generic else names, "head_note": head_note,
            "model_type": kind, "source": source, "resample": resample}


def resample_positions(state_dict: dict[str, torch.Tensor], grid: int) -> dict[str, torch.Tensor]:
    """``pos_embed`` for a ``grid`` x ``grid`` patch grid, resampled as transformers does (bicubic, no
    antialiasing; timm antialiases when it shrinks), so the numbers equal transformers' at any size."""
    from timm.layers import resample_abs_pos_embed

    pos = state_dict["pos_embed"]
    if pos.shape[1] - 1 == grid * grid:
        return state_dict
    resampled = resample_abs_pos_embed(pos, (grid, grid), num_prefix_tokens=1, interpolation="bicubic", antialias=False)
    return {**state_dict, "pos_embed": resampled}


def _to_timm(path: Path, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name = re.sub(r"^(?:vit|dinov2)\.", "", key)
        if name.startswith(_SKIPPED):
            continue
        mapped = timm_name(name)
        if mapped is None:
            raise CheckpointError(f"{path}: tensor {key} has no place in a timm ViT.")
        target, part = mapped
        if part is None:
            out[target] = value
        else:
            qkv.setdefault(target, {})[part] = value
    for target, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"{path}: {target} lacks one of query, key, value.")
        out[target] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def _read_json(path: Path, *, required: bool = False) -> dict:
    if not path.is_file() and not required:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} cannot be read ({type(exc).__name__}).") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a JSON object.")
    return data
