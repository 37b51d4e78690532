"""``StreamingTrainer``: Structured Streaming online training with exactly-once model updates.

Each micro-batch (``foreachBatch``) runs, in this order:

1. **Fence.** If the model store has committed this ``batchId`` already (a
   replay after a driver restart: Spark re-runs the last batch whose commit
   log entry is missing), nothing happens.
2. **Cache check.** The shards must hold exactly the store's newest commit.
   After a restart (empty sidecars), a failed batch (half its updates on the
   shards) or a lost table, they are rebuilt: the newest snapshot plus the
   log after it, imported by the executors (weights *and* optimizer state).
3. **Progressive validation.** The batch is scored by the model as it is
   before learning from it; the metrics (AUC and log-loss, or RMSE and R²)
   are stamped with the model version that made them.
4. **Train** one pass of the batch through the shards (a barrier stage).
5. **Commit** the full rows the batch changed, with the metrics, in one
   idempotent Delta commit (:class:`~spark_ps.ml.modelstore.ModelStore`).
   Only now is the batch part of the model; Spark writes its own commit log
   after ``foreachBatch`` returns.
6. Every ``snapshotEvery`` commits, a compacted snapshot.

The driver handles metadata only: rows move between the executors, the
shards and Delta.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid
from typing import Any

from pyspark.ml.util import DefaultParamsWriter
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_ps.client.collectives import AllReduce, Barrier, Counter
from spark_ps.ml import weights as weight_store
from spark_ps.ml.fitting import model_table_spec, task_slots
from spark_ps.ml.modelstore import ModelStore
from spark_ps.ml.objectives import BIAS_KEY
from spark_ps.ml.persistence import ONLINE_FORMAT
from spark_ps.ml.training import EPOCH_FIELDS, TOTALS_FIELDS, DataDependence, TrainSpec
from spark_ps.spark.context import PSContext
from spark_ps.streaming.metrics import batch_metrics, metrics_frame
from spark_ps.streaming.quarantine import check_schema, quarantine_path, rules_for, split_batch, write_quarantine
from spark_ps.streaming.training import RetriedBatchError, changed_rows, make_stream_train_fn, state_schema
from spark_ps.wire.spec import STATE_NAMES

__all__ = ["StreamingTrainer"]

log = logging.getLogger("spark_ps.streaming")

_TRAIN_SCHEMA = "loss_sum double, weight_sum double"


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
    >>> query.processAllAvailable(); query.stop()
    >>> trainer.metrics().select("batchId", "rows").collect()
    [Row(batchId=0, rows=40)]
    >>> LogisticRegressionModel.load(os.path.join(root, "model")).intercept != 0.0
    True
    """

    def __init__(self, estimator, modelPath: str, snapshotEvery: int = 10, initialModel: str | None = None):
        if snapshotEvery < 1:
            raise ValueError(f"snapshotEvery must be >= 1, got {snapshotEvery}")
        if initialModel is not None:
            raise NotImplementedError("initialModel: warm start from a batch model is not built yet")
        estimator._validate_params()
        self._estimator = estimator.copy().setNumEpochs(1)
        self._path = modelPath
        self._snapshot_every = snapshotEvery
        self._table: str | None = None
        self._loaded_version: int | None = -1  # log version the shards hold; -1: unknown, rebuild
        self._since_snapshot = 0
        self._store: ModelStore | None = None

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
        self._store = ModelStore(spark, self._path)
        self._write_metadata(spark)
        writer = events.writeStream.foreachBatch(self._process_batch).option("checkpointLocation",
                                                                             checkpointLocation)
        if trigger:
            writer = writer.trigger(**trigger)
        if queryName:
            writer = writer.queryName(queryName)
        return writer.start()

    def metrics(self) -> DataFrame:
        """One row per committed micro-batch: batchId, modelVersion, rows, quarantined, the metrics, trainSeconds."""
        store = self._store or ModelStore(SparkSession.active(), self._path)
        return metrics_frame(store.spark, [c.metadata | {"modelVersion": c.version} for c in store.commits()],
                             regression=not self._estimator._binary_labels)

    def snapshot(self) -> int | None:
        """Write a compacted snapshot of the newest committed version now; return that version."""
        return self._store.snapshot() if self._store is not None else None

    # --- one micro-batch ---------------------------------------------------------
    def _process_batch(self, df: DataFrame, batch_id: int) -> None:
        store = self._store
        last = store.last_commit()
        if last is not None and batch_id <= last.batch_id:
            log.info("batch %d: committed already (model version %d), skipped", batch_id, last.version)
            return
        spark = df.sparkSession
        ps = PSContext.get(spark)
        est = self._estimator
        cols = [c for c in (est.getFeaturesCol(), est.getLabelCol(), est._weight_col()) if c]
        slots = task_slots(spark)
        workers = max(1, min(est.getNumWorkers() or slots, slots))
        data = df.select(*cols)
        if data.rdd.getNumPartitions() != workers:  # a barrier stage needs one task per slot at most
            data = data.repartition(workers)
        # Bad rows go to <modelPath>/quarantine, the rest trains (spark_ps.streaming.quarantine).
        batch = split_batch(data, rules_for(est, last.metadata.get("numFeatures") if last is not None else None))
        try:
            if batch.quarantined:
                write_quarantine(batch.bad, quarantine_path(self._path), batch_id, store.app_id)
                log.warning("batch %d: %d rows quarantined %s", batch_id, batch.quarantined, batch.reasons)
            data, rows = batch.clean, batch.rows
            extra = {"quarantined": batch.quarantined, "quarantineReasons": batch.reasons,
                     "numFeatures": batch.num_features}
            for attempt in (1, 2):
                self._ensure_loaded(spark, ps, last)
                try:
                    self._train_and_commit(spark, ps, data, batch_id, rows, last, workers, extra)
                    break
                except RetriedBatchError as exc:  # the shards hold part of the batch: rebuild and rerun
                    self._loaded_version = -1
                    if attempt == 2:
                        raise
                    log.warning("batch %d: %s; rebuilding from the log", batch_id, exc)
                except BaseException:
                    self._loaded_version = -1  # whatever the shards hold is not a committed state
                    raise
        finally:
            batch.release()

    def _train_and_commit(self, spark, ps, data: DataFrame, batch_id: int, rows: int, last, workers: int,
                          extra: dict[str, Any]) -> None:
        est = self._estimator
        version = last.version if last is not None else None
        start = time.perf_counter()
        scored = self._model(ps).transform(data) if rows else None
        metrics = batch_metrics(scored, est) if rows else {}
        score_seconds = time.perf_counter() - start
        start = time.perf_counter()
        if rows:
            client = ps.client(timeout=est.getPsTimeout())
            spec = self._train_spec(client, batch_id, workers)
            try:
                data.mapInArrow(make_stream_train_fn(spec), _TRAIN_SCHEMA, barrier=True).collect()
            finally:
                for group in (spec.epochs, spec.totals, spec.attempts, spec.rendezvous):
                    group.drop(client)
                if spec.clock is not None:
                    client.clock_drop(spec.clock)
                client.close()  # the tasks open their own connections from the pickled copy
        train_seconds = time.perf_counter() - start
        changed = changed_rows(data, ps.client(), self._table, est._objective(), est.getFeaturesCol(),
                               est.getFitIntercept(), self._schema())
        new_version = self._store.commit(changed, batch_id, {
            "rows": rows, "scoredByVersion": version, "trainSeconds": train_seconds,
            "scoreSeconds": score_seconds, **metrics, **extra})
        self._loaded_version = new_version
        self._since_snapshot += 1
        log.info("batch %d: %d rows, %.0f rows/s, %s, model version %d", batch_id, rows,
                 rows / max(train_seconds, 1e-9), ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()
                                                            if isinstance(v, float)), new_version)
        if self._since_snapshot >= self._snapshot_every:
            self._store.snapshot(new_version)
            self._since_snapshot = 0

    # --- the shards as a cache of the store --------------------------------------
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
        return DataDependence(dep.l1_per_row, dep.l2_per_row).table_spec(spec, num_rows=1)

    def _schema(self):
        est = self._estimator
        return state_schema(est._objective().width, STATE_NAMES[est.getOptimizer()])

    def _train_spec(self, client, batch_id: int, workers: int) -> TrainSpec:
        est = self._estimator
        run = f"{self._table}_{batch_id}_{uuid.uuid4().hex[:6]}"
        mode = est.getSyncMode()
        stale = 0 if mode == "bsp" else (est.getStaleness() if mode == "ssp" else None)
        clock = None if mode == "asp" else f"clock_{run}"
        spec = TrainSpec(client=client, table_spec=dataclasses.replace(self._table_spec(), name=self._table),
                         data_dependence=DataDependence(), epochs=AllReduce(f"epochs_{run}", EPOCH_FIELDS),
                         totals=AllReduce(f"totals_{run}", TOTALS_FIELDS), attempts=Counter(f"attempts_{run}"),
                         rendezvous=Barrier(f"meet_{run}", workers), clock=clock, staleness=stale,
                         num_workers=workers, objective=est._objective(), features_col=est.getFeaturesCol(),
                         label_col=est.getLabelCol(), weight_col=est._weight_col(),
                         fit_intercept=est.getFitIntercept(), batch_size=est.getBatchSize(), num_epochs=1,
                         timeout=est.getPsTimeout(), binary_labels=est._binary_labels)
        for group in (spec.epochs, spec.attempts, spec.rendezvous):
            group.create(client)
        if clock is not None:
            client.clock_create(clock, workers, stale)
        return spec

    def _model(self, ps: PSContext):
        """The model as it stands on the shards, to score a batch before it learns from it."""
        est = self._estimator
        bias = 0.0
        if est.getFitIntercept():
            with ps.client() as client:
                bias = float(client.pull(self._table, [BIAS_KEY])[0, 0])
        model = est._model_class()(None, bias, table=self._table)
        return est._copyValues(model)

    def _write_metadata(self, spark: SparkSession) -> None:
        if os.path.exists(os.path.join(self._path, "metadata")):
            return
        model = self._estimator._copyValues(self._estimator._model_class()())
        DefaultParamsWriter.saveMetadata(model, self._path, spark, extraMetadata={
            "intercept": 0.0, "numRows": 0, "nnz": 0, "objectiveHistory": [], "numFeatures": 0,
            "weightsFormat": ONLINE_FORMAT})


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
