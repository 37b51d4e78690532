"""Accuracy parity with MLlib on real data, trained across two executors and two shards.

For each data set, MLlib's LogisticRegression is fitted at its best setting
(regParam 1e-3, maxIter 100, the data set's better standardization) and its
held-out AUC is the bar; our LogisticRegression with default Params must
come within 0.005 of it. Our FMClassifier must match
or beat MLlib's FMClassifier (defaults) on a9a and iPinYou, within twice the
standard error of MLlib's held-out AUC (Hanley and McNeil, 1982).

Why regParam 1e-3 only: the grid {1e-4, 1e-3} x standardization put 14
MLlib fits in this fixture, 121-146 s of a ten-minute ``make test``, and
1e-3 gave MLlib's best held-out AUC on every data set (1e-3 vs 1e-4, each at
its better standardization: a9a 0.9026 vs 0.9024, w8a 0.9698 vs 0.9677,
iPinYou 0.5886 vs 0.5844; L-BFGS is deterministic, so these repeat): the
bar is the same with 8 fits.

Why one standardization per data set: the other one lost on each, by 0.0009
on a9a (0.9017 with it on, 0.9026 off), 0.012 on w8a (0.9577 off, 0.9698 on)
and 0.042 on iPinYou (0.5467 on, 0.5886 off), measured with regParam 1e-3 in
the same fixture (L-BFGS is deterministic). Fitting the loser too cost a
third of the fixture's two minutes and could not move the bar.

Why a standard error, not a fixed 1e-3: iPinYou's test set has 51 clicks in
21,150 rows, so an AUC near 0.55 has a standard error of about 0.04. Two runs
of our FM with the same seed but a different interleaving of the workers'
updates (SSP) measured 0.48 to 0.59 there, and MLlib's FM 0.53: a fixed 1e-3
margin made the test a coin toss. On a9a (3,846 positives) the same rule is a
margin of about 0.007.

The three data sets are read and cached once, for both tests. Then MLlib's
fits of each test run side by side from driver threads: each is a chain of
~100 one-task jobs, mostly scheduling latency, and together they keep both
executors busy. Ours run after them, one at a time: a fit is a barrier stage
that needs every task slot at once.

The FM test is ``slow`` (``make test-slow``): MLlib's two FM fits took 78 s
and 97 s of the fixture's 120 s (their 100 AdamW passes over a dense
133k x 8 factor matrix on iPinYou), and the LR parity that issue 12 asks in
``make test`` needs only the three LR fits (about 50 s side by side).
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from pyspark.ml.classification import FMClassifier as MLlibFMClassifier
from pyspark.ml.classification import LogisticRegression as MLlibLogisticRegression
from pyspark.ml.evaluation import BinaryClassificationEvaluator
from real_data import DATASETS

from spark_ps.ml.classification import FMClassifier, LogisticRegression

#: MLlib's setting per data set: regParam 1e-3 and the better standardization (see the module docstring).
GRID = {"a9a": [(1e-3, False)], "ipinyou": [(1e-3, False)], "w8a": [(1e-3, True)]}
#: The issue asks FM parity on a9a and iPinYou; w8a is covered by the LR test.
FM_DATASETS = {"a9a", "ipinyou"}


def auc(predictions) -> float:
    return BinaryClassificationEvaluator(metricName="areaUnderROC").evaluate(predictions)


def auc_standard_error(area: float, positives: int, negatives: int) -> float:
    """Hanley and McNeil's (1982) standard error of an AUC measured on ``positives`` and ``negatives`` rows."""
    q1, q2 = area / (2 - area), 2 * area * area / (1 + area)
    variance = (area * (1 - area) + (positives - 1) * (q1 - area * area)
                + (negatives - 1) * (q2 - area * area)) / (positives * negatives)
    return math.sqrt(variance)


@pytest.fixture(scope="module")
def splits(cluster_spark):
    """``{name: (train, test)}``, cached."""
    frames = {}
    for name, load in sorted(DATASETS.items()):
        train, test = load(cluster_spark)
        train, test = train.cache(), test.cache()
        assert train.count() > 0 and test.count() > 0
        frames[name] = train, test
    yield frames
    for train, test in frames.values():
        train.unpersist()
        test.unpersist()


def mllib_aucs(splits, fits: dict) -> dict:
    """Fit and score ``{key: estimator}`` (``key[0]`` names the data set) side by side; ``{key: held-out AUC}``.

    All fits run concurrently (Spark schedules jobs from several driver
    threads side by side); each is the same fit it would be alone.
    """
    def fit_and_score(key, estimator):
        train, test = splits[key[0]]
        start = time.perf_counter()
        area = auc(estimator.fit(train).transform(test))
        print(f"MLlib {key}: AUC {area:.4f} in {time.perf_counter() - start:.1f} s (beside the other fits)")
        return area

    with ThreadPoolExecutor(max_workers=len(fits), thread_name_prefix="mllib") as pool:
        futures = {key: pool.submit(fit_and_score, key, est) for key, est in fits.items()}
        return {key: future.result() for key, future in futures.items()}


@pytest.fixture(scope="module")
def mllib_lr(splits):
    """MLlib LogisticRegression's held-out AUCs: ``{name: {(regParam, standardization): auc}}``."""
    aucs = mllib_aucs(splits, {(name, reg, std): MLlibLogisticRegression(regParam=reg, standardization=std,
                                                                          maxIter=100)
                               for name in splits for reg, std in GRID[name]})
    return {name: {key[1:]: value for key, value in aucs.items() if key[0] == name} for name in splits}


@pytest.fixture(scope="module")
def mllib_fm(splits):
    """MLlib FMClassifier's held-out AUC (defaults, seed 1) on each of FM_DATASETS: ``{name: auc}``."""
    aucs = mllib_aucs(splits, {(name,): MLlibFMClassifier(seed=1) for name in sorted(FM_DATASETS)})
    return {key[0]: value for key, value in aucs.items()}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_logistic_regression_auc_within_005_of_mllib_best(name, splits, mllib_lr):
    train, test = splits[name]
    ours = auc(LogisticRegression().fit(train).transform(test))
    grid = mllib_lr[name]
    best = max(grid.values())
    print(f"{name}: spark-ps LR AUC {ours:.4f}, MLlib best {best:.4f} over {grid}")
    assert ours >= best - 0.005, f"{name}: ours {ours:.4f} vs MLlib best {best:.4f} ({grid})"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FM_DATASETS))
def test_fm_classifier_matches_or_beats_mllib(name, splits, mllib_fm):
    train, test = splits[name]
    ours = auc(FMClassifier(seed=1).fit(train).transform(test))
    theirs = mllib_fm[name]
    positives = test.filter("label = 1").count()
    margin = 2 * auc_standard_error(theirs, positives, test.count() - positives)
    print(f"{name}: spark-ps FM AUC {ours:.4f}, MLlib FM {theirs:.4f}, margin {margin:.4f} ({positives} positives)")
    assert ours >= theirs - margin, f"{name}: ours {ours:.4f} vs MLlib FM {theirs:.4f} - {margin:.4f}"
