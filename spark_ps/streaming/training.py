"""One micro-batch's pass through the parameter server, as a barrier stage, and the export of what it changed.

The training task is the batch fit's (:mod:`spark_ps.ml.training`: convert
the partition to CSR once, plan mini-batches, one pull and one push each),
minus what an online model must not do: it never creates or resets the
model table, which holds everything learnt so far. A stage whose task died
may have applied part of the batch (Spark does not retry a barrier result
stage): the trainer rebuilds the shards from the model's Delta log and runs
the batch again, exactly once.

The task reads its partition through the quarantine's rules
(:func:`~spark_ps.streaming.quarantine.clean_batches`): bad rows are dropped
and counted by reason, never trained on. The same stage scores the batch
before training on it (progressive validation,
:mod:`spark_ps.streaming.progressive`). Its pushes name a mark table: each
shard marks the keys it updates, in the same apply as the update
(:mod:`spark_ps.server.shard`, "Marks"). Once every task has pushed, the
tasks meet again and each exports, from its share of the shards, the full
rows (weights and optimizer state) of the marked keys, and writes them to
the model's log (:class:`~spark_ps.ml.logfiles.LogFiles`): the files the
model store commits. Where the driver cannot commit the log's next version
itself, :func:`changed_rows` exports the same rows after the stage, one
task per shard, for Delta's writer. The first version re-read the batch to
find its keys and removed the keys seen by two tasks with a shuffle; the
second pushed each task's keys as marks after training, and sorted them
twice; marking on the shards makes all of that unnecessary.

The tasks meet, after scoring and before training, at a barrier on the
shards (:class:`~spark_ps.client.collectives.Barrier`), not at Spark's
``BarrierTaskContext.barrier()``: on an idle ``local[2]`` Spark's took
1.00 s every time (its coordinator answers on a timer), the shard's a few
milliseconds. The stage still runs in barrier mode, which gang-schedules
its tasks: a task waiting at the shard barrier for one that never gets a
slot would wait out its timeout.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import SparkSession
from pyspark.sql.types import StructType

from spark_ps.client.client import PSClient
from spark_ps.ml import weights as weight_store
from spark_ps.ml.logfiles import LogFiles
from spark_ps.ml.training import (
    MiniBatch,
    TrainSpec,
    load_partition,
    plan_batches,
    run_epochs,
)
from spark_ps.spark.deltawrite import TaskRows
from spark_ps.streaming.progressive import ProgressiveStats
from spark_ps.streaming.quarantine import REASONS, QuarantineRules, clean_batches
from spark_ps.streaming.stageinput import BatchFiles, task_batches

__all__ = ["TASK_RESULT_DDL", "changed_rows", "make_stream_train_fn", "score_before_training"]


#: One row per training task: rows trained, rows dropped per reason (:data:`REASONS`), the log files it wrote
#: (JSON, :meth:`LogFiles.write`), its training loss, its scores' stats (:class:`ProgressiveStats`).
TASK_RESULT_SCHEMA = pa.schema([("rows", pa.int64()), ("files", pa.string()), ("quarantined", pa.list_(pa.int64())),
                                ("loss_sum", pa.float64()), ("weight_sum", pa.float64()),
                                ("score_seconds", pa.float64()), ("score_weight", pa.float64()),
                                ("score_loss", pa.float64()), ("label_sum", pa.float64()),
                                ("label_square_sum", pa.float64()), ("positives", pa.list_(pa.float64())),
                                ("negatives", pa.list_(pa.float64()))])
#: The same, as the Spark DDL of ``mapInArrow``.
TASK_RESULT_DDL = ("rows long, files string, quarantined array<long>, loss_sum double, weight_sum double, "
                   "score_seconds double, score_weight double, "
                   "score_loss double, label_sum double, label_square_sum double, positives array<double>, "
                   "negatives array<double>")


def score_before_training(planned: list[MiniBatch], spec: TrainSpec, client: PSClient) -> ProgressiveStats:
    """Score the planned mini-batches with the model as the shards hold it (nobody pushes yet)."""
    if not planned:
        return ProgressiveStats(spec.binary_labels)
    margins = []
    for batch in planned:
        pulled = client.pull(spec.table, batch.keys)
        bias = float(pulled[0, 0]) if spec.fit_intercept else 0.0
        margins.append(spec.objective.margins(batch.data, batch.col, pulled, bias))
    weights = [b.data.weights for b in planned]
    return ProgressiveStats.of(np.concatenate(margins), np.concatenate([b.data.labels for b in planned]),
                               None if weights[0] is None else np.concatenate(weights), spec.binary_labels)


def make_stream_train_fn(spec: TrainSpec, rules: QuarantineRules, log: LogFiles | None = None,
                         source: BatchFiles | None = None):
    """The ``mapInArrow`` function of one micro-batch's barrier training stage (one pass, existing table).

    Each task drops and counts the rows ``rules`` refuse, scores the others,
    meets the other tasks, and trains; its pushes mark their keys in
    ``spec.mark`` (a ``delta`` table of width 1), so the shards know which
    rows the batch changed, each key on its own shard. With a ``log``, the
    tasks then meet once more and task ``w`` writes the changed rows of
    shards ``w``, ``w + workers``, ... to it. With a ``source``, each task's
    partition is one empty row, and it reads its share of the batch's rows
    from the files instead (:mod:`spark_ps.streaming.stageinput`).
    """
    stored = None if log is None else weight_store.arrow_schema(log.schema)

    def train(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import BarrierTaskContext

        ctx = BarrierTaskContext.get()
        worker = ctx.partitionId()
        client = spec.client
        dropped = np.zeros(len(REASONS), np.int64)
        try:
            batches = task_batches(batches, source, worker, spec.num_workers)
            data, _ = load_partition(clean_batches(batches, rules, dropped), spec)
            planned = plan_batches(data, spec)
            start = time.perf_counter()
            scores = score_before_training(planned, spec, client)
            score_seconds = time.perf_counter() - start
            spec.rendezvous.wait(client, worker, timeout=spec.timeout)  # every worker has scored: train
            stats = run_epochs(planned, spec, client, worker)
            files = []
            if log is not None:
                spec.rendezvous.wait(client, worker, timeout=spec.timeout)  # every push of the batch applied
                shards = range(worker, client.num_shards, spec.num_workers)
                files = log.write(_marked_rows(client, spec.table, spec.mark, shards, stored))
        finally:
            client.close()
        loss = sum(s["loss_sum"] for s in stats)
        weight = sum(s["weight_sum"] for s in stats)
        row = {"rows": 0 if data is None else data.num_rows, "files": json.dumps(files),
               "quarantined": dropped.tolist(), "loss_sum": loss,
               "weight_sum": weight, "score_seconds": score_seconds, **scores.to_row()}
        yield pa.RecordBatch.from_pylist([row], schema=TASK_RESULT_SCHEMA)

    return train


def changed_rows(spark: SparkSession, client: PSClient, table: str, changed_table: str,
                 schema: StructType) -> TaskRows:
    """The full rows of ``table`` whose keys the training pushes marked in ``changed_table``; one task per shard.

    Returned as :class:`~spark_ps.spark.deltawrite.TaskRows`: the tasks that
    export the rows from the shards write them to the model's log too.

    Shard ``s`` holds the marks of exactly the keys it holds, so its task
    reads them and exports those rows from the same shard: every changed row
    exactly once, with no shuffle and without reading the batch again.

    Examples
    --------
    >>> from spark_ps.spark.context import PSContext
    >>> from spark_ps.ml.weights import full_row_schema
    >>> with PSContext.get(spark) as ps, ps.client() as client:
    ...     _ = ps.create_table("m", width=1, optimizer="adagrad", lr=0.5)
    ...     _ = ps.create_table("touched", width=1, optimizer="delta")
    ...     client.push("m", [3], [1.0]); client.push("m", [5, 8], [1.0, 1.0], mark="touched")
    ...     rows = changed_rows(spark, client, "m", "touched", full_row_schema(("n",)))
    ...     sorted(r.key for r in rows.frame().collect())
    [5, 8]
    """
    stored = weight_store.arrow_schema(schema)

    def export(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        try:
            for batch in batches:
                yield from _marked_rows(client, table, changed_table, batch.column("id").to_numpy().tolist(),
                                        stored)
        finally:
            client.close()

    shards = client.num_shards
    return TaskRows(spark.range(0, shards, 1, numPartitions=shards), export, schema)


def _marked_rows(client: PSClient, table: str, mark: str, shards: Iterable[int],
                 stored: pa.Schema) -> Iterator[pa.RecordBatch]:
    """The full rows of ``table`` on ``shards`` whose keys ``mark`` marked, as the log stores them."""
    for shard in shards:
        for rows in client.export(table, shards=[shard], keys_of=mark):
            yield weight_store.stored_rows(rows, stored, nonzero_only=False)
