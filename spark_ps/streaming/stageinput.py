"""What a micro-batch's training stage reads: the batch as Spark converts it, or its Parquet files directly.

Decision. When the stream's events are a bare Parquet file source
(``spark.readStream.schema(s).parquet(dir)``, at most a selection of its
columns), the training tasks read each batch's files themselves with
pyarrow, each task an even share of the batch's rows, and the stage maps
over one empty row per task. Any other source, or any transformation between
the source and the trainer, gives the batch to the tasks as Spark converts
it (``mapInArrow``). The choice is made per batch; both paths give the tasks
the same rows, as the same Arrow columns (the equivalence is a test).

Why, measured on ``local[2]`` (``bench.stream``'s 50k-row batches, about 30
non-zeros a row, d = 2^22, one 4.3 MB file of two row groups a batch):

- **One task trained every row.** Spark splits a file into byte ranges of
  at least ``spark.sql.files.openCostInBytes`` (4 MB) and gives a row group
  to the range holding its middle: both row groups went to the first task
  (50k rows: 0.36 s of work) while the second had none. Here the tasks split
  the rows evenly, whatever the files' row groups.
- **Reading them costs a tenth.** Spark's conversion of those 50k rows to
  Arrow took the training task 0.08-0.10 s (most of its 0.11-0.13 s
  "load"); pyarrow reads the same rows from the file in 0.02 s.

What it reads is what Spark would have. The files are the batch's own: the
``FileScanRDD`` under the DataFrame ``foreachBatch`` receives (Spark's
choice for this batchId, so a replayed batch reads the same files), and
only if its byte ranges cover each file whole. The direct read is refused,
and the batch goes through Spark, for a file not on the local file system
(the tasks open it with the operating system: an object store would need
its credentials outside Hadoop's configuration; not wired), for a column
missing from a file or of another Arrow type than Spark's conversion would
deliver (read from the files' footers on the driver, per batch; Spark would
match a name case-insensitively or widen a type), for a source option that
changes what a file's rows are (``mergeSchema``, a rebase mode, ...: only
the options that choose files are allowed, :data:`FILE_CHOICE_OPTIONS`),
and for a session that ignores corrupt or missing files.

Spark's progress still counts the batch's rows: Spark reports a batch's
``numInputRows`` from its scan's row counter, which a direct read never
runs, so the trainer sets that counter to the rows its tasks read
(:func:`report_input_rows`) before the batch ends. (Through Spark, the
counter counts every scan of the batch: a stream's first batch, which the
trainer reads once more to settle the vectors' size, and a batch with bad
rows, which the quarantine reads again, count their rows twice, as any
``foreachBatch`` that runs two actions does.)
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Iterator

import pyarrow as pa
from pyspark.sql import DataFrame

__all__ = ["FILE_CHOICE_OPTIONS", "BatchFiles", "ParquetSource", "StageInput", "report_input_rows", "same_layout",
           "stage_input", "task_batches", "training_columns"]

log = logging.getLogger("spark_ps.streaming")

#: Options of Spark's file source that choose a batch's files, not what a file's rows are (lower case).
FILE_CHOICE_OPTIONS = frozenset({
    "path", "maxfilespertrigger", "maxbytespertrigger", "latestfirst", "filenameonly", "maxfileage",
    "cleansource", "sourcearchivedir", "pathglobfilter", "recursivefilelookup", "modifiedbefore",
    "modifiedafter", "maxcachedfiles", "discardcachedinputratio"})
#: What ``DataStreamReader.parquet`` and ``format("parquet")`` name their source.
_PARQUET_FORMATS = frozenset({"parquet", "org.apache.spark.sql.execution.datasources.parquet.ParquetFileFormat"})
#: Session settings under which Spark skips files that a direct read would fail on.
_SKIPPING_CONFS = ("spark.sql.files.ignoreCorruptFiles", "spark.sql.files.ignoreMissingFiles")


def same_layout(a: pa.DataType, b: pa.DataType) -> bool:
    """Whether Arrow types ``a`` and ``b`` have the same layout: names and types, not nullability or list item names.

    Examples
    --------
    >>> same_layout(pa.list_(pa.field("element", pa.int32(), nullable=False)), pa.list_(pa.int32()))
    True
    >>> same_layout(pa.struct([("size", pa.int32())]), pa.struct([("size", pa.int64())]))
    False
    """
    if pa.types.is_struct(a) and pa.types.is_struct(b):
        return a.num_fields == b.num_fields and all(
            a.field(i).name == b.field(i).name and same_layout(a.field(i).type, b.field(i).type)
            for i in range(a.num_fields))
    if pa.types.is_list(a) and pa.types.is_list(b):
        return same_layout(a.value_type, b.value_type)
    return a == b


@dataclasses.dataclass(frozen=True)
class BatchFiles:
    """A micro-batch's Parquet files (local paths, in Spark's order), their row groups' rows, the columns to read.

    The driver read the row counts from the footers with the columns' types:
    a task opens only the files its share of the rows is in.

    Examples
    --------
    >>> import os, tempfile, pyarrow.parquet as pq
    >>> root = tempfile.mkdtemp()
    >>> for name, values in (("a", range(5)), ("b", range(5, 8))):
    ...     pq.write_table(pa.table({"x": list(values), "y": [0] * len(values)}), os.path.join(root, name),
    ...                    row_group_size=2)
    >>> files = BatchFiles((os.path.join(root, "a"), os.path.join(root, "b")), ((2, 2, 1), (2, 1)), ("x",))
    >>> [[v for b in files.read(w, 3) for v in b.column("x").to_pylist()] for w in range(3)]
    [[0, 1], [2, 3, 4], [5, 6, 7]]
    """

    paths: tuple[str, ...]
    row_groups: tuple[tuple[int, ...], ...]
    columns: tuple[str, ...]

    def read(self, worker: int, workers: int) -> Iterator[pa.RecordBatch]:
        """Task ``worker``'s share of the rows: the ``worker``-th of ``workers`` even, contiguous row ranges.

        Only the row groups that overlap the range are read, one at a time.
        """
        import pyarrow.parquet as pq

        total = sum(map(sum, self.row_groups))
        lo, hi = total * worker // workers, total * (worker + 1) // workers
        start = 0  # the first row of the row group at hand, in the whole batch
        for path, rows in zip(self.paths, self.row_groups):
            parquet = None  # opened only if the share has rows in it
            for group, n in enumerate(rows):
                first, stop = max(lo, start), min(hi, start + n)
                if first < stop:
                    parquet = parquet or pq.ParquetFile(path)
                    table = parquet.read_row_group(group, columns=list(self.columns), use_threads=False)
                    yield from table.slice(first - start, stop - first).to_batches()
                start += n


@dataclasses.dataclass(frozen=True)
class ParquetSource:
    """A stream whose micro-batches are a Parquet file source's rows as they are: their files can be read directly.

    Build it with :meth:`of`, which returns None for any other stream.
    """

    #: The columns the training tasks read, with the Arrow types Spark's conversion would give them.
    columns: tuple[tuple[str, pa.DataType], ...]

    @classmethod
    def of(cls, events: DataFrame, columns: list[str]) -> ParquetSource | None:
        """The direct reader of ``events``' batches, if they are a bare Parquet file source's rows; else None.

        Examples
        --------
        >>> import tempfile
        >>> path = tempfile.mkdtemp()
        >>> events = spark.readStream.schema("label double, x double").parquet(path)
        >>> ParquetSource.of(events.select("label"), ["label"]).columns
        (('label', DataType(double)),)
        >>> ParquetSource.of(events.where("x > 0"), ["label"]), ParquetSource.of(
        ...     spark.readStream.schema("label double").option("mergeSchema", "true").parquet(path), ["label"])
        (None, None)
        """
        from pyspark.sql.pandas.types import to_arrow_type

        reason = _why_not(events)
        if reason is not None:
            log.info("the training tasks get each batch through Spark: %s", reason)
            return None
        return cls(tuple((c, to_arrow_type(events.schema[c].dataType)) for c in columns))

    def batch(self, df: DataFrame) -> BatchFiles | None:
        """The files of micro-batch ``df`` (the DataFrame ``foreachBatch`` received), if they can be read directly.

        None, and the batch goes through Spark, if Spark's scan of the batch
        is not a ``FileScanRDD`` of whole local files whose footers give the
        columns the Arrow types :attr:`columns` states.
        """
        import pyarrow.parquet as pq

        paths = _scanned_files(df)
        if paths is None:
            return None
        row_groups = []
        for path in paths:
            footer = pq.read_metadata(path)
            row_groups.append(tuple(footer.row_group(g).num_rows for g in range(footer.num_row_groups)))
            schema = footer.schema.to_arrow_schema()
            for name, arrow_type in self.columns:
                i = schema.get_field_index(name)
                if i < 0 or not same_layout(schema.field(i).type, arrow_type):
                    log.info("batch file %s: column %r is %s, not %s: this batch goes through Spark", path, name,
                             "missing" if i < 0 else schema.field(i).type, arrow_type)
                    return None
        return BatchFiles(tuple(paths), tuple(row_groups), tuple(name for name, _ in self.columns))


def _why_not(events) -> str | None:
    """Why ``events``' batches cannot be read from their files (None: they can)."""
    conf = events.sparkSession.conf
    for key in _SKIPPING_CONFS:
        if conf.get(key, "false").lower() == "true":
            return f"{key} is true"
    node = events._jdf.queryExecution().analyzed()
    while node.getClass().getSimpleName() == "Project":
        projection = node.projectList()
        for i in range(projection.size()):
            if not projection.apply(i).getClass().getSimpleName() == "AttributeReference":
                return f"the events compute a column ({projection.apply(i).sql()})"
        node = node.child()
    if node.getClass().getSimpleName() != "StreamingRelation":
        return f"the events are not a file source's rows as they are (plan: {node.nodeName()})"
    source = node.dataSource()
    if source.className() not in _PARQUET_FORMATS:
        return f"the source is {source.className()}, not Parquet files"
    options = source.options()
    keys = options.keySet().iterator()
    while keys.hasNext():
        key = keys.next()
        if key.lower() not in FILE_CHOICE_OPTIONS:
            return f"the source's option {key!r} may change what a file's rows are"
    return None


