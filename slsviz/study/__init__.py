"""One task on one dataset: the :class:`Study` facade and its parts.

- :mod:`~slsviz.study.features` - the feature store (banks per split, the first test images, the scored images)
- :mod:`~slsviz.study.layers` - the layer study (analyses per settings, the rule, maps, stability)
- :mod:`~slsviz.study.depths` - the depth evaluator (per-depth accuracies, re-fit classifiers)
- :mod:`~slsviz.study.timing` - timing (benchmarks, budget picks, storage)
- :mod:`~slsviz.study.exports` - configuration, task checkpoint, ONNX, import check
- :mod:`~slsviz.study.criteria`, :mod:`~slsviz.study.resampling`, :mod:`~slsviz.study.comparison` -
  every criterion side by side, its stability, ``slsviz compare``
- :mod:`~slsviz.study.training`, :mod:`~slsviz.study.report` - plain functions: train / retrain, ``analyze``
"""

from slsviz.models.selection import LoadedTask, Selection, open_selection
from slsviz.study.facade import VISIT, Study

__all__ = ["VISIT", "LoadedTask", "Selection", "Study", "open_selection"]
