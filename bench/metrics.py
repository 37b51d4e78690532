"""Binary-classification metrics in plain numpy, for the reference trainers and the generator.

Spark-side runs use Spark's own evaluators (see :func:`bench.child.evaluate`); these are
for data that is already in this process.
"""

from __future__ import annotations

import numpy as np


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney U) formula; ties get average ranks.

    Parameters
    ----------
    y : array_like
        Labels; 1 (or True) is positive, anything else negative.
    score : array_like
        Scores, larger meaning more likely positive (any monotone transform
        gives the same AUC).

    Returns
    -------
    float
        AUC in [0, 1]; ``nan`` if ``y`` has only one class.

    Examples
    --------
    >>> auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> auc([0, 1], [0.5, 0.5])  # a tie counts one half
    0.5
    """
    y = np.asarray(y).ravel() == 1
    score = np.asarray(score, dtype=np.float64).ravel()
    if y.shape != score.shape:
        raise ValueError(f"y and score differ in length: {y.shape} vs {score.shape}")
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="stable")
    sorted_score = score[order]
    # Tie groups in sorted order: each gets the mean of the 1-based ranks it spans.
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
    ends = np.r_[starts[1:], len(score)]
    group_rank = (starts + 1 + ends) / 2.0
    ranks = np.repeat(group_rank, ends - starts)
    rank_sum_pos = ranks[y[order]].sum()
    return float((rank_sum_pos - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(y: np.ndarray, p: np.ndarray, eps: float = 1e-15) -> float:
    """Mean binary cross-entropy, with probabilities clipped to ``[eps, 1 - eps]``.

    Parameters
    ----------
    y : array_like
        Labels in {0, 1}.
    p : array_like
        Predicted probabilities of label 1.
    eps : float
        Clipping bound, so a confident wrong prediction costs ``-log(eps)``
        instead of infinity (the convention scikit-learn and Spark users expect).

    Returns
    -------
    float

    Examples
    --------
    >>> round(log_loss([1, 0], [0.8, 0.2]), 6)
    0.223144
    """
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.clip(np.asarray(p, dtype=np.float64).ravel(), eps, 1.0 - eps)
    if y.shape != p.shape:
        raise ValueError(f"y and p differ in length: {y.shape} vs {p.shape}")
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))
