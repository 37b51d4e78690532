"""Plain stochastic gradient descent applied by the server."""

from __future__ import annotations

import numpy as np

from spark_ps.server.optim.base import Optimizer, real_hyper

__all__ = ["SGD"]


class SGD(Optimizer):
    """``w -= lr * g``, with no per-coordinate state.

    Parameters
    ----------
    lr : float, default 0.01
        Learning rate, > 0.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.array([[1.0, 1.0]], np.float32)
    >>> SGD(lr=0.5).step(w, {}, np.array([[2.0, -1.0]], np.float32))
    >>> w.tolist()
    [[0.0, 1.5]]
    """

    name = "sgd"

    def __init__(self, lr: float = 0.01) -> None:
        self.lr = real_hyper(self.name, "lr", lr, gt=0)

    def _update(self, weights: np.ndarray, state: dict[str, np.ndarray], grads: np.ndarray,
                out_weights: np.ndarray, out_state: dict[str, np.ndarray]) -> None:
        # float64 product: lr * g rounded to float32 first would add a second rounding.
        out_weights[...] = weights - self.lr * grads.astype(np.float64)
