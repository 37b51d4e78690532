"""Snapshots are transparent, and retention deletes what they compact.

Reference: one stream over all N + M rows, no snapshot. The other stream
trains N rows with a snapshot every 2 batches, stops, and a new trainer
(empty shards, so rebuilt from the snapshot and the log) trains the M more
rows, with retention 0 h: its snapshot compacts every batch, so the log is
emptied and vacuumed. One worker under BSP makes both deterministic: the
models must be equal.
"""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.ml.linalg import SparseVector

from spark_ps.ml.classification import LogisticRegression, LogisticRegressionModel
from spark_ps.ml.modelstore import ModelStore
from spark_ps.streaming import StreamingTrainer

DIM = 32
PARAMS = {"numWorkers": 1, "syncMode": "bsp", "batchSize": 16}
RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"


def _write_part(spark, folder, part: int) -> None:
    rng = np.random.default_rng(100 + part)
    rows = []
    for _ in range(50):
        idx = np.sort(rng.choice(DIM, size=4, replace=False))
        rows.append((float(rng.random() < 0.3 + 0.4 * (idx[0] % 2)), SparseVector(DIM, idx, np.ones(4))))
    spark.createDataFrame(rows, ["label", "features"]).coalesce(1).write.parquet(str(folder / f"batch{part}"))


def _run(spark, source, root, **options) -> StreamingTrainer:
    schema = spark.read.parquet(str(source / "batch0")).schema
    events = spark.readStream.schema(schema).option("maxFilesPerTrigger", 1).parquet(str(source / "batch*"))
    trainer = StreamingTrainer(LogisticRegression(**PARAMS), modelPath=str(root / "model"), **options)
    trainer.start(events, checkpointLocation=str(root / "ckpt")).processAllAvailable()
    trainer.stop()
    return trainer


@pytest.mark.stream  # eight micro-batches and a vacuum
def test_snapshot_restore_and_more_rows_equal_one_straight_run(local_spark, tmp_path):
    source = tmp_path / "all"
    for part in range(4):
        _write_part(local_spark, source, part)
    _run(local_spark, source, tmp_path / "straight", snapshotEvery=100)

    local_spark.conf.set(RETENTION_CHECK, "false")
    try:
        split = tmp_path / "split"
        for part in range(2):
            _write_part(local_spark, split, part)
        _run(local_spark, split, tmp_path / "restored", snapshotEvery=2)  # restored from this snapshot
        for part in range(2, 4):
            _write_part(local_spark, split, part)
        trainer = _run(local_spark, split, tmp_path / "restored", snapshotEvery=2, retentionHours=0.0)
    finally:
        local_spark.conf.unset(RETENTION_CHECK)

    assert [m.batchId for m in trainer.metrics().orderBy("batchId").collect()] == [0, 1, 2, 3]
    # Each version records the source offsets it ends at (Spark's offset log: the file source's log offset).
    commits = ModelStore(local_spark, str(tmp_path / "restored" / "model")).commits()
    assert [c.metadata["sourceOffsets"] for c in commits] == [[{"logOffset": i}] for i in range(4)]
    ours = LogisticRegressionModel.load(str(tmp_path / "restored" / "model"))
    theirs = LogisticRegressionModel.load(str(tmp_path / "straight" / "model"))
    np.testing.assert_array_equal(ours.coefficients.toArray(), theirs.coefficients.toArray())
    assert ours.intercept == theirs.intercept
    # Every batch is in a snapshot (after batches 1 and 3): retention deleted the log's rows, vacuumed their files.
    log = tmp_path / "restored" / "model" / "log"
    assert local_spark.read.format("delta").load(str(log)).count() == 0
    assert not list(log.glob("*.parquet"))
    assert list((tmp_path / "straight" / "model" / "log").glob("*.parquet"))


def test_retention_below_deltas_floor_needs_the_check_off(local_spark, tmp_path):
    _write_part(local_spark, tmp_path / "in", 0)
    events = local_spark.readStream.schema(local_spark.read.parquet(str(tmp_path / "in" / "batch0")).schema) \
        .parquet(str(tmp_path / "in" / "batch*"))
    trainer = StreamingTrainer(LogisticRegression(), modelPath=str(tmp_path / "m"), retentionHours=1.0)
    with pytest.raises(ValueError, match="retentionDurationCheck.enabled=false"):
        trainer.start(events, checkpointLocation=str(tmp_path / "ckpt"))
