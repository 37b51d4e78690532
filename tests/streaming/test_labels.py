"""Delayed labels (spark_ps.streaming.labels): exact labels from two file-source streams, and training on them.

The expected labels are written down by hand from the rule: an impression is
1.0 if a click with its id comes at most ``delay`` after it (however many
clicks), 0.0 otherwise, and an unclicked impression is only emitted once
both streams' watermarks have passed its time + ``delay``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from pyspark.ml.linalg import Vectors, VectorUDT
from pyspark.sql.types import LongType, StructField, StructType, TimestampType

from spark_ps.ml.classification import LogisticRegression, LogisticRegressionModel
from spark_ps.streaming import StreamingTrainer
from spark_ps.streaming.labels import join_delayed_labels

T0 = datetime(2026, 1, 1, 12, 0, 0)
IMPRESSIONS = StructType([StructField("id", LongType()), StructField("t", TimestampType()),
                          StructField("features", VectorUDT())])
CLICKS = "id long, t timestamp"


@pytest.fixture(scope="module")
def spark(local_spark):
    local_spark.sparkContext.setLogLevel("ERROR")
    return local_spark


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _impressions(ids_and_seconds):
    return [(i, _at(s), Vectors.sparse(8, [i % 8], [1.0])) for i, s in ids_and_seconds]


def _append(spark, path, rows, schema) -> None:
    spark.createDataFrame(rows, schema).coalesce(1).write.mode("append").parquet(str(path))


def _labelled(spark, imps, clicks):
    return join_delayed_labels(spark.readStream.schema(IMPRESSIONS).parquet(str(imps)),
                               spark.readStream.schema(CLICKS).parquet(str(clicks)),
                               key="id", eventTime="t", delay="60 seconds", lateness="5 seconds")


def _first_minute(spark, imps, clicks) -> None:
    """Six impressions in the first minute. 1 is clicked twice, 3 once, 4 too late (after the 60 s window),
    5 by a click that precedes it (not a click on it); 2 and 6 never."""
    _append(spark, imps, _impressions([(1, 0), (2, 1), (3, 2), (4, 3), (5, 4), (6, 5)]), IMPRESSIONS)
    _append(spark, clicks, [(1, _at(10)), (1, _at(20)), (3, _at(50)), (4, _at(3 + 61)), (5, _at(2))], CLICKS)


def _ten_minutes_on(spark, imps, clicks, extra_clicks=()) -> None:
    """Events ten minutes on: they move both watermarks past every first-minute window."""
    _append(spark, imps, _impressions([(100, 600)]), IMPRESSIONS)
    _append(spark, clicks, [*extra_clicks, (999, _at(600))], CLICKS)


@pytest.mark.stream  # whole streams
def test_impressions_are_labelled_once_by_their_clicks_when_the_watermark_passes(spark, tmp_path):
    imps, clicks = tmp_path / "impressions", tmp_path / "clicks"
    _first_minute(spark, imps, clicks)
    out = _labelled(spark, imps, clicks).writeStream.format("memory").queryName("delayed_labels_test").start()
    try:
        out.processAllAvailable()
        # Only the clicked impressions so far: the watermark (the impressions' newest time, 5 s, minus
        # the lateness) is far from any unclicked impression's time + 60 s.
        first = sorted((r.id, r.label) for r in spark.table("delayed_labels_test").collect())
        assert first == [(1, 1.0), (3, 1.0)]
        # Forty seconds on: the watermark moves to 35 s, past impression 1's time + the lateness, but not past
        # its window (0 + 60 s), so the join still holds it.
        _append(spark, imps, _impressions([(7, 40)]), IMPRESSIONS)
        _append(spark, clicks, [(77, _at(40))], CLICKS)
        out.processAllAvailable()
        assert sorted((r.id, r.label) for r in spark.table("delayed_labels_test").collect()) == first
        # A third click on 1, within its window: the join matches it again, the de-duplication (whose state
        # must outlive the join's) drops the second row.
        _ten_minutes_on(spark, imps, clicks, extra_clicks=[(1, _at(50))])
        out.processAllAvailable()
    finally:
        out.stop()
    labels = sorted((r.id, r.label) for r in spark.table("delayed_labels_test").collect())
    # Every first-minute impression once, and 7; 100's window (600 s + 60 s) is still open.
    assert labels == [(1, 1.0), (2, 0.0), (3, 1.0), (4, 0.0), (5, 0.0), (6, 0.0), (7, 0.0)]


@pytest.mark.stream  # two trainer micro-batches on a stateful stream
def test_a_streaming_trainer_learns_from_the_joined_stream(spark, tmp_path):
    imps, clicks = tmp_path / "impressions", tmp_path / "clicks"
    _first_minute(spark, imps, clicks)
    _ten_minutes_on(spark, imps, clicks)
    trainer = StreamingTrainer(LogisticRegression(regParam=0.0, priorL1=0.0), modelPath=str(tmp_path / "model"))
    train = trainer.start(_labelled(spark, imps, clicks), checkpointLocation=str(tmp_path / "ckpt"))
    try:
        train.processAllAvailable()  # a batch with the clicked impressions, then one with the unclicked
    finally:
        train.stop()
    assert sum(m.rows for m in trainer.metrics().collect()) == 6
    # The clicked ids' features (1 and 3) learnt positive weights, the unclicked ones' (2, 4, 5, 6) negative.
    coef = LogisticRegressionModel.load(str(tmp_path / "model")).coefficients.toArray()
    assert coef[1] > 0 and coef[3] > 0 and max(coef[2], coef[4], coef[5], coef[6]) < 0, coef
