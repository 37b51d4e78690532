"""Model weights in Delta, moved by executors, never through the driver.

A fitted model's weights live in a Delta table of sparse rows
``key: long, value: array<float>`` (only rows with a non-zero value). Export
runs one Spark task per shard, each streaming its shard's rows straight from
the sidecar into a Parquet file that the driver then commits as the table's
first version (:mod:`spark_ps.spark.deltawrite`; Delta's own writer where
the table exists or is not on the local file system); import runs tasks that
read Delta files and push the rows to the shards. The driver only schedules
the jobs and writes the commit.

A fit does not wait for its export: :class:`BackgroundExport` runs it as a
Spark job from a driver thread while the caller goes on using the model
through the live shard table, and whoever needs the Delta table (saving,
coefficient accessors, scoring without the live table) waits for it. A
``spark.stop()`` cuts off the exports still running (their Delta weights
are not written, and Spark logs the failed tasks); a script that stops its
session itself calls :func:`wait_for_exports` first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, FloatType, LongType, StructField, StructType

from spark_ps.client.client import PSClient
from spark_ps.spark import deltawrite
from spark_ps.spark.deltalog import read_version
from spark_ps.spark.tasks import task_error

log = logging.getLogger("spark_ps.ml")

WEIGHTS_SCHEMA = StructType([StructField("key", LongType(), False),
                             StructField("value", ArrayType(FloatType(), False), False)])


def full_row_schema(state_names: tuple[str, ...] = ()) -> StructType:
    """Spark schema of stored rows: ``key``, ``value`` and one ``state_<name>`` column per optimizer state.

    The one definition of the layout that batch saves (optimizer state kept
    for a warm start), the online change log and its snapshots share.

    Examples
    --------
    >>> full_row_schema(("z", "n")).fieldNames()
    ['key', 'value', 'state_z', 'state_n']
    >>> full_row_schema() == WEIGHTS_SCHEMA
    True
    """
    row = ArrayType(FloatType(), False)
    return StructType([StructField("key", LongType(), False), StructField("value", row, False)]
                      + [StructField(f"state_{name}", row, False) for name in state_names])


def arrow_schema(schema: StructType) -> pa.Schema:
    """The Arrow schema of stored rows of the Spark ``schema`` (:func:`full_row_schema`).

    Examples
    --------
    >>> arrow_schema(full_row_schema()).names
    ['key', 'value']
    """
    return pa.schema([pa.field(f.name, pa.int64() if f.name == "key" else
                               pa.list_(pa.field("element", pa.float32(), False)), nullable=False)
                      for f in schema])


def stored_rows(batch: pa.RecordBatch, schema: pa.Schema, nonzero_only: bool = True) -> pa.RecordBatch:
    """A shard export batch (fixed-size lists) as stored rows (lists) of ``schema``'s columns.

    With ``nonzero_only``, rows whose every stored number is 0 are dropped: a
    row with a zero weight but optimizer state (FTRL's ``z``, ``n`` under L1)
    is kept, since a warm start needs it.

    Examples
    --------
    >>> import pyarrow as pa
    >>> batch = pa.RecordBatch.from_pydict({"key": pa.array([1, 2, 3], pa.int64()),
    ...     "value": pa.FixedSizeListArray.from_arrays(pa.array([0.0, 0.0, 1.5], pa.float32()), 1),
    ...     "state_n": pa.FixedSizeListArray.from_arrays(pa.array([0.0, 2.0, 4.0], pa.float32()), 1)})
    >>> stored_rows(batch, arrow_schema(full_row_schema(("n",)))).to_pydict()
    {'key': [2, 3], 'value': [[0.0], [1.5]], 'state_n': [[2.0], [4.0]]}
    """
    names = [name for name in schema.names if name != "key"]
    flats = [batch.column(name).flatten().to_numpy(zero_copy_only=False).reshape(batch.num_rows, -1)
             for name in names]
    if nonzero_only:
        keep = np.flatnonzero(np.any(np.concatenate(flats, axis=1) != 0.0, axis=1) if flats else [])
    else:
        keep = np.arange(batch.num_rows)
    columns = [pa.array(batch.column("key").to_numpy()[keep])]
    for flat in flats:
        width = flat.shape[1]
        columns.append(pa.ListArray.from_arrays(pa.array(np.arange(len(keep) + 1, dtype=np.int32) * width),
                                                pa.array(flat[keep].ravel())))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def table_to_dataframe(spark: SparkSession, client: PSClient, table: str, counter=None,
                       state_names: tuple[str, ...] = ()) -> DataFrame:
    """A DataFrame whose tasks (one per shard) stream ``table``'s non-zero rows from the sidecars.

    ``counter``, a Spark accumulator, if given, is incremented by the rows
    each task yields. ``state_names`` adds the optimizer's state columns
    (:func:`full_row_schema`).

    Examples
    --------
    >>> from spark_ps.spark.context import PSContext
    >>> with PSContext.get(spark) as ps, ps.client() as client:
    ...     _ = ps.create_table("w", width=2, optimizer="delta")
    ...     client.push("w", [4, 9, 7], [[1.0, 0.5], [0.0, 0.0], [0.0, -2.0]])     # key 9 stays all-zero
    ...     sorted(table_to_dataframe(spark, client, "w").collect())
    [Row(key=4, value=[1.0, 0.5]), Row(key=7, value=[0.0, -2.0])]
    """
    return table_rows(spark, client, table, counter, state_names).frame()


def table_rows(spark: SparkSession, client: PSClient, table: str, counter=None,
               state_names: tuple[str, ...] = ()) -> deltawrite.TaskRows:
    """``table``'s non-zero rows as :class:`~spark_ps.spark.deltawrite.TaskRows` (one task per shard).

    What :func:`table_to_dataframe` reads, for a writer of
    :mod:`~spark_ps.spark.deltawrite` to write from the tasks that export it.

    Examples
    --------
    >>> from spark_ps.spark.context import PSContext
    >>> with PSContext.get(spark) as ps, ps.client() as client:
    ...     _ = ps.create_table("w", width=1, optimizer="delta")
    ...     client.push("w", [4, 9], [1.0, 0.0])
    ...     table_rows(spark, client, "w").frame().collect()
    [Row(key=4, value=[1.0])]
    """
    schema = full_row_schema(state_names)
    return deltawrite.TaskRows(_per_shard(spark, client), _exporter(client, table, schema, counter), schema)


def _per_shard(spark: SparkSession, client: PSClient) -> DataFrame:
    """One row (``id``: the shard) per partition: a job whose task ``i`` works on shard ``i``."""
    return spark.range(0, client.num_shards, 1, numPartitions=client.num_shards)


def _exporter(client: PSClient, table: str, schema: StructType,
              counter=None) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The function of a :func:`_per_shard` task: the stored rows (:func:`stored_rows`) of ``table`` on its shards.

    ``counter``, a Spark accumulator, if given, is incremented by the rows
    with a non-zero weight (as MLlib's numNonzeros; rows with only optimizer
    state do not count).
    """
    stored = arrow_schema(schema)

    def export(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for shard in batch.column("id").to_numpy().tolist():
                for rows in client.export(table, shards=[int(shard)]):
                    kept = stored_rows(rows, stored)
                    if counter is not None and kept.num_rows:
                        weights = kept.column("value").flatten().to_numpy(zero_copy_only=False)
                        counter.add(int(np.any(weights.reshape(kept.num_rows, -1) != 0.0, axis=1).sum()))
                    yield kept
        client.close()

    return export


def save_table(spark: SparkSession, client: PSClient, table: str, path: str, *, overwrite: bool = True,
               state_names: tuple[str, ...] = ()) -> int:
    """Write ``table``'s non-zero rows to the Delta table at ``path`` (a new Delta version); return the rows
    with a non-zero weight (rows with only optimizer state are written, not counted).

    ``state_names``: the optimizer state columns to keep with the weights
    (:func:`full_row_schema`), so that training can continue from the table.

    A new table on the local file system (a fit's export) is written by the
    tasks with pyarrow and committed by the driver
    (:func:`spark_ps.spark.deltawrite.write_new`); any other table goes
    through Delta's writer. Either way the write is the job's only stage, and
    an accumulator in its tasks sums the count (Spark merges a result stage's
    accumulator updates once per partition, whatever the retries).

    Examples
    --------
    >>> import os, tempfile
    >>> from spark_ps.spark.context import PSContext
    >>> path = os.path.join(tempfile.mkdtemp(), "weights")
    >>> with PSContext.get(spark) as ps, ps.client() as client:
    ...     _ = ps.create_table("w", width=1, optimizer="delta")
    ...     client.push("w", [1, 2, 3], [0.5, 0.0, 1.5])
    ...     save_table(spark, client, "w", path)
    2
    >>> sorted(spark.read.format("delta").load(path).collect())
    [Row(key=1, value=[0.5]), Row(key=3, value=[1.5])]
    """
    counter = spark.sparkContext.accumulator(0)
    rows = table_rows(spark, client, table, counter, state_names)
    local = deltawrite.new_local_table(spark, path)
    if local is None:  # an existing table, or one off the local file system: Delta's writer
        rows.frame().write.format("delta").mode("overwrite" if overwrite else "errorifexists").save(path)
    else:  # the tasks write their shards' rows straight to the table's files: no second pass through the JVM
        deltawrite.write_new(rows, local)
    return int(counter.value)


#: The exports whose thread has not finished (:func:`wait_for_exports`).
_RUNNING: set[BackgroundExport] = set()
_RUNNING_LOCK = threading.Lock()


def wait_for_exports(timeout: float | None = None) -> int:
    """Wait until the fits' background exports have finished; return how many were still running.

    Call it before ``spark.stop()``: a stop cuts off the exports still
    running, and those models' Delta weights are never written. An export's
    own error stays with it (:meth:`BackgroundExport.result` raises it).

    Parameters
    ----------
    timeout : float, optional
        Seconds to wait at most; None waits for all of them.

    Raises
    ------
    TimeoutError
        If exports are still running after ``timeout`` seconds (it names their tables' Delta paths).

    Examples
    --------
    >>> from spark_ps.ml.classification import LogisticRegression
    >>> model = LogisticRegression().fit(spark.createDataFrame([([1], 1.0), ([2], 0.0)] * 50,
    ...                                                        "features array<bigint>, label double"))
    >>> export = model._export; wait_for_exports(timeout=120) <= 1, export.done()
    (True, True)
    """
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    _, pending = wait([export._future for export in running], timeout=timeout)
    if pending:
        paths = sorted(export.path for export in running if export._future in pending)
        raise TimeoutError(f"{len(pending)} background export(s) still running after {timeout} s: {paths}")
    return len(running)


class BackgroundExport:
    """:func:`save_table` running in a driver thread; :meth:`result` waits for its row count.

    The thread is a :class:`pyspark.InheritableThread`, so the job carries the
    caller's local properties (job group, scheduler pool). It is not a daemon:
    a script that ends right after a fit still gets its weights written.
    ``then`` runs after the export, whether it succeeded or not (e.g. to drop
    the shard table it read).

    Parameters
    ----------
    spark : SparkSession
    client : PSClient
    table : str
        Shard table to export.
    path : str
        Delta table to write (a new table, or a new version of it).
    then : callable, optional
        Called with no arguments once the export has finished.
    state_names : tuple of str
        Optimizer state columns to export with the weights (:func:`full_row_schema`).

    Examples
    --------
    >>> import os, tempfile
    >>> from spark_ps.spark.context import PSContext
    >>> path = os.path.join(tempfile.mkdtemp(), "weights")
    >>> with PSContext.get(spark) as ps, ps.client() as client:
    ...     _ = ps.create_table("w", width=1, optimizer="delta"); client.push("w", [5, 6], [1.0, 2.0])
    ...     export = BackgroundExport(spark, client, "w", path, then=lambda: ps.drop_table("w"))
    ...     export.result(), export.done()
    (2, True)
    >>> "w" in PSContext.get(spark).client().list_tables()      # dropped by ``then``
    False
    """

    def __init__(self, spark: SparkSession, client: PSClient, table: str, path: str,
                 then: Callable[[], None] | None = None, state_names: tuple[str, ...] = ()):
        from pyspark import InheritableThread

        self.path = path
        self._state_names = state_names
        self._future: Future[int] = Future()
        self._future.set_running_or_notify_cancel()
        self._thread = InheritableThread(target=self._run, args=(spark, client, table, then),
                                         name=f"ps-export-{table}")
        with _RUNNING_LOCK:
            _RUNNING.add(self)
        self._thread.start()

    def _run(self, spark: SparkSession, client: PSClient, table: str, then: Callable[[], None] | None) -> None:
        start = time.perf_counter()
        try:
            rows = save_table(spark, client, table, self.path, state_names=self._state_names)
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits in result(), and logged
            log.error("exporting shard table %s to %s failed: %s", table, self.path, exc)
            self._future.set_exception(exc)
        else:
            seconds = time.perf_counter() - start
            log.info("saved %d weight rows to %s in %.1f s (%.0f rows/s)", rows, self.path, seconds,
                     rows / max(seconds, 1e-9))
            self._future.set_result(rows)
        finally:
            try:
                if then is not None:
                    then()
            finally:
                with _RUNNING_LOCK:
                    _RUNNING.discard(self)

    def done(self) -> bool:
        """Whether the export has finished (successfully or not).

        Examples
        --------
        >>> import os, tempfile
        >>> from spark_ps.spark.context import PSContext
        >>> with PSContext.get(spark) as ps, ps.client() as client:
        ...     _ = ps.create_table("w", width=1, optimizer="delta")
        ...     export = BackgroundExport(spark, client, "w", os.path.join(tempfile.mkdtemp(), "weights"))
        ...     _ = export.result(); export.done()
        True
        """
        return self._future.done()

    def result(self) -> int:
        """Wait for the export; return the rows with a non-zero weight it wrote, or raise its error.

        Examples
        --------
        >>> import os, tempfile
        >>> from spark_ps.spark.context import PSContext
        >>> with PSContext.get(spark) as ps, ps.client() as client:
        ...     export = BackgroundExport(spark, client, "missing", os.path.join(tempfile.mkdtemp(), "weights"))
        ...     export.result()
        Traceback (most recent call last):
        ...
        spark_ps.errors.RemoteKeyError: unknown table 'missing'...
        """
        try:
            return self._future.result()
        except Exception as exc:  # re-raised: as the task's own error where Spark's wrapper holds one
            raised = task_error(exc)
            if raised is None:
                raise
            raise raised from exc


def as_fixed_size(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Rows stored in Delta (``list<float>`` columns) as the shards' export format (fixed-size lists).

    Examples
    --------
    >>> import pyarrow as pa
    >>> batch = pa.RecordBatch.from_pydict({"key": [1, 2], "value": [[0.5, 1.0], [2.0, 3.0]]})
    >>> as_fixed_size(batch).schema.field("value").type
    FixedSizeListType(fixed_size_list<item: float>[2])
    """
    columns, fields = [], []
    for name, column in zip(batch.schema.names, batch.columns):
        if name != "key":
            lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
            width = int(lengths[0]) if len(lengths) else 1
            if len(lengths) and (lengths != width).any():
                raise ValueError(f"column {name!r}: rows of different widths {sorted(set(lengths.tolist()))}")
            column = pa.FixedSizeListArray.from_arrays(pc.cast(column.flatten(), pa.float32()), width)
        else:
            column = pc.cast(column, pa.int64())
        columns.append(column)
        fields.append(pa.field(name, column.type, nullable=False))
    return pa.RecordBatch.from_arrays(columns, schema=pa.schema(fields))


def _frame(spark: SparkSession, source: str | DataFrame) -> DataFrame:
    return read_version(spark, source) if isinstance(source, str) else source


def load_table(spark: SparkSession, client: PSClient, table: str, source: str | DataFrame) -> int:
    """Push weights (``key, value``: a Delta path, or a DataFrame) into the fresh ``delta`` ``table``; return rows.

    Examples
    --------
    >>> from spark_ps.spark.context import PSContext
    >>> weights = spark.createDataFrame([(3, [0.25]), (8, [-1.0])], WEIGHTS_SCHEMA)
    >>> with PSContext.get(spark) as ps, ps.client() as client:
    ...     _ = ps.create_table("serve", width=1, optimizer="delta")
    ...     load_table(spark, client, "serve", weights), client.pull("serve", [8, 3, 5]).ravel().tolist()
    (2, [-1.0, 0.25, 0.0])
    """

    def push(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        total = 0
        for batch in batches:
            if batch.num_rows == 0:
                continue
            keys = batch.column("key").to_numpy()
            values = batch.column("value")
            width = len(values[0])
            client.push(table, keys, values.flatten().to_numpy(zero_copy_only=False).reshape(-1, width))
            total += batch.num_rows
        client.close()
        yield pa.RecordBatch.from_pydict({"rows": [total]})

    counted = _frame(spark, source).select("key", "value").mapInArrow(push, "rows long")
    return int(counted.agg({"rows": "sum"}).first()[0] or 0)


def read_rows(spark: SparkSession, source: str | DataFrame, keys: list[int]) -> dict[int, list[float]]:
    """Rows for a handful of ``keys`` (e.g. the intercept) of a Delta path or DataFrame; filtered on the executors.

    Examples
    --------
    >>> weights = spark.createDataFrame([(-1, [0.5]), (3, [0.25]), (8, [-1.0])], WEIGHTS_SCHEMA)
    >>> read_rows(spark, weights, [-1, 8, 100])
    {-1: [0.5], 8: [-1.0]}
    """
    rows = _frame(spark, source).where(F.col("key").isin([int(k) for k in keys])).select("key", "value").collect()
    return {r["key"]: list(r["value"]) for r in rows}

