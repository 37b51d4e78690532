"""Progressive metrics from per-task sums: checked against exact references computed on all rows at once."""

from __future__ import annotations

import numpy as np
import pytest

from spark_ps.streaming.progressive import ProgressiveStats


def exact_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> float:
    """Weighted Mann-Whitney AUC over all positive-negative pairs (ties count one half)."""
    pos, neg = labels > 0.5, labels <= 0.5
    diff = scores[pos][:, None] - scores[neg][None, :]
    pair = weights[pos][:, None] * weights[neg][None, :]
    return float(((diff > 0) * pair + 0.5 * (diff == 0) * pair).sum() / pair.sum())


@pytest.mark.parametrize("spread", [0.3, 1.0, 4.0])
def test_summed_task_stats_give_the_exact_metrics_of_all_rows(spread):
    rng = np.random.default_rng(int(spread * 10))
    margins = rng.normal(-2.0, spread, 3000)
    labels = (rng.random(3000) < 1 / (1 + np.exp(-margins - rng.normal(0, 1, 3000)))).astype(float)
    weights = rng.uniform(0.5, 2.0, 3000)
    parts = np.array_split(np.arange(3000), 3)  # three tasks
    total = sum((ProgressiveStats.of(margins[i], labels[i], weights[i], binary=True) for i in parts[1:]),
                ProgressiveStats.of(margins[parts[0]], labels[parts[0]], weights[parts[0]], binary=True))
    got = total.metrics()
    assert got["auc"] == pytest.approx(exact_auc(margins, labels, weights), abs=1e-3)
    p = 1 / (1 + np.exp(-margins))
    log_loss = -(weights * (labels * np.log(p) + (1 - labels) * np.log(1 - p))).sum() / weights.sum()
    assert got["logLoss"] == pytest.approx(log_loss, rel=1e-12)


def test_regression_metrics_and_one_class_batches():
    rng = np.random.default_rng(3)
    y, pred = rng.normal(size=500), rng.normal(size=500)
    halves = [ProgressiveStats.of(pred[s], y[s], None, binary=False) for s in (slice(0, 250), slice(250, 500))]
    got = (halves[0] + halves[1]).metrics()
    assert got["rmse"] == pytest.approx(np.sqrt(np.mean((y - pred) ** 2)), rel=1e-12)
    assert got["r2"] == pytest.approx(1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2), rel=1e-9)
    only_negatives = ProgressiveStats.of(np.array([0.1, 0.2]), np.zeros(2), None, binary=True).metrics()
    assert only_negatives["auc"] is None and only_negatives["logLoss"] > 0
    assert ProgressiveStats(True).metrics() == {"auc": None, "logLoss": None}