def _scanned_files(df) -> list[str] | None:
    """The local files micro-batch ``df`` scans whole, in Spark's order; None if its scan is anything else."""
    from urllib.parse import unquote, urlparse

    plan = df._jdf.queryExecution().analyzed()
    if plan.getClass().getSimpleName() != "LogicalRDD":
        return None
    rdd = plan.rdd()
    while not rdd.getClass().getName().endswith(".FileScanRDD"):
        dependencies = rdd.dependencies()
        if dependencies.size() != 1:
            return None
        rdd = dependencies.apply(0).rdd()
    ranges: dict[str, list[tuple[int, int]]] = {}
    sizes: dict[str, int] = {}
    partitions = rdd.filePartitions()
    for i in range(partitions.size()):
        for split in partitions.apply(i).files():
            url = split.filePath().toString()
            ranges.setdefault(url, []).append((int(split.start()), int(split.length())))
            sizes[url] = int(split.fileSize())
    paths = []
    for url, spans in ranges.items():
        parsed = urlparse(url)
        if parsed.scheme != "file" or not _covers(sorted(spans), sizes[url]):
            return None
        paths.append(unquote(parsed.path))
    return paths


def _covers(spans: list[tuple[int, int]], size: int) -> bool:
    """Whether sorted ``(start, length)`` byte ranges cover ``[0, size)`` exactly, end to end.

    Examples
    --------
    >>> _covers([(0, 4), (4, 2)], 6), _covers([(0, 4)], 6), _covers([(0, 4), (3, 3)], 6)
    (True, False, False)
    """
    end = 0
    for start, length in spans:
        if start != end:
            return False
        end = start + length
    return end == size


