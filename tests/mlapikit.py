"""Data, reference metrics and a session fixture helper for the ``test_ml_api*`` modules.

The drop-in tests compare our estimators with pyspark.ml's classes of the
same name on the same small data. The data here is tiny on purpose (a few
hundred rows): every fit is a real barrier stage through the shards.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
from pyspark.ml import classification as mllib_classification
from pyspark.ml import regression as mllib_regression
from pyspark.ml.linalg import SparseVector, Vectors

from spark_ps.ml import classification as ps_classification
from spark_ps.ml import regression as ps_regression

A9A = Path(__file__).resolve().parent.parent / "data" / "a9a.libsvm.gz"
A9A_DIM = 123

#: (name, our estimator, MLlib's estimator, our model class, MLlib's model class, binary?)
CASES = {
    "LogisticRegression": (ps_classification.LogisticRegression, mllib_classification.LogisticRegression,
                           ps_classification.LogisticRegressionModel,
                           mllib_classification.LogisticRegressionModel, True),
    "FMClassifier": (ps_classification.FMClassifier, mllib_classification.FMClassifier,
                     ps_classification.FMClassificationModel, mllib_classification.FMClassificationModel, True),
    "LinearRegression": (ps_regression.LinearRegression, mllib_regression.LinearRegression,
                         ps_regression.LinearRegressionModel, mllib_regression.LinearRegressionModel, False),
}

#: MLlib Params set to the same non-default values on both sides of a comparison.
SHARED_KWARGS = {
    "LogisticRegression": {"regParam": 0.001, "maxIter": 20},
    "FMClassifier": {"regParam": 0.001, "maxIter": 5, "factorSize": 3, "stepSize": 0.05, "seed": 11},
    "LinearRegression": {"maxIter": 20, "fitIntercept": True},
}

#: Our parameter-server knobs for quick fits (ignored by MLlib).
PS_KWARGS = {
    "LogisticRegression": {"numEpochs": 3, "batchSize": 32, "alpha": 0.3},
    "FMClassifier": {"numEpochs": 3, "batchSize": 32},
    "LinearRegression": {"numEpochs": 5, "batchSize": 16, "alpha": 0.5},
}


def a9a_rows(n: int, skip: int = 0) -> list[tuple[float, SparseVector]]:
    """``n`` rows of a9a (after ``skip``) as ``(label in {0, 1}, SparseVector(123))``."""
    rows = []
    with gzip.open(A9A, "rt") as fh:
        for i, line in enumerate(fh):
            if i < skip:
                continue
            if len(rows) == n:
                break
            label, *feats = line.split()
            pairs = sorted((int(k) - 1, float(v)) for k, v in (f.split(":") for f in feats))
            rows.append((1.0 if float(label) > 0 else 0.0,
                         Vectors.sparse(A9A_DIM, [k for k, _ in pairs], [v for _, v in pairs])))
    return rows


def regression_rows(n: int, dim: int = 20, seed: int = 3) -> list[tuple[float, SparseVector]]:
    """``y = w.x + 0.5 + noise`` with 1..5 non-zeros of ``dim`` per row."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(0, 1.0, dim)
    rows = []
    for _ in range(n):
        idx = np.sort(rng.choice(dim, rng.integers(1, 6), replace=False))
        val = rng.uniform(0.5, 1.5, len(idx))
        y = float(val @ truth[idx] + 0.5 + rng.normal(0, 0.1))
        rows.append((y, Vectors.sparse(dim, idx.tolist(), val.tolist())))
    return rows


def auc(labels, scores) -> float:
    """Area under the ROC curve by the Mann-Whitney rank sum (ties count one half)."""
    labels = np.asarray(labels, dtype=float)
    scores = np.asarray(scores, dtype=float)
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    pos = labels == 1.0
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(labels, margins) -> float:
    """Mean logistic loss of raw margins."""
    labels = np.asarray(labels, dtype=float)
    margins = np.asarray(margins, dtype=float)
    return float(np.mean(np.logaddexp(0.0, margins) - labels * margins))


def fm_margin(vec: SparseVector, intercept: float, linear: SparseVector, factors: np.ndarray) -> float:
    """Rendle's FM score ``b + <w, x> + 1/2 sum_f ((V^T x)_f^2 - (V^2)^T x^2)``, written from the paper."""
    x = vec.toArray()
    vx = factors.T @ x
    return float(intercept + linear.dot(vec) + 0.5 * np.sum(vx ** 2 - (factors.T ** 2) @ (x ** 2)))


def finite(values) -> bool:
    return all(math.isfinite(v) for v in values)


def a9a_frames(spark, n_train: int, n_test: int):
    """Cached ``(train, test)`` frames of ``label, features``: the first ``n_train`` a9a rows, then ``n_test``."""
    return tuple(spark.createDataFrame(rows, ["label", "features"]).cache()
                 for rows in (a9a_rows(n_train), a9a_rows(n_test, skip=n_train)))
