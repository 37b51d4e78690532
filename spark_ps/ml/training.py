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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from spark_ps.client.client import PSClient
from spark_ps.client.collectives import AllReduce, Barrier
from spark_ps.errors import PSConnectionError, PushError
from spark_ps.ml.csr import CSRBatch, record_batch_to_csr
from spark_ps.ml.keycolumns import is_key_column
from spark_ps.ml.objectives import Objective
from spark_ps.wire.spec import TableSpec

#: Per-epoch statistics, summed over workers (slot = epoch); ``workers`` counts the workers done.
EPOCH_FIELDS = ("loss_sum", "weight_sum", "rows", "seconds", "workers")
#: The training data's totals, summed over workers (slot 0).
TOTALS_FIELDS = ("rows", "weight_sum", "label_sum")


#: One row per (worker, epoch); ``load_seconds`` (Arrow to CSR and batch planning), ``offset``
#: (where the intercept started, from the mean label) and ``batch_size`` repeat per epoch;
#: ``stop`` is why training ended (:meth:`Schedule.stop_reason`), on the last epoch's row only.
TASK_RESULT_SCHEMA = pa.schema([
    ("worker", pa.int32()), ("epoch", pa.int32()), ("loss_sum", pa.float64()),
    ("weight_sum", pa.float64()), ("rows", pa.int64()), ("seconds", pa.float64()),
    ("num_features", pa.int64()), ("load_seconds", pa.float64()), ("offset", pa.float64()),
    ("batch_size", pa.int64()), ("stop", pa.string()),
])


