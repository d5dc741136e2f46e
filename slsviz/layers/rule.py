"""The SLS recommendation: how many blocks to keep, from one clustering score per block.

Scan from the last block down with threshold ``T = alpha * score(L)`` and keep blocks ``1..L*``,
where ``L*`` is the smallest ``l`` such that every block ``k`` in ``[l, L]`` scores at least ``T``:
the top run of blocks whose classes are already clustered nearly as well as at the end adds little.

For a lower-is-better score (Davies-Bouldin) the comparison turns: block ``k`` qualifies when
``score(k) <= score(L) / alpha`` - the same rule applied to ``1 / score``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from slsviz import defaults
from slsviz.errors import SlsvizError


class SLSRule:
    """Estimator-style SLS rule.

    Args:
        alpha: fraction of the last block's score a block must reach (the paper: 0.3).
        higher_is_better: ``False`` for scores such as Davies-Bouldin.

    Attributes (after :meth:`fit` or :meth:`fit_lazy`):
        depth_: blocks to keep, ``1 <= depth_ <= L``.
        threshold_: ``T``.
        num_layers_: ``L``.
        scores_: the scores used (``NaN`` where the lazy scan never asked).
        qualifies_: per block, whether it reaches ``T`` (``False`` where not computed).
        pruning_: whether any block is removed.
        reason_: one sentence saying why ``depth_`` was chosen.
    """

    def __init__(self, alpha: float = defaults.ALPHA, higher_is_better: bool = True) -> None:
        self.alpha = alpha
        self.higher_is_better = higher_is_better

    def fit(self, scores: Sequence[float]) -> SLSRule:
        """Apply the rule to all blocks' scores (block 1 first)."""
        values = np.asarray(scores, dtype=float)
        if values.ndim != 1 or len(values) == 0:
            raise SlsvizError("The SLS rule needs one score per block (a non-empty 1-D sequence).")
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise SlsvizError(f"Score of block {bad[0] + 1} is {values[bad[0]]}: scores must be finite numbers.")
        return self.fit_lazy(lambda layer: float(values[layer - 1]), len(values))

    def fit_lazy(self, score_of: Callable[[int], float], num_layers: int) -> SLSRule:
        """Apply the rule asking ``score_of(layer)`` (1-based) only for the blocks it needs, top down.

        The last block is scored first, then each block below until one misses the threshold, so a
        recommendation needs ``L - L* + 2`` scores at most, not ``L``.
        """
        self._check_alpha()
        if num_layers < 1:
            raise SlsvizError("The SLS rule needs at least one block.")
        self.num_layers_ = num_layers
        self.scores_ = np.full(num_layers, np.nan)
        self.qualifies_ = np.zeros(num_layers, dtype=bool)
        last = self._score(score_of, num_layers)
        if self.higher_is_better and last <= 0:
            self.threshold_ = self.alpha * last
            self.depth_ = num_layers
            self.qualifies_[-1] = True
            self.reason_ = (f"The last block's score is {last:.4g} (<= 0): its classes do not cluster, so no "
                            "threshold is meaningful and no pruning is recommended.")
            self.pruning_ = False
            return self
        if not self.higher_is_better and last < 0:
            raise SlsvizError(f"A lower-is-better score cannot be negative; the last block's is {last:.4g}.")
        self.threshold_ = self.alpha * last if self.higher_is_better else last / self.alpha
        self.qualifies_[-1] = True
        depth = num_layers
        while depth > 1 and self._meets(self._score(score_of, depth - 1)):
            depth -= 1
            self.qualifies_[depth - 1] = True
        self.depth_ = depth
        self.pruning_ = depth < num_layers
        side = ">=" if self.higher_is_better else "<="
        self.reason_ = (f"Blocks {depth}..{num_layers} all score {side} T = {self.threshold_:.4g} "
                        f"({'alpha x' if self.higher_is_better else '1/alpha x'} the last block's {last:.4g}); "
                        + (f"block {depth - 1} does not, so keep {depth} of {num_layers} blocks."
                           if depth > 1 else f"every block does, so keep {depth} of {num_layers} blocks."))
        return self

    def _meets(self, score: float) -> bool:
        return score >= self.threshold_ if self.higher_is_better else score <= self.threshold_

    def _score(self, score_of: Callable[[int], float], layer: int) -> float:
        value = float(score_of(layer))
        if not math.isfinite(value):
            raise SlsvizError(f"Score of block {layer} is {value}: scores must be finite numbers.")
        self.scores_[layer - 1] = value
        return value

    def _check_alpha(self) -> None:
        if not (isinstance(self.alpha, (int, float)) and 0 < self.alpha <= 1):
            raise SlsvizError(f"alpha must be in (0, 1], got {self.alpha!r}.")

