"""Per-layer features in ONE forward pass per batch, cached on disk.

For every block l = 1..L the CLS token of the block's output *before* the final norm (the paper's
choice; ``token="cls"``), or the mean of its patch tokens (``"mean"``), or the CLS token after the
final norm (``"cls_norm"``). timm's ``forward_intermediates`` yields all blocks in one pass.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from slsviz import defaults
from slsviz.choices import TOKENS
from slsviz.data import LabelledImages, Preprocess, make_loader
from slsviz.device import autocast
from slsviz.errors import SlsvizError
from slsviz.models.swin import SwinBlocks
from slsviz.progress import Progress
from slsviz.storage import ArrayCache, content_key

_FLOAT16_ABOVE_BYTES = 1 << 30  # float32 banks above 1 GiB are stored as float16



@dataclass
class FeatureBank:
    """Features of every block for one split of a dataset.

    Attributes:
        features: (L, N, D) array, float32 or float16, possibly memory-mapped from the cache.
        labels: (N,) int64 class labels.
        indices: (N,) positions of the images in the dataset.
        split: the split the images came from.
        token: which token (see :data:`TOKENS`).
        key: the cache key (what the features depend on, hashed).
        meta: what the key was made from, JSON-ready.
        head_inputs: (L, N, F): what the head reads when the model is cut after each block, where the
            features do not give it by the final norm alone (a Swin's); ``None`` for a ViT.
    """

    features: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    split: str
    token: str
    key: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    head_inputs: np.ndarray | None = None

    @property
    def num_layers(self) -> int:
        """L."""
        return int(self.features.shape[0])

    @property
    def num_samples(self) -> int:
        """N."""
        return int(self.features.shape[1])

    @property
    def dim(self) -> int:
        """D."""
        return int(self.features.shape[2])

    def layer(self, layer: int) -> np.ndarray:
        """Features of block ``layer`` (1-based) as float32, (N, D)."""
        if not 1 <= layer <= self.num_layers:
            raise SlsvizError(f"Layer {layer} is out of range: the model has blocks 1..{self.num_layers}.")
        return np.asarray(self.features[layer - 1], dtype=np.float32)

    def as_float32(self) -> np.ndarray:
        """All features as one float32 (L, N, D) array in memory."""
        return np.asarray(self.features, dtype=np.float32)

    def head(self, n: int) -> FeatureBank:
        """The first ``n`` images' features (a view), e.g. the part of a split read so far."""
        return FeatureBank(features=self.features[:, :n], labels=self.labels[:n], indices=self.indices[:n],
                           split=self.split, token=self.token, key=f"{self.key}[:{n}]", meta={**self.meta, "head": n},
                           head_inputs=None if self.head_inputs is None else self.head_inputs[:, :n])


@torch.inference_mode()
def extract_features(
    model: nn.Module,
    loader: DataLoader,
    *,
    token: str = defaults.TOKEN,
    device: torch.device | str | None = None,
    use_autocast: bool = False,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``model`` once over ``loader`` and collect every block's ``token`` features.

    Args:
        model: a timm ViT (with or without adapters, full or pruned).
        loader: yields ``(images, labels)``.
        token: ``"cls"`` (before the final norm), ``"mean"`` (patch tokens) or ``"cls_norm"``.
        device: where to compute (default: the model's).
        use_autocast: bf16 autocast on CUDA (ignored elsewhere).
        progress: called after each batch with (images done, total images).

    Returns:
        ``(features float32 (L, N, D), labels int64 (N,), head inputs float32 (L, N, F) or None)``; head
        inputs where the features do not give them (a Swin's, see :class:`FeatureBank`).
    """
    if token not in TOKENS:
        raise SlsvizError(f"Unknown token choice {token!r}: use one of {', '.join(TOKENS)}.")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = len(loader.dataset)
    chunks: list[np.ndarray] = []
    heads: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    done = 0
    try:
        for images, targets in loader:
            with autocast(device) if use_autocast else contextlib.nullcontext():
                per_layer, head_inputs = _block_features(model, images.to(device, non_blocking=True), token)
            chunks.append(torch.stack(per_layer).float().cpu().numpy())
            if head_inputs is not None:
                heads.append(torch.stack(head_inputs).float().cpu().numpy())
            labels.append(targets.numpy())
            done += len(targets)
            if progress is not None:
                progress(done, total)
    finally:
        model.train(was_training)
    if not chunks:
        raise SlsvizError("No images to extract features from: the split is empty.")
    return (np.concatenate(chunks, axis=1), np.concatenate(labels).astype(np.int64),
            np.concatenate(heads, axis=1) if heads else None)


def _block_features(model: nn.Module, images: torch.Tensor, token: str) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """Every block's ``token`` feature of one batch, one (N, D) tensor per block, in one pass, and the head
    inputs a Swin's features do not give (``None`` for a ViT).

    A ViT: timm's ``forward_intermediates``. A Swin (:class:`~slsviz.models.swin.SwinBlocks`) has no CLS token:
    ``"cls"`` and ``"cls_norm"`` give the official SLS code's feature (the block's token average after the
    merging that starts the next stage), ``"mean"`` the average at the stage's own width. Its stages differ
    in width, so each feature is padded with zeros to the widest: distances, Gram matrices, PCA and the
    maps built on them are the same with or without zero columns.
    """
    if isinstance(model, SwinBlocks):
        features, head_inputs = model.block_features(images, merged=token != "mean")
        width = max(f.shape[1] for f in features)
        return [F.pad(f, (0, width - f.shape[1])) for f in features], head_inputs
    outs = model.forward_intermediates(images, indices=None, norm=token == "cls_norm", output_fmt="NLC",
                                       intermediates_only=True, return_prefix_tokens=True)
    # each entry is (patch tokens, prefix tokens) of one block
    return [(prefix[:, 0] if token != "mean" else patches.mean(1)) for patches, prefix in outs], None


_CACHE = ArrayCache("features", "features")


def load_cached(key: str) -> FeatureBank | None:
    """The bank stored under ``key``, memory-mapped; ``None`` if absent or unreadable."""
    found = _CACHE.load(key, mapped=("features", "head_inputs"))
    if found is None:
        return None
    arrays, meta = found
    return FeatureBank(features=arrays["features"], labels=arrays["labels"], indices=arrays["indices"],
                       split=meta["split"], token=meta["token"], key=key, meta=meta, head_inputs=arrays.get("head_inputs"))


def store(bank: FeatureBank) -> FeatureBank:
    """Keep ``bank`` under its key (float16 above 1 GiB of float32); return it memory-mapped."""
    dtype = np.float16 if bank.features.size * 4 > _FLOAT16_ABOVE_BYTES else np.float32
    heads = {} if bank.head_inputs is None else {"head_inputs": np.asarray(bank.head_inputs, dtype=dtype)}
    _CACHE.store(bank.key, {"features": np.asarray(bank.features, dtype=dtype), "labels": bank.labels,
                            "indices": bank.indices, **heads},
                 {**bank.meta, "split": bank.split, "token": bank.token, "dtype": np.dtype(dtype).name})
    return load_cached(bank.key) or bank


def feature_bank(
    model: nn.Module,
    data: LabelledImages,
    split: str,
    preprocess: Preprocess,
    *,
    backbone_checksum: str,
    token: str = defaults.TOKEN,
    batch_size: int = defaults.BATCH_SIZE,
    limit: int | None = None,
    device: torch.device | str | None = None,
    use_autocast: bool = False,
    use_cache: bool = True,
    progress: Progress | None = None,
    head: FeatureBank | None = None,
) -> FeatureBank:
    """Features of every block of ``model`` for one split, from the disk cache when already computed.

    ``head``: the features of the split's first images, already extracted with the same settings (a
    :func:`feature_bank` with a smaller ``limit``); only the rest is extracted. With a head of whole
    batches the batches are the ones one pass makes, so the bank is the one a single pass gives.

    The cache key covers the backbone checksum, the task's trainable tensors (adapters + head),
    the depth, the dataset (its content: :attr:`LabelledImages.fingerprint`) and its split seed, the split and ``limit``, the input size and the token.
    """
    from slsviz.models.backbones import weights_checksum
    from slsviz.models.petl import petl_state_dict

    meta = {
        "backbone_checksum": backbone_checksum,
        "task_checksum": weights_checksum(petl_state_dict(model)),
        "depth": len(model.blocks),
        "dataset": data.name,
        "data_fingerprint": data.fingerprint,  # the images themselves: an edited folder is read again
        "split_seed": data.split_info.get("seed"),
        "split": split,
        "limit": limit,
        "img_size": preprocess.img_size,
        "mean": list(preprocess.mean),
        "std": list(preprocess.std),
        "token": token,
        **({"resample": preprocess.resample} if preprocess.resample != "bicubic" else {}),  # older keys stay valid
        # a Swin's bank holds the head inputs too, and its blocks' features differ in width (zero-padded)
        **({"head_inputs": True, "widths": model.feature_widths(merged=token != "mean")}
           if isinstance(model, SwinBlocks) else {}),
    }
    key = content_key(meta)
    if use_cache and (cached := load_cached(key)) is not None:
        if progress is not None:
            progress(cached.num_samples, cached.num_samples)
        return cached
    skip = head.num_samples if head is not None else 0
    loader = make_loader(data, split, preprocess, batch_size, limit=limit, start=skip)
    indices = np.asarray(loader.dataset.indices)
    if skip and len(loader.dataset) == 0:
        features, labels, head_inputs = head.as_float32(), head.labels, head.head_inputs
    else:
        shown = progress if not skip or progress is None else (lambda done, total: progress(skip + done, skip + total))
        features, labels, head_inputs = extract_features(model, loader, token=token, device=device,
                                                         use_autocast=use_autocast, progress=shown)
        if skip:
            features = np.concatenate([head.as_float32(), features], axis=1)
            labels = np.concatenate([head.labels, labels])
            if head_inputs is not None:
                head_inputs = np.concatenate([np.asarray(head.head_inputs, dtype=np.float32), head_inputs], axis=1)
    if skip:
        indices = np.concatenate([head.indices, indices])
    bank = FeatureBank(features=features, labels=labels, indices=indices, split=split, token=token, key=key, meta=meta,
                       head_inputs=head_inputs)
    return store(bank) if use_cache else bank