@dataclasses.dataclass(frozen=True)
class StageInput:
    """What a micro-batch's training stage maps over, and how.

    Attributes
    ----------
    frame : DataFrame
        The micro-batch as ``foreachBatch`` received it.
    columns : tuple of str
        The columns the estimator reads (:func:`training_columns`).
    stage : DataFrame
        What the barrier stage maps over: ``data`` in partitions it can run on, or one empty row per task.
    workers : int
        The stage's tasks.
    files : BatchFiles or None
        The files each task reads its share of instead of its partition (None: the partition is the input).
    """

    frame: DataFrame
    columns: tuple[str, ...]
    stage: DataFrame
    workers: int
    files: BatchFiles | None = None

    @functools.cached_property
    def data(self) -> DataFrame:
        """The batch's :attr:`columns`: what the first batch's size check and the quarantine read (built on use)."""
        return self.frame.select(*self.columns)


def training_columns(estimator) -> list[str]:
    """The columns of a batch the estimator trains on: features, label, and weight if it has one.

    Examples
    --------
    >>> from spark_ps.ml.classification import LogisticRegression
    >>> training_columns(LogisticRegression(weightCol="w"))
    ['features', 'label', 'w']
    """
    return [c for c in (estimator.getFeaturesCol(), estimator.getLabelCol(), estimator._weight_col()) if c]


