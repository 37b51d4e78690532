"""The training task: one barrier task per worker, all epochs inside it.

Each task converts its partition from Arrow to CSR **once** and keeps it in
memory for every epoch, so Spark->Arrow conversion (the dominant cost of a
pass, measured at ~2x the whole numpy FTRL pass) is paid once per fit, not
once per epoch. The mini-batches, and the sorted unique keys each one pulls,
never change between epochs, so they are planned once too
(:func:`plan_batches`). Per mini-batch the task pulls the rows of the
features present, computes the gradient, pushes it to the shard optimizers
and ticks the consistency clock, in two round trips: a pull, and a push
that carries the tick. Only per-epoch statistics go back to the
driver.

Retry semantics: training runs as a Spark *barrier* stage, so a failed task
restarts every task. Worker 0 counts its starts in a tiny ``attempts`` table
on the shards; on any start after the first it resets the model table, the
clock and the statistics to their initial state while the other workers
convert their partitions, and nobody pushes before the barrier that follows;
then everyone trains from scratch: the final model has seen
every row exactly ``numEpochs`` times, never a partial mix of two attempts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from spark_ps.client import PSClient
from spark_ps.ml.csr import CSRBatch, record_batch_to_csr
from spark_ps.ml.objectives import Objective

#: Per-epoch statistics row: [loss sum, weight sum, rows, task seconds].
STATS_WIDTH = 4

#: One row per (worker, epoch); ``load_seconds`` (Arrow to CSR and batch planning) repeats per epoch.
TASK_RESULT_SCHEMA = pa.schema([
    ("worker", pa.int32()), ("epoch", pa.int32()), ("loss_sum", pa.float64()),
    ("weight_sum", pa.float64()), ("rows", pa.int64()), ("seconds", pa.float64()),
    ("num_features", pa.int64()), ("load_seconds", pa.float64()),
])


@dataclass(frozen=True)
class TrainSpec:
    """Everything a training task needs; pickled once into the task closure."""

    client: PSClient
    table: str
    table_spec: dict[str, Any]
    stats_table: str
    attempts_table: str
    clock: str | None
    staleness: int | None
    num_workers: int
    objective: Objective
    features_col: str
    label_col: str
    weight_col: str | None
    num_features: int | None
    fit_intercept: bool
    batch_size: int
    num_epochs: int
    timeout: float
    binary_labels: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def _reset_for_retry(spec: TrainSpec, client: PSClient) -> None:
    client.drop_table(spec.table, missing_ok=True)
    client.create_table(spec.table, **spec.table_spec)
    client.drop_table(spec.stats_table, missing_ok=True)
    client.create_table(spec.stats_table, width=STATS_WIDTH, optimizer="delta")
    if spec.clock is not None:
        client.clock_drop(spec.clock)
        client.clock_create(spec.clock, spec.num_workers, spec.staleness)


def _barrier_context():
    from pyspark import BarrierTaskContext
    return BarrierTaskContext.get()


def vector_size(column: pa.Array | pa.ChunkedArray) -> int:
    """Largest vector size in a VectorUDT column (``size`` of sparse rows, length of dense ones)."""
    if isinstance(column, pa.ChunkedArray):
        return max((vector_size(c) for c in column.chunks), default=0)
    sizes = pc.max(column.field("size")).as_py() or 0
    dense = pc.max(pc.list_value_length(column.field("values"))).as_py() or 0
    return max(int(sizes), int(dense))


def load_partition(batches: Iterator[pa.RecordBatch], spec: TrainSpec) -> tuple[CSRBatch | None, int]:
    """Convert a partition's Arrow batches to one CSR batch (validating as we go) and its vector size."""
    parts, offset, size = [], 0, 0
    for batch in batches:
        parts.append(record_batch_to_csr(batch, spec.features_col, spec.label_col, spec.weight_col,
                                         num_features=spec.num_features, binary_labels=spec.binary_labels,
                                         row_offset=offset))
        size = max(size, vector_size(batch.column(spec.features_col)))
        offset += batch.num_rows
    return (CSRBatch.concat(parts) if parts else None), size


