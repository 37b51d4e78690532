"""The quarantine on Spark: each kind of bad row set aside with its reason, the model trained on the rest.

The reference for "trained on the good rows only" is a second stream of the
good rows alone: with one worker under BSP a run is deterministic, so the two
models must be equal.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.ml.linalg import VectorUDT
from pyspark.sql.types import DoubleType, StringType, StructField, StructType

from spark_ps.errors import ColumnTypeError
from spark_ps.ml.classification import LogisticRegression, LogisticRegressionModel
from spark_ps.ml.csr import VECTOR_ARROW_TYPE
from spark_ps.ml.modelstore import ModelStore
from spark_ps.ml.regression import LinearRegression
from spark_ps.streaming import StreamingTrainer
from spark_ps.streaming.quarantine import (
    QuarantineRules,
    quarantine_path,
    rules_for,
    split,
    write_quarantine,
)

SIZE = 8
SCHEMA = StructType([StructField("label", DoubleType()), StructField("weight", DoubleType()),
                     StructField("features", VectorUDT())])
ARROW_SCHEMA = pa.schema([("label", pa.float64()), ("weight", pa.float64()), ("features", VECTOR_ARROW_TYPE)])


def vec(indices, values, size=SIZE, kind=0):
    return {"type": kind, "size": size, "indices": indices, "values": values}


GOOD = vec([2, 5], [1.0, 1.0])

#: One row of each kind of bad row: (label, weight, features, reason).
BAD = [(1.0, 1.0, None, "features_null"),
       (1.0, 1.0, vec([1, 2], [1.0]), "features_malformed"),
       (0.0, 1.0, vec([1], [math.nan]), "features_not_finite"),
       (1.0, 1.0, vec([-1, 3], [1.0, 1.0]), "index_negative"),
       (0.0, 1.0, vec([3, SIZE], [1.0, 1.0]), "index_out_of_range"),
       (1.0, 1.0, vec([3], [1.0], size=2 * SIZE), "size_mismatch"),
       (None, 1.0, GOOD, "label_null"),
       (math.nan, 1.0, GOOD, "label_not_finite"),
       (2.0, 1.0, GOOD, "label_out_of_domain"),
       (1.0, None, GOOD, "weight_null"),
       (0.0, math.inf, GOOD, "weight_not_finite"),
       (1.0, -0.5, GOOD, "weight_negative")]

#: The second micro-batch: bad rows only.
ALL_BAD = [(3.0, 1.0, GOOD, "label_out_of_domain"), (1.0, 1.0, vec([0], [1.0], size=4), "size_mismatch"),
           (0.0, -1.0, GOOD, "weight_negative")]


def good_rows(n=60):
    rng = np.random.default_rng(3)
    rows = []
    for _ in range(n):
        idx = np.sort(rng.choice(SIZE, 3, replace=False))
        label = float(idx[0] < 2)
        dense = rng.random() < 0.2
        features = vec(None, [1.0 if i in idx else 0.0 for i in range(SIZE)], None, 1) if dense else \
            vec(idx.tolist(), [1.0, 0.5, 1.0])
        rows.append((label, float(rng.choice([0.5, 1.0, 2.0])), features))
    return rows


def write(path, rows, mtime):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    columns = list(zip(*[row[:3] for row in rows]))
    pq.write_table(pa.table([pa.array(c, t) for c, t in zip(columns, ARROW_SCHEMA.types)], ARROW_SCHEMA), path)
    os.utime(path, (mtime, mtime))  # the file source takes files oldest first


def interleave(good, bad):
    out = list(good)
    for i, row in enumerate(bad):
        out.insert(1 + 5 * i, row)
    return out


@pytest.fixture(scope="module")
def spark(local_spark):
    local_spark.sparkContext.setLogLevel("ERROR")
    return local_spark


def start_stream(spark, source, root, name):
    events = spark.readStream.schema(SCHEMA).option("maxFilesPerTrigger", 1).parquet(source)
    est = LogisticRegression(numWorkers=1, syncMode="bsp", weightCol="weight", batchSize=16)
    trainer = StreamingTrainer(est, modelPath=str(root / name))
    return trainer, trainer.start(events, checkpointLocation=str(root / f"{name}_ckpt"))


def same(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict):
        return b is not None and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return b is not None and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.stream  # three micro-batches and two queries (the rules are in test_quarantine_rules)
def test_each_kind_of_bad_row_is_quarantined_and_the_model_learns_only_the_good_ones(spark, tmp_path):
    good = good_rows()
    source = str(tmp_path / "events")
    write(os.path.join(source, "b0.parquet"), interleave(good, BAD), 1_000_000)
    write(str(tmp_path / "good" / "b0.parquet"), good, 1_000_000)
    model_path = str(tmp_path / "model")
    trainer, query = start_stream(spark, source, tmp_path, "model")
    try:
        query.processAllAvailable()
        # Batch 1 as a driver that quarantined it and died before committing it left it: the
        # replay (here, the batch itself) must not quarantine its rows twice.
        staged = str(tmp_path / "staged" / "b1.parquet")  # out of the running query's sight until moved
        write(staged, ALL_BAD, 2_000_000)
        _, crashed = split(spark.read.schema(SCHEMA).parquet(staged),
                           rules_for(LogisticRegression(weightCol="weight"), SIZE))
        write_quarantine(crashed, quarantine_path(model_path), 1, ModelStore(spark, model_path).app_id)
        os.replace(staged, os.path.join(source, "b1.parquet"))
        query.processAllAvailable()
    finally:
        query.stop()
    reference, query = start_stream(spark, str(tmp_path / "good"), tmp_path, "reference")
    try:
        query.processAllAvailable()
    finally:
        query.stop()

    table = spark.read.format("delta").load(quarantine_path(model_path))
    assert sorted(table.columns) == ["batchId", "features", "label", "reason", "weight"]
    got = [(r.batchId, r.reason, r.label, r.weight, None if r.features is None else r.features.asDict())
           for r in table.collect()]
    want = [(0, *row[3:], *row[:3]) for row in BAD] + [(1, *row[3:], *row[:3]) for row in ALL_BAD]
    assert len(got) == len(want)  # batch 1's rows once, though written twice
    for expected in want:
        assert any(all(same(e, g) for e, g in zip(expected, row)) for row in got), f"missing {expected}"

    metrics = trainer.metrics().collect()
    assert [(m.batchId, m.rows, m.quarantined) for m in metrics] == [(0, len(good), len(BAD)),
                                                                      (1, 0, len(ALL_BAD))]
    ref_metrics = reference.metrics().collect()
    assert [(m.rows, m.quarantined) for m in ref_metrics] == [(len(good), 0)]
    assert metrics[0].logLoss == ref_metrics[0].logLoss and metrics[0].auc == ref_metrics[0].auc
    assert metrics[1].logLoss is None  # nothing left to score
    assert ModelStore(spark, model_path).last_commit().metadata["numFeatures"] == SIZE

    ours = LogisticRegressionModel.load(model_path)
    ref = LogisticRegressionModel.load(str(tmp_path / "reference"))
    assert ours.intercept == ref.intercept != 0.0
    np.testing.assert_array_equal(ours.coefficients.toArray(), ref.coefficients.toArray())
    assert np.count_nonzero(ref.coefficients.toArray()) > 0


def test_split_applies_the_first_failing_rule_and_the_estimators_label_domain(spark, tmp_path):
    rows = [(2.0, -1.0, vec([1], [1.0])),        # label and weight bad: the label's rule comes first
            (5.0, 1.0, vec([0], [1.0])),         # a fine regression label
            (math.inf, 1.0, vec([0], [1.0])),
            (1.0, 1.0, vec([0], [math.nan], size=3)),  # bad value and size: the vector's rule first
            (0.0, 0.0, vec(None, [1.0] * SIZE, None, 1))]  # zero weight: allowed
    path = str(tmp_path / "rows.parquet")
    write(path, rows, 1_000_000)
    df = spark.read.schema(SCHEMA).parquet(path)
    clean, bad = split(df, rules_for(LinearRegression(weightCol="weight"), SIZE))
    assert sorted(r.label for r in clean.collect()) == [0.0, 5.0]
    assert sorted(r.reason for r in bad.collect()) == ["features_not_finite", "label_not_finite", "weight_negative"]
    clean, bad = split(df, QuarantineRules("features", "label", "weight", binary_labels=True, num_features=SIZE))
    assert [r.label for r in clean.collect()] == [0.0]
    assert sorted(r.reason for r in bad.collect()) == ["features_not_finite", "label_not_finite",
                                                       "label_out_of_domain", "label_out_of_domain"]


def test_a_wrong_schema_fails_at_start_before_anything_runs(spark, tmp_path):
    schema = StructType([StructField("label", StringType()), StructField("features", VectorUDT())])
    (tmp_path / "empty").mkdir()
    events = spark.readStream.schema(schema).parquet(str(tmp_path / "empty"))
    active = len(spark.streams.active)
    with pytest.raises(ColumnTypeError, match="label column 'label' has type string"):
        StreamingTrainer(LogisticRegression(), modelPath=str(tmp_path / "model")).start(
            events, checkpointLocation=str(tmp_path / "ckpt"))
    assert len(spark.streams.active) == active and not os.path.exists(tmp_path / "model")
