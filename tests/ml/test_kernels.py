"""Mini-batch kernels against dense per-row references and central finite differences."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from spark_ps.ml.csr import CSRBatch
from spark_ps.ml.kernels import (
    fm_forward,
    grad_fm,
    grad_linear,
    logistic_loss_and_dmargin,
    margins_linear,
    sigmoid,
    squared_loss_and_dmargin,
)


def random_batch(rng, n=12, d=15, max_nnz=6, repeats_in_row=True, weighted=False, binary=True):
    """Random CSR batch; some rows empty, keys shared across rows, optionally repeated within a row."""
    lengths = rng.integers(0, max_nnz + 1, n)
    lengths[rng.integers(n)] = 0
    indptr = np.concatenate(([0], np.cumsum(lengths)))
    if repeats_in_row:
        indices = rng.integers(0, d, indptr[-1])
        r = int(np.argmax(lengths))
        indices[indptr[r]:indptr[r] + 2] = indices[indptr[r]]  # guarantee one in-row repeat
    else:
        indices = np.concatenate([rng.choice(d, size=k, replace=False) for k in lengths])
    values = rng.normal(size=indptr[-1])
    labels = rng.integers(0, 2, n).astype(float) if binary else rng.normal(size=n)
    weights = rng.uniform(0.0, 2.0, n) if weighted else None
    return CSRBatch(indptr, indices, values, labels, weights)


def densify(batch, d):
    """Reference: dense X by a per-row loop (repeats add up, as in a dot product)."""
    X = np.zeros((batch.num_rows, d))
    for r in range(batch.num_rows):
        for j in range(batch.indptr[r], batch.indptr[r + 1]):
            X[r, batch.indices[j]] += batch.values[j]
    return X


def fm_reference(X, w, V, b):
    """Textbook FM, O(d^2) pairs per row."""
    out = np.full(len(X), float(b))
    for r, x in enumerate(X):
        out[r] += w @ x
        for i in range(len(x)):
            for j in range(i + 1, len(x)):
                out[r] += (V[i] @ V[j]) * x[i] * x[j]
    return out


def pulled(batch, Wfull):
    uniq, col = np.unique(batch.indices, return_inverse=True)
    return uniq, col, Wfull[uniq]


# --------------------------------------------------------------------------- forward


def test_margins_linear_matches_dense():
    rng = np.random.default_rng(0)
    d = 15
    batch = random_batch(rng, d=d)
    w_full = rng.normal(size=d)
    uniq, col, w = pulled(batch, w_full)
    np.testing.assert_allclose(margins_linear(batch, col, w, 0.3), densify(batch, d) @ w_full + 0.3, rtol=1e-12)
    # float32 pulled rows are accepted and promoted.
    np.testing.assert_allclose(margins_linear(batch, col, w.astype(np.float32), 0.0),
                               densify(batch, d) @ w_full.astype(np.float32), rtol=1e-6)


@pytest.mark.parametrize("k", [1, 4])
def test_fm_forward_matches_pairwise_reference(k):
    rng = np.random.default_rng(k)
    d = 12
    batch = random_batch(rng, d=d, repeats_in_row=False)
    Wfull = rng.normal(size=(d, 1 + k))
    uniq, col, W = pulled(batch, Wfull)
    margin, sum_vx = fm_forward(batch, col, W, -0.2)
    X = densify(batch, d)
    np.testing.assert_allclose(margin, fm_reference(X, Wfull[:, 0], Wfull[:, 1:], -0.2), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sum_vx, X @ Wfull[:, 1:], rtol=1e-10, atol=1e-12)


def test_fm_forward_with_repeated_key_in_a_row_treats_entries_as_features():
    # Documented behaviour for non-canonical rows: two entries of key 0 interact.
    batch = CSRBatch(np.array([0, 2]), np.array([0, 0]), np.array([2.0, 3.0]), None)
    W = np.array([[1.0, 2.0]])
    margin, sum_vx = fm_forward(batch, np.array([0, 0]), W, 0.0)
    assert margin.tolist() == [5.0 + 2.0 * 2.0 * 2.0 * 3.0] and sum_vx.tolist() == [[10.0]]


def test_empty_rows_and_empty_batch():
    batch = CSRBatch(np.array([0, 0, 1, 1]), np.array([7]), np.array([2.0]), np.zeros(3))
    assert margins_linear(batch, np.array([0]), np.array([1.5]), 1.0).tolist() == [1.0, 4.0, 1.0]
    margin, sum_vx = fm_forward(batch, np.array([0]), np.array([[1.5, 1.0, 2.0]]), 1.0)
    assert margin.tolist() == [1.0, 4.0, 1.0] and sum_vx.tolist() == [[0, 0], [2.0, 4.0], [0, 0]]
    empty = CSRBatch(np.zeros(1, np.int64), np.zeros(0), np.zeros(0), np.zeros(0))
    none = np.zeros(0, np.int64)
    assert margins_linear(empty, none, np.zeros(0), 0.0).shape == (0,)
    margin, sum_vx = fm_forward(empty, none, np.zeros((0, 3)), 0.0)
    assert margin.shape == (0,) and sum_vx.shape == (0, 2)
    g, g_bias = grad_linear(empty, none, np.zeros(0), 0)
    assert g.shape == (0, 1) and g_bias == 0.0
    G, g_bias = grad_fm(empty, none, np.zeros((0, 3)), sum_vx, np.zeros(0))
    assert G.shape == (0, 3) and g_bias == 0.0


# --------------------------------------------------------------------------- losses


def test_sigmoid_is_stable():
    m = np.array([-800.0, -30.0, -1.0, 0.0, 2.0, 40.0, 800.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = sigmoid(m)
    np.testing.assert_allclose(s[1:-1], 1.0 / (1.0 + np.exp(-m[1:-1])), rtol=1e-15)
    assert s[0] == 0.0 and s[-1] == 1.0
    np.testing.assert_allclose(sigmoid(-m), 1.0 - s, atol=1e-15)


def test_logistic_loss_matches_naive_and_is_stable():
    rng = np.random.default_rng(1)
    m, y, w = rng.normal(scale=3, size=50), rng.integers(0, 2, 50).astype(float), rng.uniform(0, 2, 50)
    p = 1.0 / (1.0 + np.exp(-m))
    naive = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    loss, dm = logistic_loss_and_dmargin(m, y, w)
    np.testing.assert_allclose(loss, (w * naive).sum(), rtol=1e-12)
    np.testing.assert_allclose(dm, w * (p - y), rtol=1e-12, atol=1e-15)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, dm = logistic_loss_and_dmargin(np.array([1000.0, -1000.0, 1000.0, -40.0]),
                                             np.array([0.0, 1.0, 1.0, 0.0]))
    np.testing.assert_allclose(loss, 2000.0 + np.log1p(np.exp(-40.0)), rtol=1e-15)
    assert dm.tolist() == [1.0, -1.0, 0.0, pytest.approx(np.exp(-40.0), rel=1e-12)]


def test_squared_loss():
    pred, y, w = np.array([1.0, 3.0, -1.0]), np.array([0.0, 1.0, -1.0]), np.array([2.0, 0.5, 1.0])
    assert squared_loss_and_dmargin(pred, y) == (2.5, pytest.approx([1.0, 2.0, 0.0]))
    loss, dm = squared_loss_and_dmargin(pred, y, w)
    assert loss == 0.5 * (2.0 * 1.0 + 0.5 * 4.0) and dm.tolist() == [2.0, 1.0, 0.0]


# --------------------------------------------------------------------------- gradients


def total_loss_linear(batch, col, w, b, loss):
    m = margins_linear(batch, col, w, b)
    if loss == "logistic":
        return logistic_loss_and_dmargin(m, batch.labels, batch.weights)
    return squared_loss_and_dmargin(m, batch.labels, batch.weights)


def total_loss_fm(batch, col, W, b, loss):
    m, sum_vx = fm_forward(batch, col, W, b)
    if loss == "logistic":
        value, dm = logistic_loss_and_dmargin(m, batch.labels, batch.weights)
    else:
        value, dm = squared_loss_and_dmargin(m, batch.labels, batch.weights)
    return value, dm, sum_vx


def central_difference(f, params, eps=1e-6):
    grad = np.zeros_like(params)
    for idx in np.ndindex(params.shape):
        plus, minus = params.copy(), params.copy()
        plus[idx] += eps
        minus[idx] -= eps
        grad[idx] = (f(plus) - f(minus)) / (2 * eps)
    return grad


@pytest.mark.parametrize("loss", ["logistic", "squared"])
@pytest.mark.parametrize("weighted", [False, True])
def test_grad_linear_matches_dense_and_finite_differences(loss, weighted):
    rng = np.random.default_rng(2 + weighted)
    d = 15
    batch = random_batch(rng, d=d, weighted=weighted, binary=loss == "logistic")
    w_full = rng.normal(scale=0.5, size=d)
    uniq, col, w = pulled(batch, w_full)
    b = 0.1
    _, dm = total_loss_linear(batch, col, w, b, loss)
    g, g_bias = grad_linear(batch, col, dm, len(w))
    assert g.dtype == np.float32 and g.shape == (len(uniq), 1)
    np.testing.assert_allclose(g[:, 0], (densify(batch, d).T @ dm)[uniq], rtol=1e-6, atol=1e-6)
    fd = central_difference(lambda p: total_loss_linear(batch, col, p, b, loss)[0], w)
    np.testing.assert_allclose(g[:, 0], fd, rtol=1e-5, atol=1e-5)
    fd_bias = central_difference(lambda p: total_loss_linear(batch, col, w, p[0], loss)[0], np.array([b]))
    assert g_bias == pytest.approx(fd_bias[0], rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("loss", ["logistic", "squared"])
@pytest.mark.parametrize("repeats_in_row", [False, True])
def test_grad_fm_finite_differences(loss, repeats_in_row):
    rng = np.random.default_rng(4 + repeats_in_row)
    d, k = 10, 3
    batch = random_batch(rng, d=d, repeats_in_row=repeats_in_row, weighted=True, binary=loss == "logistic")
    uniq, col, W = pulled(batch, rng.normal(scale=0.5, size=(d, 1 + k)))
    b = -0.3
    _, dm, sum_vx = total_loss_fm(batch, col, W, b, loss)
    G, g_bias = grad_fm(batch, col, W, sum_vx, dm)
    assert G.dtype == np.float32 and G.shape == W.shape
    fd = central_difference(lambda p: total_loss_fm(batch, col, p, b, loss)[0], W)
    np.testing.assert_allclose(G, fd, rtol=1e-5, atol=1e-5)
    fd_bias = central_difference(lambda p: total_loss_fm(batch, col, W, p[0], loss)[0], np.array([b]))
    assert g_bias == pytest.approx(fd_bias[0], rel=1e-6, abs=1e-6)


def test_grad_fm_matches_dense_formula_and_accepts_float32():
    rng = np.random.default_rng(6)
    d, k = 10, 2
    batch = random_batch(rng, d=d, repeats_in_row=False)
    Wfull = rng.normal(size=(d, 1 + k))
    uniq, col, W = pulled(batch, Wfull)
    _, dm, sum_vx = total_loss_fm(batch, col, W, 0.0, "logistic")
    G, _ = grad_fm(batch, col, W, sum_vx, dm)
    X = densify(batch, d)
    V = Wfull[:, 1:]
    # d/dv_if = sum_r dm_r x_ri ((X V)_rf - v_if x_ri)
    dense_v = X.T @ (dm[:, None] * (X @ V)) - V * ((X * X).T @ dm)[:, None]
    np.testing.assert_allclose(G[:, 0], (X.T @ dm)[uniq], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(G[:, 1:], dense_v[uniq], rtol=1e-5, atol=1e-6)
    G32, _ = grad_fm(batch, col, W.astype(np.float32), sum_vx, dm)
    np.testing.assert_allclose(G32, G, rtol=1e-4, atol=1e-5)


def test_shape_errors():
    batch = CSRBatch(np.array([0, 2]), np.array([3, 5]), np.array([1.0, 1.0]), np.array([1.0]))
    with pytest.raises(ValueError, match="one entry per stored value"):
        margins_linear(batch, np.array([0]), np.zeros(2), 0.0)
    with pytest.raises(ValueError, match="w must be 1-D"):
        margins_linear(batch, np.array([0, 1]), np.zeros((2, 2)), 0.0)
    with pytest.raises(ValueError, match="only 1 rows were pulled"):
        grad_linear(batch, np.array([0, 1]), np.ones(1), 1)
    with pytest.raises(ValueError, match="must index the 1 pulled rows"):
        grad_fm(batch, np.array([0, 1]), np.zeros((1, 3)), np.zeros((1, 2)), np.ones(1))
    with pytest.raises(ValueError, match="sum_vx must have shape"):
        grad_fm(batch, np.array([0, 1]), np.zeros((2, 3)), np.zeros((1, 1)), np.ones(1))
