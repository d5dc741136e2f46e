"""Which depth fits a budget: from the per-depth accuracies and the measured throughput.

Both pickers are pure functions of a per-depth table (``depth`` and the accuracy columns of
:func:`slsviz.pruning.accuracy.depth_accuracy_table`) and the images/s of each depth.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from slsviz.errors import SlsvizError

ACCURACY_KINDS = ("accuracy_as_is", "accuracy_head_refit", "accuracy_retrained")


def _columns(table: pd.DataFrame, images_per_s: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    if kind not in ACCURACY_KINDS:
        raise SlsvizError(f"Unknown accuracy kind {kind!r}: use one of {', '.join(ACCURACY_KINDS)}.")
    if kind not in table or table[kind].isna().all():
        raise SlsvizError(f"No {kind.replace('_', ' ')} is computed for this model: pick a kind that is.")
    speed = np.asarray(images_per_s, dtype=np.float64)
    if len(speed) != len(table):
        raise SlsvizError(f"One throughput per depth is needed: {len(table)} depths, {len(speed)} figures.")
    return table[kind].to_numpy(dtype=np.float64), speed


def fastest_within(table: pd.DataFrame, images_per_s: np.ndarray, *, within: float,
                   kind: str = "accuracy_head_refit") -> int:
    """The fastest depth whose ``kind`` accuracy is within ``within`` (a fraction: 0.01 = 1 point) of
    the full model's (the table's last row). The full model itself always qualifies."""
    acc, speed = _columns(table, images_per_s, kind)
    ok = acc >= acc[-1] - within - 1e-12
    ok[-1] = True
    candidates = np.flatnonzero(ok)
    return int(table["depth"].iloc[candidates[np.argmax(speed[candidates])]])


def most_accurate_at(table: pd.DataFrame, images_per_s: np.ndarray, *, min_images_per_s: float,
                     kind: str = "accuracy_head_refit") -> int | None:
    """The most accurate depth (``kind``) measured at ``min_images_per_s`` or faster, the shallower one
    on a tie; ``None`` when no depth is that fast."""
    acc, speed = _columns(table, images_per_s, kind)
    candidates = np.flatnonzero((speed >= min_images_per_s) & ~np.isnan(acc))
    if len(candidates) == 0:
        return None
    return int(table["depth"].iloc[candidates[np.argmax(acc[candidates])]])
