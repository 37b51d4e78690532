"""Additive updates: the pushed values are added to the stored ones.

``delta`` is the rule for tables that are accumulators rather than models
(counts, sums of statistics) and for workers that run their own optimizer and
push weight *differences*, as in ps-lite's default KV server handle.
"""

from __future__ import annotations

import numpy as np

from spark_ps.server.optim.base import Optimizer

__all__ = ["Delta"]


class Delta(Optimizer):
    """``w += g``.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.array([[1.0, 2.0]], np.float32)
    >>> Delta().step(w, {}, np.array([[0.5, -2.0]], np.float32))
    >>> w.tolist()
    [[1.5, 0.0]]
    """

    name = "delta"

    def __init__(self) -> None:
        pass

    def _update(self, weights: np.ndarray, state: dict[str, np.ndarray], grads: np.ndarray,
                out_weights: np.ndarray, out_state: dict[str, np.ndarray]) -> None:
        # One float32 addition is correctly rounded; float64 would give the same result.
        np.add(weights, grads, out=out_weights)