@dataclass(frozen=True)
class Schedule:
    """How a fit walks its data: rows per mini-batch, and when it stops passing over them.

    Training stops after ``epochs`` passes or ``max_iter``, whichever is
    fewer (the stop reason names the Param: ``"numEpochs"`` or ``"maxIter"``),
    or earlier, as MLlib's ``tol`` does for L-BFGS: once a pass's progressive
    loss (each row's loss before its own update, weighted mean) improves on
    the previous pass's by less than ``tol`` times the previous loss
    (``"tol"``). A loss that grows also stops it.

    A 0 is chosen from the data: ``batch_size`` from the rows each worker
    trains on (:meth:`rows_per_batch`), ``epochs`` from the rows of the
    whole fit (:meth:`resolved`).

    Measured (``python -m bench.defaults``, held-out AUC; FTRL, alpha 0.2):

    ============  ========  =====================================================
    data          rows      what decided the rule
    ============  ========  =====================================================
    a9a           32,561    batches of 256-1,024 within 0.001 of each other;
                            4,096 (8 mini-batches a pass) 0.002-0.013 lower
    w8a           39,714    +0.004 from pass 1 to 5, still rising
    CTR, 2^18     400,000   passes 1-3 within 0.0011; batches of 4,096 as good as
                            1,024 and 1.9x faster (1.4 s against 2.6 s a pass);
                            8,192: 0.8087 against 0.8093, passes 0.30/0.20 s
                            against 0.41/0.30 s (local-cluster, 2026-12-02)
    CTR, 2^22     400,000   the same: 0.8102, 0.8119, 0.8119 for 1, 2, 3 passes;
                            8,192: 0.8113 against 0.8118 (MLlib's best: 0.8105)
    ============  ========  =====================================================

    Examples
    --------
    >>> s = Schedule(batch_size=0, epochs=5, tol=1e-3)
    >>> s.stop_reason([0.50]), s.stop_reason([0.50, 0.40]), s.stop_reason([0.50, 0.40, 0.3999])
    (None, None, 'tol')
    >>> s.stop_reason([0.5, 0.4, 0.3, 0.2, 0.1]), Schedule(256, epochs=5, max_iter=2).stop_reason([0.5, 0.4])
    ('numEpochs', 'maxIter')
    >>> Schedule(batch_size=0, epochs=1).rows_per_batch(8_000), Schedule(0, 1).rows_per_batch(200_000)
    (256, 8192)
    >>> auto = Schedule(batch_size=0, epochs=0)
    >>> [auto.resolved(rows).max_passes for rows in (30_000, 400_000, 6_400_000)], Schedule(0, 4).max_passes
    ([20, 2, 1], 4)
    >>> capped = Schedule(0, epochs=0, max_iter=2).resolved(30_000)
    >>> capped.max_passes, capped.cap
    (2, 'maxIter')
    >>> Schedule(batch_size=-1, epochs=1)
    Traceback (most recent call last):
    ...
    ValueError: batchSize must be >= 0 (0 = chosen from the rows), got -1
    """

    batch_size: int
    epochs: int
    max_iter: int = 2**31 - 1
    tol: float = 0.0

    #: batchSize=0: about this many mini-batches per worker and pass, within [MIN_BATCH, MAX_BATCH] rows.
    BATCHES_PER_PASS: ClassVar[int] = 32
    MIN_BATCH: ClassVar[int] = 256
    MAX_BATCH: ClassVar[int] = 8192
    #: numEpochs=0: enough passes to visit about this many rows, at most MAX_AUTO_PASSES (400k rows: 2 passes).
    ROW_VISITS: ClassVar[int] = 800_000
    MAX_AUTO_PASSES: ClassVar[int] = 20

    def __post_init__(self) -> None:
        if self.batch_size < 0:
            raise ValueError(f"batchSize must be >= 0 (0 = chosen from the rows), got {self.batch_size}")
        if self.epochs < 0 or self.max_iter < 1:
            raise ValueError(f"numEpochs must be >= 0 (0 = chosen from the rows) and maxIter >= 1, got "
                             f"{self.epochs} and {self.max_iter}")
        if not self.tol >= 0:
            raise ValueError(f"tol must be >= 0, got {self.tol}")

    def rows_per_batch(self, worker_rows: int) -> int:
        """Mini-batch rows for a worker with ``worker_rows`` rows: ``batch_size``, or chosen when it is 0.

        Chosen: ``worker_rows / BATCHES_PER_PASS`` rounded up to a power of two,
        clamped to ``[MIN_BATCH, MAX_BATCH]``. Every mini-batch costs two round
        trips, so small batches spend the pass waiting on the network; too few
        batches give an online optimizer too few updates per pass.
        """
        if self.batch_size:
            return self.batch_size
        wanted = max(1, -(-worker_rows // self.BATCHES_PER_PASS))
        return int(min(self.MAX_BATCH, max(self.MIN_BATCH, 1 << (wanted - 1).bit_length())))

    def resolved(self, rows: int) -> Schedule:
        """This schedule with ``epochs`` chosen for ``rows`` training rows (itself when ``epochs`` is set).

        Chosen: ``ROW_VISITS / rows`` rounded up, within ``[1, MAX_AUTO_PASSES]``.
        Small data gains from more passes (w8a), large data is done after
        one or two (the synthetic CTR data), and ``tol`` ends them sooner.
        """
        if self.epochs:
            return self
        return dataclasses.replace(self, epochs=min(self.MAX_AUTO_PASSES, max(1, -(-self.ROW_VISITS // max(rows, 1)))))

    @property
    def max_passes(self) -> int:
        """The most passes: ``epochs`` capped by ``max_iter`` (unresolved: the most any row count may get)."""
        return min(self.epochs or self.MAX_AUTO_PASSES, self.max_iter)

    @property
    def cap(self) -> str:
        """The Param that caps the passes: ``"maxIter"`` when it is below ``epochs``, else ``"numEpochs"``."""
        return "maxIter" if self.max_iter < self.epochs else "numEpochs"

    def stop_reason(self, losses: Sequence[float]) -> str | None:
        """Why training stops after the passes whose mean losses are ``losses``; None: it goes on.

        ``epochs`` must be set (see :meth:`resolved`).
        """
        if self.tol > 0 and len(losses) >= 2:
            previous, current = losses[-2], losses[-1]
            if previous - current < self.tol * max(abs(previous), 1e-12):
                return "tol"
        return self.cap if len(losses) >= self.max_passes else None


@dataclass(frozen=True)
class DataDependence:
    """What a fit derives from its training rows, once the tasks have counted them.

    MLlib's ``regParam`` penalises the *mean* loss and FTRL's L1/L2 the
    *summed* one, so the table's L1/L2 grow with the row count; a per-pass
    L1 (``priorL1``) grows with the passes, which may depend on the rows
    (:meth:`Schedule.resolved`); and the intercept starts where the mean label
    puts it. The tasks count rows and
    labels while converting their partitions and share the totals
    (:func:`_gather_totals`), which spares the fit a Spark pass of its own.

    Examples
    --------
    >>> dep = DataDependence(l1_per_row=1e-4, l2_per_row=2e-4)
    >>> spec = TableSpec("m", optimizer="ftrl", hyper={"alpha": 0.1, "l1": 1.0, "l2": 0.0})
    >>> dict(dep.table_spec(spec, 10_000).hyper)
    {'alpha': 0.1, 'l1': 2.0, 'l2': 2.0}
    >>> dict(DataDependence(l1_per_pass=0.5).table_spec(spec, 10_000, passes=4).hyper)
    {'alpha': 0.1, 'l1': 3.0, 'l2': 0.0}
    """

    l1_per_row: float = 0.0
    l2_per_row: float = 0.0
    #: FTRL's l1 bounds |z|, the gradient summed over every pass: a per-pass strength scales with the passes.
    l1_per_pass: float = 0.0
    #: Start of the intercept given the (weighted) mean label, None if unknown; None: no intercept.
    intercept_start: Callable[[float | None], float] | None = None

    def table_spec(self, spec: TableSpec, num_rows: int, passes: int = 1) -> TableSpec:
        """``spec`` with the row- and pass-scaled L1/L2 added to its optimizer's.

        Examples
        --------
        >>> spec = TableSpec("m", optimizer="ftrl", hyper={"l1": 1.0})
        >>> dict(DataDependence(l2_per_row=0.5).table_spec(spec, 4).hyper)
        {'l1': 1.0, 'l2': 2.0}
        >>> DataDependence().table_spec(spec, 4) is spec          # nothing scales with the rows
        True
        """
        if not (self.l1_per_row or self.l2_per_row or self.l1_per_pass):
            return spec
        return spec.with_hyper(l1=spec.hyper.get("l1", 0.0) + self.l1_per_row * num_rows + self.l1_per_pass * passes,
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
    schedule: Schedule
    timeout: float
    binary_labels: bool = True
    #: A width-1 table on the shards whose rows mark every key the tasks push (``PSClient.push``'s ``mark``):
    #: a streaming micro-batch's changed rows. None for a batch fit.
    mark: str | None = None

    @property
    def table(self) -> str:
        return self.table_spec.name


def _gather_totals(client: PSClient, spec: TrainSpec, worker: int, data: CSRBatch | None, num_batches: int
                   ) -> tuple[int, float | None, int]:
    """Every task's rows and (weighted) label sum, summed on the shards, and the most mini-batches of any task.

    Returns ``(rows, mean label or None, most batches per pass)``. The sums
    are float32 (:class:`~spark_ps.client.collectives.AllReduce`): exact for
    counts below 2**24, and the same on every worker in any case, which is
    what the identical table specs of :func:`make_train_fn` need. Slot
    ``1 + worker`` holds each worker's batch count (in its ``rows`` field),
    for :func:`run_epochs`' clock padding. The rendezvous is a
    :class:`~spark_ps.client.collectives.Barrier` on the shards: a round
    trip, where Spark's ``allGather`` took a second.
    """
    rows, weights, labels = 0, 0.0, 0.0
    if data is not None:
        w = np.ones(data.num_rows) if data.weights is None else data.weights
        rows, weights, labels = data.num_rows, float(w.sum()), float(w @ data.labels)
    spec.totals.add(client, 0, rows=rows, weight_sum=weights, label_sum=labels)
    spec.totals.add(client, 1 + worker, rows=num_batches, weight_sum=0.0, label_sum=0.0)
    spec.rendezvous.wait(client, worker, timeout=spec.timeout)  # every worker's totals are in
    totals, *per_worker = spec.totals.get_many(client, range(1 + spec.num_workers))
    weights = totals["weight_sum"]
    most_batches = int(max((t["rows"] for t in per_worker), default=0))
    return int(totals["rows"]), (totals["label_sum"] / weights if weights > 0 else None), most_batches


def _barrier_context():
    from pyspark import BarrierTaskContext
    return BarrierTaskContext.get()


def vector_size(column: pa.Array | pa.ChunkedArray) -> int:
    """Largest vector size in a VectorUDT column (``size`` of sparse rows, length of dense ones).

    A column of 64-bit keys has no size: 0 (the estimator reads the key space
    from the column's type, :func:`~spark_ps.ml.keycolumns.is_key_type`).

    Examples
    --------
    >>> from spark_ps.ml.csr import VECTOR_ARROW_TYPE
    >>> column = pa.array([{"type": 0, "size": 10, "indices": [2], "values": [1.0]},        # sparse, size 10
    ...                    {"type": 1, "size": None, "indices": None, "values": [1.0, 2.0, 3.0]}],  # dense
    ...                   VECTOR_ARROW_TYPE)
    >>> vector_size(column), vector_size(column.slice(1))
    (10, 3)
    """
    if is_key_column(column.type):
        return 0
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
    """Cut ``data`` into mini-batches (of ``spec.schedule.rows_per_batch`` rows) and find each one's keys.

    Finding a batch's unique keys (a hash factorisation of its entries) is
    the largest per-batch cost on the worker besides the round trips, and its
    result is the same in every epoch: doing it here pays it once per fit.
    """
    if data is None:
        return []
    batches = []
    size = spec.schedule.rows_per_batch(data.num_rows)
    for lo in range(0, data.num_rows, size):
        batch = data.slice_rows(lo, min(lo + size, data.num_rows))
        keys, col = spec.objective.keys_of(batch, spec.fit_intercept)
        # int32 halves the plan's memory (one entry per stored value); a batch never has 2^31 keys.
        weight_sum = float(batch.num_rows if batch.weights is None else batch.weights.sum())
        batches.append(MiniBatch(batch, keys, col.astype(np.int32), weight_sum))
    return batches


def run_epochs(batches: list[MiniBatch], spec: TrainSpec, client: PSClient, worker: int,
               clock_ticks_per_pass: int | None = None) -> list[dict]:
    """Train passes over the planned ``batches`` until ``spec.schedule`` stops; return per-epoch statistics.

    With a ``tol``, the workers meet after every pass and read the pass's
    summed loss from the shards: the same float32 sums for everyone, so all
    of them stop after the same pass. The last row says why it stopped.

    Under SSP, a worker with fewer batches than ``clock_ticks_per_pass`` (the
    most of any worker) ticks its clock up to it before that meeting. Else
    its clock falls one tick further behind per pass, and once a worker with
    more batches is ``staleness`` ticks ahead it waits for the clock of a
    worker that is itself waiting at the meeting: a deadlock (seen on
    iPinYou: 26 and 27 batches a pass, stuck in the fifth pass).
    """
    padding = max(0, (clock_ticks_per_pass or 0) - len(batches))
    results = []
    rows = sum(b.data.num_rows for b in batches)
    schedule, losses, stop = spec.schedule, [], None
    for epoch in range(schedule.max_passes):
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
                client.push(spec.table, batch.keys, grads, mark=spec.mark)
            else:
                client.push_and_advance(spec.table, batch.keys, grads, spec.clock, worker, timeout=spec.timeout,
                                        mark=spec.mark)
            loss_sum += loss
            weight_sum += batch.weight_sum
        if spec.clock is not None:
            for _ in range(padding):
                client.clock_advance(spec.clock, worker, timeout=spec.timeout)
        seconds = time.perf_counter() - start
        spec.epochs.add(client, epoch, loss_sum=loss_sum, weight_sum=weight_sum, rows=rows, seconds=seconds,
                        workers=1)
        results.append({"worker": worker, "epoch": epoch, "loss_sum": loss_sum, "weight_sum": weight_sum,
                        "rows": rows, "seconds": seconds, "stop": None})
        if schedule.tol > 0:
            spec.rendezvous.wait(client, worker, timeout=spec.timeout)  # every worker's pass is summed
            total = spec.epochs.get(client, epoch)
            losses.append(total["loss_sum"] / max(total["weight_sum"], 1e-300))
        else:
            losses.append(loss_sum)  # only the count matters without a tol
        stop = schedule.stop_reason(losses)
        if stop is not None:
            results[-1]["stop"] = stop
            break
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
            num_rows, label_mean, most_batches = _gather_totals(client, spec, worker, data, len(planned))
            results = []
            if num_rows > 0:  # else the driver reports the empty DataFrame
                dep = spec.data_dependence
                # Every worker asks for the same table (same totals, same spec): the
                # first request creates it, the others find it, nobody waits for anyone.
                schedule = spec.schedule.resolved(num_rows)
                client.create_table(dep.table_spec(spec.table_spec, num_rows, schedule.max_passes))
                offset = dep.offset(label_mean)
                started = dataclasses.replace(spec, schedule=schedule,
                                              objective=dataclasses.replace(spec.objective, offset=offset))
                batch_size = spec.schedule.rows_per_batch(0 if data is None else data.num_rows)
                epochs = run_epochs(planned, started, client, worker, most_batches)
                results = [{**r, "num_features": size, "load_seconds": load_seconds, "offset": offset,
                            "batch_size": batch_size} for r in epochs]
        except PushError as exc:
            if not exc.unreachable:
                raise
            # Say it as what it is, a shard lost, so that the driver follows the registry and fits again.
            raise PSConnectionError(f"a shard was lost mid-push: {exc}") from exc
        finally:
            client.close()
        yield pa.RecordBatch.from_pylist(results, schema=TASK_RESULT_SCHEMA)

    return train
