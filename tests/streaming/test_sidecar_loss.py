"""A sidecar SIGKILLed mid-stream: the plugin restarts it, the trainer rebuilds it from Delta, nothing is lost or doubled.

Reference: the same stream, same micro-batches, with no kill. One worker
under BSP makes both runs deterministic, so their models must be equal; a
batch lost with the shard, or applied twice after the rebuild, would not be.
"""

from __future__ import annotations

import signal

import numpy as np
import psutil
import pytest
from pyspark.ml.linalg import SparseVector

from spark_ps.ml.classification import LogisticRegression, LogisticRegressionModel
from spark_ps.spark.context import PSContext
from spark_ps.streaming import StreamingTrainer

DIM = 32
FILES = 3
PARAMS = {"numWorkers": 1, "syncMode": "bsp", "batchSize": 16}


def _write_part(spark, folder, part: int) -> int:
    rng = np.random.default_rng(part)
    rows = []
    for _ in range(60):
        idx = np.sort(rng.choice(DIM, size=4, replace=False))
        rows.append((float(idx[0] % 2), SparseVector(DIM, idx, np.ones(4))))
    spark.createDataFrame(rows, ["label", "features"]).coalesce(1).write.parquet(str(folder / f"batch{part}"))
    return len(rows)


def _start(spark, source, root):
    schema = spark.read.parquet(str(source / "batch0")).schema
    events = spark.readStream.schema(schema).option("maxFilesPerTrigger", 1).parquet(str(source / "batch*"))
    trainer = StreamingTrainer(LogisticRegression(**PARAMS), modelPath=str(root / "model"))
    return trainer, trainer.start(events, checkpointLocation=str(root / "ckpt"))


@pytest.mark.stream  # six micro-batches and a sidecar restart
def test_no_batch_lost_or_doubled_when_a_sidecar_dies(local_spark, tmp_path):
    source = tmp_path / "events"
    total = sum(_write_part(local_spark, source, part) for part in range(FILES))
    reference, query = _start(local_spark, source, tmp_path / "reference")
    query.processAllAvailable()
    query.stop()

    killed_source = tmp_path / "killed_events"
    _write_part(local_spark, killed_source, 0)
    trainer, query = _start(local_spark, killed_source, tmp_path / "killed")
    try:
        query.processAllAvailable()  # batch 0 committed, on the original sidecar
        victim = psutil.Process(PSContext.get(local_spark).servers[0].pid)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        for part in range(1, FILES):
            _write_part(local_spark, killed_source, part)
        query.processAllAvailable()  # batch 1 meets the dead shard: rebuilt, rerun, committed once
    finally:
        query.stop()

    assert PSContext.get(local_spark).servers[0].pid != victim.pid  # the plugin restarted it
    metrics = trainer.metrics().orderBy("batchId").collect()
    assert [m.batchId for m in metrics] == list(range(FILES))
    assert sum(m.rows for m in metrics) == total
    ours = LogisticRegressionModel.load(str(tmp_path / "killed" / "model"))
    theirs = LogisticRegressionModel.load(str(tmp_path / "reference" / "model"))
    np.testing.assert_array_equal(ours.coefficients.toArray(), theirs.coefficients.toArray())
    assert ours.intercept == theirs.intercept
