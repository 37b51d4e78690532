"""``StreamingTrainer``: Structured Streaming online training with exactly-once model updates.

Each micro-batch (``foreachBatch``) runs, in this order:

1. **Fence.** If the model store has committed this ``batchId`` already (a
   replay after a driver restart: Spark re-runs the last batch whose commit
   log entry is missing), nothing happens.
2. **Cache check.** The shards must hold exactly the store's newest commit.
   After a restart (empty sidecars), a failed batch (half its updates on the
   shards) or a lost table, they are rebuilt: the newest snapshot plus the
   log after it, imported by the executors (weights *and* optimizer state).
3. **One barrier stage** (:mod:`spark_ps.streaming.training`) whose tasks
   read the batch (its Parquet files directly where they can, else their
   partitions as Spark converts them: :mod:`spark_ps.streaming.stageinput`),
   drop and count the rows the quarantine's rules refuse, score the rest
   with the model as it is before learning from it (progressive validation:
   AUC and log-loss, or RMSE and R², stamped with the model version that
   made them), meet, and train one pass through the shards; then they meet
   again and write the rows the batch changed to the model's log
   (:class:`~spark_ps.ml.logfiles.LogFiles`; where the driver cannot commit
   the log's next version itself, a job after the stage exports them).
4. **Quarantine**, only if a task dropped a row: the batch is read again and
   its bad rows appended to ``<modelPath>/quarantine``, once per batchId.
5. **Commit** the full rows the batch changed (their files), with the metrics, in one
   Delta commit fenced by the batchId (:class:`~spark_ps.ml.modelstore.ModelStore`).
   Only now is the batch part of the model; Spark writes its own commit log
   after ``foreachBatch`` returns.
6. Every ``snapshotEvery`` commits, a compacted snapshot.

A stream's first batch runs one more job before the stage: the vectors'
expected size, from the batch (:func:`~spark_ps.streaming.quarantine.common_size`).

A training task that dies fails its stage (Spark never retries a barrier
result stage), and the shards may hold part of the batch: the trainer
rebuilds them from the store and runs the batch once more. A sidecar that
dies mid-stream is restarted by the executor plugin on a new
port, empty. The batch that meets it fails; the trainer follows the registry
(:meth:`~spark_ps.spark.context.PSContext.refresh`), rebuilds every shard
from the store (step 2) and runs the batch once more. Nothing of the failed
attempt was committed, so nothing is lost or applied twice.

The driver handles metadata only: rows move between the executors, the
shards and Delta.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import uuid
from typing import Any

from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_ps.client.collectives import AllReduce, Barrier
from spark_ps.ml import weights as weight_store
from spark_ps.ml.fitting import model_table_spec
from spark_ps.ml.logfiles import LogFiles
from spark_ps.ml.modelstore import ModelStore
from spark_ps.ml.persistence import ONLINE_FORMAT
from spark_ps.ml.training import EPOCH_FIELDS, TOTALS_FIELDS, DataDependence, Schedule, TrainSpec
from spark_ps.ml.versions import write_metadata_dir
from spark_ps.spark import hadoop
from spark_ps.spark.context import PSContext
from spark_ps.spark.tasks import task_died, task_slots
from spark_ps.streaming.metrics import metrics_frame
from spark_ps.streaming.progressive import ProgressiveStats
from spark_ps.streaming.quarantine import (
    REASONS,
    QuarantineRules,
    check_schema,
    common_size,
    quarantine_path,
    rules_for,
    split,
    write_quarantine,
)
from spark_ps.streaming.stageinput import (
    ParquetSource,
    StageInput,
    report_input_rows,
    stage_input,
    training_columns,
)
from spark_ps.streaming.training import TASK_RESULT_DDL, changed_rows, make_stream_train_fn
from spark_ps.streaming.warmstart import warm_start
from spark_ps.wire.spec import STATE_NAMES

__all__ = ["StreamingTrainer"]

log = logging.getLogger("spark_ps.streaming")

#: Delta refuses to vacuum files younger than this unless its retention check is disabled.
DELTA_RETENTION_FLOOR_HOURS = 168


class StreamingTrainer:
    """Keep a model fresh from a stream of labelled events, exactly once per micro-batch.

    Parameters
    ----------
    estimator : LogisticRegression, FMClassifier or LinearRegression
        Its Params define the model (``regParam`` is the penalty per row of
        the summed loss, as FTRL's L1/L2: online there is no row count to
        scale it by); each micro-batch is one pass.
    modelPath : str
        The model directory: Params, change log, snapshots. The one source of truth.
    snapshotEvery : int
        Committed batches between compacted snapshots (and one on :meth:`stop`).
    initialModel : str, optional
        Path of a saved model of the estimator's model class (a batch ``fit``
        + ``save``, or an online model) to continue from, weights *and*
        optimizer state, if ``modelPath`` has no committed batch yet (see
        :mod:`spark_ps.streaming.warmstart`).
    retentionHours : float, optional
        After each snapshot, delete the log rows it compacts and vacuum the
        files of versions older than this many hours: those versions can no
        longer be loaded. None (default) keeps every version. Below Delta's
        168-hour safety floor, the session must set
        ``spark.databricks.delta.retentionDurationCheck.enabled=false``.

    Examples
    --------
    >>> import tempfile, os
    >>> from pyspark.ml.linalg import Vectors
    >>> from spark_ps.ml.classification import LogisticRegression, LogisticRegressionModel
    >>> root = tempfile.mkdtemp()
    >>> rows = [(float(i % 2), Vectors.sparse(4, [i % 2, 2], [1.0, 1.0])) for i in range(40)]
    >>> spark.createDataFrame(rows, ["label", "features"]).write.parquet(os.path.join(root, "in"))
    >>> schema = spark.read.parquet(os.path.join(root, "in")).schema
    >>> events = spark.readStream.schema(schema).parquet(os.path.join(root, "in"))
    >>> trainer = StreamingTrainer(LogisticRegression(), modelPath=os.path.join(root, "model"))
    >>> query = trainer.start(events, checkpointLocation=os.path.join(root, "ckpt"))
    >>> query.processAllAvailable()
    >>> trainer.stop()          # stops the query, snapshots the newest version (log version 0)
    0
    >>> trainer.metrics().select("batchId", "rows").collect()
    [Row(batchId=0, rows=40)]
    >>> model = LogisticRegressionModel.load(os.path.join(root, "model"))   # feature 1 marks label 1
    >>> bool(model.coefficients[1] > 0 > model.coefficients[0])
    True
    """

    def __init__(self, estimator, modelPath: str, snapshotEvery: int = 10, initialModel: str | None = None,
                 retentionHours: float | None = None):
        if snapshotEvery < 1:
            raise ValueError(f"snapshotEvery must be >= 1, got {snapshotEvery}")
        if retentionHours is not None and not retentionHours >= 0:
            raise ValueError(f"retentionHours must be >= 0 (or None: keep every version), got {retentionHours}")
        self._retention = retentionHours
        self._checkpoint: str | None = None
        self._query = None
        self._source: ParquetSource | None = None  # the events' files, if the tasks can read them directly
        estimator._validate_params()
        self._estimator = estimator.copy().setNumEpochs(1)
        self._path = modelPath
        self._snapshot_every = snapshotEvery
        self._table: str | None = None
        self._loaded_version: int | None = -1  # log version the shards hold; -1: unknown, rebuild
        self._since_snapshot = 0
        self._store: ModelStore | None = None
        self._initial = initialModel
        #: Margin offset of the intercept row: a warm start's (the batch fit's start from the mean label).
        self._offset = 0.0

    # --- public API --------------------------------------------------------------
    def start(self, events: DataFrame, checkpointLocation: str, trigger: dict[str, Any] | None = None,
              queryName: str | None = None):
        """Start training from ``events``; return the running ``StreamingQuery``.

        Parameters
        ----------
        events : streaming DataFrame
            With the estimator's label, features (and weight) columns.
        checkpointLocation : str
            Spark's checkpoint (offsets and commits). Restart with the same one to resume.
        trigger : dict, optional
            Keyword of ``DataStreamWriter.trigger``, e.g. ``{"processingTime": "2 seconds"}``.
        queryName : str, optional
            Name of the query.

        Raises
        ------
        MissingColumnError
            If a column the estimator needs is not in ``events``, before anything runs.
        ColumnTypeError
            If the features column is not a vector or the label or weight not numeric, before anything runs.
        """
        check_schema(events.schema, self._estimator)
        spark = events.sparkSession
        if (self._retention is not None and self._retention < DELTA_RETENTION_FLOOR_HOURS
                and spark.conf.get("spark.databricks.delta.retentionDurationCheck.enabled", "true") == "true"):
            raise ValueError(f"retentionHours={self._retention:g} is below Delta's {DELTA_RETENTION_FLOOR_HOURS} h "
                             "safety floor: Delta would refuse the vacuum after the first snapshot; set "
                             "spark.databricks.delta.retentionDurationCheck.enabled=false to allow it")
        self._store = ModelStore(spark, self._path, writer=True)
        seed = None
        if self._initial is not None and self._store.last_commit() is None:
            seed = warm_start(spark, self._estimator, self._initial)
            self._offset = seed.offset
        self._write_metadata(spark)
        self._offset = DefaultParamsReader.loadMetadata(self._path, spark).get("interceptOffset", 0.0)
        if seed is not None:
            self._store.seed(seed.rows, {"initialModel": self._initial, "numFeatures": seed.num_features})
        self._checkpoint = checkpointLocation
        self._source = ParquetSource.of(events, training_columns(self._estimator))
        writer = events.writeStream.foreachBatch(self._process_batch).option("checkpointLocation",
                                                                             checkpointLocation)
        if trigger:
            writer = writer.trigger(**trigger)
        if queryName:
            writer = writer.queryName(queryName)
        self._query = writer.start()
        return self._query

    def stop(self) -> int | None:
        """Stop the query :meth:`start` started, then write a snapshot; return the log version it compacts.

        Idempotent; the next :meth:`start` (here or in a new process, with the
        same ``checkpointLocation``) resumes after the last committed batch.
        """
        if self._query is not None:
            ps = PSContext.get(self._store.spark)
            self._query.stop()
            self._query = None
            if self._table is not None:  # the shards' copy: the next start rebuilds it from the store
                last = self._store.last_commit()
                try:
                    if last is not None and last.version == self._loaded_version:
                        return self._snapshot_from_shards(ps, last.version)
                finally:
                    ps.drop_table(self._table, missing_ok=True)
                    self._table, self._loaded_version = None, -1
        return self.snapshot()

    def metrics(self) -> DataFrame:
        """One row per committed micro-batch: batchId, modelVersion, rows, quarantined, the metrics, trainSeconds.

        Also ``scoreSeconds`` and ``committedAt``, the time the batch's Delta commit was written.
        """
        store = self._store or ModelStore(SparkSession.active(), self._path)
        return metrics_frame(store.spark, [c.metadata | {"modelVersion": c.version, "committedAt": c.committed_ms}
                                           for c in store.commits() if c.batch_id >= 0],
                             regression=not self._estimator._binary_labels)

    def snapshot(self) -> int | None:
        """Write a compacted snapshot of the newest committed version now; return that version."""
        return self._store.snapshot() if self._store is not None else None

    def _snapshot_from_shards(self, ps: PSContext, version: int) -> int:
        """Snapshot committed ``version`` from the shards, which hold exactly it (loaded or trained up to it)."""
        with ps.client() as client:
            rows = weight_store.table_rows(self._store.session, client, self._table,
                                           state_names=STATE_NAMES[self._estimator.getOptimizer()])
            return self._store.snapshot(version, rows=rows)

    # --- one micro-batch ---------------------------------------------------------
    def _process_batch(self, df: DataFrame, batch_id: int) -> None:
        store = self._store
        last = store.last_commit()
        if last is not None and batch_id <= last.batch_id:
            log.info("batch %d: committed already (model version %d), skipped", batch_id, last.version)
            return
        log.debug("batch %d: started", batch_id)
        spark = df.sparkSession
        ps = PSContext.get(spark)
        est = self._estimator
        batch = stage_input(df, est, task_slots(spark), self._source)
        rules = rules_for(est, last.metadata.get("numFeatures") if last is not None else None)
        if rules.num_features is None:  # a stream's first batch: one more job, to settle the vectors' size
            rules = dataclasses.replace(rules, num_features=common_size(batch.data, rules))
        for attempt in (1, 2):
            try:
                self._ensure_loaded(spark, ps, last)
                self._train_and_commit(ps, batch, batch_id, last, rules)
                return
            except Exception as exc:  # rerun only if a task died or a shard was lost; else re-raised
                self._loaded_version = -1  # whatever the shards hold is not a committed state
                if attempt == 2 or not (task_died(exc) or self._shard_was_lost(ps)):
                    raise
                committed = store.last_commit()
                if committed is not None and committed.batch_id == batch_id:
                    log.warning("batch %d: a shard was lost after the batch committed; rebuilt at the next "
                                "batch", batch_id)
                    return
                log.warning("batch %d: a task died or a shard was lost (%s); rebuilding the shards from %s and "
                            "running the batch again", batch_id, str(exc).splitlines()[0][:200], self._path)
            except BaseException:
                self._loaded_version = -1
                raise

    def _train_and_commit(self, ps, batch: StageInput, batch_id: int, last, rules: QuarantineRules) -> None:
        start = time.perf_counter()
        store = self._store
        changed = f"changed_{self._table}_{batch_id}_{uuid.uuid4().hex[:6]}"
        ps.create_table(changed, width=1, optimizer="delta")
        try:
            log_files = store.log_files(batch_id, self._schema())  # None: the rows are exported after the stage
            result = self._train(ps, batch, batch_id, rules, changed, log_files)
            train_seconds = time.perf_counter() - start
            if result.quarantined:  # read the batch again, only now that it had bad rows
                write_quarantine(split(batch.data, rules)[1], quarantine_path(self._path), batch_id, store.app_id)
                log.warning("batch %d: %d rows quarantined %s", batch_id, result.quarantined, result.reasons)
            metrics = result.scores.metrics() if result.rows else {}
            with ps.client() as client:
                rows = (log_files.with_files(result.files) if log_files is not None
                        else changed_rows(store.session, client, self._table, changed, self._schema()))
                new_version = store.commit(rows, batch_id, {
                    "rows": result.rows, "scoredByVersion": last.version if last is not None else None,
                    "trainSeconds": train_seconds, "scoreSeconds": result.score_seconds,
                    "sourceOffsets": source_offsets(store.spark, self._checkpoint, batch_id),
                    "quarantined": result.quarantined, "quarantineReasons": result.reasons,
                    "numFeatures": rules.num_features, "input": "spark" if batch.files is None else "files", **metrics})
        finally:
            ps.drop_table(changed, missing_ok=True)
        if batch.files is not None:  # Spark's scan did not run: its progress would count no input row
            report_input_rows(store.spark, batch.frame.sparkSession, result.rows + result.quarantined)
        self._loaded_version = new_version
        self._since_snapshot += 1
        log.info("batch %d: %d rows, %.0f rows/s, %s, model version %d, %.2f s", batch_id, result.rows,
                 result.rows / max(train_seconds, 1e-9), ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()
                                                                   if isinstance(v, float)), new_version,
                 time.perf_counter() - start)
        if self._since_snapshot >= self._snapshot_every:
            self._snapshot_from_shards(ps, new_version)
            self._since_snapshot = 0
            if self._retention is not None:
                deleted = store.clean(new_version, self._retention)
                log.info("batch %d: snapshot at model version %d; %d compacted log rows deleted, files older "
                         "than %g h vacuumed", batch_id, new_version, deleted, self._retention)

    def _train(self, ps: PSContext, batch: StageInput, batch_id: int, rules: QuarantineRules, changed: str,
               log_files: LogFiles | None) -> _StageResult:
        """One barrier stage: drop bad rows, score the batch (progressive validation), train on it, write its
        changed rows to ``log_files`` (if not None); the sums."""
        est = self._estimator
        result = _StageResult(ProgressiveStats(est._binary_labels))
        client = ps.client(timeout=est.getPsTimeout())
        spec = self._train_spec(client, batch_id, batch.workers, changed)
        try:
            fn = make_stream_train_fn(spec, rules, log_files, batch.files)
            for task in batch.stage.mapInArrow(fn, TASK_RESULT_DDL, barrier=True).collect():
                result.add(task, est._binary_labels)
        finally:
            for group in (spec.epochs, spec.totals, spec.rendezvous):
                group.drop(client)
            if spec.clock is not None:
                client.clock_drop(spec.clock)
            client.close()  # the tasks open their own connections from the pickled copy
        return result

    # --- the shards as a cache of the store --------------------------------------
    def _shard_was_lost(self, ps: PSContext) -> bool:
        """Whether a shard died and came back elsewhere (the plugin restarts it); ``ps`` then routes to it."""
        try:
            return ps.refresh(timeout=60.0)
        except TimeoutError as exc:  # a shard that stays down: the batch's own error says more
            log.error("a spark-ps shard stayed unreachable: %s", exc)
            return False

    def _ensure_loaded(self, spark: SparkSession, ps: PSContext, last) -> None:
        want = last.version if last is not None else None
        if self._table is not None and self._loaded_version == want:
            with ps.client() as client:
                if client.describe(self._table):
                    return
        if self._table is not None:
            ps.drop_table(self._table, missing_ok=True)
        self._table = f"online_{uuid.uuid4().hex[:12]}"
        spec = dataclasses.replace(self._table_spec(), name=self._table)
        ps.create_table(spec)
        state = self._store.state(want) if want is not None else None
        if state is not None:
            client = ps.client()
            imported = state.mapInArrow(_importer(client, self._table), "rows long").agg(F.sum("rows")).first()[0]
            log.info("rebuilt the shards from %s at version %s: %d rows", self._path, want, imported or 0)
        self._loaded_version = want

    def _table_spec(self):
        est = self._estimator
        spec = model_table_spec(est._table_spec(), est.getFitIntercept())
        dep = est._data_dependence()
        # An online pass per micro-batch: regParam's L1/L2 for one row, priorL1 for one pass.
        return DataDependence(dep.l1_per_row, dep.l2_per_row, dep.l1_per_pass).table_spec(spec, num_rows=1)

    def _schema(self):
        est = self._estimator
        return weight_store.full_row_schema(STATE_NAMES[est.getOptimizer()])

    def _train_spec(self, client, batch_id: int, workers: int, changed: str) -> TrainSpec:
        est = self._estimator
        run = f"{self._table}_{batch_id}_{uuid.uuid4().hex[:6]}"
        mode = est.getSyncMode()
        stale = 0 if mode == "bsp" else (est.getStaleness() if mode == "ssp" else None)
        clock = None if mode == "asp" else f"clock_{run}"
        spec = TrainSpec(client=client, table_spec=dataclasses.replace(self._table_spec(), name=self._table),
                         data_dependence=DataDependence(), epochs=AllReduce(f"epochs_{run}", EPOCH_FIELDS),
                         totals=AllReduce(f"totals_{run}", TOTALS_FIELDS),
                         rendezvous=Barrier(f"meet_{run}", workers), clock=clock, staleness=stale,
                         num_workers=workers, objective=self._objective(), features_col=est.getFeaturesCol(),
                         label_col=est.getLabelCol(), weight_col=est._weight_col(),
                         fit_intercept=est.getFitIntercept(), schedule=Schedule(est.getBatchSize(), epochs=1),
                         timeout=est.getPsTimeout(), binary_labels=est._binary_labels, mark=changed)
        for group in (spec.epochs, spec.rendezvous):
            group.create(client)
        if clock is not None:
            client.clock_create(clock, workers, stale)
        return spec

    def _write_metadata(self, spark: SparkSession) -> None:
        if os.path.exists(os.path.join(self._path, "metadata")):
            return
        model = self._estimator._copyValues(self._estimator._model_class()())
        metadata = DefaultParamsWriter._get_metadata_to_save(model, spark, extraMetadata={
            "intercept": 0.0, "numRows": 0, "nnz": 0, "objectiveHistory": [], "numFeatures": 0,
            "weightsFormat": ONLINE_FORMAT, "interceptOffset": self._offset, "initialModel": self._initial})
        write_metadata_dir(spark, self._path, json.loads(metadata))  # by the driver: no Spark job

    def _objective(self):
        """The estimator's objective, its intercept margin offset that of the model the stream started from."""
        return dataclasses.replace(self._estimator._objective(), offset=self._offset)


