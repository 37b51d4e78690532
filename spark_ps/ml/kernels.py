"""Per-mini-batch math of linear models and factorization machines.

Everything here works on a :class:`~spark_ps.ml.csr.CSRBatch` plus the rows
pulled from the parameter server for the batch's unique feature keys:

* ``uniq`` are the batch's sorted unique keys, and ``col`` maps every stored
  entry to its key's row of the pulled matrix (``np.unique(indices,
  return_inverse=True)`` gives both);
* ``W`` has shape ``(len(uniq), width)``: column 0 is the linear weight, the
  remaining ``k`` columns (FM only) the factors;
* the bias ``b`` is a separate scalar, and its gradient is returned separately.

Gradients come back per pulled row, already summed over every occurrence of
the key in the batch, as ``float32`` (what the server stores and pushes);
sums are carried out in ``float64``.

Segment sums over CSR rows use ``np.add.reduceat`` on the non-empty rows
(``reduceat`` would return an element, not 0, for an empty segment), and
per-key sums use ``np.bincount``: both are single vectorised passes. The
one exception is the FM gradient's scatter-add of ``1 + k`` values per
entry, a small numba loop (see :func:`_fm_grad_kernel`).

Rows should not repeat a key (:func:`~spark_ps.ml.csr.vectors_to_csr`
guarantees it). Linear kernels sum repeats like a dot product; the FM
kernels treat repeated entries as separate features sharing parameters,
which adds a self-interaction the dense FM formula does not have.

Losses do not validate labels (the conversion did): logistic expects labels
in {0, 1}.
"""

from __future__ import annotations

import functools

import numpy as np

from spark_ps.ml.csr import CSRBatch

__all__ = ["fm_forward", "grad_fm", "grad_linear", "logistic_loss_and_dmargin", "margins_linear", "sigmoid",
           "squared_loss_and_dmargin"]


