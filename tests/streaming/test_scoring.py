"""Live scoring (spark_ps.streaming.scoring): each micro-batch pinned to one committed version, switching with it.

The reference is the batch path: ``Model.load(path, version=v).transform(df)``
loads version ``v`` of the online model whole and scores through its own
shard table; the scorer must give the same scores from the batch's keys only.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
from pyspark.ml.linalg import Vectors, VectorUDT
from pyspark.sql.types import DoubleType, StructField, StructType

from spark_ps.ml.classification import FMClassificationModel, FMClassifier, LogisticRegression, LogisticRegressionModel
from spark_ps.ml.modelstore import ModelStore
from spark_ps.ml.objectives import BIAS_KEY
from spark_ps.ml.regression import LinearRegression, LinearRegressionModel
from spark_ps.streaming import Scorer, StreamingTrainer, score_batch

DIM = 12
SCHEMA = StructType([StructField("label", DoubleType()), StructField("features", VectorUDT())])


@pytest.fixture(scope="module")
def spark(local_spark):
    local_spark.sparkContext.setLogLevel("ERROR")
    return local_spark


def _rows(n: int, flip: bool, seed: int) -> list[tuple[float, object]]:
    """Rows of 3 features out of DIM; the label says whether feature 0 or 1 is on (reversed by ``flip``)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        first = i % 2
        idx = sorted({first, *rng.choice(np.arange(2, DIM), 2, replace=False).tolist()})
        label = float(first == 0) if flip else float(first == 1)
        out.append((label, Vectors.sparse(DIM, idx, [1.0] * len(idx))))
    return out


def _append(spark, path, rows) -> None:
    spark.createDataFrame(rows, SCHEMA).coalesce(1).write.mode("append").parquet(str(path))


def _stream(spark, path):
    return spark.readStream.schema(SCHEMA).parquet(str(path))


def _reference(cls, path, version, rows, spark):
    """Probabilities (classifier) or predictions (regression) of ``rows`` by the batch path's model at ``version``."""
    scored = cls.load(str(path), version=version).transform(spark.createDataFrame(rows, SCHEMA))
    return _scores(scored.collect())


def _scores(rows) -> np.ndarray:
    return np.array([r.probability[1] if "probability" in r else r.prediction for r in rows])


@pytest.mark.stream  # two trainer commits and two scoring queries
def test_predictions_switch_to_each_newly_committed_version(spark, tmp_path):
    train_dir, score_dir, model = tmp_path / "train", tmp_path / "score", str(tmp_path / "model")
    _append(spark, train_dir, _rows(200, flip=False, seed=1))
    trainer = StreamingTrainer(LogisticRegression(regParam=0.0, priorL1=0.0, batchSize=10), modelPath=model)
    train = trainer.start(_stream(spark, train_dir), checkpointLocation=str(tmp_path / "ckpt_train"))
    scored_batches: dict[int, list] = {}
    scorer = Scorer(model)
    score = None
    try:
        train.processAllAvailable()
        v1 = ModelStore(spark, model).last_commit().version
        batch = _rows(40, flip=False, seed=2)
        _append(spark, score_dir, batch)
        score = scorer.start(_stream(spark, score_dir), str(tmp_path / "ckpt_score"),
                             sink=lambda df, batch_id: scored_batches.setdefault(batch_id, df.collect()))
        score.processAllAvailable()
        assert scorer.lastVersion == v1

        # The trainer commits a second version that reverses the first's lesson; the scorer picks it up
        # at its next micro-batch, with no restart.
        _append(spark, train_dir, _rows(400, flip=True, seed=3))
        train.processAllAvailable()
        v2 = ModelStore(spark, model).last_commit().version
        assert v2 > v1
        _append(spark, score_dir, batch)  # the same rows again: only the model differs
        score.processAllAvailable()
    finally:
        for query in (train, score):
            if query is not None:
                query.stop()

    assert sorted(scored_batches) == [0, 1]
    first, second = scored_batches[0], scored_batches[1]
    assert {r.modelVersion for r in first} == {v1} and {r.modelVersion for r in second} == {v2}
    assert [r.features for r in first] == [r.features for r in second] == [r[1] for r in batch]
    old, new = _scores(first), _scores(second)
    np.testing.assert_allclose(old, _reference(LogisticRegressionModel, model, v1, batch, spark), atol=1e-6)
    np.testing.assert_allclose(new, _reference(LogisticRegressionModel, model, v2, batch, spark), atol=1e-6)
    # v1 learnt "feature 1 means click", v2 the reverse: the rows with feature 1 score lower now, those with
    # feature 0 higher, and some predictions flipped.
    has_one = np.array([1 in r.features.indices for r in first])
    assert (new - old)[has_one].mean() < -0.1 and (new - old)[~has_one].mean() > 0.1, (old, new)
    assert any(a.prediction != b.prediction for a, b in zip(first, second))


