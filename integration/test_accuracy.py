"""Accuracy parity with MLlib on real data, trained across two executors and two shards.

For each data set, MLlib's LogisticRegression is fitted over a small grid
(regParam in {1e-4, 1e-3} x standardization in {True, False}, maxIter 100)
and its best held-out AUC is the bar; our LogisticRegression with default
Params (5 epochs) must come within 0.005 of it. Our FMClassifier must match
or beat MLlib's FMClassifier (defaults) on a9a and iPinYou.
"""

from __future__ import annotations

import itertools

import pytest
from pyspark.ml.classification import FMClassifier as MLlibFMClassifier
from pyspark.ml.classification import LogisticRegression as MLlibLogisticRegression
from pyspark.ml.evaluation import BinaryClassificationEvaluator
from real_data import DATASETS

from spark_ps.ml.classification import FMClassifier, LogisticRegression

GRID = list(itertools.product([1e-4, 1e-3], [True, False]))


def auc(predictions) -> float:
    return BinaryClassificationEvaluator(metricName="areaUnderROC").evaluate(predictions)


@pytest.fixture(scope="module", params=sorted(DATASETS))
def split(request, cluster_spark):
    train, test = DATASETS[request.param](cluster_spark)
    train, test = train.cache(), test.cache()
    assert train.count() > 0 and test.count() > 0
    yield request.param, train, test
    train.unpersist()
    test.unpersist()


def test_logistic_regression_auc_within_005_of_mllib_best(split):
    name, train, test = split
    ours = auc(LogisticRegression().fit(train).transform(test))
    mllib = {(reg, std): auc(MLlibLogisticRegression(regParam=reg, standardization=std, maxIter=100)
                                      .fit(train).transform(test)) for reg, std in GRID}
    best = max(mllib.values())
    print(f"{name}: spark-ps LR AUC {ours:.4f}, MLlib best {best:.4f} over {mllib}")
    assert ours >= best - 0.005, f"{name}: ours {ours:.4f} vs MLlib best {best:.4f} ({mllib})"


def test_fm_classifier_matches_or_beats_mllib(split):
    name, train, test = split
    if name == "w8a":
        pytest.skip("the issue asks FM parity on a9a and iPinYou; w8a is covered by the LR test")
    ours = auc(FMClassifier(seed=1).fit(train).transform(test))
    mllib = auc(MLlibFMClassifier(seed=1).fit(train).transform(test))
    print(f"{name}: spark-ps FM AUC {ours:.4f}, MLlib FM {mllib:.4f}")
    assert ours >= mllib - 1e-3, f"{name}: ours {ours:.4f} vs MLlib FM {mllib:.4f}"
