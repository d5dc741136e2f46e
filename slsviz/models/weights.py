"""Reading a file of weights (safetensors or a torch file) without ever running pickled code."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import timm
import torch

from slsviz.errors import CheckpointError

T = TypeVar("T")


class WeightsFile:
    """A file or folder of weights whose every reading is done at most once, however many formats
    look at it: the registry of task formats (:mod:`slsviz.models.formats`) and the backbone loader
    share one, so a ``.pth`` is unpickled once on its way from "what is it" to a loaded model.

    A reading that failed fails again from its record, without touching the file.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._readings: dict[str, tuple[Any, BaseException | None]] = {}

    def __fspath__(self) -> str:
        return str(self.path)

    def reading(self, name: str, read: Callable[[Path], T]) -> T:
        """``read(path)``, done the first time ``name`` is asked for."""
        if name not in self._readings:
            try:
                self._readings[name] = (read(self.path), None)
            except Exception as exc:  # kept, so the next reader is told the same without reading again
                self._readings[name] = (None, exc)
        value, error = self._readings[name]
        if error is not None:
            raise error
        return value

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The file's tensors (:func:`read_state_dict`)."""
        return self.reading("state dict", read_state_dict)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """timm's reader: safetensors, or ``torch.load(weights_only=True)`` (no pickled code runs), with a
    training script's ``state_dict``/``model`` wrapper unwrapped and ``module.`` prefixes removed.
    EMA weights are not preferred (as timm's own validate.py by default)."""
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing; the reason follows
            warnings.simplefilter("ignore", UserWarning)
            sd = timm.models.load_state_dict(str(path), use_ema=False, weights_only=True)
    except Exception as exc:
        if _refused_pickled_objects(exc):
            raise CheckpointError(
                f"Checkpoint {path} cannot be read: it holds pickled objects besides tensors (they could run code), "
                "and slsviz only reads weights: save a state dict of tensors (torch.save(model.state_dict(), ...)) or a .safetensors file."
            ) from None
        raise CheckpointError(f"Checkpoint {path} cannot be read ({type(exc).__name__}): is the file complete and of the type its name says?") from exc
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"Checkpoint {path} does not hold a state dict of tensors.")
    return dict(sd)


def read_folder_weights(folder: str | os.PathLike, names: tuple[str, ...], config: str) -> dict[str, torch.Tensor]:
    """The first of ``names`` that ``folder`` holds, read with :func:`read_state_dict` (a folder
    format's weights: transformers' ``model.safetensors`` or ``pytorch_model.bin``, PEFT's
    ``adapter_model.*``).

    Raises:
        CheckpointError: none of them is there (``config``, the file that made it look like the format, is named).
    """
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return read_state_dict(path)
    raise CheckpointError(f"{folder} has {config} but no {' or '.join(names)}.")


def _refused_pickled_objects(exc: BaseException) -> bool:
    """Whether torch's weights-only unpickler refused a global (a class or a function) in the file."""
    while exc is not None:
        if "unsupported global" in str(exc).lower():
            return True
        exc = exc.__cause__ or exc.__context__
    return False
