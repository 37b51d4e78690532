"""Kafka end to end: a real KRaft broker, Spark's Kafka sink and source, and a ``StreamingTrainer`` on the topic.

The broker is Apache Kafka's own server from Maven Central (``make kafka``),
a child JVM on loopback (``kafkakit``); Spark talks to it through
spark-sql-kafka on the shared local-cluster session's classpath. Nothing is
mocked.

The events are CTR-like rows (a 0/1 label, 5 one-hot features of 60),
written by a Spark batch job to a 2-partition topic as JSON
``{"label", "size", "indices", "values"}``, event ``i`` to partition
``i % 2``; the stream parses them back into ``label double, features vector``
with ``from_json`` and one vectorised ``mapInArrow`` that assembles the
``VectorUDT`` struct (sparse vectors stay sparse).

The reference is independent of Kafka: the same trainer configuration over
a Parquet file source, one file per micro-batch, each file holding exactly
the events that the Kafka micro-batch's offset range covers, taken from the
test's own arrays (not read back from Kafka). The Kafka run must commit
every event once (the rows in ``metrics()`` add up to the events produced,
the offset ranges tile each partition without gap or overlap) and end with
the reference's weights. With one worker under BSP and ``batchSize`` at
least a micro-batch's rows, each micro-batch is one pull and one push, so
the order of rows inside a batch (Kafka's two partitions are shuffled into
one task) changes only the float32 summation order: weights agree to 1e-5,
while one event lost, doubled or moved to another batch moves them by
about 2e-2 (measured: the reference without one event of the first batch,
max |dw| = 2.1e-2).
"""

from __future__ import annotations

import json
import time

import numpy as np
import pyarrow as pa
import pytest
from kafkakit import kafka_broker
from pyspark.ml.linalg import Vectors, VectorUDT
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StructField, StructType
from sparkkit import spark_kafka_jars

from spark_ps.ml.classification import LogisticRegression, LogisticRegressionModel
from spark_ps.ml.csrcolumns import VECTOR_ARROW_TYPE
from spark_ps.streaming import StreamingTrainer

EVENTS, PARTITIONS, DIM, NNZ = 400, 2, 60, 5
MAX_OFFSETS = 200  # per trigger, over both partitions: 2 micro-batches of 100 + 100 events
BATCH_SIZE = 256  # >= MAX_OFFSETS: one mini-batch per micro-batch (see the module docstring)
TOPIC = "ctr_events"
VALUE_SCHEMA = "label double, size int, indices array<int>, values array<double>"
EVENT_SCHEMA = StructType([StructField("label", DoubleType()), StructField("features", VectorUDT())])


