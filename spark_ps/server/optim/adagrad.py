"""Adagrad (Duchi, Hazan & Singer, 2011), diagonal form, applied by the server.

Each coordinate keeps the sum of its squared gradients ``n`` and takes steps
of ``lr / sqrt(n)``: rare features, whose accumulators stay small, keep large
learning rates, which is why Adagrad suits sparse click-through models.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from spark_ps.server.optim.base import Optimizer, flat, real_hyper
from spark_ps.wire.spec import STATE_NAMES

__all__ = ["Adagrad"]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _adagrad_kernel(w: np.ndarray, n: np.ndarray, g: np.ndarray, w_out: np.ndarray, n_out: np.ndarray,
                    lr: float, eps: float) -> None:
    for i in range(g.shape[0]):
        gi = np.float64(g[i])
        n_new = np.float64(n[i]) + gi * gi
        w_out[i] = w[i] - lr * gi / (math.sqrt(n_new) + eps)
        n_out[i] = n_new


class Adagrad(Optimizer):
    """``n += g²;  w -= lr · g / (√n + eps)`` per coordinate.

    Parameters
    ----------
    lr : float, default 0.01
        Learning rate, > 0.
    initial_accumulator_value : float, default 0.1
        Starting value of ``n`` for new rows, >= 0. A positive value damps the
        first steps, which would otherwise all have length ``lr``.
    eps : float, default 1e-7
        Added to ``√n`` so a coordinate with a zero accumulator cannot divide by zero, > 0.

    Examples
    --------
    >>> import numpy as np
    >>> opt = Adagrad(lr=1.0, initial_accumulator_value=0.0, eps=1e-12)
    >>> w = np.zeros((1, 1), np.float32)
    >>> state = opt.init_state(w)
    >>> opt.step(w, state, np.array([[3.0]], np.float32))
    >>> opt.step(w, state, np.array([[4.0]], np.float32))
    >>> w.tolist(), state["n"].tolist()   # -3/3 - 4/5
    ([[-1.7999999523162842]], [[25.0]])
    """

    name = "adagrad"
    state_names = STATE_NAMES["adagrad"]

    def __init__(self, lr: float = 0.01, initial_accumulator_value: float = 0.1, eps: float = 1e-7) -> None:
        self.lr = real_hyper(self.name, "lr", lr, gt=0)
        self.initial_accumulator_value = real_hyper(self.name, "initial_accumulator_value",
                                                    initial_accumulator_value, ge=0)
        self.eps = real_hyper(self.name, "eps", eps, gt=0)

    def init_state(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        return {"n": np.full(weights.shape, self.initial_accumulator_value, dtype=np.float32)}

    def _update(self, weights: np.ndarray, state: dict[str, np.ndarray], grads: np.ndarray,
                out_weights: np.ndarray, out_state: dict[str, np.ndarray]) -> None:
        _adagrad_kernel(flat(weights), flat(state["n"]), grads.reshape(-1), flat(out_weights), flat(out_state["n"]),
                        self.lr, self.eps)
