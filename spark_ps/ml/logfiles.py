"""The rows of a model store's change log as the tasks that make them write them: batch and writer tags, files.

Every row of ``<modelPath>/log`` carries the batch that wrote it and the
writer that committed it (:mod:`spark_ps.ml.modelstore`, "The fence"):
:func:`tag` adds the two columns to an Arrow batch, in the task.

Decision: a micro-batch's training tasks write its changed rows to the log
themselves (:class:`LogFiles`), and the driver only commits the files. The
rows used to come from a Spark job of their own after the training stage,
one task per shard (:func:`spark_ps.streaming.training.changed_rows`): a
probe timing each step of 50-row micro-batches on ``local[2]`` measured
that job at 0.16 s of a batch's 0.43 s, nearly all of it the job's launch
(the batch changed 32 rows), and the streaming bench at 0.13 s of a 50k-row
batch's 0.80 s. The training tasks meet once more after their last push,
and each exports the marked rows of its share of the shards. A table the
driver cannot commit to directly (not local, or a version Delta's writer
must checkpoint: :func:`~spark_ps.spark.deltacommit.writable`) still gets
its rows from that job, through Delta's writer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
from pyspark.sql.types import LongType, StringType, StructField, StructType

from spark_ps.spark.deltawrite import write_part

__all__ = ["BATCH_COL", "WRITER_COL", "LogFiles", "tag", "tagged_schema"]

#: Column of the log holding the batch that wrote the row.
BATCH_COL = "batch"
#: Column of the log holding the id of the writer (:attr:`ModelStore.writer_id`) that committed the row.
WRITER_COL = "writer"


def tag(batch: pa.RecordBatch, batch_id: int, writer: str | None) -> pa.RecordBatch:
    """``batch`` with two constant columns: :data:`BATCH_COL` ``batch_id`` and :data:`WRITER_COL` ``writer``.

    Examples
    --------
    >>> tag(pa.record_batch([[3, 4]], names=["key"]), 7, "w").to_pylist()
    [{'key': 3, 'batch': 7, 'writer': 'w'}, {'key': 4, 'batch': 7, 'writer': 'w'}]
    """
    constants = [pa.repeat(pa.scalar(batch_id, pa.int64()), batch.num_rows),
                 pa.repeat(pa.scalar(writer, pa.string()), batch.num_rows)]
    return pa.RecordBatch.from_arrays([*batch.columns, *constants], names=[*batch.schema.names, BATCH_COL, WRITER_COL])


def tagged_schema(schema: StructType) -> StructType:
    """The Spark schema of rows of ``schema`` after :func:`tag`.

    Examples
    --------
    >>> tagged_schema(StructType([StructField("key", LongType())])).fieldNames()
    ['key', 'batch', 'writer']
    """
    return StructType([*schema.fields, StructField(BATCH_COL, LongType()), StructField(WRITER_COL, StringType())])


@dataclasses.dataclass(frozen=True)
class LogFiles:
    """Where the tasks of batch ``batch_id`` write its log rows (local ``directory``), and the files they wrote.

    Made by :meth:`~spark_ps.ml.modelstore.ModelStore.log_files` on the
    driver, pickled into the tasks; each task's :meth:`write` returns its
    files, and :meth:`~spark_ps.ml.modelstore.ModelStore.commit` commits
    :meth:`with_files` of all of them in one Delta version. Files no commit
    names stay invisible (a failed attempt's; Delta's ``VACUUM`` removes them).

    Examples
    --------
    >>> import tempfile
    >>> log = LogFiles(tempfile.mkdtemp(), StructType([StructField("key", LongType())]), 7, "w", 0)
    >>> files = log.write([pa.record_batch([[3, -1]], names=["key"])])
    >>> [f["rows"] for f in files], len(log.with_files(files).files), log.table_schema.fieldNames()
    ([2], 1, ['key', 'batch', 'writer'])
    """

    #: The log table's local directory.
    directory: str
    #: The Spark schema of the rows the tasks make (:func:`~spark_ps.ml.weights.full_row_schema`), before the tags.
    schema: StructType
    batch_id: int
    writer: str
    #: Rows a file at most (0: one file per task), ``spark.sql.files.maxRecordsPerFile``.
    max_rows: int
    #: The files the tasks wrote: :data:`~spark_ps.spark.deltawrite.PART_SCHEMA` rows.
    files: tuple[dict[str, Any], ...] = ()

    @property
    def table_schema(self) -> StructType:
        """The Spark schema of the rows the files hold: :attr:`schema` and the tags (:func:`tagged_schema`)."""
        return tagged_schema(self.schema)

    def write(self, batches: Iterable[pa.RecordBatch]) -> list[dict[str, Any]]:
        """Tag ``batches`` and write them to new files of the log (in a task); the files' descriptions."""
        return write_part(self.directory, self._tagged(batches), self.max_rows).to_pylist()

    def with_files(self, files: Iterable[dict[str, Any]]) -> LogFiles:
        """This batch's log with ``files`` written (what the driver commits)."""
        return dataclasses.replace(self, files=tuple(files))

    def _tagged(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            yield tag(batch, self.batch_id, self.writer)
