"""A Parquet file source's batches, read by the training tasks from the files, train what Spark's rows train.

Reference: the same stream through Spark's conversion (a filter that keeps
every row makes the trainer refuse the direct read). One worker under BSP
makes both deterministic: the models, the progressive metrics and the
quarantine counts must be equal, and Spark's own progress (``numInputRows``)
must count each row read directly once.
"""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.ml.linalg import SparseVector
from pyspark.sql import functions as F

from spark_ps.ml.classification import LogisticRegression, LogisticRegressionModel
from spark_ps.ml.modelstore import ModelStore
from spark_ps.streaming import StreamingTrainer

DIM = 64
ROWS = 60
PARAMS = {"numWorkers": 1, "syncMode": "bsp", "batchSize": 16}


def _write_batch(spark, folder, part: int, label_type: str = "double") -> None:
    rng = np.random.default_rng(200 + part)
    rows = []
    for i in range(ROWS):
        idx = np.sort(rng.choice(DIM, size=5, replace=False))
        label = 2.0 if (part, i) == (1, 7) else float(rng.random() < 0.2 + 0.6 * (idx[0] % 2))  # one bad label
        rows.append((label, SparseVector(DIM, idx, np.ones(5))))
    frame = spark.createDataFrame(rows, ["label", "features"]).withColumn("label", F.col("label").cast(label_type))
    frame.coalesce(1).write.parquet(str(folder / f"batch{part}"))


def _train(spark, events, root):
    trainer = StreamingTrainer(LogisticRegression(**PARAMS), modelPath=str(root / "model"), snapshotEvery=100)
    query = trainer.start(events, checkpointLocation=str(root / "ckpt"))
    query.processAllAvailable()
    progress = {p["batchId"]: p["numInputRows"] for p in query.recentProgress if p["numInputRows"]}
    trainer.stop()
    commits = ModelStore(spark, str(root / "model")).commits()
    metrics = [(m.batchId, m.rows, m.quarantined, m.auc, m.logLoss) for m in trainer.metrics().collect()]
    return [c.metadata["input"] for c in commits], progress, metrics, LogisticRegressionModel.load(str(root / "model"))


def _events(spark, source):
    schema = spark.read.parquet(str(source / "batch0")).schema
    return spark.readStream.schema(schema).option("maxFilesPerTrigger", 1).parquet(str(source / "batch*"))


@pytest.mark.stream  # two streams of three micro-batches
def test_files_read_directly_train_what_sparks_rows_train(local_spark, tmp_path):
    for part in range(3):
        _write_batch(local_spark, tmp_path / "in", part)
    events = _events(local_spark, tmp_path / "in")

    inputs, progress, metrics, model = _train(local_spark, events, tmp_path / "direct")
    ref_inputs, ref_progress, ref_metrics, ref_model = _train(local_spark, events.where("label = label"),
                                                              tmp_path / "spark")

    assert inputs == ["files"] * 3 and ref_inputs == ["spark"] * 3
    assert progress == {0: ROWS, 1: ROWS, 2: ROWS}  # Spark's progress counts the rows the tasks read
    # Through Spark, its scan counts each time the trainer reads the batch: the first batch's size check, and the
    # quarantine's second read, count the rows again (Spark's foreachBatch counts every action's scan).
    assert ref_progress == {0: 2 * ROWS, 1: 2 * ROWS, 2: ROWS}
    assert metrics == ref_metrics
    assert [m[2] for m in metrics] == [0, 1, 0]                       # the bad label, quarantined either way
    np.testing.assert_array_equal(model.coefficients.toArray(), ref_model.coefficients.toArray())
    assert model.intercept == ref_model.intercept
    assert np.count_nonzero(model.coefficients.toArray()) > DIM // 2


@pytest.mark.stream
def test_a_file_of_another_column_type_goes_through_spark(local_spark, tmp_path):
    _write_batch(local_spark, tmp_path / "in", 0)
    _write_batch(local_spark, tmp_path / "in", 2, label_type="float")  # Spark widens float to double; pyarrow not
    inputs, progress, metrics, _ = _train(local_spark, _events(local_spark, tmp_path / "in"), tmp_path / "run")
    assert inputs == ["files", "spark"]
    assert progress == {0: ROWS, 1: ROWS}
    assert [m[1] + m[2] for m in metrics] == [ROWS, ROWS]
