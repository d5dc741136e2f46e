"""Errors a user can cause. Their message says what is wrong and what to do; faces show it as is."""


class SlsvizError(Exception):
    """Base class: bad input or an unmet precondition, explained in plain words."""


class DataError(SlsvizError):
    """A dataset is missing, empty, unreadable or unusable (e.g. a single class)."""


class CheckpointError(SlsvizError):
    """A checkpoint is missing, corrupt, or does not fit the model it is loaded into."""


class DeviceError(SlsvizError):
    """The requested compute device is not available on this machine."""


class OfflineError(SlsvizError):
    """Weights were requested from a model hub that cannot be reached."""


def key_mismatch(expected: dict, got: dict, shown: int = 4) -> str | None:
    """What differs between two state dicts' keys and shapes, in words (``None`` when they fit).

    E.g. ``"120 missing (blocks.10.attn.proj.bias, ... and 116 more); 4 wrong shape (...)"``.
    """
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(expected) & set(got) if tuple(expected[k].shape) != tuple(got[k].shape))
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if keys:
            more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
            parts.append(f"{len(keys)} {label} ({', '.join(keys[:shown])}{more})")
    return "; ".join(parts) or None
