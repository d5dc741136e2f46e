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
