"""The PETL hyper-parameters: one frozen, JSON-ready record per adapted model."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from slsviz.choices import PETL_METHODS as METHODS
from slsviz.errors import SlsvizError

# Each method's own default scale s (LoRA's is alpha / rank, so it has none here).
DEFAULT_SCALES: dict[str, float] = {"convpass": 0.1, "repadapter": 1.0, "adaptformer": 0.1}

# Initialisations each method accepts; "default" is the one its paper's code uses.
INITS: dict[str, tuple[str, ...]] = {
    "convpass": ("default", "xavier"),  # Convpass' xavier_init=True option, for the 3x3 conv only
    "repadapter": ("default",),
    "lora": ("default",),
    "adaptformer": ("default",),
    "linear": ("default",),
    "full": ("default",),
}

# LoRA's targets (timm names; q, k and v are thirds of the fused qkv) and the biases a task may own.
LORA_TARGETS = ("qkv", "q", "k", "v", "proj", "fc1", "fc2")
BIASES = ("none", "lora_only", "all")


@dataclass(frozen=True)
class PetlConfig:
    """How a backbone is adapted.

    Attributes:
        method: one of :data:`METHODS`. ``"linear"`` trains the head only; ``"full"`` is a full
            fine-tune: every backbone weight belongs to the task.
        bottleneck: adapter width b (LoRA: the rank r).
        scale: the adapter output's scale s. ``None`` resolves to the method's default
            (convpass 0.1, repadapter 1.0, adaptformer 0.1); LoRA's is ``alpha / bottleneck`` and
            ``linear`` has none (``None``). The resolved value is what is stored.
        alpha: LoRA's alpha; its update is scaled by ``alpha / bottleneck`` (``rslora``:
            ``alpha / sqrt(bottleneck)``). Recorded, unused, for
            the other methods.
        dropout: dropout inside the adapters (LoRA: on the input of its low-rank path).
        groups: groups of RepAdapter's 1x1 up-projection; must divide ``bottleneck``.
        init: ``"default"`` (the paper's initialisation) or, for convpass, ``"xavier"`` (xavier
            uniform 3x3 conv instead of the identity centre tap).
        targets: LoRA's target layers, among :data:`LORA_TARGETS` (``q``/``k``/``v``: slices of
            ``qkv``, as LoRA on a transformers ViT's separate query/key/value becomes).
        layers: LoRA's blocks (0-based; ``None``: every block).
        rslora: LoRA's scaling is ``alpha / sqrt(bottleneck)`` (rank-stabilised LoRA).
        bias: which backbone biases the task trains and stores (PEFT's ``bias``): ``"none"``,
            ``"lora_only"`` (those of the LoRA layers) or ``"all"``.

    Raises:
        SlsvizError: an unknown method or init, or a value out of range.
    """

    method: str = "convpass"
    bottleneck: int = 8
    scale: float | None = None
    alpha: float = 8.0
    dropout: float = 0.1
    groups: int = 2
    init: str = "default"
    targets: tuple[str, ...] = ("qkv",)
    layers: tuple[int, ...] | None = None
    rslora: bool = False
    bias: str = "none"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SlsvizError(f"Unknown PETL method {self.method!r}: use one of {', '.join(METHODS)}.")
        _check_int("bottleneck", self.bottleneck, 1)
        _check_int("groups", self.groups, 1)
        _check_float("alpha", self.alpha, positive=True)
        _check_float("dropout", self.dropout)
        if not 0.0 <= self.dropout < 1.0:
            raise SlsvizError(f"dropout must be in [0, 1), got {self.dropout}.")
        if self.init not in INITS[self.method]:
            raise SlsvizError(
                f"init {self.init!r} is not available for {self.method}: use one of {', '.join(INITS[self.method])}."
            )
        if self.method == "repadapter" and self.bottleneck % self.groups:
            raise SlsvizError(f"RepAdapter needs bottleneck ({self.bottleneck}) divisible by groups ({self.groups}).")
        self._check_lora_fields()
        object.__setattr__(self, "alpha", float(self.alpha))
        object.__setattr__(self, "dropout", float(self.dropout))
        object.__setattr__(self, "scale", self._resolved_scale())

    def _check_lora_fields(self) -> None:
        targets = (self.targets,) if isinstance(self.targets, str) else tuple(self.targets)
        layers = None if self.layers is None else tuple(self.layers)
        if self.method != "lora" and (targets != ("qkv",) or layers is not None or self.rslora or self.bias != "none"):
            raise SlsvizError("targets, layers, rslora and bias are LoRA's settings: leave them unset for "
                              f"{self.method}.")
        unknown = sorted(set(targets) - set(LORA_TARGETS))
        if not targets or unknown or len(set(targets)) != len(targets):
            raise SlsvizError(f"LoRA targets {list(targets)}: name each once, among {', '.join(LORA_TARGETS)}.")
        if "qkv" in targets and {"q", "k", "v"} & set(targets):
            raise SlsvizError("LoRA targets: qkv already holds q, k and v; name either qkv or its parts.")
        if layers is not None:
            for i in layers:
                _check_int("a LoRA layer", i, 0)
            if not layers or len(set(layers)) != len(layers):
                raise SlsvizError(f"LoRA layers {list(layers)}: give each block index once (or none for every block).")
            layers = tuple(sorted(layers))
        if self.bias not in BIASES:
            raise SlsvizError(f"bias {self.bias!r}: use one of {', '.join(BIASES)}.")
        object.__setattr__(self, "targets", tuple(t for t in LORA_TARGETS if t in targets))
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "rslora", bool(self.rslora))

    def _resolved_scale(self) -> float | None:
        if self.scale is not None:
            _check_float("scale", self.scale, positive=True)
        if self.method in ("linear", "full"):
            if self.scale is not None:
                raise SlsvizError(f"The {self.method!r} method has no adapters, so no scale: leave scale unset.")
            return None
        if self.method == "lora":
            lora_scale = self.alpha / (math.sqrt(self.bottleneck) if self.rslora else self.bottleneck)
            if self.scale is not None and not math.isclose(self.scale, lora_scale, rel_tol=1e-9):
                raise SlsvizError(
                    f"LoRA's scale is alpha / {'sqrt(bottleneck)' if self.rslora else 'bottleneck'} ({lora_scale:g}); "
                    f"set alpha instead of scale (got {self.scale})."
                )
            return lora_scale
        return float(self.scale) if self.scale is not None else DEFAULT_SCALES[self.method]

    def to_dict(self) -> dict[str, Any]:
        """Every hyper-parameter, scale resolved, as JSON-ready values (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PetlConfig:
        """The config that :meth:`to_dict` wrote; missing keys take their defaults.

        Raises:
            SlsvizError: unknown keys or invalid values.
        """
        if not isinstance(d, Mapping):
            raise SlsvizError(f"A PETL config must be a mapping, got {type(d).__name__}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SlsvizError(f"Unknown PETL config keys {unknown}: the keys are {', '.join(sorted(known))}.")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SlsvizError(f"{name} must be an integer, got {value!r}.")
    if value < minimum:
        raise SlsvizError(f"{name} must be at least {minimum}, got {value}.")


def _check_float(name: str, value: Any, *, positive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SlsvizError(f"{name} must be a finite number, got {value!r}.")
    if positive and value <= 0:
        raise SlsvizError(f"{name} must be positive, got {value}.")
