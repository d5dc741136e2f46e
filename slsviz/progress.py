"""The shapes of progress callbacks, named once: every long computation takes one of these.

The faces turn them into ``st.progress`` bars (the app) or tqdm bars on stderr (the CLI).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Progress = Callable[[int, int], None]
"""``progress(done, total)``: images of a feature pass, maps of the layers, turns of a benchmark."""

EpochProgress = Callable[[int, int, dict[str, Any]], None]
"""``progress(epoch, epochs, info)`` after every training epoch; ``info`` has ``loss`` and ``val_accuracy``."""

StageProgress = Callable[[str, int, int], None]
"""``progress(stage, done, total)`` for work in stages (``features:<split>``, ``maps``)."""


def one_stage(progress: StageProgress | None, name: str) -> Progress | None:
    """``progress`` for the stage ``name``, as a ``progress(done, total)`` callback (``None`` stays ``None``)."""
    return (lambda done, total: progress(name, done, total)) if progress is not None else None
