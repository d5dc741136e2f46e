"""Exporting an SLS result: a JSON/YAML config, the pruned task checkpoint, an ONNX model, and (in
:mod:`slsviz.export.handback`) the pruned model in the formats of the user's own tools: timm, the
official SLS code, PEFT and transformers.

The config says which backbone (arch and weights checksum), which PETL method, which task (class
names, input size, normalisation) and which depth SLS chose, with the scores and results that led
there and the environment they were measured in. Together with the task checkpoint and the
backbone it names, :func:`restore` rebuilds exactly the pruned model:

    >>> config = build_config(backbone=backbone, meta=meta, depth=5, alpha=0.95, metric="silhouette",
    ...                       projection="tsne")
    >>> save_config(config, "sls.yaml"); save_pruned_task(model, meta, 5, "task-d5.safetensors")
    >>> model = restore(load_config("sls.yaml"), "task-d5.safetensors", backbone)
    >>> export_onnx(model, meta.img_size, "task-d5.onnx")
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import warnings
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from jsonschema import Draft202012Validator, ValidationError
from torch import nn

from slsviz.environment import environment
from slsviz.errors import CheckpointError, SlsvizError
from slsviz.models.backbones import Backbone
from slsviz.models.depth import check_depth, prune_to_depth
from slsviz.models.petl import merge_petl
from slsviz.models.task import TaskMeta, load_task, read_task_meta, save_task
from slsviz.storage import atomic_path

CONFIG_SCHEMA = "slsviz-config/1"

_JSON_SUFFIXES = (".json",)
_YAML_SUFFIXES = (".yaml", ".yml")
_ONNX_INPUT = "images"
_ONNX_OUTPUT = "logits"

_VALIDATOR = Draft202012Validator(json.loads(
    resources.files("slsviz").joinpath("schemas", "config.schema.json").read_text(encoding="utf-8")))
_TYPE_NAMES = {"string": "a string", "integer": "an integer", "number": "a number", "object": "a mapping",
               "array": "a list", "null": "null"}


# --- building and checking ------------------------------------------------------------------------


def build_config(
    *,
    backbone: Backbone,
    meta: TaskMeta,
    depth: int,
    alpha: float,
    metric: str,
    projection: str,
    scores: list[dict] | None = None,
    results: dict | None = None,
    extra: dict | None = None,
) -> dict[str, Any]:
    """The JSON-ready record of one SLS decision: what was pruned, to which depth, and why.

    Args:
        backbone: the backbone the task runs on (its id, arch and weights checksum are recorded).
        meta: the task's metadata (full-depth or pruned checkpoint; its PETL method and classes).
        depth: the blocks kept, 1..``num_layers``.
        alpha: SLS' threshold on the score curve that chose ``depth``.
        metric: the clustering score SLS used (e.g. ``"silhouette"``).
        projection: the 2-D map the score was computed on (e.g. ``"tsne"``).
        scores: per-layer records (layer, score, ...), JSON-ready values; may be empty.
        results: accuracies, throughput with the device, ... whatever the caller measured.
        extra: anything else, kept under ``"extra"`` (left out when ``None``).

    Returns:
        A dict with exactly the keys ``schema, backbone, petl, task, depth, num_layers, alpha,
        metric, projection, scores, results, environment`` (and ``extra`` if given). NumPy and
        torch scalars, arrays and tuples in ``scores``/``results``/``extra`` become plain lists
        and numbers; NaN and infinite numbers become ``None`` (strict JSON has neither).

    Raises:
        CheckpointError: ``meta`` was trained on another backbone than ``backbone``, or is a pruned
            task keeping fewer than ``depth`` blocks.
        SlsvizError: ``depth`` out of range, or a value a config cannot store.
    """
    if meta.backbone_arch != backbone.arch or meta.backbone_checksum != backbone.checksum:
        raise CheckpointError(
            f"The task was trained on {meta.backbone_arch} with weights {meta.backbone_checksum}, but the backbone "
            f"given is {backbone.arch} with weights {backbone.checksum}: pass the backbone the task was trained on."
        )
    if meta.num_layers != backbone.num_layers:
        raise CheckpointError(f"The task expects {meta.num_layers} blocks; the backbone has {backbone.num_layers}.")
    petl = dict(meta.petl)
    if "method" not in petl:
        raise CheckpointError("The task metadata names no PETL method (its 'petl' has no 'method').")
    method = petl.pop("method")
    depth = check_depth(depth, meta.num_layers)
    if meta.depth is not None and depth > meta.depth:
        raise CheckpointError(
            f"The task keeps only {meta.depth} blocks, so it cannot be restored at depth {depth}: "
            "choose a depth up to that, or use the full-depth task."
        )
    config: dict[str, Any] = {
        "schema": CONFIG_SCHEMA,
        "backbone": {"id": backbone.id, "arch": backbone.arch, "checksum": backbone.checksum},
        "petl": {"method": method, "hyperparameters": _plain(petl, "petl")},
        "task": {
            "classes": list(meta.class_names),
            "num_classes": meta.num_classes,
            "img_size": int(meta.img_size),
            "mean": [float(x) for x in meta.mean],
            "std": [float(x) for x in meta.std],
            "dataset": meta.dataset,
            "split_seed": _plain(meta.split_seed, "task.split_seed"),
            "val_accuracy": _plain(meta.val_accuracy, "task.val_accuracy"),
            "test_accuracy": _plain(meta.test_accuracy, "task.test_accuracy"),
            "source": _plain(meta.source, "task.source"),
        },
        "depth": depth,
        "num_layers": int(meta.num_layers),
        "alpha": _plain(alpha, "alpha"),
        "metric": metric,
        "projection": projection,
        "scores": _plain(list(scores or []), "scores"),
        "results": _plain(dict(results or {}), "results"),
        "environment": _plain(environment(), "environment"),
    }
    if extra is not None:
        config["extra"] = _plain(extra, "extra")
    return validate_config(config)


def validate_config(config: dict) -> dict:
    """Check a config against ``schemas/config.schema.json`` (JSON Schema 2020-12), then the two facts
    a schema cannot state (depth within num_layers, one class name per class); return it unchanged.

    Raises:
        SlsvizError: naming the first problem found and where, e.g. ``config is missing 'depth'``.
    """
    if not isinstance(config, dict):
        raise SlsvizError(f"A config must be a mapping, got {type(config).__name__}.")
    errors = sorted(_VALIDATOR.iter_errors(config), key=_first_problem)
    if errors:
        raise SlsvizError(_describe(errors[0]))
    task = config["task"]
    if task["num_classes"] != len(task["classes"]):
        raise SlsvizError(
            f"config 'task.num_classes' is {task['num_classes']} but 'task.classes' names {len(task['classes'])}."
        )
    if config["depth"] > config["num_layers"]:
        raise SlsvizError(f"config 'depth' {config['depth']} is out of range: it must be between 1 and num_layers "
                          f"({config['num_layers']}).")
    if not math.isfinite(config["alpha"]):  # JSON Schema's "number" lets NaN and infinity through
        raise SlsvizError(f"config 'alpha' must be a finite number, got {config['alpha']}.")
    return config


def _first_problem(error: ValidationError) -> tuple:
    """Which problem to name first: a foreign schema, then what is missing, unknown, mistyped, the rest."""
    order = {"required": 1, "additionalProperties": 2, "type": 3}
    foreign = list(error.absolute_path) == ["schema"] or (error.validator == "required" and "schema" not in error.instance)
    return (0 if foreign else order.get(error.validator, 4), len(error.absolute_path), [str(p) for p in error.absolute_path])


def _describe(error: ValidationError) -> str:
    """One sentence: the dotted field and what is wrong with it."""
    where = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "required":
        missing = next(k for k in error.validator_value if k not in error.instance)
        if missing == "schema":
            return f"config is missing 'schema': is it an slsviz config ({CONFIG_SCHEMA})?"
        return f"config is missing '{where + '.' if where else ''}{missing}': write configs with slsviz.export.build_config."
    if error.validator == "additionalProperties":
        unknown = next(k for k in error.instance if k not in error.schema.get("properties", {}))
        return f"config has unknown key {'.'.join(filter(None, [where, unknown]))!r}: put additional data under 'extra'."
    if error.validator == "const" and where == "schema":
        return f"schema {error.instance!r} is not {CONFIG_SCHEMA}: this slsviz reads {CONFIG_SCHEMA} configs only."
    if error.validator == "type":
        kinds = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        label = " or ".join(_TYPE_NAMES.get(k, k) for k in kinds)
        return f"config {where!r} must be {label}, got {type(error.instance).__name__} {_short(error.instance)}."
    if error.validator == "minimum":
        return f"config {where!r} {error.instance} is out of range: it must be at least {error.validator_value}."
    return f"config {where!r}: {error.message}."


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _plain(value: Any, where: str) -> Any:
    """``value`` as JSON/YAML-ready Python: dicts with string keys, lists, str, int, float, bool, None.

    Raises:
        SlsvizError: a value of a type a config cannot store, named with where it is.
    """
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None  # strict JSON has no NaN / Infinity
    for plain in (bool, int, str):  # exact types; subclasses (TorchVersion, IntEnum, ...) YAML would refuse
        if isinstance(value, plain):
            return plain(value)
    if value is None:
        return None
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if isinstance(k, (bool, int, float, np.generic)) and not isinstance(k, str):
                k = str(k.item() if isinstance(k, np.generic) else k)
            if not isinstance(k, str):
                raise SlsvizError(f"{where} has a key {k!r} of type {type(k).__name__}: config keys must be strings.")
            out[k] = _plain(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value), where)
    raise SlsvizError(
        f"{where} holds a {type(value).__name__}, which a config cannot store: use numbers, strings, lists and dicts."
    )


# --- text and files -------------------------------------------------------------------------------


def config_to_json(config: dict) -> str:
    """The config as indented JSON text (key order kept), ending in a newline."""
    try:
        return json.dumps(validate_config(config), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise SlsvizError(f"The config cannot be written as JSON: {exc}") from exc


def config_to_yaml(config: dict) -> str:
    """The config as YAML text (``yaml.safe_dump``, key order kept)."""
    try:
        return yaml.safe_dump(validate_config(config), sort_keys=False, allow_unicode=True, default_flow_style=False)
    except yaml.YAMLError as exc:
        raise SlsvizError(f"The config cannot be written as YAML: {exc}") from exc


def save_config(config: dict, path: str | os.PathLike) -> Path:
    """Write ``config`` to ``path`` as JSON (``.json``) or YAML (``.yaml``, ``.yml``), atomically.

    Raises:
        SlsvizError: another suffix, or an invalid config (nothing is written then).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in _JSON_SUFFIXES:
        text = config_to_json(config)
    elif suffix in _YAML_SUFFIXES:
        text = config_to_yaml(config)
    else:
        raise SlsvizError(f"Cannot tell the format of {path}: name the config file *.json, *.yaml or *.yml.")
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def load_config(source: str | bytes | os.PathLike) -> dict:
    """Read and validate a config from a file path, or from JSON / YAML text or bytes (autodetected).

    A ``str`` without line breaks that names an existing file, or ends in ``.json``/``.yaml``/``.yml``,
    is read as a path; any other ``str`` is parsed as text.

    Raises:
        SlsvizError: a missing file, text that is neither JSON nor YAML, not a mapping, or an
            invalid config (wrong schema, missing keys, ...).
    """
    where = "the config text"
    if isinstance(source, os.PathLike) or (isinstance(source, str) and _looks_like_path(source)):
        path = Path(source)
        if not path.is_file():
            raise SlsvizError(f"Config file {path} does not exist.")
        where = f"config file {path}"
        source = path.read_bytes()
    if isinstance(source, (bytes, bytearray)):
        try:
            text = bytes(source).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise SlsvizError(f"{where[0].upper()}{where[1:]} is not UTF-8 text: is it a JSON or YAML config?") from exc
    elif isinstance(source, str):
        text = source
    else:
        raise SlsvizError(f"load_config reads a path, text or bytes, not {type(source).__name__}.")
    data = _parse(text, where)
    if not isinstance(data, dict):
        raise SlsvizError(f"{where[0].upper()}{where[1:]} holds a {type(data).__name__}, not a config mapping.")
    try:
        return validate_config(data)
    except SlsvizError as exc:
        raise SlsvizError(f"{where[0].upper()}{where[1:]} is not a valid slsviz config: {exc}") from exc


