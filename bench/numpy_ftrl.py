"""Single-process FTRL-Proximal logistic regression: the accuracy and speed reference.

FTRL-Proximal (McMahan et al., "Ad Click Prediction: a View from the
Trenches", KDD 2013, Algorithm 1) updates per example and per coordinate,
each example seeing the weights the previous one left. That order is the
algorithm, so the honest reference is a compiled loop over rows (numba).
Mapping keys to state slots is one compiled hash-table pass; scoring is
vectorised numpy.

Keys can be any int64 (hashed features up to ``2**63``): state lives in dense
arrays over the *distinct keys seen in training* (found once, before the
first epoch), never over ``[0, dim)``. The intercept is one more coordinate
with the same update and the same ``l1``/``l2``, as spark-ps stores it (key
``-1`` in the same table).

Examples
--------
Command line (prints rows/s, AUC and log-loss on the held-out rows)::

    python -m bench.numpy_ftrl --rows 400000 --test-rows 100000 --dim-log2 22
"""

from __future__ import annotations

import argparse
import time
from typing import NamedTuple

import numba
import numpy as np

from bench.ctr_data import generate
from bench.metrics import auc, log_loss
from spark_ps.native.hashing import mix64


class FTRLModel(NamedTuple):
    """Weights of the keys seen in training (sorted), and the intercept.

    Attributes
    ----------
    keys : numpy.ndarray of int64
        Sorted distinct feature keys of the training data.
    weights : numpy.ndarray of float64
        ``weights[i]`` belongs to ``keys[i]``; unseen keys have weight 0.
    bias : float
    progressive_log_loss : float
        Mean log-loss of each training example scored *before* its update
        (McMahan's progressive validation) over the last epoch.
    timings : dict
        Seconds spent in ``"key_mapping"`` (keys to state slots) and ``"updates"`` (the FTRL loop).
    """

    keys: np.ndarray
    weights: np.ndarray
    bias: float
    progressive_log_loss: float
    timings: dict


@numba.njit(cache=True, fastmath=False)
def _ftrl_weight(z: float, n: float, alpha: float, beta: float, l1: float, l2: float) -> float:
    if abs(z) <= l1:
        return 0.0
    return -(z - np.sign(z) * l1) / ((beta + np.sqrt(n)) / alpha + l2)


@numba.njit(cache=True)
def _ftrl_epoch(indptr, slot, values, labels, z, n, alpha, beta, l1, l2, use_bias):
    """One pass in row order; ``slot`` maps each non-zero to its state index (0 is the bias).

    Returns the summed progressive log-loss.
    """
    width = 0
    for r in range(len(labels)):
        width = max(width, indptr[r + 1] - indptr[r])
    w = np.empty(width + 1)
    total_loss = 0.0
    for r in range(len(labels)):
        lo, hi = indptr[r], indptr[r + 1]
        margin = 0.0
        if use_bias:
            w[0] = _ftrl_weight(z[0], n[0], alpha, beta, l1, l2)
            margin += w[0]
        for k in range(lo, hi):
            wk = _ftrl_weight(z[slot[k]], n[slot[k]], alpha, beta, l1, l2)
            w[k - lo + 1] = wk
            margin += wk * values[k]
        # Numerically stable sigmoid and log-loss for either sign of the margin.
        if margin >= 0:
            e = np.exp(-margin)
            p = 1.0 / (1.0 + e)
            total_loss += np.log1p(e) + (1.0 - labels[r]) * margin
        else:
            e = np.exp(margin)
            p = e / (1.0 + e)
            total_loss += np.log1p(e) - labels[r] * margin
        d = p - labels[r]
        if use_bias:
            sigma = (np.sqrt(n[0] + d * d) - np.sqrt(n[0])) / alpha
            z[0] += d - sigma * w[0]
            n[0] += d * d
        for k in range(lo, hi):
            g = d * values[k]
            s = slot[k]
            sigma = (np.sqrt(n[s] + g * g) - np.sqrt(n[s])) / alpha
            z[s] += g - sigma * w[k - lo + 1]
            n[s] += g * g
    return total_loss


