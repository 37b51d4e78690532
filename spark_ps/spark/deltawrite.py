"""Delta tables on the local file system written without Delta's writer: tasks write Parquet, the driver commits.

Decision: a fit's weights go to a new Delta table of their own (its
background export, :class:`spark_ps.ml.weights.BackgroundExport`). Through
Delta's writer that is a Spark job whose tasks hand rows to the JVM's Parquet
writer, then a commit that rebuilds the new table's state to write its
checksum: on ``local[2]`` 0.62-0.70 s for 3 rows in a warm application, and
5.9-7.4 s for the first write of a fresh one (Delta's classes and code paths
are loaded and compiled on first use, while the user's next job waits for the
cores). Here each task writes its rows with pyarrow (:func:`write_part`) and
returns one small row describing the file; the driver then commits the files
(:mod:`spark_ps.spark.deltacommit`), a few KB, as Delta itself would.
Measured (``bench.profile_fit --defaults``, a 60k-row model at 2^18, fresh
applications, alternating with the old code): the export after the first fit
took 0.55-0.64 s instead of 3.3-3.5 s, after the second 0.29-0.32 s instead of
1.4-1.5 s. The same path writes the streaming trainer's log and snapshots and
a model's later saves (:func:`save_frame` picks the writer: a new local table,
or an existing one that :func:`~spark_ps.spark.deltacommit.writable` accepts;
anything else, an ``hdfs://`` or ``s3a://`` path say, goes through Delta's
writer). Rows made in Python tasks (:class:`TaskRows`: a fit's weights, a
micro-batch's changed rows, exported from the shards) are written by the
tasks that make them, with no second pass through the JVM.

Nothing is half-written: the data files come first and are invisible until
the commit names them; a task attempt that failed leaves a file no commit
names (Delta's ``VACUUM`` removes such files), and the commit lists only the
files of the attempts whose results reached the driver.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from spark_ps.spark import hadoop
from spark_ps.spark.deltacommit import commit_new_table, commit_next, table_defaults, writable

__all__ = ["PART_SCHEMA", "TaskRows", "max_rows_per_file", "new_local_table", "save_frame", "write_new", "write_part"]

#: What a writing task returns for each file it wrote (the driver commits them): the file's name in the
#: table's directory, its size in bytes, its rows, its modification time (ms since the epoch), and
#: Delta's per-file statistics (JSON).
PART_SCHEMA = pa.schema([("name", pa.string()), ("size", pa.int64()), ("rows", pa.int64()),
                         ("modified_ms", pa.int64()), ("stats", pa.string())])

#: Delta writer options that change nothing when :func:`writable` holds (the schema is the table's already).
_OPTIONS_KEPT = frozenset({"mergeSchema", "overwriteSchema"})


def new_local_table(spark, path: str) -> str | None:
    """The local directory of ``path`` if it names a new table on the local file system; else None.

    "Local" is what Spark's Hadoop configuration resolves the path to (a path
    without a scheme is on ``fs.defaultFS``, which may be HDFS). A path that
    exists already is not new: its table is written through Delta. So is
    every table while the session sets a default table property
    (``spark.databricks.delta.properties.defaults.*``) that
    :func:`table_defaults` does not carry.

    Examples
    --------
    >>> import os, tempfile
    >>> root = tempfile.mkdtemp()
    >>> new_local_table(spark, os.path.join(root, "t")) == os.path.join(root, "t")
    True
    >>> new_local_table(spark, root) is None                     # exists
    True
    """
    local = hadoop.local_path(spark, path)
    return None if local is None or os.path.lexists(local) or table_defaults(spark) is None else local


class _Part:
    """One data file being written: its rows so far and the range of each of its int64 columns."""

    def __init__(self, directory: str, schema: pa.Schema):
        self.name = f"part-{uuid.uuid4()}-c000.snappy.parquet"
        self.path = os.path.join(directory, self.name)
        self.writer = pq.ParquetWriter(self.path, schema, compression="snappy")
        self.ranged = [field.name for field in schema if field.type == pa.int64()]
        self.rows, self.low, self.high = 0, {}, {}

    def write(self, batch: pa.RecordBatch) -> None:
        self.writer.write_batch(batch)
        self.rows += batch.num_rows
        for name in self.ranged:
            bounds = pc.min_max(batch.column(name))
            low, high = bounds["min"].as_py(), bounds["max"].as_py()
            if low is not None:  # a column of nulls has no range
                self.low[name] = low if name not in self.low else min(self.low[name], low)
                self.high[name] = high if name not in self.high else max(self.high[name], high)

    def close(self) -> dict[str, Any]:
        """Close the file; its :data:`PART_SCHEMA` row."""
        self.writer.close()
        keys = {"minValues": self.low, "maxValues": self.high} if self.low else {}
        status = os.stat(self.path)
        return {"name": self.name, "size": status.st_size, "rows": self.rows,
                "modified_ms": status.st_mtime_ns // 1_000_000,
                "stats": json.dumps({"numRecords": self.rows, **keys}, separators=(",", ":"))}


def write_part(directory: str, batches: Iterable[pa.RecordBatch], max_rows: int = 0) -> pa.RecordBatch:
    """Write ``batches`` (of one schema) to new Parquet files in ``directory``, ``max_rows`` rows at most each.

    Runs in a task. Returns one :data:`PART_SCHEMA` row per file written:
    one file if ``max_rows`` is 0 (as ``spark.sql.files.maxRecordsPerFile``),
    none if there were no rows (Delta lists no empty files). A file's
    statistics are its row count and the range of each int64 column (Delta
    skips files by them: by ``key``, and by the stream log's ``batch``).

    Examples
    --------
    >>> import tempfile
    >>> schema = pa.schema([("key", pa.int64()), ("value", pa.list_(pa.float32()))])
    >>> part = write_part(tempfile.mkdtemp(), [pa.record_batch([[3, -1], [[0.5], [2.0]]], schema=schema)])
    >>> part.column("rows").to_pylist(), json.loads(part.column("stats")[0].as_py())["minValues"]
    ([2], {'key': -1})
    >>> write_part(tempfile.mkdtemp(), [pa.record_batch([[1, 2, 3], [[0.0]] * 3], schema=schema)] * 2,
    ...            max_rows=4).column("rows").to_pylist()
    [4, 2]
    """
    done, part = [], None
    try:
        for batch in batches:
            while batch.num_rows:
                if part is None:
                    os.makedirs(directory, exist_ok=True)
                    part = _Part(directory, batch.schema)
                room = max_rows - part.rows if max_rows > 0 else batch.num_rows
                part.write(batch.slice(0, room))
                batch = batch.slice(room)
                if max_rows > 0 and part.rows >= max_rows:
                    done.append(part.close())
                    part = None
        if part is not None:
            done.append(part.close())
            part = None
    finally:
        if part is not None:  # a failed read: the open file is closed and left to no commit
            part.writer.close()
    return pa.RecordBatch.from_pylist(done, schema=PART_SCHEMA)


def max_rows_per_file(spark) -> int:
    """Rows per data file at most, as Spark's writers take it (``spark.sql.files.maxRecordsPerFile``; 0: no limit).

    Examples
    --------
    >>> max_rows_per_file(spark)
    0
    """
    return int(spark.conf.get("spark.sql.files.maxRecordsPerFile", "0"))


@dataclass(frozen=True)
class TaskRows:
    """Rows that tasks make: ``make`` applied to the Arrow batches of each partition of ``source``.

    The writers of this module write them from the tasks that make them,
    with no second pass through the JVM; Delta's writer gets :meth:`frame`.
    ``make`` None: the rows are ``source``'s own (a DataFrame is written as
    such wherever a ``TaskRows`` is accepted).

    Examples
    --------
    >>> def doubled(batches):
    ...     for batch in batches:
    ...         yield pa.record_batch([pa.compute.multiply(batch.column("id"), 2)], names=["id"])
    >>> rows = TaskRows(spark.range(3), doubled, spark.range(0).schema)
    >>> sorted(r.id for r in rows.frame().collect())
    [0, 2, 4]
    """

    #: The DataFrame whose partitions the tasks read.
    source: Any
    #: What a task makes of its partition's Arrow batches (None: the batches themselves).
    make: Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]] | None
    #: The rows' Spark schema (``StructType``).
    schema: Any

    @property
    def task(self) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
        """What a task makes of its partition's Arrow batches: ``make``, or the batches themselves.

        A plain function, which Spark pickles into the tasks (this object holds a DataFrame: it would not).
        """
        return _same if self.make is None else self.make

    def frame(self):
        """The rows as a DataFrame (``source`` itself when the tasks make nothing of their own)."""
        return self.source if self.make is None else self.source.mapInArrow(self.make, self.schema)


def _same(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    return batches


def _task_rows(rows) -> TaskRows:
    """``rows`` as a :class:`TaskRows` (a DataFrame's rows are its own)."""
    return rows if isinstance(rows, TaskRows) else TaskRows(rows, None, rows.schema)


def write_new(rows, directory: str, user_metadata: str | None = None) -> None:
    """Write ``rows`` (a DataFrame or :class:`TaskRows`) as version 0 of a new Delta table at local ``directory``.

    One Spark job: each task writes its rows to a file, or to files of
    ``spark.sql.files.maxRecordsPerFile`` rows (:func:`write_part`); the
    driver then commits the files (:func:`commit_new_table`), with
    ``user_metadata`` as the commit's ``userMetadata``, as Delta's writer
    option of that name. ``directory`` must be new (:func:`new_local_table`).

    Examples
    --------
    >>> import os, tempfile
    >>> table, frame = os.path.join(tempfile.mkdtemp(), "t"), spark.range(5).selectExpr("id AS key")
    >>> write_new(frame, table, user_metadata="v0")
    >>> from delta.tables import DeltaTable
    >>> spark.read.format("delta").load(table).count(), DeltaTable.forPath(spark, table).history().first().userMetadata
    (5, 'v0')
    """
    rows = _task_rows(rows)
    commit_new_table(directory, rows.schema.jsonValue(), _write_files(rows, directory), user_metadata=user_metadata,
                     configuration=table_defaults(rows.source.sparkSession))


def _write_files(rows: TaskRows, directory: str) -> list[dict[str, Any]]:
    """One Spark job: each task writes the rows it makes (:func:`write_part`); their :data:`PART_SCHEMA` rows."""
    from pyspark.sql.pandas.types import from_arrow_schema

    max_rows, make = max_rows_per_file(rows.source.sparkSession), rows.task

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        yield write_part(directory, make(batches), max_rows)

    return [row.asDict() for row in rows.source.mapInArrow(write, from_arrow_schema(PART_SCHEMA)).collect()]


def save_frame(frame, path: str, mode: str, user_metadata: str | None = None,
               options: dict[str, str] | None = None) -> None:
    """Save ``frame`` to the Delta table at ``path``, committed here when :func:`writable` allows, else by Delta.

    ``frame`` is a DataFrame or :class:`TaskRows`. A new local table is
    written by :func:`write_new`; an existing one that
    :func:`writable` accepts gets its next version from :func:`commit_next`;
    anything else goes through Delta's writer. ``mode`` (``append`` or
    ``overwrite``) and ``options`` are Delta's writer's (a new table is
    created whatever the mode); ``user_metadata`` is the commit's
    ``userMetadata``.

    Examples
    --------
    >>> import os, tempfile
    >>> from spark_ps.spark import deltalog
    >>> table = os.path.join(tempfile.mkdtemp(), "t")
    >>> for rows in (2, 3):
    ...     save_frame(spark.range(rows), table, "append")
    >>> save_frame(spark.range(1).selectExpr("'x' AS id"), table, "overwrite", options={"overwriteSchema": "true"})
    >>> [deltalog.commit_info(spark, table, v)["engineInfo"][:6] for v in (0, 1, 2)]
    ['spark-', 'spark-', 'Apache']
    >>> spark.read.format("delta").load(table).collect()
    [Row(id='x')]
    """
    rows = _task_rows(frame)
    spark = rows.source.sparkSession
    local = new_local_table(spark, path)
    if local is not None:
        write_new(rows, local, user_metadata=user_metadata)
        return
    local = writable(spark, path, rows.schema, mode) if set(options or {}) <= _OPTIONS_KEPT else None
    if local is not None:
        commit_next(spark, local, _write_files(rows, local), mode, rows.schema, user_metadata=user_metadata)
        return
    writer = rows.frame().write.format("delta").mode(mode).options(**(options or {}))
    if user_metadata is not None:
        writer = writer.option("userMetadata", user_metadata)
    writer.save(path)