@dataclasses.dataclass
class _StageResult:
    """The summed task results of one training stage."""

    scores: ProgressiveStats
    rows: int = 0
    score_seconds: float = 0.0
    dropped: list[int] = dataclasses.field(default_factory=lambda: [0] * len(REASONS))
    files: list[dict] = dataclasses.field(default_factory=list)

    def add(self, task, binary_labels: bool) -> None:
        self.scores = self.scores + ProgressiveStats.from_row(task, binary_labels)
        self.rows += int(task["rows"])
        self.files += json.loads(task["files"])
        self.score_seconds = max(self.score_seconds, task["score_seconds"])
        self.dropped = [a + int(b) for a, b in zip(self.dropped, task["quarantined"])]

    @property
    def quarantined(self) -> int:
        return sum(self.dropped)

    @property
    def reasons(self) -> dict[str, int]:
        """Bad rows per reason (only the reasons that occurred), in :data:`REASONS` order."""
        return {reason: n for reason, n in zip(REASONS, self.dropped) if n}


def source_offsets(spark: SparkSession, checkpoint: str, batch_id: int) -> list[Any]:
    r"""The end offsets of micro-batch ``batch_id``, one entry per source, from Spark's offset log.

    Spark writes ``<checkpoint>/offsets/<batchId>`` (a version line, the
    batch's metadata, then one line per source: JSON, or ``-`` for a source
    with no offset) before the batch runs, so it is there when the batch
    commits. Read through Hadoop's FileSystem, as Spark does (the checkpoint
    may be on HDFS or an object store).

    Examples
    --------
    >>> import os, tempfile
    >>> ckpt = tempfile.mkdtemp(); os.makedirs(os.path.join(ckpt, "offsets"))
    >>> with open(os.path.join(ckpt, "offsets", "3"), "w") as f:
    ...     _ = f.write('v1\n{"batchWatermarkMs": 0}\n{"logOffset": 3}\n-\n')
    >>> source_offsets(spark, ckpt, 3)
    [{'logOffset': 3}, None]
    """
    lines = hadoop.read_text(spark, checkpoint, "offsets", str(batch_id)).splitlines()[2:]
    return [None if line.strip() == "-" else json.loads(line) for line in lines if line.strip()]


def _importer(client, table: str):
    """``mapInArrow`` function pushing log rows (lists) into a shard table as an import (state included)."""
    import pyarrow as pa

    def push(batches):
        total = 0
        for batch in batches:
            if batch.num_rows:
                total += client.import_batches(table, [weight_store.as_fixed_size(batch)])
        client.close()
        yield pa.RecordBatch.from_pydict({"rows": [total]})

    return push