def _events() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels (n,), sorted distinct indices (n, NNZ) and values (n, NNZ), from a known logistic model."""
    rng = np.random.default_rng(11)
    truth = rng.normal(0, 1.5, DIM)
    indices = np.sort(np.argsort(rng.random((EVENTS, DIM)), axis=1)[:, :NNZ], axis=1).astype(np.int32)
    values = np.ones((EVENTS, NNZ))
    labels = (rng.random(EVENTS) < 1 / (1 + np.exp(-truth[indices].sum(axis=1)))).astype(np.float64)
    return labels, indices, values


def decode(raw):
    """Kafka rows (``value`` = the JSON bytes) to a ``label double, features vector`` DataFrame."""
    element = {name: VECTOR_ARROW_TYPE.field(name).type for name in ("indices", "values")}
    fields = list(VECTOR_ARROW_TYPE)

    # Nested so that cloudpickle ships it by value: the executors cannot import this test module.
    def to_vectors(batches):
        """Parsed JSON columns to ``label, features`` (the VectorUDT struct, sparse), without a row loop."""
        for batch in batches:
            kind = pa.array(np.zeros(batch.num_rows, np.int8))
            columns = [kind, batch.column("size")] + [batch.column(name).cast(element[name])
                                                      for name in ("indices", "values")]
            features = pa.StructArray.from_arrays(columns, fields=fields)
            yield pa.RecordBatch.from_arrays([batch.column("label"), features], names=["label", "features"])

    parsed = raw.select(F.from_json(F.col("value").cast("string"), VALUE_SCHEMA).alias("e")).select("e.*")
    return parsed.mapInArrow(to_vectors, EVENT_SCHEMA)


def _produce(spark, bootstrap: str, labels, indices, values) -> None:
    """One Spark batch write to the topic, from one task so each partition gets its events in id order."""
    rows = [(i % PARTITIONS, str(i), json.dumps({"label": labels[i], "size": DIM, "indices": indices[i].tolist(),
                                                 "values": values[i].tolist()}))
            for i in range(EVENTS)]
    (spark.createDataFrame(rows, "partition int, key string, value string").coalesce(1).write.format("kafka")
     .option("kafka.bootstrap.servers", bootstrap).option("topic", TOPIC).save())


def _offset_ranges(progress: list[dict]) -> list[dict[int, tuple[int, int]]]:
    """Per micro-batch that read rows: ``{partition: (start offset, end offset)}``, in batch order."""
    out = []
    for p in sorted((p for p in progress if p["numInputRows"] > 0), key=lambda p: p["batchId"]):
        source = p["sources"][0]  # offsets as JSON objects: {"topic": {"partition": offset}}; no start at first
        start = source["startOffset"][TOPIC] if source["startOffset"] else {}
        end = source["endOffset"][TOPIC]
        out.append({int(k): (int(start.get(k, 0)), int(v)) for k, v in end.items()})
    return out


def _trainer(model_path: str) -> StreamingTrainer:
    return StreamingTrainer(LogisticRegression(numWorkers=1, syncMode="bsp", batchSize=BATCH_SIZE),
                            modelPath=model_path, snapshotEvery=100)


def _weights(path) -> tuple[float, np.ndarray]:
    model = LogisticRegressionModel.load(str(path))
    return model.intercept, model.coefficients.toArray()


@pytest.mark.stream  # a broker JVM and two streams
def test_trains_from_a_real_kafka_broker_every_event_once(cluster_spark, tmp_path):
    if not spark_kafka_jars():
        pytest.fail("spark-sql-kafka jars missing for the installed pyspark: run `make kafka`")
    spark = cluster_spark
    labels, indices, values = _events()
    clock = {"start": time.perf_counter()}
    with kafka_broker() as broker:
        broker.create_topic(TOPIC, partitions=PARTITIONS)
        clock["broker ready"] = time.perf_counter()
        _produce(spark, broker.bootstrap, labels, indices, values)
        clock["produced"] = time.perf_counter()

        # The topic holds each event once, event i at offset i // 2 of partition i % 2.
        placed = (spark.read.format("kafka").option("kafka.bootstrap.servers", broker.bootstrap)
                  .option("subscribe", TOPIC).option("startingOffsets", "earliest").load()
                  .select("partition", "offset", F.col("key").cast("string").alias("key")).collect())
        assert sorted((r.partition, r.offset, int(r.key)) for r in placed) == \
            sorted((i % PARTITIONS, i // PARTITIONS, i) for i in range(EVENTS))

        raw = (spark.readStream.format("kafka").option("kafka.bootstrap.servers", broker.bootstrap)
               .option("subscribe", TOPIC).option("startingOffsets", "earliest")
               .option("maxOffsetsPerTrigger", MAX_OFFSETS).load())
        trainer = _trainer(str(tmp_path / "model"))
        clock["read back"] = time.perf_counter()
        query = trainer.start(decode(raw), checkpointLocation=str(tmp_path / "ckpt"))
        try:
            query.processAllAvailable()
            progress = [json.loads(p.json) for p in query.recentProgress]
        finally:
            query.stop()
        clock["streamed from kafka"] = time.perf_counter()
    clock["broker stopped"] = time.perf_counter()

    ranges = _offset_ranges(progress)
    assert len(ranges) >= 2, f"maxOffsetsPerTrigger={MAX_OFFSETS} should give several micro-batches: {ranges}"
    for part in range(PARTITIONS):  # the batches tile each partition: no gap, no overlap
        bounds = [r[part] for r in ranges if part in r]
        assert bounds[0][0] == 0 and bounds[-1][1] == EVENTS // PARTITIONS, bounds
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:])), bounds
    metrics = trainer.metrics().orderBy("batchId").collect()
    assert sum(m.rows for m in metrics) == EVENTS
    expected_rows = [sum(end - start for start, end in r.values()) for r in ranges]
    assert [m.rows for m in metrics] == expected_rows

    # The reference: the same events, batch by batch, from Parquet files (one per micro-batch).
    source = tmp_path / "reference_events"
    offsets = np.arange(EVENTS) // PARTITIONS
    for r in ranges:
        ids = [i for i in range(EVENTS) if (i % PARTITIONS) in r
               and r[i % PARTITIONS][0] <= offsets[i] < r[i % PARTITIONS][1]]
        rows = [(float(labels[i]), Vectors.sparse(DIM, indices[i].tolist(), values[i].tolist())) for i in ids]
        spark.createDataFrame(rows, EVENT_SCHEMA).coalesce(1).write.mode("append").parquet(str(source))
    files = spark.readStream.schema(EVENT_SCHEMA).option("maxFilesPerTrigger", 1).parquet(str(source))
    reference = _trainer(str(tmp_path / "model_ref"))
    query = reference.start(files, checkpointLocation=str(tmp_path / "ckpt_ref"))
    try:
        query.processAllAvailable()
    finally:
        query.stop()
    clock["reference streamed"] = time.perf_counter()
    assert [m.rows for m in reference.metrics().orderBy("batchId").collect()] == expected_rows

    b_kafka, w_kafka = _weights(tmp_path / "model")
    b_ref, w_ref = _weights(tmp_path / "model_ref")
    assert np.count_nonzero(w_kafka) > DIM // 2 and np.abs(w_kafka).max() > 0.05  # it learnt something
    np.testing.assert_allclose(w_kafka, w_ref, rtol=1e-5, atol=1e-6)
    assert abs(b_kafka - b_ref) < 1e-5
    names = list(clock)
    print(f"{len(ranges)} micro-batches, max |w_kafka - w_ref| {np.abs(w_kafka - w_ref).max():.2e}; seconds: "
          + ", ".join(
        f"{b} {clock[b] - clock[a]:.1f}" for a, b in zip(names, names[1:])))
