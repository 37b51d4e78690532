"""One micro-batch's pass through the parameter server, as a barrier stage, and the export of what it changed.

The training task is the batch fit's (:mod:`spark_ps.ml.training`: convert
the partition to CSR once, plan mini-batches, one pull and one push each),
minus what an online model must not do: it never creates or resets the
model table, which holds everything learnt so far. A retried attempt of the
stage would apply part of the batch twice, so it refuses to train instead
(:class:`RetriedBatchError`); the trainer then rebuilds the shards from the
model's Delta log and runs the batch again, exactly once.

After the stage, :func:`changed_rows` is a DataFrame whose tasks export,
from the shards, the full rows (weights and optimizer state) of the keys the
batch touched: what the model store commits.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql.types import StructType

from spark_ps.client.client import PSClient
from spark_ps.errors import PSError
from spark_ps.ml import weights as weight_store
from spark_ps.ml.csr import record_batch_to_csr
from spark_ps.ml.objectives import Objective
from spark_ps.ml.training import TrainSpec, load_partition, plan_batches, run_epochs

__all__ = ["RetriedBatchError", "changed_rows", "make_stream_train_fn"]


class RetriedBatchError(PSError, RuntimeError):
    """A training stage ran a second attempt: the shards may hold part of the batch already."""


def make_stream_train_fn(spec: TrainSpec):
    """The ``mapInArrow`` function of one micro-batch's barrier training stage (one pass, existing table)."""

    def train(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import BarrierTaskContext

        ctx = BarrierTaskContext.get()
        worker = ctx.partitionId()
        client = spec.client
        try:
            if worker == 0:
                spec.attempts.increment(client)
            data, _ = load_partition(batches, spec)
            planned = plan_batches(data, spec)
            ctx.barrier()  # worker 0 has counted this attempt
            if spec.attempts.value(client) > 1:
                raise RetriedBatchError(f"training stage of {spec.table!r} restarted: the shards may hold part "
                                        "of this batch; rebuild them from the model's log before retrying")
            stats = run_epochs(planned, spec, client, worker)
        finally:
            client.close()
        loss = sum(s["loss_sum"] for s in stats)
        weight = sum(s["weight_sum"] for s in stats)
        yield pa.RecordBatch.from_pydict({"loss_sum": [loss], "weight_sum": [weight]})

    return train


def changed_rows(data: DataFrame, client: PSClient, table: str, objective: Objective, features_col: str,
                 fit_intercept: bool, schema: StructType) -> DataFrame:
    """The rows of every key in ``data``'s features (and the intercept), exported from the shards.

    Each task exports the keys of its partition; a key in several partitions
    is exported once per partition with identical rows (all export after the
    training stage), and ``dropDuplicates`` keeps one.
    """
    stored = weight_store.arrow_schema(schema)

    def export(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        parts = []
        for batch in batches:
            csr = record_batch_to_csr(batch, features_col)
            parts.append(objective.keys_of(csr, fit_intercept)[0])
        keys = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
        try:
            for rows in client.export(table, keys=keys):
                yield weight_store.stored_rows(rows, stored, nonzero_only=False)
        finally:
            client.close()

    return data.select(features_col).mapInArrow(export, schema).dropDuplicates(["key"])
