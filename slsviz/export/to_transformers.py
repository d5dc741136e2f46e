"""The pruned model as a transformers ``ViTForImageClassification`` folder with ``num_hidden_layers=D``.

``from_pretrained`` loads it alone; ``AutoImageProcessor.from_pretrained`` reads its preprocessing.
LoRA and RepAdapter are merged into the Linear layers first. timm's fused ``qkv`` becomes transformers'
query, key and value (the names come from :func:`slsviz.models.hf_vit.timm_name`, the same map that
opens transformers folders), and a DINOv2's layer scales are folded into the attention output and
second MLP layer (``x + g * (W h + b)`` is ``x + (g W) h + g b``), so a DINOv2 backbone is a plain ViT
to transformers too. Its classifier reads the final CLS token, as a timm head does.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from slsviz.errors import SlsvizError
from slsviz.export.handback import check_logits, cut_cpu, unmergeable
from slsviz.models import hf_vit
from slsviz.models.petl import merge_petl
from slsviz.models.swin import SwinBlocks
from slsviz.models.task import TaskMeta

TITLE = "The pruned model for transformers alone"


def refusal(model: nn.Module, meta: TaskMeta) -> str | None:
    """Why a ``ViTForImageClassification`` cannot hold the task, or ``None``."""
    unmerged = unmergeable(meta, "transformers' ViT")
    if unmerged is not None:
        return unmerged
    if isinstance(model, SwinBlocks):
        return ("slsviz writes transformers' ViTForImageClassification; a Swin cut inside its stages is no "
                "SwinForImageClassification (whose stages all hold blocks): export it for timm (or PEFT, LoRA), as the "
                "slsviz task or as ONNX.")
    if (getattr(model, "num_prefix_tokens", 1) != 1 or not getattr(model, "has_class_token", True)
            or getattr(model, "global_pool", "token") != "token" or not isinstance(model.fc_norm, nn.Identity)
            or not isinstance(model.norm_pre, nn.Identity)):
        return (f"{meta.backbone_arch} does not classify its final CLS token alone (register tokens, another pooling or "
                "pre-norm), which transformers' ViTForImageClassification does: export it for timm, as the slsviz task "
                "or as ONNX instead.")
    return None


def write(model: nn.Module, meta: TaskMeta, depth: int, folder: Path) -> tuple[str, list[str]]:
    """``config.json``, ``model.safetensors`` and ``preprocessor_config.json``, checked with transformers."""
    from PIL import Image
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    cut = merge_petl(cut_cpu(model, depth))
    state = _folded(cut.state_dict(), depth)
    block = cut.blocks[0]
    config = ViTConfig(hidden_size=int(cut.embed_dim), num_hidden_layers=depth, num_attention_heads=int(block.attn.num_heads),
                       intermediate_size=int(block.mlp.fc1.out_features), hidden_act="gelu", hidden_dropout_prob=0.0,
                       attention_probs_dropout_prob=0.0, layer_norm_eps=float(cut.norm.eps), image_size=meta.img_size,
                       patch_size=int(cut.patch_embed.patch_size[0]), num_channels=3,
                       qkv_bias="blocks.0.attn.qkv.bias" in state,
                       id2label={i: str(c) for i, c in enumerate(meta.class_names)},
                       label2id={str(c): i for i, c in enumerate(meta.class_names)})
    hf = ViTForImageClassification(config)
    hf.load_state_dict({name: _tensor(state, name) for name in hf.state_dict()}, strict=True)
    hf.eval()
    check_logits(lambda x: hf(pixel_values=x).logits, cut, meta.img_size,
                 f"transformers' ViTForImageClassification with {depth} layers")
    hf.save_pretrained(folder)
    ViTImageProcessor(do_resize=True, size={"height": meta.img_size, "width": meta.img_size},
                      resample=Image.Resampling[meta.resample.upper()], do_rescale=True, rescale_factor=1 / 255,
                      do_normalize=True, image_mean=list(meta.mean), image_std=list(meta.std)).save_pretrained(folder)
    return (f"the task's first {depth} blocks, its final norm and head, with the adapters merged into the backbone's "
            "layers, as a transformers ViTForImageClassification."), [
        "```python", "from transformers import AutoImageProcessor, ViTForImageClassification", "",
        'model = ViTForImageClassification.from_pretrained(".").eval()',
        'processor = AutoImageProcessor.from_pretrained(".")',
        "logits = model(**processor(images, return_tensors=\"pt\")).logits", "```"]


def _folded(state: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """``state`` with each block's layer scales folded into the layer before them (none left)."""
    state = {k: v.detach().clone() for k, v in state.items()}
    for i in range(depth):
        for scale, layer in (("ls1", "attn.proj"), ("ls2", "mlp.fc2")):
            gamma = state.pop(f"blocks.{i}.{scale}.gamma", None)
            if gamma is not None:
                state[f"blocks.{i}.{layer}.weight"] *= gamma[:, None]
                state[f"blocks.{i}.{layer}.bias"] *= gamma
    return state


def _tensor(state: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """The timm tensor a transformers ViT tensor ``name`` is (a third of the fused qkv for q, k, v)."""
    mapped = hf_vit.timm_name(name)
    if mapped is None or mapped[0] not in state:
        raise SlsvizError(f"transformers' ViT has {name}, which this timm model has no tensor for: export it for timm, "
                          "as the slsviz task or as ONNX instead.")
    target, part = mapped
    value = state[target]
    if part is None:
        return value
    width = value.shape[0] // 3
    return value["qkv".index(part) * width:("qkv".index(part) + 1) * width].clone()
