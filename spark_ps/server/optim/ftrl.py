"""FTRL-Proximal (McMahan et al., KDD 2013, Algorithm 1), applied by the server.

Each coordinate keeps ``z`` (the sum of gradients, corrected for the moving
centre of the proximal terms) and ``n`` (the sum of squared gradients). The
weight is not learned directly; it is the closed-form minimiser

    w = 0                                              if |z| <= l1
    w = -(z - sgn(z) · l1) / ((beta + √n) / alpha + l2)  otherwise

so L1 produces exact zeros, the point of FTRL for sparse models. As in the
paper's algorithm, ``w`` is a function of the state and not state itself
(:attr:`FTRL.weights_from_state`): a shard stores ``z`` and ``n`` only, and
computes ``w`` when it is read. A push, which is memory-bound, then reads and
writes two arrays of rows instead of three; a pull pays a few flops per
coordinate instead.
"""

from __future__ import annotations

import numba
import numpy as np

from spark_ps.server.optim.base import Optimizer, flat, real_hyper
from spark_ps.wire.spec import STATE_NAMES

__all__ = ["FTRL"]

_NO_WEIGHTS = np.empty(0, dtype=np.float32)


@numba.njit(inline="always")
def _closed_form(z: np.float32, s: np.float32, inv_alpha: np.float32, beta: np.float32, l1: np.float32,
                 l2: np.float32) -> np.float32:
    # |z| <= l1 is tested first: it also covers n = 0 with beta = l2 = 0 (a zero denominator).
    if abs(z) <= l1:
        return np.float32(0.0)
    return -(z - np.copysign(l1, z)) / ((beta + s) * inv_alpha + l2)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _ftrl_kernel(z: np.ndarray, n: np.ndarray, g: np.ndarray, z_out: np.ndarray, n_out: np.ndarray,
                 w_out: np.ndarray, alpha: float, beta: float, l1: float, l2: float) -> None:
    # float32 arithmetic: twice the SIMD lanes of float64 and much cheaper
    # square roots and divisions (5x faster at width 9). The one
    # ill-conditioned term of the paper's update,
    # sigma = (sqrt(n_new) - sqrt(n_old)) / alpha, cancels catastrophically in
    # float32 once n is large; it is computed in the equivalent stable form
    # g^2 / (alpha (sqrt(n_new) + sqrt(n_old))) instead, which leaves float32
    # rounding (~1e-7 relative) as the only difference from a float64 update.
    # An empty w_out means the caller derives the weights later.
    inv_alpha = np.float32(1.0 / alpha)
    beta32, l1_32, l2_32 = np.float32(beta), np.float32(l1), np.float32(l2)
    zero = np.float32(0.0)
    store_w = w_out.shape[0] != 0
    for i in range(g.shape[0]):
        gi = g[i]
        g2 = gi * gi
        z_old = z[i]
        n_old = n[i]
        n_new = n_old + g2
        s_old = np.sqrt(n_old)
        s_new = np.sqrt(n_new)
        both = s_new + s_old
        sigma = zero if both == zero else g2 / both * inv_alpha  # n_old = g = 0: no step, no moving centre
        z_new = z_old + gi - sigma * _closed_form(z_old, s_old, inv_alpha, beta32, l1_32, l2_32)
        z_out[i] = z_new
        n_out[i] = n_new
        if store_w:
            w_out[i] = _closed_form(z_new, s_new, inv_alpha, beta32, l1_32, l2_32)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _weights_kernel(z: np.ndarray, n: np.ndarray, w_out: np.ndarray, alpha: float, beta: float, l1: float,
                    l2: float) -> None:
    inv_alpha = np.float32(1.0 / alpha)
    beta32, l1_32, l2_32 = np.float32(beta), np.float32(l1), np.float32(l2)
    for i in range(z.shape[0]):
        w_out[i] = _closed_form(z[i], np.sqrt(n[i]), inv_alpha, beta32, l1_32, l2_32)


