"""Adam (Kingma & Ba, 2015) in its lazy, sparse form, applied by the server.

Dense Adam advances one global step counter ``t`` and decays the moments ``m``
and ``v`` of *every* coordinate at every step, so coordinates keep moving on
momentum alone even when their feature is absent from the batch. On a
parameter server that would mean touching the whole table per push. This
rule instead updates only the pushed coordinates (like TensorFlow's
``LazyAdam``) and keeps a **per-coordinate step count** ``t`` as state, so
each coordinate's bias correction ``1 - beta**t`` uses the number of updates
*it* has received. A coordinate pushed on every step follows dense Adam
exactly; a rare one takes properly bias-corrected steps instead of the
under-corrected ones a global ``t`` would give it.

``t`` is stored as float32 like every state array (the table keeps all state
shaped like the weights); it counts exactly up to 2**24 updates of one
coordinate, beyond which ``beta**t`` has long since underflowed to zero and
the bias correction is 1 anyway.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from spark_ps.server.optim.base import Optimizer, flat, real_hyper
from spark_ps.wire.spec import STATE_NAMES

__all__ = ["Adam"]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _adam_kernel(w: np.ndarray, m: np.ndarray, v: np.ndarray, t: np.ndarray, g: np.ndarray,
                 w_out: np.ndarray, m_out: np.ndarray, v_out: np.ndarray, t_out: np.ndarray,
                 lr: float, beta1: float, beta2: float, eps: float) -> None:
    for i in range(g.shape[0]):
        gij = np.float64(g[i])
        steps = np.float64(t[i]) + 1.0
        m_new = beta1 * np.float64(m[i]) + (1.0 - beta1) * gij
        v_new = beta2 * np.float64(v[i]) + (1.0 - beta2) * gij * gij
        m_hat = m_new / (1.0 - beta1 ** steps)
        v_hat = v_new / (1.0 - beta2 ** steps)
        w_out[i] = w[i] - lr * m_hat / (math.sqrt(v_hat) + eps)
        m_out[i] = m_new
        v_out[i] = v_new
        t_out[i] = steps


class Adam(Optimizer):
    """Lazy Adam with a per-coordinate step count.

    ``t += 1;  m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²;
    w -= lr · (m / (1-β1^t)) / (√(v / (1-β2^t)) + eps)`` on the pushed coordinates only.

    Parameters
    ----------
    lr : float, default 0.001
        Learning rate, > 0.
    beta1 : float, default 0.9
        Decay of the first moment, in [0, 1).
    beta2 : float, default 0.999
        Decay of the second moment, in [0, 1).
    eps : float, default 1e-8
        Added to the root of the second moment, > 0.

    Examples
    --------
    >>> import numpy as np
    >>> opt = Adam(lr=0.1)
    >>> w = np.zeros((1, 2), np.float32)
    >>> state = opt.init_state(w)
    >>> opt.step(w, state, np.array([[5.0, -0.01]], np.float32))
    >>> w.astype(float).round(6).tolist(), state["t"].tolist()   # first bias-corrected step is lr·sgn(g)
    ([[-0.1, 0.1]], [[1.0, 1.0]])
    """

    name = "adam"
    state_names = STATE_NAMES["adam"]

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
        self.lr = real_hyper(self.name, "lr", lr, gt=0)
        self.beta1 = real_hyper(self.name, "beta1", beta1, ge=0, lt=1)
        self.beta2 = real_hyper(self.name, "beta2", beta2, ge=0, lt=1)
        self.eps = real_hyper(self.name, "eps", eps, gt=0)

    def _update(self, weights: np.ndarray, state: dict[str, np.ndarray], grads: np.ndarray,
                out_weights: np.ndarray, out_state: dict[str, np.ndarray]) -> None:
        _adam_kernel(flat(weights), flat(state["m"]), flat(state["v"]), flat(state["t"]), grads.reshape(-1),
                     flat(out_weights), flat(out_state["m"]), flat(out_state["v"]), flat(out_state["t"]),
                     self.lr, self.beta1, self.beta2, self.eps)