def train_ftrl(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, labels: np.ndarray,
               alpha: float = 0.1, beta: float = 1.0, l1: float = 0.0, l2: float = 0.0,
               epochs: int = 1, fit_intercept: bool = True) -> FTRLModel:
    """Fit logistic regression with FTRL-Proximal, one example at a time in row order.

    Parameters
    ----------
    indptr, indices, values : numpy.ndarray
        CSR rows; ``indices`` are int64 keys of any range (hashed features).
    labels : numpy.ndarray
        0/1 labels.
    alpha, beta, l1, l2 : float
        FTRL-Proximal hyper-parameters (per-coordinate rate
        ``alpha / (beta + sqrt(n_i))``, L1 and L2 on the summed loss).
    epochs : int
        Passes over the rows, in the same order each time.
    fit_intercept : bool
        Learn a bias (updated like a feature that is always 1).

    Returns
    -------
    FTRLModel

    Examples
    --------
    >>> indptr = np.array([0, 1, 2, 3, 4]); indices = np.array([7, 2**40, 7, 2**40])
    >>> model = train_ftrl(indptr, indices, np.ones(4), np.array([1.0, 0.0, 1.0, 0.0]), alpha=0.5, epochs=5)
    >>> model.keys.tolist() == [7, 2**40], bool(model.weights[0] > 0 > model.weights[1])
    (True, True)
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if not (alpha > 0 and beta >= 0 and l1 >= 0 and l2 >= 0):
        raise ValueError("need alpha > 0 and beta, l1, l2 >= 0")
    t0 = time.perf_counter()
    keys, slot = _key_slots(np.asarray(indices, np.int64))
    t_keys = time.perf_counter() - t0
    z = np.zeros(len(keys) + 1)
    n = np.zeros(len(keys) + 1)
    indptr = np.asarray(indptr, np.int64)
    values = np.asarray(values, np.float64)
    labels = np.asarray(labels, np.float64)
    loss = 0.0
    t0 = time.perf_counter()
    for _ in range(epochs):
        loss = _ftrl_epoch(indptr, slot, values, labels, z, n, alpha, beta, l1, l2, fit_intercept)
    t_updates = time.perf_counter() - t0
    weights = _weights(z, n, alpha, beta, l1, l2)
    return FTRLModel(keys, weights[1:], float(weights[0]) if fit_intercept else 0.0,
                     loss / max(len(labels), 1), {"key_mapping": t_keys, "updates": t_updates})


@numba.njit(cache=True)
def _first_seen_slots(indices):
    """Distinct keys in first-seen order and each entry's index into them (open addressing, doubling)."""
    n = len(indices)
    cap = 1 << 16
    mask = np.uint64(cap - 1)
    table_key = np.empty(cap, np.int64)
    table_slot = np.full(cap, -1, np.int64)
    distinct = np.empty(n, np.int64)
    slot = np.empty(n, np.int64)
    count = 0
    for i in range(n):
        k = indices[i]
        # SplitMix64 (spark-ps's own key hash): spreads clustered keys over the table.
        h = mix64(np.uint64(k)) & mask
        while table_slot[h] != -1 and table_key[h] != k:
            h = (h + np.uint64(1)) & mask
        if table_slot[h] != -1:
            slot[i] = table_slot[h]
            continue
        table_key[h] = k
        table_slot[h] = count
        distinct[count] = k
        slot[i] = count
        count += 1
        if 2 * count > cap:  # keep the load factor <= 1/2 so probes stay short
            cap *= 2
            mask = np.uint64(cap - 1)
            table_key = np.empty(cap, np.int64)
            table_slot = np.full(cap, -1, np.int64)
            for s in range(count):
                g = mix64(np.uint64(distinct[s])) & mask
                while table_slot[g] != -1:
                    g = (g + np.uint64(1)) & mask
                table_key[g] = distinct[s]
                table_slot[g] = s
    return distinct[:count].copy(), slot