@dataclass(frozen=True)
class MiniBatch:
    """One mini-batch and what it pulls, planned once and reused by every epoch.

    Attributes
    ----------
    data : CSRBatch
        The batch's rows (views into the partition's CSR arrays).
    keys : ndarray of int64
        Sorted unique keys to pull, the bias key first when fitting an intercept.
    col : ndarray of int32
        Row of ``keys`` for every stored entry of ``data``.
    weight_sum : float
        Sum of the rows' sample weights (the row count when unweighted).
    """

    data: CSRBatch
    keys: np.ndarray
    col: np.ndarray
    weight_sum: float


def plan_batches(data: CSRBatch | None, spec: TrainSpec) -> list[MiniBatch]:
    """Cut ``data`` into mini-batches of ``spec.batch_size`` rows and find each one's keys.

    Finding a batch's unique keys (a hash factorisation of its entries) is
    the largest per-batch cost on the worker besides the round trips, and its
    result is the same in every epoch: doing it here pays it once per fit.
    """
    if data is None:
        return []
    batches = []
    for lo in range(0, data.num_rows, spec.batch_size):
        batch = data.slice_rows(lo, min(lo + spec.batch_size, data.num_rows))
        keys, col = spec.objective.keys_of(batch, spec.fit_intercept)
        # int32 halves the plan's memory (one entry per stored value); a batch never has 2^31 keys.
        weight_sum = float(batch.num_rows if batch.weights is None else batch.weights.sum())
        batches.append(MiniBatch(batch, keys, col.astype(np.int32), weight_sum))
    return batches


def run_epochs(batches: list[MiniBatch], spec: TrainSpec, client: PSClient, worker: int) -> list[dict]:
    """Train ``spec.num_epochs`` passes over the planned ``batches``; return per-epoch statistics."""
    results = []
    rows = sum(b.data.num_rows for b in batches)
    for epoch in range(spec.num_epochs):
        start = time.perf_counter()
        loss_sum = weight_sum = 0.0
        for batch in batches:
            # One round trip each way: the intercept is an unpenalised row of the
            # model table (see fitting.model_table_spec), the clock tick rides on the push.
            pulled = client.pull(spec.table, batch.keys)
            bias = float(pulled[0, 0]) if spec.fit_intercept else 0.0
            loss, grads, g_bias = spec.objective.step(batch.data, batch.col, pulled, bias)
            if spec.fit_intercept:
                grads[0, :] = 0.0
                grads[0, 0] = g_bias
            if spec.clock is None:
                client.push(spec.table, batch.keys, grads)
            else:
                client.push_and_advance(spec.table, batch.keys, grads, spec.clock, worker, timeout=spec.timeout)
            loss_sum += loss
            weight_sum += batch.weight_sum
        seconds = time.perf_counter() - start
        client.push(spec.stats_table, [epoch], [[loss_sum, weight_sum, rows, seconds]])
        results.append({"worker": worker, "epoch": epoch, "loss_sum": loss_sum, "weight_sum": weight_sum,
                        "rows": rows, "seconds": seconds})
    if spec.clock is not None:
        client.clock_finish(spec.clock, worker)
    return results


def make_train_fn(spec: TrainSpec):
    """The ``mapInArrow`` function of the barrier training stage."""

    def train(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        ctx = _barrier_context()
        worker = ctx.partitionId()
        client = spec.client
        try:
            if worker == 0:
                starts = client.pull(spec.attempts_table, [0])[0, 0]
                client.push(spec.attempts_table, [0], [[1.0]])
                if starts > 0:
                    _reset_for_retry(spec, client)
            # Convert before the barrier: tasks start at different times (worker
            # start-up, Arrow conversion in the JVM), and the conversion fills that wait.
            start = time.perf_counter()
            data, size = load_partition(batches, spec)
            planned = plan_batches(data, spec)
            load_seconds = time.perf_counter() - start
            ctx.barrier()  # nobody trains before a possible reset is done
            results = [{**r, "num_features": size, "load_seconds": load_seconds}
                       for r in run_epochs(planned, spec, client, worker)]
        finally:
            client.close()
        yield pa.RecordBatch.from_pylist(results, schema=TASK_RESULT_SCHEMA)

    return train
