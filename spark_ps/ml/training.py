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

Failure semantics: training runs as a Spark *barrier* result stage, which
Spark never retries: a task that dies fails the job at once ("Could not
recover from a failed barrier ResultStage", measured by SIGKILLing a task's
Python worker), and the shards may hold part of its updates. The driver
(:func:`spark_ps.ml.fitting.fit_on_ps`) then starts the fit over under new
table names, so the model has seen every row exactly ``numEpochs`` times,
never a mix of two attempts; a task that *raised* (bad input, say) fails the
fit with its error.

The tasks meet only on the shards (:func:`_gather_totals`). The first
version had worker 0 count the stage's attempts and reset a retried one's
state before a ``BarrierTaskContext.barrier()``, for retries that never
come; that barrier took 1.00 s every time on ``local[2]`` (Spark's
coordinator answers on a timer), a quarter of a cold fit of 400k rows at
d = 2^18.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from spark_ps.client.client import PSClient
from spark_ps.client.collectives import AllReduce, Barrier
from spark_ps.ml.csr import CSRBatch, record_batch_to_csr
from spark_ps.ml.objectives import Objective
from spark_ps.wire.spec import TableSpec

#: Per-epoch statistics, summed over workers (slot = epoch); ``workers`` counts the workers done.
EPOCH_FIELDS = ("loss_sum", "weight_sum", "rows", "seconds", "workers")
#: The training data's totals, summed over workers (slot 0).
TOTALS_FIELDS = ("rows", "weight_sum", "label_sum")


#: One row per (worker, epoch); ``load_seconds`` (Arrow to CSR and batch planning) and
#: ``offset`` (where the intercept started, from the mean label) repeat per epoch.
TASK_RESULT_SCHEMA = pa.schema([
    ("worker", pa.int32()), ("epoch", pa.int32()), ("loss_sum", pa.float64()),
    ("weight_sum", pa.float64()), ("rows", pa.int64()), ("seconds", pa.float64()),
    ("num_features", pa.int64()), ("load_seconds", pa.float64()), ("offset", pa.float64()),
])


@dataclass(frozen=True)
class DataDependence:
    """What a fit derives from its training rows, once the tasks have counted them.

    MLlib's ``regParam`` penalises the *mean* loss and FTRL's L1/L2 the
    *summed* one, so the table's L1/L2 grow with the row count; and the
    intercept starts where the mean label puts it. The tasks count rows and
    labels while converting their partitions and share the totals
    (:func:`_gather_totals`), which spares the fit a Spark pass of its own.

    Examples
    --------
    >>> dep = DataDependence(l1_per_row=1e-4, l2_per_row=2e-4)
    >>> spec = TableSpec("m", optimizer="ftrl", hyper={"alpha": 0.1, "l1": 1.0, "l2": 0.0})
    >>> dict(dep.table_spec(spec, 10_000).hyper)
    {'alpha': 0.1, 'l1': 2.0, 'l2': 2.0}
    """

    l1_per_row: float = 0.0
    l2_per_row: float = 0.0
    #: Start of the intercept given the (weighted) mean label, None if unknown; None: no intercept.
    intercept_start: Callable[[float | None], float] | None = None

    def table_spec(self, spec: TableSpec, num_rows: int) -> TableSpec:
        """``spec`` with the row-scaled L1/L2 added to its optimizer's.

        Examples
        --------
        >>> spec = TableSpec("m", optimizer="ftrl", hyper={"l1": 1.0})
        >>> dict(DataDependence(l2_per_row=0.5).table_spec(spec, 4).hyper)
        {'l1': 1.0, 'l2': 2.0}
        >>> DataDependence().table_spec(spec, 4) is spec          # nothing scales with the rows
        True
        """
        if not (self.l1_per_row or self.l2_per_row):
            return spec
        return spec.with_hyper(l1=spec.hyper.get("l1", 0.0) + self.l1_per_row * num_rows,
                               l2=spec.hyper.get("l2", 0.0) + self.l2_per_row * num_rows)

    def offset(self, label_mean: float | None) -> float:
        """Where the intercept starts, given the (weighted) mean label; 0.0 without an intercept.

        Examples
        --------
        >>> DataDependence(intercept_start=lambda mean: 2 * mean).offset(0.25), DataDependence().offset(0.25)
        (0.5, 0.0)
        """
        return 0.0 if self.intercept_start is None else float(self.intercept_start(label_mean))