class FTRL(Optimizer):
    """Per-coordinate FTRL-Proximal with L1 and L2 regularisation.

    Parameters
    ----------
    alpha : float, default 0.1
        Learning-rate scale, > 0.
    beta : float, default 1.0
        Learning-rate smoothing, >= 0 (the paper finds 1 works well); the
        per-coordinate rate is ``alpha / (beta + √n)``.
    l1 : float, default 0.0
        L1 strength, >= 0: coordinates with ``|z| <= l1`` are exactly zero.
    l2 : float, default 0.0
        L2 strength, >= 0.

    Notes
    -----
    Rows created with non-zero initial weights ``w0`` (e.g. a ``normal``
    initialiser) start from ``z0`` chosen so that the formula above gives back
    ``w0`` at ``n = 0`` (:meth:`init_state`), to float32 rounding of ``z0``.
    Without that, the first push would snap every initial weight to the value
    implied by ``z = 0``, i.e. zero. With ``beta = l2 = 0`` there is no such
    ``z0``: every row has ``w = 0`` until its first gradient
    (:attr:`represents_initial_weights` is False).

    Examples
    --------
    >>> import numpy as np
    >>> opt = FTRL(alpha=0.5, beta=1.0, l1=0.5, l2=1.0)
    >>> w = np.zeros((1, 2), np.float32)
    >>> state = opt.init_state(w)
    >>> opt.step(w, state, np.array([[2.0, 0.3]], np.float32))
    >>> round(float(w[0, 0]), 6), float(w[0, 1])   # -(2 - 0.5)/((1 + 2)/0.5 + 1); |0.3| <= l1
    (-0.214286, 0.0)
    """

    name = "ftrl"
    state_names = STATE_NAMES["ftrl"]
    weights_from_state = True

    def __init__(self, alpha: float = 0.1, beta: float = 1.0, l1: float = 0.0, l2: float = 0.0) -> None:
        self.alpha = real_hyper(self.name, "alpha", alpha, gt=0)
        self.beta = real_hyper(self.name, "beta", beta, ge=0)
        self.l1 = real_hyper(self.name, "l1", l1, ge=0)
        self.l2 = real_hyper(self.name, "l2", l2, ge=0)

    def init_state(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        # Invert the closed form at n = 0: w0 = -(z0 - sgn(z0) l1) / (beta/alpha + l2).
        w0 = weights.astype(np.float64)
        z0 = -(w0 * (self.beta / self.alpha + self.l2) + np.sign(w0) * self.l1)
        if not self.represents_initial_weights:  # every z0 gives w = 0 at n = 0: start from z = 0
            z0[...] = 0.0
        return {"z": z0.astype(np.float32), "n": np.zeros(weights.shape, dtype=np.float32)}

    def unregularised(self) -> FTRL:
        return FTRL(self.alpha, self.beta, 0.0, 0.0)

    @property
    def represents_initial_weights(self) -> bool:
        # A row with n = 0 has w = -(z0 - sgn(z0) l1) / (beta/alpha + l2): 0 whatever z0 if both are 0.
        return self.beta > 0 or self.l2 > 0

    def _update(self, weights: np.ndarray | None, state: dict[str, np.ndarray], grads: np.ndarray,
                out_weights: np.ndarray | None, out_state: dict[str, np.ndarray]) -> None:
        w_out = _NO_WEIGHTS if out_weights is None else flat(out_weights)
        _ftrl_kernel(flat(state["z"]), flat(state["n"]), grads.reshape(-1), flat(out_state["z"]),
                     flat(out_state["n"]), w_out, self.alpha, self.beta, self.l1, self.l2)

    def _derive_weights(self, state: dict[str, np.ndarray], out: np.ndarray) -> None:
        _weights_kernel(flat(state["z"]), flat(state["n"]), flat(out), self.alpha, self.beta, self.l1, self.l2)