def _commit(spark, model: str, batch_id: int, rows: dict[int, list[float]]) -> int:
    frame = spark.createDataFrame(list(rows.items()), "key long, value array<float>")
    return ModelStore(spark, model).commit(frame, batch_id=batch_id, metadata={})


def _margins(rows: dict[int, list[float]], batch, factors: int) -> np.ndarray:
    """Closed form: intercept + sum_i w_i x_i + 1/2 sum_f ((sum_i v_if x_i)^2 - sum_i v_if^2 x_i^2)."""
    out = []
    for _, features in batch:
        x = features.values
        table = np.array([rows.get(int(k), [0.0] * (1 + factors)) for k in features.indices]).reshape(-1, 1 + factors)
        w, v = table[:, 0], table[:, 1:]
        pairs = 0.5 * (((x[:, None] * v).sum(0) ** 2) - ((x[:, None] ** 2) * v ** 2).sum(0)).sum()
        out.append(rows[BIAS_KEY][0] + w @ x + pairs)
    return np.array(out)


@pytest.mark.parametrize("estimator, model_cls, factors", [
    pytest.param(FMClassifier(factorSize=2), FMClassificationModel, 2, marks=pytest.mark.stream),
    # The regression output path is also in scored_batch's docstring example, which make test runs.
    pytest.param(LinearRegression(), LinearRegressionModel, 0, marks=pytest.mark.stream),
], ids=["fm", "linear"])
def test_score_batch_scores_each_version_from_the_batch_keys_rows(spark, tmp_path, caplog, estimator, model_cls,
                                                                  factors):
    model = str(tmp_path / "model")
    StreamingTrainer(estimator, modelPath=model)._write_metadata(spark)  # the Params, as the trainer saves them
    rng = np.random.default_rng(11)
    v0 = {k: rng.normal(0, 0.5, 1 + factors).astype(np.float32).tolist() for k in [BIAS_KEY, *range(DIM)]}
    changed = {5: [2.0] + [0.5] * factors, BIAS_KEY: [-0.25] + [0.0] * factors}
    v1 = {**v0, **changed}
    # As the trainer logs: every row first, then only the rows batch 1 changed (the state is the newest per key).
    versions = [_commit(spark, model, 0, v0), _commit(spark, model, 1, changed)]
    # A batch that touches 4 of the DIM features: only their rows and the intercept's are loaded.
    batch = [(1.0, Vectors.sparse(DIM, [1, 5], [1.0, 2.0])), (0.0, Vectors.sparse(DIM, [0, 5, 7], [0.5, 1.0, -1.5])),
             (0.0, Vectors.sparse(DIM, [], []))]
    caplog.set_level(logging.DEBUG, logger="spark_ps.streaming")
    for version, asked, rows in [(versions[0], versions[0], v0), (versions[1], None, v1)]:  # None: the newest
        scored = score_batch(spark.createDataFrame(batch, SCHEMA), model, version=asked).collect()
        assert {r.modelVersion for r in scored} == {version}
        margins = _margins(rows, batch, factors)
        expected = 1 / (1 + np.exp(-margins)) if factors else margins
        np.testing.assert_allclose(_scores(scored), expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(_scores(scored), _reference(model_cls, model, version, batch, spark), atol=1e-6)
    assert sum("5 weight rows loaded" in m for m in caplog.messages) == 2, caplog.messages


def test_scorer_refuses_a_path_without_a_model_and_a_stream_without_features(spark, tmp_path):
    from spark_ps.errors import MissingColumnError, UnavailableError

    with pytest.raises(UnavailableError, match="no model metadata"):
        Scorer(str(tmp_path / "nothing")).start(_stream(spark, tmp_path), str(tmp_path / "ckpt"), sink=print)
    model = str(tmp_path / "model")
    StreamingTrainer(LogisticRegression(), modelPath=model)._write_metadata(spark)
    other = spark.readStream.schema("x double").parquet(str(tmp_path))
    with pytest.raises(MissingColumnError, match="features column 'features'"):
        Scorer(model).start(other, str(tmp_path / "ckpt"), sink=print)
    with pytest.raises(UnavailableError, match="no committed version"):
        score_batch(spark.createDataFrame([(0.0, Vectors.sparse(DIM, [1], [1.0]))], SCHEMA), model)
    assert not os.path.exists(tmp_path / "ckpt")