def _key_slots(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct keys, and each non-zero's state slot (1-based: slot 0 is the intercept).

    One hash-table pass, then a sort of the distinct keys only: sorting all
    non-zeros (``np.unique(return_inverse=True)``) costs 3-5x more.
    """
    distinct, first_seen = _first_seen_slots(indices)
    order = np.argsort(distinct, kind="stable")
    rank = np.empty(len(distinct), np.int64)
    rank[order] = np.arange(len(distinct))
    return distinct[order], rank[first_seen] + 1


def _weights(z: np.ndarray, n: np.ndarray, alpha: float, beta: float, l1: float, l2: float) -> np.ndarray:
    w = -(z - np.sign(z) * l1) / ((beta + np.sqrt(n)) / alpha + l2)
    return np.where(np.abs(z) <= l1, 0.0, w)


def predict_margin(model: FTRLModel, indptr: np.ndarray, indices: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Raw scores ``bias + sum_i w_i x_i`` of CSR rows; keys not seen in training count 0.

    Examples
    --------
    >>> m = FTRLModel(np.array([3, 9]), np.array([1.0, -2.0]), 0.5, 0.0, {})
    >>> predict_margin(m, np.array([0, 2, 3]), np.array([3, 9, 4]), np.ones(3)).tolist()
    [-0.5, 0.5]
    """
    indices = np.asarray(indices, np.int64)
    pos = np.minimum(np.searchsorted(model.keys, indices), max(len(model.keys) - 1, 0))
    found = (model.keys[pos] == indices) if len(model.keys) else np.zeros(len(indices), bool)
    contrib = np.where(found, model.weights[pos] if len(model.keys) else 0.0, 0.0) * values
    row_of = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    return model.bias + np.bincount(row_of, weights=contrib, minlength=len(indptr) - 1)


def predict(model: FTRLModel, indptr: np.ndarray, indices: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Probabilities of label 1 for CSR rows.

    Examples
    --------
    >>> m = FTRLModel(np.array([3]), np.array([0.0]), 0.0, 0.0, {})
    >>> predict(m, np.array([0, 1]), np.array([3]), np.ones(1)).tolist()
    [0.5]
    """
    margin = predict_margin(model, indptr, indices, values)
    return 0.5 * (1.0 + np.tanh(0.5 * margin))


def main() -> None:
    """Command line: generate train and test rows, fit, print rows/s, AUC and log-loss."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--test-rows", type=int, default=100_000)
    parser.add_argument("--dim-log2", type=int, default=22)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--l1", type=float, default=0.0)
    parser.add_argument("--l2", type=float, default=0.0)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    dim = 2**args.dim_log2
    t0 = time.perf_counter()
    train = generate(args.rows, dim, args.seed)
    test = generate(args.test_rows, dim, args.seed, start_row=args.rows)
    t_gen = time.perf_counter() - t0
    # Compile outside the timing: a real trainer pays it once per process, not per row.
    train_ftrl(np.array([0, 1]), np.array([0]), np.ones(1), np.ones(1))
    t0 = time.perf_counter()
    model = train_ftrl(*train, alpha=args.alpha, beta=args.beta, l1=args.l1, l2=args.l2, epochs=args.epochs)
    t_fit = time.perf_counter() - t0
    p = predict(model, *test[:3])
    print(f"data: {args.rows:,} + {args.test_rows:,} rows at d=2^{args.dim_log2} generated in {t_gen:.2f} s")
    print(f"fit: {args.epochs} epoch(s) in {t_fit:.2f} s = {args.rows * args.epochs / t_fit:,.0f} rows/s "
          f"end to end; key mapping {model.timings['key_mapping']:.2f} s, FTRL updates "
          f"{model.timings['updates']:.2f} s = {args.rows * args.epochs / model.timings['updates']:,.0f} rows/s")
    print(f"model: {len(model.keys):,} distinct keys, {int(np.count_nonzero(model.weights)):,} non-zero weights")
    print(f"held-out AUC {auc(test[3], p):.4f}, log-loss {log_loss(test[3], p):.4f}; "
          f"progressive train log-loss {model.progressive_log_loss:.4f}")


if __name__ == "__main__":
    main()