def _looks_like_path(text: str) -> bool:
    if "\n" in text or "\r" in text or not text.strip() or len(text) > 4096:
        return False
    if Path(text).suffix.lower() in (*_JSON_SUFFIXES, *_YAML_SUFFIXES):
        return True
    try:
        return Path(text).is_file()
    except (OSError, ValueError):
        return False


def _parse(text: str, where: str) -> Any:
    """JSON first (exact, fast), then YAML (a superset that also reads our YAML)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split())
        raise SlsvizError(f"{where[0].upper()}{where[1:]} cannot be parsed as JSON or YAML: {problem}") from exc


# --- checkpoint -----------------------------------------------------------------------------------


def save_pruned_task(model: nn.Module, meta: TaskMeta, depth: int, path: str | os.PathLike, *,
                     val_accuracy: float | None = None, test_accuracy: float | None = None) -> Path:
    """Write the task checkpoint of ``model`` cut at ``depth``: adapters of ``blocks[:depth]`` and the head.

    ``model`` is not changed. The saved metadata records ``depth`` and the depth it was cut from.
    Its accuracies are those measured on the cut model (``val_accuracy``, ``test_accuracy``, head as
    is) or none: a file never carries the full model's figures as its own.

    Raises:
        SlsvizError: ``depth`` out of range for ``model``.
    """
    pruned = prune_to_depth(model, depth)
    return save_task(path, pruned, dataclasses.replace(
        meta, depth=len(pruned.blocks), val_accuracy=val_accuracy, test_accuracy=test_accuracy,
        recipe={**meta.recipe, "pruned_from_depth": meta.num_layers, "head": "as is"}))


def restore(config: dict, task_checkpoint: str | os.PathLike, backbone: Backbone) -> nn.Module:
    """Rebuild the pruned model a config describes from its task checkpoint and backbone.

    The checkpoint may be full-depth or pruned at ``config["depth"]`` or deeper; it is cut at the
    config's depth. The result computes exactly what ``prune_to_depth(trained_model, depth)`` did.

    Raises:
        SlsvizError: an invalid config.
        CheckpointError: the config, the checkpoint's metadata and the backbone disagree (backbone
            arch or checksum, PETL method or hyper-parameters, classes, input size, block count),
            or the checkpoint keeps fewer blocks than the config's depth.
    """
    config = validate_config(config)
    path = Path(task_checkpoint)
    meta = read_task_meta(path)
    depth = config["depth"]

    diffs = _differences(config, _config_view_of_meta(meta), "checkpoint")
    if diffs:
        raise CheckpointError(
            f"The config does not describe task checkpoint {path}: {'; '.join(diffs)}. Use the config written with this checkpoint."
        )
    backbone_view = {"backbone.arch": backbone.arch, "backbone.checksum": backbone.checksum,
                     "task.img_size": backbone.img_size, "num_layers": backbone.num_layers}
    diffs = _differences(config, backbone_view, "backbone")
    if diffs:
        raise CheckpointError(
            f"The config does not fit the loaded backbone {backbone.id!r}: {'; '.join(diffs)}. "
            f"Load the backbone the config names ({config['backbone']['id']!r}, at {config['task']['img_size']} px)."
        )
    if meta.depth is not None and meta.depth < depth:
        raise CheckpointError(
            f"Task checkpoint {path} keeps {meta.depth} blocks but the config asks for depth {depth}: "
            "use the full-depth checkpoint or one pruned at that depth."
        )
    model, _ = load_task(path, backbone)
    if len(model.blocks) > depth:
        model = prune_to_depth(model, depth)
    return model.eval()


def _config_view_of_meta(meta: TaskMeta) -> dict[str, Any]:
    """The config's facts as a checkpoint's metadata states them, keyed by dotted config path."""
    petl = dict(meta.petl)
    method = petl.pop("method", None)
    return {
        "backbone.arch": meta.backbone_arch,
        "backbone.checksum": meta.backbone_checksum,
        "petl.method": method,
        "petl.hyperparameters": petl,
        "task.num_classes": meta.num_classes,
        "task.classes": list(meta.class_names),
        "task.img_size": meta.img_size,
        "num_layers": meta.num_layers,
    }


def _differences(config: dict, other: dict[str, Any], name: str) -> list[str]:
    """``"<key>: config X, <name> Y"`` for each dotted key whose values differ."""
    diffs = []
    for dotted, theirs in other.items():
        ours: Any = config
        for part in dotted.split("."):
            ours = ours[part]
        if ours != theirs:
            diffs.append(f"{dotted}: config {_short(ours)}, {name} {_short(theirs)}")
    return diffs


# --- ONNX -----------------------------------------------------------------------------------------


def export_onnx(model: nn.Module, img_size: int, path: str | os.PathLike, *, opset: int = 17) -> Path:
    """Export ``model`` (typically pruned) to ONNX, PETL merged, with a dynamic batch dimension.

    A copy of ``model`` is merged (:func:`~slsviz.models.petl.merge_petl`: RepAdapter and LoRA folded into
    the backbone's Linear layers) and exported in eval mode with torch's TorchScript-based
    exporter; ``model`` itself is not changed. The graph takes ``images`` (N, 3, img_size,
    img_size) in the model's dtype and returns ``logits`` (N, classes). The file is checked with
    ``onnx.checker`` and written atomically.

    Raises:
        SlsvizError: ``img_size`` not a positive integer, or the export failed (the reason is named).
    """
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 1:
        raise SlsvizError(f"img_size must be a positive integer, got {img_size!r}.")
    path = Path(path)
    exported = merge_petl(copy.deepcopy(model)).eval()
    param = next(exported.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    example = torch.zeros(1, 3, img_size, img_size, device=device, dtype=dtype)
    with atomic_path(path) as tmp:
        _torchscript_export(exported, example, tmp, opset)
        _check_onnx(tmp)
    return path


def _torchscript_export(model: nn.Module, example: torch.Tensor, target: Path, opset: int) -> None:
    """torch's legacy exporter: fast, no extra dependency, and shape-polymorphic in the batch only."""
    batch = {0: "batch"}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # Deprecation notices of the TorchScript exporter, and tracer notes on Python ints
            # taken from shapes (the image size is fixed by design; the batch stays symbolic).
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
            warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export")
            warnings.filterwarnings("ignore", message=r"The feature will be removed")
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                model, (example,), str(target), dynamo=False, opset_version=opset,
                input_names=[_ONNX_INPUT], output_names=[_ONNX_OUTPUT],
                dynamic_axes={_ONNX_INPUT: batch, _ONNX_OUTPUT: batch}, do_constant_folding=True,
            )
    except Exception as exc:  # noqa: BLE001 - any exporter failure is reported the same way
        raise SlsvizError(
            f"ONNX export failed with torch {torch.__version__} at opset {opset} ({type(exc).__name__}: {exc})."
        ) from exc


def _check_onnx(target: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(target))
    except Exception as exc:  # noqa: BLE001 - onnx raises its own ValidationError subclasses
        raise SlsvizError(f"The exported ONNX model is invalid ({type(exc).__name__}: {exc}).") from exc
