"""Warm start: a stream from ``initialModel=`` continues a batch fit exactly where it stopped.

Reference: the same batch fit with one more epoch. With one worker under BSP
both runs are deterministic and see the same mini-batches in the same order,
so the stream's first micro-batch (the fit's data, once) must apply exactly
the update that the extra epoch applies: same weights, same intercept. A
stream that kept the weights but restarted FTRL's ``z``/``n`` would not.
``priorL1=0``: the fit's L1 prior is per pass (it scales with numEpochs), a
stream's per micro-batch, so only without it do the two penalties agree.
"""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.ml.linalg import SparseVector

from spark_ps.ml.classification import FMClassifier, LogisticRegression, LogisticRegressionModel
from spark_ps.ml.regression import LinearRegression
from spark_ps.streaming import StreamingTrainer

DIM = 64
PARAMS = {"numWorkers": 1, "syncMode": "bsp", "batchSize": 16, "priorL1": 0.0}


@pytest.fixture(scope="module")
def data_dir(local_spark, tmp_path_factory):
    """300 rows of a sparse logistic model, in one Parquet file (one partition: one row order everywhere)."""
    rng = np.random.default_rng(7)
    truth = rng.normal(size=DIM)
    rows = []
    for _ in range(300):
        idx = np.sort(rng.choice(DIM, size=6, replace=False))
        margin = truth[idx].sum() - 0.5
        rows.append((float(rng.random() < 1 / (1 + np.exp(-margin))), SparseVector(DIM, idx, np.ones(6))))
    path = str(tmp_path_factory.mktemp("warm") / "events")
    local_spark.createDataFrame(rows, ["label", "features"]).coalesce(1).write.parquet(path)
    return path


def _stream_once(spark, estimator, data_dir, root, initial):
    events = spark.readStream.schema(spark.read.parquet(data_dir).schema).parquet(data_dir)
    trainer = StreamingTrainer(estimator, modelPath=str(root / "online"), initialModel=initial)
    query = trainer.start(events, checkpointLocation=str(root / "ckpt"))
    try:
        query.processAllAvailable()
    finally:
        query.stop()
    return trainer


@pytest.mark.stream  # whole streams
def test_first_batch_applies_what_a_further_epoch_would(local_spark, data_dir, tmp_path):
    data = local_spark.read.parquet(data_dir)
    assert data.rdd.getNumPartitions() == 1
    fitted = LogisticRegression(numEpochs=2, **PARAMS).fit(data)
    fitted.save(str(tmp_path / "batch"))
    trainer = _stream_once(local_spark, LogisticRegression(**PARAMS), data_dir, tmp_path, str(tmp_path / "batch"))
    assert [r.batchId for r in trainer.metrics().collect()] == [0]  # the seed is not a batch of the stream
    online = LogisticRegressionModel.load(str(tmp_path / "online"))
    further = LogisticRegression(numEpochs=3, **PARAMS).fit(data)

    ours, theirs = online.coefficients.toArray(), further.coefficients.toArray()
    assert np.abs(ours - fitted.coefficients.toArray()).max() > 1e-3  # the stream did learn
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    assert online.intercept == pytest.approx(further.intercept, rel=1e-5, abs=1e-6)

    # A restart rebuilds from the log's seed and batches; initialModel is not applied a second time.
    again = _stream_once(local_spark, LogisticRegression(**PARAMS), data_dir, tmp_path, str(tmp_path / "batch"))
    assert [r.batchId for r in again.metrics().collect()] == [0]
    np.testing.assert_array_equal(LogisticRegressionModel.load(str(tmp_path / "online")).coefficients.toArray(),
                                  ours)


@pytest.mark.stream  # whole streams
def test_refuses_a_model_it_cannot_continue(local_spark, data_dir, tmp_path):
    data = local_spark.read.parquet(data_dir)
    LogisticRegression(numEpochs=1, **PARAMS).fit(data).save(str(tmp_path / "lr"))
    with pytest.raises(ValueError, match="LogisticRegressionModel cannot continue as a LinearRegression"):
        _stream_once(local_spark, LinearRegression(), data_dir, tmp_path / "a", str(tmp_path / "lr"))
    with pytest.raises(ValueError, match="optimizer 'ftrl'.*'adagrad'"):
        _stream_once(local_spark, LogisticRegression(optimizer="adagrad"), data_dir, tmp_path / "b",
                     str(tmp_path / "lr"))
    FMClassifier(numEpochs=1, factorSize=2, **PARAMS).fit(data).save(str(tmp_path / "fm"))
    with pytest.raises(ValueError, match="width 3.*needs 5"):
        _stream_once(local_spark, FMClassifier(factorSize=4, **PARAMS), data_dir, tmp_path / "c",
                     str(tmp_path / "fm"))