def stage_input(df: DataFrame, estimator, slots: int, source: ParquetSource | None) -> StageInput:
    """The training stage's input for micro-batch ``df``: its files if ``source`` can read them, else ``df``.

    Through Spark, a batch with more partitions than the estimator's workers
    (``numWorkers``, at most the slots), or one a barrier stage cannot run on
    as it is, is repartitioned to that many
    (:func:`~spark_ps.spark.tasks.barrier_input`); one with fewer trains with
    one task per partition, which costs no shuffle. An empty batch (no
    partition) becomes one empty partition. From its files, the batch is
    split evenly between the workers.

    Examples
    --------
    >>> from spark_ps.ml.classification import LogisticRegression
    >>> batch = spark.range(4, numPartitions=1).selectExpr("1.0 AS label", "id AS features", "id")
    >>> got = stage_input(batch, LogisticRegression(), 2, None)
    >>> got.data.columns, got.workers, got.files
    (['features', 'label'], 1, None)
    """
    from spark_ps.spark.tasks import barrier_input

    columns = tuple(training_columns(estimator))
    workers = max(1, min(estimator.getNumWorkers() or slots, slots))
    files = source.batch(df) if source is not None else None
    if files is not None:
        return StageInput(df, columns, df.sparkSession.range(0, workers, 1, numPartitions=workers), workers, files)
    stage, workers = barrier_input(df.select(*columns), workers, fewer=True)
    return StageInput(df, columns, stage, workers)


def task_batches(batches: Iterator[pa.RecordBatch], files: BatchFiles | None, worker: int,
                 workers: int) -> Iterator[pa.RecordBatch]:
    """A stage task's rows: its partition's Arrow ``batches``, or its share of ``files`` (:attr:`StageInput.files`).

    With ``files``, the task's partition is one empty row, drained here.

    Examples
    --------
    >>> import os, tempfile, pyarrow.parquet as pq
    >>> path = os.path.join(tempfile.mkdtemp(), "a")
    >>> pq.write_table(pa.table({"x": [1, 2, 3, 4]}), path)
    >>> placeholder = iter([pa.record_batch([[0]], names=["id"])])
    >>> [b.column("x").to_pylist() for b in task_batches(placeholder, BatchFiles((path,), ((4,),), ("x",)), 1, 2)]
    [[3, 4]]
    >>> [b.num_rows for b in task_batches(iter([pa.record_batch([[7]], names=["x"])]), None, 0, 2)]
    [1]
    """
    if files is None:
        return batches
    for _ in batches:
        pass
    return files.read(worker, workers)


def report_input_rows(spark, batch_session, rows: int) -> bool:
    """Set the running micro-batch's input row count in Spark's progress to ``rows``; whether it could.

    ``spark`` is the session that started the query, ``batch_session`` the
    one of the DataFrame ``foreachBatch`` received (the query's own clone):
    its thread names the query. The count Spark reports is its file scan's
    ``numOutputRows``: set, not added to, so a batch that Spark also scanned
    (the first batch's size check, a quarantine) is not counted twice.
    """
    query_id = batch_session.sparkContext.getLocalProperty("sql.streaming.queryId")
    query = spark.streams.get(query_id) if query_id else None
    if query is None:
        return False
    leaves = query._jsq.streamingQuery().lastExecution().executedPlan().collectLeaves()
    scans = [leaves.apply(i) for i in range(leaves.size())
             if leaves.apply(i).getClass().getSimpleName() == "FileSourceScanExec"]
    if len(scans) != 1:
        return False
    scans[0].metrics().apply("numOutputRows").set(rows)
    return True
