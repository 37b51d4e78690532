"""Driver side of a fit: plan, launch the barrier stage, watch, persist.

The driver creates the model table on the shards, starts one barrier stage
whose tasks do all the training (see :mod:`spark_ps.ml.training`), prints one
progress line per epoch from the epochs' all-reduce on the shards, and
finally has executors stream the weights from the sidecars into Delta. What
reaches the driver is O(workers x epochs) numbers, never O(d).

The fit returns as soon as training is done: the Delta export runs in the
background (:class:`~spark_ps.ml.weights.BackgroundExport`), and the model
scores straight from the training table meanwhile, when that table answers
exactly as the saved weights would (zero-initialised tables: a feature never
trained is 0 in both).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql.pandas.types import from_arrow_schema

from spark_ps.client.collectives import AllReduce, Barrier
from spark_ps.errors import MissingColumnError
from spark_ps.ml import weights as weight_store
from spark_ps.ml.objectives import BIAS_KEY
from spark_ps.ml.summary import TrainingHistory
from spark_ps.ml.training import (
    EPOCH_FIELDS,
    TASK_RESULT_SCHEMA,
    TOTALS_FIELDS,
    DataDependence,
    Schedule,
    TrainSpec,
    make_train_fn,
)
from spark_ps.spark.context import PSContext
from spark_ps.spark.leases import TableLease
from spark_ps.spark.tasks import barrier_input, task_died, task_error, task_slots
from spark_ps.wire.spec import STATE_NAMES, TableSpec

log = logging.getLogger("spark_ps.ml")

#: How many times a fit starts over after a training task died or a shard was lost (see fit_on_ps).
FIT_RERUNS = 2
#: Longest wait, in seconds, for the plugin to replace a lost shard: its start-up plus
#: spark.ps.heartbeatTimeout (6 s) when the shard froze rather than died.
SHARD_REPLACEMENT_TIMEOUT = 120.0

_TRAIN_RESULT_SPARK_SCHEMA = from_arrow_schema(TASK_RESULT_SCHEMA)


@dataclass
class FitResult:
    """What a fit produced: where the weights are, and small statistics."""

    weights_path: str
    #: Live shard table the model may score from (None: score from Delta).
    table: str | None
    #: The fitted intercept: the table's intercept row plus where training started it.
    intercept: float
    #: Loss and wall seconds (the slowest worker's) of each epoch, why training stopped
    #: (Schedule.stop_reason) and the rows per mini-batch (the largest worker's).
    history: TrainingHistory
    num_rows: int
    #: Largest feature-vector size seen in the training data.
    num_features: int
    #: The running Delta export of the weights to ``weights_path``; its result is the non-zero row count.
    export: weight_store.BackgroundExport
    #: Holds ``table`` on the shards for the model (spark_ps.spark.leases): dropped once nothing holds it.
    lease: TableLease | None = None


def require_columns(dataset: DataFrame, **columns: str | None) -> None:
    """Raise :class:`~spark_ps.errors.MissingColumnError` naming a missing column and listing the available ones.

    Examples
    --------
    >>> df = spark.createDataFrame([(1.0,)], ["label"])
    >>> require_columns(df, label="label", features="features")
    Traceback (most recent call last):
    ...
    spark_ps.errors.MissingColumnError: features column 'features' not found in the DataFrame; ...
    """
    available = dataset.columns
    for role, name in columns.items():
        if name and name not in available:
            raise MissingColumnError(
                f"{role} column {name!r} not found in the DataFrame; available columns: {available}")


def checkpoint_root(spark, configured: str | None) -> str:
    """Where fits write their weights: ``configured``, else ``spark.ps.checkpointDir``, else ``<warehouse>/spark_ps``.

    Examples
    --------
    >>> checkpoint_root(spark, "/data/models")
    '/data/models'
    >>> spark.conf.set("spark.ps.checkpointDir", "/data/ps"); checkpoint_root(spark, None)
    '/data/ps'
    >>> spark.conf.unset("spark.ps.checkpointDir"); checkpoint_root(spark, None).endswith("/spark_ps")
    True
    """
    root = configured or spark.conf.get("spark.ps.checkpointDir", None)
    if not root:
        warehouse = spark.conf.get("spark.sql.warehouse.dir", "spark-warehouse")
        root = os.path.join(warehouse.removeprefix("file:"), "spark_ps")
    return root


class _ProgressPrinter:
    """Polls the fit's all-reduces: a line as workers finish converting their partitions, and one per epoch.

    The conversion lines give rows/s but no ETA: no pass precedes it, so the
    rows still to convert are unknown until every worker has counted its own.
    Once they have, the passes that ``schedule`` gives that many rows are the
    epoch lines' denominator (until then, the most it may give).
    """

    def __init__(self, client, epochs: AllReduce, totals: AllReduce, schedule: Schedule, num_workers: int,
                 label: str):
        self._client, self._epochs, self._totals, self._num_workers = client, epochs, totals, num_workers
        self._schedule, self._num_epochs, self._label = schedule, schedule.max_passes, label
        self._stop = threading.Event()
        self._reported, self._seconds = 0, 0.0
        self._converted, self._start = 0, time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="ps-progress", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join(timeout=30)
        self._poll()  # report epochs that finished after the last poll

    def _run(self):
        while not self._stop.wait(0.5):
            self._poll()

    def _poll(self):
        if self._reported >= self._num_epochs:
            return
        try:
            if self._converted < self._num_workers and self._reported == 0:
                self._report_conversion(self._totals.get_many(self._client, range(1 + self._num_workers)))
            stats = self._epochs.get_many(self._client, range(self._num_epochs))
        except (ConnectionError, KeyError) as exc:  # the table goes when the fit ends: nothing left to report
            log.debug("progress poll failed: %s", exc)
            return
        while self._reported < self._num_epochs and stats[self._reported]["workers"] >= self._num_workers:
            epoch = stats[self._reported]
            # Workers run side by side: the epoch took about the mean task time.
            seconds = epoch["seconds"] / self._num_workers
            self._seconds += seconds
            self._reported += 1
            # An upper bound: the fit stops early once a pass improves the loss by less than tol.
            eta = (self._num_epochs - self._reported) * self._seconds / self._reported
            log.info("%s epoch %d/%d: loss %.6f, %.0f rows/s (%.2f s), ETA %.1f s at most", self._label,
                     self._reported, self._num_epochs, epoch["loss_sum"] / max(epoch["weight_sum"], 1e-300),
                     epoch["rows"] / max(seconds, 1e-9), seconds, eta)


    def _report_conversion(self, totals: list[dict[str, float]]) -> None:
        """Log the workers that have converted their partitions since the last poll (slot 1 + w: w's batches)."""
        done = sum(1 for slot in totals[1:] if slot["rows"] > 0)
        if done <= self._converted:
            return
        self._converted = done
        seconds = time.perf_counter() - self._start
        rows = int(totals[0]["rows"])
        if done == self._num_workers:
            self._num_epochs = self._schedule.resolved(rows).max_passes  # as the tasks resolve it
        what = "converted" if done == self._num_workers else f"{done}/{self._num_workers} workers converted"
        log.info("%s: %s %d rows to CSR in %.1f s since the tasks were launched (%.0f rows/s)", self._label, what,
                 rows, seconds, rows / max(seconds, 1e-9))


def fit_on_ps(spark, dataset: DataFrame, *, label: str, objective, table_spec: TableSpec,
              data_dependence: DataDependence, features_col: str, label_col: str, weight_col: str | None,
              fit_intercept: bool, schedule: Schedule, sync_mode: str,
              staleness: int, num_workers: int, timeout: float, checkpoint_dir: str | None, binary_labels: bool,
              uid: str) -> FitResult:
    """Train ``objective`` on the rows of ``dataset`` through the parameter server.

    No pass over the data precedes training: the tasks count the rows and the
    labels while converting their partitions (see :class:`DataDependence`).
    If a training task dies (:func:`task_died`: its Python worker or its
    executor is lost), or a shard is lost (:func:`_shard_lost`), the fit
    starts over under new names, at most :data:`FIT_RERUNS` times (see
    :mod:`spark_ps.ml.training`); after a lost shard, on the shards the
    registry then lists (:meth:`PSContext.refresh`).
    """
    require_columns(dataset, features=features_col, label=label_col, weight=weight_col)
    data = dataset.select(*[c for c in (features_col, label_col, weight_col) if c])

    ps = PSContext.get(spark)  # waits for the executors' shards, so their slots count too
    slots = task_slots(spark)
    workers = max(1, min(num_workers or slots, slots))
    # A barrier stage runs all its tasks at once, so at most one per slot; a shuffle where one
    # is needed is paid once per fit, since every epoch runs on the task's in-memory copy.
    data, _ = barrier_input(data, workers)
    client = ps.client(timeout=timeout)
    stale = 0 if sync_mode == "bsp" else (staleness if sync_mode == "ssp" else None)
    for rerun in range(FIT_RERUNS + 1):  # each attempt under fresh names: a dead one's may hold part of it
        run_id = f"{uid}_{uuid.uuid4().hex[:8]}"
        clock = None if sync_mode == "asp" else f"clock_{run_id}"
        # The model table is created by the tasks, once they have counted the rows.
        model_spec = model_table_spec(dataclasses.replace(table_spec, name=f"model_{run_id}"), fit_intercept)
        table = model_spec.name
        epochs, totals = AllReduce(f"epochs_{run_id}", EPOCH_FIELDS), AllReduce(f"totals_{run_id}", TOTALS_FIELDS)
        rendezvous = Barrier(f"meet_{run_id}", workers)

        spec = TrainSpec(client=client, table_spec=model_spec, data_dependence=data_dependence, epochs=epochs,
                         totals=totals, rendezvous=rendezvous, clock=clock,
                         staleness=stale, num_workers=workers, objective=objective, features_col=features_col,
                         label_col=label_col, weight_col=weight_col,
                         fit_intercept=fit_intercept, schedule=schedule,
                         timeout=timeout, binary_labels=binary_labels)
        log.info("%s: training on %d workers x %d shards, %s epochs at most (tol %g), %s", label, workers,
                 client.num_shards, schedule.epochs or "auto", schedule.tol, sync_mode)
        # Zero-initialised tables answer untrained features with 0, as the Delta weights do, so the
        # model can score from the training table. Others (FM's random factors) would not: the model
        # scores from Delta, and the table goes once it is exported.
        serve_from_table = model_spec.init == "zeros"
        export = None
        try:
            start = time.perf_counter()
            try:
                for group in (epochs, totals, rendezvous):
                    group.create(client)
                if clock is not None:
                    client.clock_create(clock, workers, stale)
                with _ProgressPrinter(client, epochs, totals, schedule, workers, label):
                    task_stats = data.mapInArrow(make_train_fn(spec), _TRAIN_RESULT_SPARK_SCHEMA,
                                                 barrier=True).collect()
            except Exception as exc:  # only a dead task or a lost shard runs again; the rest is the caller's error
                raised = task_error(exc)  # the task's own error, not Spark's wrapper around it
                lost = _shard_lost(exc, raised)
                if rerun == FIT_RERUNS or not (lost or task_died(exc)):
                    if raised is None:
                        raise
                    raise raised from exc
                if lost:
                    log.warning("%s: a shard was lost (%s); fitting again from scratch once the plugin has "
                                "replaced it", label, str(raised or exc).splitlines()[0][:300])
                    dead, client = client, _follow_lost_shard(ps, timeout, exc)  # the finally cleans up through it
                    dead.close()
                else:
                    log.warning("%s: a training task died (%s); fitting again from scratch", label,
                                str(exc).splitlines()[0][:300])
                continue  # after the finally below has dropped this attempt's table and groups
            num_rows = sum(row["rows"] for row in task_stats if row["epoch"] == 0)
            if num_rows == 0:
                raise ValueError("cannot fit on an empty DataFrame (0 rows)")
            losses, seconds = _epoch_summary(task_stats)
            if not np.all(np.isfinite(losses)):
                raise FloatingPointError(f"{label}: training diverged (non-finite loss {losses}); "
                                         "lower stepSize/alpha")
            intercept = float(client.pull(table, [BIAS_KEY])[0, 0]) + task_stats[0]["offset"] \
                if fit_intercept else 0.0
            path = os.path.join(checkpoint_root(spark, checkpoint_dir), uid, run_id)
            # The table is leased (spark_ps.spark.leases): the model and the export, which reads it, hold
            # it; it is dropped once neither does (at once after the export, if the model cannot serve from it).
            lease = ps.lease(table)
            # The optimizer state goes with the weights: a stream (initialModel=) continues from it.
            export = weight_store.BackgroundExport(spark, client, table, path,
                                                   then=lease.hold if serve_from_table else lease.release,
                                                   state_names=STATE_NAMES[model_spec.optimizer])
            load_seconds = max((row["load_seconds"] for row in task_stats), default=0.0)
            log.info("%s: trained %d rows in %.1f s (Arrow to CSR and batch planning %.2f s), exporting %s to %s",
                     label, num_rows, time.perf_counter() - start, load_seconds, table, path)
        finally:
            _drop_attempt(ps, client, table if export is None else None, (epochs, totals, rendezvous), clock)
        num_features = max((row["num_features"] for row in task_stats), default=0)
        stop = next(row["stop"] for row in task_stats if row["stop"])  # every worker stops after the same pass
        history = TrainingHistory(losses, seconds, stop, max(row["batch_size"] for row in task_stats))
        return FitResult(path, table if serve_from_table else None, intercept, history, num_rows, num_features,
                         export, lease if serve_from_table else None)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _shard_lost(exc: BaseException, raised: BaseException | None) -> bool:
    """Whether a fit failed because a shard went away: a connection to it broke, here or in a task.

    A shard killed (or frozen, then killed by the plugin's heartbeat watchdog)
    closes its sockets: its clients see EOF or a reset at once, as a
    :class:`ConnectionError` (``PSConnectionError`` and the builtin kinds).
    """
    return isinstance(exc, ConnectionError) or isinstance(raised, ConnectionError)


def _follow_lost_shard(ps: PSContext, timeout: float, cause: BaseException):
    """Wait until the registry lists live shards only (the plugin restarts a dead sidecar); a client to them."""
    try:
        ps.refresh(timeout=min(timeout, SHARD_REPLACEMENT_TIMEOUT))
    except TimeoutError as exc:
        raise ConnectionError(f"a spark-ps shard was lost during the fit and no live replacement was registered "
                              f"within {min(timeout, SHARD_REPLACEMENT_TIMEOUT):g} s ({exc}); the fit failed, "
                              "nothing was saved. Is spark.ps.maxSidecarRestarts used up? "
                              "See the executors' logs") from cause
    return ps.client(timeout=timeout)


def _drop_attempt(ps: PSContext, client, table: str | None, groups, clock: str | None) -> None:
    """Drop what one attempt made on the shards; what a lost shard held is gone with it."""
    drops = [(f"table {table}", lambda: ps.drop_table(table, missing_ok=True))] if table is not None else []
    drops += [(f"group {group.name}", lambda group=group: group.drop(client)) for group in groups]
    if clock is not None:
        drops.append((f"clock {clock}", lambda: client.clock_drop(clock)))
    for what, drop in drops:
        try:
            drop()
        except (ConnectionError, KeyError) as exc:  # on a lost shard, or never created: nothing left to drop
            log.info("%s not dropped: %s", what, exc)


def model_table_spec(table_spec: TableSpec, fit_intercept: bool) -> TableSpec:
    """The model table's spec: the intercept row (``BIAS_KEY``) is exempt from L1/L2, as in MLlib.

    Examples
    --------
    >>> model_table_spec(TableSpec("m", optimizer="ftrl"), fit_intercept=True).unpenalised_keys == (BIAS_KEY,)
    True
    """
    return dataclasses.replace(table_spec, unpenalised_keys=(BIAS_KEY,) if fit_intercept else ())


def _epoch_summary(task_stats) -> tuple[list[float], list[float]]:
    num_epochs = 1 + max(row["epoch"] for row in task_stats)
    loss = np.zeros(num_epochs)
    weight = np.zeros(num_epochs)
    seconds = np.zeros(num_epochs)
    for row in task_stats:
        loss[row["epoch"]] += row["loss_sum"]
        weight[row["epoch"]] += row["weight_sum"]
        seconds[row["epoch"]] = max(seconds[row["epoch"]], row["seconds"])
    return (loss / np.maximum(weight, 1e-300)).tolist(), seconds.tolist()