@dataclass(frozen=True)
class TrainSpec:
    """Everything a training task needs; pickled once into the task closure."""

    client: PSClient
    #: The model table's spec before the row-scaled penalty (see DataDependence).
    table_spec: TableSpec
    data_dependence: DataDependence
    epochs: AllReduce
    totals: AllReduce
    #: The tasks' rendezvous (see _gather_totals).
    rendezvous: Barrier
    clock: str | None
    staleness: int | None
    num_workers: int
    objective: Objective
    features_col: str
    label_col: str
    weight_col: str | None
    fit_intercept: bool
    batch_size: int
    num_epochs: int
    timeout: float
    binary_labels: bool = True

    @property
    def table(self) -> str:
        return self.table_spec.name


def _gather_totals(client: PSClient, spec: TrainSpec, worker: int, data: CSRBatch | None) -> tuple[int, float | None]:
    """Every task's row count and (weighted) label sum, summed on the shards: (rows, mean label or None).

    The sums are float32 (:class:`~spark_ps.client.collectives.AllReduce`):
    exact for row counts below 2**24, and the same on every worker in any
    case, which is what the identical table specs of :func:`make_train_fn`
    need. The rendezvous is a :class:`~spark_ps.client.collectives.Barrier`
    on the shards: a round trip, where Spark's ``allGather`` took a second.
    """
    rows, weights, labels = 0, 0.0, 0.0
    if data is not None:
        w = np.ones(data.num_rows) if data.weights is None else data.weights
        rows, weights, labels = data.num_rows, float(w.sum()), float(w @ data.labels)
    spec.totals.add(client, 0, rows=rows, weight_sum=weights, label_sum=labels)
    spec.rendezvous.wait(client, worker, timeout=spec.timeout)  # every worker's totals are in
    totals = spec.totals.get(client, 0)
    weights = totals["weight_sum"]
    return int(totals["rows"]), (totals["label_sum"] / weights if weights > 0 else None)


def _barrier_context():
    from pyspark import BarrierTaskContext
    return BarrierTaskContext.get()


def vector_size(column: pa.Array | pa.ChunkedArray) -> int:
    """Largest vector size in a VectorUDT column (``size`` of sparse rows, length of dense ones).

    Examples
    --------
    >>> from spark_ps.ml.csr import VECTOR_ARROW_TYPE
    >>> column = pa.array([{"type": 0, "size": 10, "indices": [2], "values": [1.0]},        # sparse, size 10
    ...                    {"type": 1, "size": None, "indices": None, "values": [1.0, 2.0, 3.0]}],  # dense
    ...                   VECTOR_ARROW_TYPE)
    >>> vector_size(column), vector_size(column.slice(1))
    (10, 3)
    """
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
                                         binary_labels=spec.binary_labels, row_offset=offset))
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
        spec.epochs.add(client, epoch, loss_sum=loss_sum, weight_sum=weight_sum, rows=rows, seconds=seconds,
                        workers=1)
        results.append({"worker": worker, "epoch": epoch, "loss_sum": loss_sum, "weight_sum": weight_sum,
                        "rows": rows, "seconds": seconds})
    if spec.clock is not None:
        client.clock_finish(spec.clock, worker)
    return results


def make_train_fn(spec: TrainSpec):
    """The ``mapInArrow`` function of the barrier training stage."""

    def train(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        worker = _barrier_context().partitionId()
        client = spec.client
        try:
            # Convert before meeting: tasks start at different times (worker
            # start-up, Arrow conversion in the JVM), and the conversion fills that wait.
            start = time.perf_counter()
            data, size = load_partition(batches, spec)
            planned = plan_batches(data, spec)
            load_seconds = time.perf_counter() - start
            num_rows, label_mean = _gather_totals(client, spec, worker, data)
            results = []
            if num_rows > 0:  # else the driver reports the empty DataFrame
                dep = spec.data_dependence
                # Every worker asks for the same table (same totals, same spec): the
                # first request creates it, the others find it, nobody waits for anyone.
                client.create_table(dep.table_spec(spec.table_spec, num_rows))
                offset = dep.offset(label_mean)
                started = dataclasses.replace(spec, objective=dataclasses.replace(spec.objective, offset=offset))
                results = [{**r, "num_features": size, "load_seconds": load_seconds, "offset": offset}
                           for r in run_epochs(planned, started, client, worker)]
        finally:
            client.close()
        yield pa.RecordBatch.from_pylist(results, schema=TASK_RESULT_SCHEMA)

    return train