def _segment_sum(x: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """Sum ``x`` (stored entries, any trailing shape) over each CSR row; empty rows give 0."""
    out = np.zeros((len(indptr) - 1,) + x.shape[1:], dtype=np.float64)
    if len(x):
        starts = indptr[:-1]
        nonempty = starts < indptr[1:]
        if nonempty.all():
            out[...] = np.add.reduceat(x, starts, axis=0)
        else:
            # Dropping empty rows keeps each segment's end at the next start.
            out[nonempty] = np.add.reduceat(x, starts[nonempty], axis=0)
    return out


def _check_col(batch: CSRBatch, col: np.ndarray) -> np.ndarray:
    col = np.asarray(col)
    if col.shape != (batch.nnz,):
        raise ValueError(f"col must have one entry per stored value ({batch.nnz}), got shape {col.shape}")
    return col


def margins_linear(batch: CSRBatch, col: np.ndarray, w: np.ndarray, b: float) -> np.ndarray:
    """Linear scores ``x . w + b`` of every row.

    Parameters
    ----------
    batch : CSRBatch
    col : ndarray of int, shape (nnz,)
        Row of ``w`` for each stored entry.
    w : ndarray, shape (n_keys,)
        Pulled linear weights.
    b : float
        Bias.

    Returns
    -------
    ndarray of float64, shape (n,)

    Examples
    --------
    >>> import numpy as np
    >>> from spark_ps.ml.csr import CSRBatch
    >>> batch = CSRBatch(np.array([0, 2, 2]), np.array([10, 30]), np.array([1.0, 2.0]), None)
    >>> uniq, col = np.unique(batch.indices, return_inverse=True)
    >>> margins_linear(batch, col, np.array([0.5, -1.0]), 0.25).tolist()
    [-1.25, 0.25]
    """
    w = np.asarray(w)
    if w.ndim != 1:
        raise ValueError(f"w must be 1-D (one weight per pulled key), got shape {w.shape}")
    col = _check_col(batch, col)
    return _segment_sum(batch.values * w[col], batch.indptr) + b


def fm_forward(batch: CSRBatch, col: np.ndarray, W: np.ndarray, b: float) -> tuple[np.ndarray, np.ndarray]:
    """Factorization-machine scores and the per-row factor sums the gradient reuses.

    ``y = b + sum_i w_i x_i + 1/2 sum_f [(sum_i v_if x_i)^2 - sum_i v_if^2 x_i^2]``,
    the O(nnz k) form of ``sum_{i<j} <v_i, v_j> x_i x_j``.

    Parameters
    ----------
    batch : CSRBatch
    col : ndarray of int, shape (nnz,)
    W : ndarray, shape (n_keys, 1 + k)
        ``W[:, 0]`` linear weights, ``W[:, 1:]`` factors.
    b : float

    Returns
    -------
    margin : ndarray of float64, shape (n,)
    sum_vx : ndarray of float64, shape (n, k)
        ``sum_i v_if x_i`` per row; pass it to :func:`grad_fm`.

    Examples
    --------
    >>> import numpy as np
    >>> from spark_ps.ml.csr import CSRBatch
    >>> batch = CSRBatch(np.array([0, 2]), np.array([0, 1]), np.array([1.0, 2.0]), None)
    >>> W = np.array([[0.0, 1.0], [0.0, 3.0]])   # no linear part, k = 1
    >>> margin, sum_vx = fm_forward(batch, np.array([0, 1]), W, 0.0)
    >>> margin.tolist(), sum_vx.tolist()    # <v_0, v_1> x_0 x_1 = 3 * 2
    ([6.0], [[7.0]])
    """
    W = np.asarray(W)
    if W.ndim != 2 or W.shape[1] < 1:
        raise ValueError(f"W must have shape (n_keys, 1 + k), got {W.shape}")
    col = _check_col(batch, col)
    x = batch.values
    rows = np.take(W, col, axis=0)  # several times faster than W[col] for 2-D W
    k = W.shape[1] - 1
    # One segment sum over [per-entry linear and self terms | x * v] instead of two.
    per_entry = np.empty((len(x), 1 + k), dtype=np.float64)
    np.multiply(rows[:, 1:], x[:, None], out=per_entry[:, 1:])
    xv = per_entry[:, 1:]
    per_entry[:, 0] = x * rows[:, 0] - 0.5 * np.einsum("ij,ij->i", xv, xv)
    sums = _segment_sum(per_entry, batch.indptr)
    sum_vx = sums[:, 1:]
    margin = b + sums[:, 0] + 0.5 * np.einsum("ij,ij->i", sum_vx, sum_vx)
    return margin, sum_vx


def sigmoid(m: np.ndarray) -> np.ndarray:
    """Logistic function without overflow warnings for large ``|m|``.

    Examples
    --------
    >>> sigmoid(np.array([-1000.0, 0.0, 1000.0])).tolist()
    [0.0, 0.5, 1.0]
    """
    m = np.asarray(m, dtype=np.float64)
    e = np.exp(-np.abs(m))  # in (0, 1]: never overflows
    return np.where(m >= 0, 1.0, e) / (1.0 + e)


def logistic_loss_and_dmargin(margin: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None
                              ) -> tuple[float, np.ndarray]:
    """Summed log loss of labels ``y`` in {0, 1} and its derivative per margin.

    ``loss_i = log(1 + exp(m)) - y m = max(m, 0) - y m + log1p(exp(-|m|))``,
    exact and overflow-free for any margin; ``d loss_i / d m = sigmoid(m) - y``.
    Both are multiplied by ``sample_weight`` when given.

    Examples
    --------
    >>> loss, d = logistic_loss_and_dmargin(np.array([0.0, 800.0]), np.array([1.0, 0.0]))
    >>> round(loss, 6), d.tolist()
    (800.693147, [-0.5, 1.0])
    """
    margin = np.asarray(margin, dtype=np.float64)
    e = np.exp(-np.abs(margin))
    loss = np.maximum(margin, 0.0) - y * margin + np.log1p(e)
    dmargin = np.where(margin >= 0, 1.0, e) / (1.0 + e) - y
    if sample_weight is not None:
        loss = loss * sample_weight
        dmargin *= sample_weight
    return float(loss.sum()), dmargin


def squared_loss_and_dmargin(pred: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None
                             ) -> tuple[float, np.ndarray]:
    """Half the summed squared error and its derivative, the (weighted) residual.

    Returns ``(0.5 * sum(w (pred - y)^2), w (pred - y))`` with ``w = 1`` when
    ``sample_weight`` is None.

    Examples
    --------
    >>> squared_loss_and_dmargin(np.array([1.0, 3.0]), np.array([0.0, 1.0]))
    (2.5, array([1., 2.]))
    """
    residual = np.asarray(pred, dtype=np.float64) - y
    if sample_weight is None:
        return 0.5 * float(residual @ residual), residual
    weighted = residual * sample_weight
    return 0.5 * float(weighted @ residual), weighted


def _sum_per_key(col: np.ndarray, per_entry: np.ndarray, n_keys: int) -> np.ndarray:
    """Sum per-entry scalars into one value per key, as an ``(n_keys, 1)`` float32 column."""
    out = np.bincount(col, weights=per_entry, minlength=n_keys)
    if len(out) != n_keys:
        raise ValueError(f"col refers to key row {int(col.max())}, but only {n_keys} rows were pulled")
    return out.astype(np.float32)[:, None]


def grad_linear(batch: CSRBatch, col: np.ndarray, dmargin: np.ndarray, n_keys: int
                ) -> tuple[np.ndarray, float]:
    """Gradient of the summed loss w.r.t. the pulled linear weights and the bias.

    ``g_k = sum over entries (r, i) with col = k of dmargin_r x_ri``; repeated
    keys (across rows, or within one) are summed.

    Parameters
    ----------
    batch : CSRBatch
    col : ndarray of int, shape (nnz,)
    dmargin : ndarray, shape (n,)
        d loss / d margin per row (weights already applied).
    n_keys : int
        Number of pulled rows.

    Returns
    -------
    g : ndarray of float32, shape (n_keys, 1)
    g_bias : float

    Examples
    --------
    >>> from spark_ps.ml.csr import CSRBatch
    >>> batch = CSRBatch(np.array([0, 2, 3]), np.array([5, 9, 5]), np.array([1.0, 2.0, 3.0]), None)
    >>> uniq, col = np.unique(batch.indices, return_inverse=True)
    >>> g, g_bias = grad_linear(batch, col, np.array([0.5, -1.0]), len(uniq))
    >>> g.ravel().tolist(), g_bias
    ([-2.5, 1.0], -0.5)
    """
    col = _check_col(batch, col)
    dmargin = np.asarray(dmargin, dtype=np.float64)
    per_entry = np.repeat(dmargin, np.diff(batch.indptr)) * batch.values
    return _sum_per_key(col, per_entry, n_keys), float(dmargin.sum())


def grad_fm(batch: CSRBatch, col: np.ndarray, W: np.ndarray, sum_vx: np.ndarray, dmargin: np.ndarray
            ) -> tuple[np.ndarray, float]:
    """Gradient of the summed loss w.r.t. the pulled FM rows and the bias.

    Per entry ``(r, i)``: ``d y_r / d w_i = x_i`` and
    ``d y_r / d v_if = x_i (sum_vx[r, f] - v_if x_i)``, each times
    ``dmargin[r]``, then summed per key.

    Parameters
    ----------
    batch : CSRBatch
    col : ndarray of int, shape (nnz,)
    W : ndarray, shape (n_keys, 1 + k)
        The rows the forward pass used.
    sum_vx : ndarray, shape (n, k)
        From :func:`fm_forward`.
    dmargin : ndarray, shape (n,)

    Returns
    -------
    G : ndarray of float32, shape (n_keys, 1 + k)
    g_bias : float

    Examples
    --------
    >>> from spark_ps.ml.csr import CSRBatch
    >>> batch = CSRBatch(np.array([0, 2]), np.array([0, 1]), np.array([1.0, 2.0]), None)
    >>> W, col = np.array([[0.0, 1.0], [0.0, 3.0]]), np.array([0, 1])
    >>> margin, sum_vx = fm_forward(batch, col, W, 0.0)
    >>> G, g_bias = grad_fm(batch, col, W, sum_vx, np.array([1.0]))
    >>> G.tolist()    # d/dv_0 = x_0 x_1 v_1 = 6, d/dv_1 = x_0 x_1 v_0 = 2
    [[1.0, 6.0], [2.0, 2.0]]
    """
    W = np.ascontiguousarray(W)
    col = _check_col(batch, col)
    if W.ndim != 2 or W.shape[1] < 1:
        raise ValueError(f"W must have shape (n_keys, 1 + k), got {W.shape}")
    if sum_vx.shape != (batch.num_rows, W.shape[1] - 1):
        raise ValueError(f"sum_vx must have shape ({batch.num_rows}, {W.shape[1] - 1}), got {sum_vx.shape}")
    if batch.nnz and (col.min() < 0 or col.max() >= len(W)):
        raise ValueError(f"col must index the {len(W)} pulled rows, got values in [{col.min()}, {col.max()}]")
    dmargin = np.ascontiguousarray(dmargin, dtype=np.float64)
    out = np.zeros(W.shape, dtype=np.float64)
    _fm_grad_kernel()(batch.indptr, col.astype(np.intp, copy=False), np.ascontiguousarray(batch.values), W,
                      np.ascontiguousarray(sum_vx, dtype=np.float64), dmargin, out)
    return out.astype(np.float32), float(dmargin.sum())


@functools.cache
def _fm_grad_kernel():
    """The compiled scatter loop of :func:`grad_fm`, built on first use.

    Summing per-entry gradient rows into per-key rows is a scatter-add with
    repeated targets, which numpy can only do through ``(nnz, 1 + k)``
    temporaries (``np.add.at``, or one ``bincount`` over flattened
    (key, column) cells): measured 5x slower than this single pass. Numba is imported here, not at module
    import, so linear models never pay its start-up time.
    """
    from numba import njit

    @njit(cache=True, nogil=True)
    def fm_grad(indptr, col, x, W, sum_vx, dmargin, out):
        k = W.shape[1] - 1
        for r in range(indptr.shape[0] - 1):
            d = dmargin[r]
            for j in range(indptr[r], indptr[r + 1]):
                key = col[j]
                xj = x[j]
                dx = d * xj
                out[key, 0] += dx
                for f in range(k):
                    out[key, 1 + f] += dx * (sum_vx[r, f] - W[key, 1 + f] * xj)

    return fm_grad
