"""The durable truth of an online model: a Delta change log of full rows, plus compacted snapshots.

Decision: the parameter-server shards are a cache, and the model directory
is the one source of truth. Each committed micro-batch appends, in **one**
Delta commit to ``<modelPath>/log``, the complete rows (weights *and*
optimizer state: FTRL's ``z``/``n``, AdaGrad's sums, ...) of every key the
batch changed, with Spark's ``batchId``, the batch's metrics and source
offsets in the commit's ``userMetadata``. So:

* a replayed batch finds its ``batchId`` already committed and changes
  nothing;
* a batch that failed half-way has committed nothing: the shards, which
  may hold half its updates, are rebuilt from the log before the next batch;
* rows are absolute, not increments, so recovery needs no ordering of
  deltas: the state after commit ``v`` is, per key, the newest row in the
  log up to ``v`` (or in the snapshot the log continues). A batch committed
  twice would therefore not apply its update twice; still, only the first
  commit of a ``batchId`` counts (below);
* every commit is a Delta version, so ``load(path, version=v)`` is Delta
  time travel, and :meth:`ModelStore.metrics` is the table's history.

**The fence.** One trainer writes a model path. Before appending, it reads
the newest commit file of the log (``_delta_log/<version>.json``, a few ms)
and refuses a ``batchId`` that is not newer than the newest committed one.
A second writer that raced it (a zombie driver of the same stream, woken
after its successor committed the same batch) can still land a commit of
that ``batchId``: every log row carries its writer's id (``writer``), and
readers count only the **first** commit of each ``batchId``
(:meth:`ModelStore.commits` drops the later ones, :meth:`ModelStore.state`
their rows), while the losing writer finds the earlier commit after its
append and fails its batch.

**Cost of a commit.** The first version fenced with Delta's idempotent
writes (``txnAppId``/``txnVersion``). To check a ``txnVersion``, Delta 4.0
(and 4.4, tried) rebuilds the table's state before every write: three Spark
jobs. Measured on ``local[2]``, appending 243k changed rows (a 100k-row
micro-batch at d=2^22) twelve times: 1.1 to 2.0 s a commit with the
``txnVersion``, 0.5 to 0.9 s without it, 0.3 to 0.8 s for plain Parquet.
Every tenth commit Delta also writes a checkpoint of the log, which cost 2.4
to 5.8 s; the store's tables checkpoint every :data:`CHECKPOINT_INTERVAL`
commits instead (readers replay at most that many small commit files).
On the local file system the commits are now written without Delta's writer
(:mod:`spark_ps.spark.deltacommit`): the tasks that export a batch's changed
rows from the shards write them to the log's files, and the driver commits
them, Delta's writer taking every :data:`CHECKPOINT_INTERVAL`-th version to
checkpoint it. A 50-row batch's commit took 0.27-0.42 s instead of
0.70-0.83 s; at 100k rows a batch (d=2^22), a batch's latency less scoring
and training fell from 1.22-1.43 s to 0.87 s (``bench.stream``).
A writer does its Delta work in a session of its own
(:attr:`ModelStore.session`, same SparkContext) that carries these settings,
with ``max(1, defaultParallelism)`` snapshot partitions unless the user's
session set it (50 by default: 2.1 to 3.5 s a commit), and reads the version
it wrote from the newest file of the Delta log rather than from
``history(1)``, a Spark job of 0.2-0.9 s.

A snapshot (``<modelPath>/snapshot``, a new Delta version each time) is the
compacted state after a batch; recovery reads it and the log after it, and
log rows older than the retained snapshots can be deleted and vacuumed. A
trainer writes it from its shards, which hold exactly the committed state
(0.28-0.35 s for a small model, against 2.1-5.7 s for the newest-row-per-key
window over the snapshot and the log that :meth:`ModelStore.state` computes).
Everything here is a Spark job run on the executors: the driver reads only
commit metadata.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from spark_ps.ml.logfiles import BATCH_COL, WRITER_COL, LogFiles, tag, tagged_schema
from spark_ps.spark import deltawrite, hadoop
from spark_ps.spark.deltacommit import commit_next, writable
from spark_ps.spark.deltalog import commit_info, commit_versions, log_dir, read_version

__all__ = ["Commit", "ModelStore"]

#: Commits between two checkpoints of the store's Delta tables (Delta's default, 10, put one 2.4-5.8 s
#: checkpoint in every tenth micro-batch).
CHECKPOINT_INTERVAL = 100
_CHECKPOINT_DEFAULT = "spark.databricks.delta.properties.defaults.checkpointInterval"
#: Delta drops a blind append that adds no file (true by default); a batch that changed no row (all its rows
#: quarantined) must still commit its batchId and metrics.
_SKIP_EMPTY_COMMITS = "spark.databricks.delta.skipRecordingEmptyCommits"
_LISTING_PARALLELISM = "spark.sql.sources.parallelPartitionDiscovery.parallelism"
_SNAPSHOT_PARTITIONS = "spark.databricks.delta.snapshotPartitions"
_DELTA_CONF_PREFIX = "spark.databricks.delta."
_COMMIT_FILE = re.compile(r"^(\d{20})\.json$")
_RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"
#: Batch id of a log's seed commit (:meth:`ModelStore.seed`): before Spark's first batch, 0.
SEED_BATCH = -1


@dataclass(frozen=True)
class Commit:
    """One committed micro-batch: its Delta version in the log, the metadata stored with it, when it committed."""

    version: int
    batch_id: int
    metadata: dict[str, Any]
    #: When the commit's file was written (the time Delta's history shows), milliseconds since the epoch.
    committed_ms: int | None = None

    @property
    def writer(self) -> str | None:
        """Id of the writer that made the commit (None in logs written before writers had ids)."""
        return self.metadata.get("writer")


class ModelStore:
    """The Delta tables under one online model's path.

    Parameters
    ----------
    spark : SparkSession
    path : str
        The model directory (``modelPath``).
    app_id : str
        Delta ``txnAppId`` of this model's commits: one writer identity per model path.
    writer : bool
        This store is the model's one writer (a trainer): it reads the log's
        history once and then keeps its list of commits itself, appending
        each of its own. Reading the whole history per micro-batch grew with
        every commit (a Spark job over all the commit files each time). A
        reader (a scorer, ``load``) reads the history on every call.
    """

    def __init__(self, spark: SparkSession, path: str, app_id: str | None = None, writer: bool = False):
        self.spark = spark
        #: The session of the store's Delta writes (the writer's own; see the module's "Cost of a commit").
        self.session = _store_session(spark) if writer else spark
        self._writer = writer
        self._commits: list[Commit] | None = None
        self.path = path
        self.log_path = os.path.join(path, "log")
        self.snapshot_path = os.path.join(path, "snapshot")
        self.app_id = app_id or f"spark-ps:{os.path.abspath(path)}"
        #: This writer's id, on every row and in every commit it writes (see the module's "The fence").
        self.writer_id = uuid.uuid4().hex if writer else None

    # --- reading ---------------------------------------------------------------
    def _exists(self, path: str) -> bool:
        from delta.tables import DeltaTable

        return DeltaTable.isDeltaTable(self.spark, path)

    def _history(self, path: str) -> DataFrame:
        from delta.tables import DeltaTable

        return DeltaTable.forPath(self.spark, path).history()

    def commits(self) -> list[Commit]:
        """Every committed batch, oldest first (reads the log's Delta history: one row per commit)."""
        if not self._writer:
            return self._read_commits()
        if self._commits is None:
            self._commits = self._read_commits()
        return list(self._commits)

    def _read_commits(self) -> list[Commit]:
        """The first commit of every batch in the log's history, oldest first (see :func:`_first_of_each`)."""
        return _first_of_each(self._all_commits())[0]

    def _all_commits(self) -> list[Commit]:
        """Every batch commit in the log's history, later commits of a ``batchId`` included, oldest first."""
        if not self._exists(self.log_path):
            return []
        from delta.tables import DeltaTable

        rows = (DeltaTable.forPath(self.spark, self.log_path).history().where(F.col("userMetadata").isNotNull())
                .select("version", "userMetadata", (F.unix_micros("timestamp") / 1000).cast("long").alias("ms"))
                .orderBy("version").collect())
        out = []
        for row in rows:
            meta = json.loads(row["userMetadata"])
            if "batchId" in meta:
                out.append(Commit(int(row["version"]), int(meta["batchId"]), meta, row["ms"]))
        return out

    def last_commit(self) -> Commit | None:
        """The newest committed batch, or None before the first."""
        commits = self.commits()
        return commits[-1] if commits else None

    def version_at(self, timestamp: str) -> int:
        """The newest log version committed at or before ``timestamp`` (Delta's ``timestampAsOf`` rule)."""
        rows = (self._history(self.log_path).where(F.col("timestamp") <= F.to_timestamp(F.lit(timestamp)))
                .agg(F.max("version")).first())
        if rows is None or rows[0] is None:
            raise ValueError(f"{self.path}: no version committed at or before {timestamp!r}")
        return int(rows[0])

    def latest_snapshot(self, up_to_version: int | None = None) -> tuple[int, int] | None:
        """``(snapshot Delta version, log version it compacts)`` of the newest snapshot at or before a log version.

        Read from the snapshot table's commit files (a few ms each), not its
        ``history()`` (a Spark job of 0.2-0.3 s on ``local[2]``).
        """
        best = None
        for version in commit_versions(self.spark, self.snapshot_path):
            user_metadata = commit_info(self.spark, self.snapshot_path, version).get("userMetadata")
            if user_metadata is None:  # not a snapshot's commit (a vacuum's, say)
                continue
            log_version = int(json.loads(user_metadata)["logVersion"])
            if up_to_version is None or log_version <= up_to_version:
                if best is None or log_version > best[1]:
                    best = (version, log_version)
        return best

    def state(self, version: int | None = None, keys: DataFrame | None = None) -> DataFrame | None:
        """The model's rows (key, value, state columns) as of log version ``version`` (default: newest).

        Newest row per key from the snapshot at or before ``version`` and the
        log after it; computed on the executors. None if nothing was committed.
        ``keys`` (a DataFrame with a ``key`` column) keeps only those keys'
        rows, and does so *before* the newest-row-per-key window: Spark does
        not push a filter below a window's rank, so a semi-join applied to the
        result would still sort the whole snapshot and log.
        """
        if not self._exists(self.log_path):
            return None
        firsts, losers = _first_of_each(self._all_commits())
        snap = self.latest_snapshot(version)
        if snap is None:
            log = read_version(self.session, self.log_path, version)
        else:
            snap_version, log_version = snap
            log = (read_version(self.session, self.snapshot_path, snap_version)
                   .withColumn(BATCH_COL, F.lit(-1).cast("long")).withColumn(WRITER_COL, F.lit(None).cast("string")))
            newer_batches = [c.batch_id for c in firsts if log_version < c.version
                             and (version is None or c.version <= version)]
            if newer_batches:  # else the log is not read: its files of compacted batches may be vacuumed
                newer = read_version(self.session, self.log_path, version).where(F.col(BATCH_COL).isin(newer_batches))
                log = log.unionByName(newer, allowMissingColumns=True)
        if losers:  # a raced writer's rows (see the module's "The fence")
            log = log.where(~F.concat_ws(":", F.col(BATCH_COL).cast("string"), F.col(WRITER_COL))
                            .isin([f"{c.batch_id}:{c.writer}" for c in losers]))
        if keys is not None:
            log = log.join(keys.select("key"), "key", "left_semi")
        newest = Window.partitionBy("key").orderBy(F.col(BATCH_COL).desc())
        return (log.withColumn("_rank", F.row_number().over(newest)).where("_rank = 1")
                .drop("_rank", BATCH_COL, WRITER_COL))

    # --- writing ---------------------------------------------------------------
    def log_files(self, batch_id: int, schema: StructType) -> LogFiles | None:
        """Where batch ``batch_id``'s tasks may write its rows of ``schema`` to the log themselves; None if not.

        None when the log's next version is not one the driver commits
        directly (:func:`~spark_ps.spark.deltacommit.writable`: no log yet, a
        remote file system, a version Delta checkpoints): :meth:`commit` then
        takes the rows.
        """
        local = writable(self.session, self.log_path, tagged_schema(schema), "append")
        return None if local is None else LogFiles(local, schema, int(batch_id), self.writer_id,
                                                   deltawrite.max_rows_per_file(self.session))

    def commit(self, rows, batch_id: int, metadata: dict[str, Any]) -> int:
        """Append a batch's changed rows and metadata in one Delta commit, fenced by ``batch_id``; return its version.

        ``rows``: a DataFrame or :class:`~spark_ps.spark.deltawrite.TaskRows`,
        built in :attr:`session` (Delta writes through the rows' session), or
        the :class:`~spark_ps.ml.logfiles.LogFiles` of :meth:`log_files` with
        the files the batch's tasks wrote.

        Raises
        ------
        ValueError
            If ``batch_id`` is not newer than the newest committed batch, this
            writer's or another's: committing it would commit it twice.
        RuntimeError
            If another writer committed ``batch_id`` while this one wrote it
            (see the module's "The fence"): this writer's commit does not count.
        """
        known = self.last_commit()
        since = known.version if known is not None else -1
        newest = max([c for c in (known, *self._commits_after(since)) if c is not None],
                     key=lambda c: c.batch_id, default=None)
        if newest is not None and batch_id <= newest.batch_id:
            raise ValueError(f"batch {batch_id} is not newer than the last committed batch {newest.batch_id} "
                             f"of {self.path} (version {newest.version}); committing it would apply it twice")
        mine, after = self._append(rows, batch_id, metadata, since)
        self._check_first(mine, after)
        return mine.version

    def _check_first(self, mine: Commit, after: list[Commit]) -> None:
        """Raise if another writer's commit of ``mine``'s batch comes first in ``after`` (commits since the check)."""
        first = next(c for c in after if c.batch_id == mine.batch_id)
        if first.writer != self.writer_id:
            raise RuntimeError(f"batch {mine.batch_id} of {self.path}: another writer ({first.writer}) committed it "
                               f"first, at version {first.version}; this writer's commit (version {mine.version}) "
                               "does not count. Is a second trainer writing this model path?")

    def _append(self, rows: DataFrame, batch_id: int, metadata: dict[str, Any],
                since: int) -> tuple[Commit, list[Commit]]:
        """Append ``rows`` as batch ``batch_id`` in one Delta commit; return it and the commits after ``since``."""
        meta = json.dumps({"batchId": int(batch_id), "writer": self.writer_id, **metadata}, sort_keys=True)
        if isinstance(rows, LogFiles):
            if (rows.batch_id, rows.writer) != (int(batch_id), self.writer_id):
                raise ValueError(f"{self.path}: files of batch {rows.batch_id} by writer {rows.writer} cannot be "
                                 f"committed as batch {batch_id} by writer {self.writer_id}")
            commit_next(self.session, rows.directory, list(rows.files), "append", rows.table_schema,
                        user_metadata=meta)
        else:
            deltawrite.save_frame(_tagged(rows, batch_id, self.writer_id), self.log_path, "append",
                                  user_metadata=meta, options={"mergeSchema": "true"})
        after = self._commits_after(since)
        mine = next(c for c in after if c.writer == self.writer_id and c.batch_id == batch_id)
        if self._writer and self._commits is not None:
            self._commits = _first_of_each([*self._commits, *after])[0]
        return mine, after

    def newest_commit(self) -> Commit | None:
        """The log's newest batch commit, read from the commit files (no Spark job); None before the first."""
        directory = log_dir(self.log_path)
        for v in reversed(self._commit_versions(directory)):
            commit = self._read_commit(directory, v)
            if commit is not None:
                return commit
        return None

    def _commits_after(self, version: int) -> list[Commit]:
        """The batch commits of the log after Delta version ``version``, from their commit files, oldest first.

        A few milliseconds: a listing of ``_delta_log`` and one small JSON file
        per commit, where the log's ``history()`` is a Spark job (0.2-0.9 s).
        """
        directory = log_dir(self.log_path)
        found = (self._read_commit(directory, v) for v in self._commit_versions(directory) if v > version)
        return [c for c in found if c is not None]

    def _commit_versions(self, directory: str) -> list[int]:
        """The versions of the commit files in a ``_delta_log`` directory, ascending (none if it does not exist)."""
        if not hadoop.exists(self.spark, directory):
            return []
        return sorted(int(m.group(1)) for m in map(_COMMIT_FILE.match, hadoop.list_names(self.spark, directory)) if m)

    def _read_commit(self, directory: str, version: int) -> Commit | None:
        """Commit ``version`` if it is a batch's (its ``commitInfo`` carries a ``batchId``), else None."""
        name = f"{version:020d}.json"
        for line in hadoop.read_text(self.spark, directory, name).splitlines():
            info = json.loads(line).get("commitInfo") if line.strip() else None
            if info is not None and info.get("userMetadata"):
                meta = json.loads(info["userMetadata"])
                if "batchId" not in meta:
                    return None
                # The commit file's time, as Delta's history and time travel read it (commitInfo's is earlier).
                return Commit(version, int(meta["batchId"]), meta, hadoop.modified_ms(self.spark, directory, name))
        return None

    def seed(self, rows: DataFrame, metadata: dict[str, Any]) -> int:
        """Write a starting state (a warm start's rows) as the log's first commit, batch ``-1``; return its version.

        The caller seeds only a log with no commit, so a restart after a seed
        finds it and does not seed again.

        Raises
        ------
        ValueError
            If the log has a commit already.
        """
        if self.last_commit() is not None:
            raise ValueError(f"{self.path} has committed batches already: seeding it would overwrite them")
        return self._append(rows, SEED_BATCH, metadata, since=-1)[0].version

    def snapshot(self, log_version: int | None = None, rows=None) -> int | None:
        """Write the compacted state as of ``log_version`` as a new snapshot version; return the log version.

        ``rows`` (a DataFrame or :class:`~spark_ps.spark.deltawrite.TaskRows`)
        are that state if the caller has it: a trainer's shards right after
        the commit of ``log_version`` hold it, and exporting them costs no
        newest-row-per-key window over the snapshot and the log
        (:meth:`state`). Nothing is written if the newest snapshot is of that
        version already.
        """
        last = self.last_commit()
        if last is None:
            return None
        version = last.version if log_version is None else log_version
        newest = self.latest_snapshot()
        if newest is not None and newest[1] == version:
            return version
        deltawrite.save_frame(self.state(version) if rows is None else rows, self.snapshot_path, "overwrite",
                              user_metadata=json.dumps({"logVersion": version}), options={"overwriteSchema": "true"})
        return version

    def clean(self, log_version: int, retention_hours: float) -> int:
        """Drop what the snapshot of ``log_version`` made redundant; vacuum files older than the retention.

        The log rows of batches up to ``log_version`` are in that snapshot, so
        they are deleted (a Delta ``DELETE``: time travel to the versions
        before it keeps working while their files are kept), then both tables
        are vacuumed with ``retention_hours``: only then are the files of
        versions older than the retention gone, and with them the ability to
        load those versions. Returns the number of log rows deleted.
        """
        from delta.tables import DeltaTable

        # The store's session (see _store_session): its listing parallelism makes a vacuum 10 s, not 58-108 s.
        cleaner = self.session if self._writer else _store_session(self.spark)
        compacted = [c.batch_id for c in self.commits() if c.version <= log_version]
        deleted = 0
        if compacted:
            log = DeltaTable.forPath(cleaner, self.log_path)
            log.delete(F.col(BATCH_COL).isin(compacted))
            metrics = log.history(1).select("operationMetrics").first()[0] or {}
            deleted = int(metrics.get("numDeletedRows", 0))
        for path in (self.log_path, self.snapshot_path):
            if self._exists(path):
                DeltaTable.forPath(cleaner, path).vacuum(retention_hours)
        return deleted



def _tagged(rows, batch_id: int, writer: str | None):
    """``rows`` (a DataFrame or :class:`~spark_ps.spark.deltawrite.TaskRows`) with their batch and writer columns.

    Examples
    --------
    >>> row = _tagged(spark.range(1).selectExpr("id AS key"), 7, "w").first()
    >>> row.batch, row.writer
    (7, 'w')
    """
    if not isinstance(rows, deltawrite.TaskRows):
        return (rows.withColumn(BATCH_COL, F.lit(int(batch_id)).cast("long"))
                .withColumn(WRITER_COL, F.lit(writer).cast("string")))
    make = rows.task

    def tagged(batches):  # in the tasks: two constant columns, no pass through the JVM
        for batch in make(batches):
            yield tag(batch, batch_id, writer)

    return deltawrite.TaskRows(rows.source, tagged, tagged_schema(rows.schema))


def _first_of_each(commits: list[Commit]) -> tuple[list[Commit], list[Commit]]:
    """Split commits (oldest first) into the first commit of each ``batchId`` and the later ones, which lose.

    Examples
    --------
    >>> a, b, c = Commit(0, 0, {"writer": "a"}), Commit(1, 1, {"writer": "a"}), Commit(2, 1, {"writer": "z"})
    >>> _first_of_each([a, b, c]) == ([a, b], [c])
    True
    """
    seen: set[int] = set()
    firsts, losers = [], []
    for c in commits:
        (losers if c.batch_id in seen else firsts).append(c)
        seen.add(c.batch_id)
    return firsts, losers


def _store_session(spark: SparkSession) -> SparkSession:
    """A session of ``spark``'s SparkContext for the store's Delta work: the user's Delta settings, tuned costs.

    Two settings of the user's session would make every commit slow on a
    small cluster, and are tuned here unless the user set them:
    ``spark.databricks.delta.snapshotPartitions`` (see the module's "Cost of a
    commit") and the file-listing parallelism of a vacuum
    (``spark.sql.sources.parallelPartitionDiscovery.parallelism``: 10,000
    tasks by default, which took 58-108 s per vacuum of a 5-file table on
    ``local[2]``; with 8, 10 s). New tables checkpoint every
    :data:`CHECKPOINT_INTERVAL` commits unless the user's session set Delta's
    default. Empty commits are recorded (:data:`_SKIP_EMPTY_COMMITS`). The
    user's ``spark.databricks.delta.*`` settings (the retention check, say)
    are copied over.

    Examples
    --------
    >>> session = _store_session(spark)
    >>> session is not spark, session.sparkContext is spark.sparkContext
    (True, True)
    >>> int(session.conf.get("spark.databricks.delta.snapshotPartitions")) <= spark.sparkContext.defaultParallelism
    True
    """
    session = spark.newSession()
    user = spark.conf.getAll
    for key, value in user.items():
        if key.startswith(_DELTA_CONF_PREFIX):
            session.conf.set(key, value)
    parallelism = spark.sparkContext.defaultParallelism
    if _SNAPSHOT_PARTITIONS not in user:
        session.conf.set(_SNAPSHOT_PARTITIONS, str(max(1, parallelism)))
    if _LISTING_PARALLELISM not in user:
        session.conf.set(_LISTING_PARALLELISM, str(max(8, 2 * parallelism)))
    if _CHECKPOINT_DEFAULT not in user:
        session.conf.set(_CHECKPOINT_DEFAULT, str(CHECKPOINT_INTERVAL))
    session.conf.set(_SKIP_EMPTY_COMMITS, "false")
    return session
