"""One child of the streaming bench (``python -m bench.stream --child CONFIG``): our streams, or MLlib's.

Each child is its own Python + JVM, started by the parent
(:mod:`bench.stream`) through :func:`bench.harness.run_child_process`, with
the MLlib bench's session settings (:func:`bench.child.session`: loopback, a
JVM that exits on ``OutOfMemoryError``, the UI on a random port). A DStream
``StreamingContext`` and our plugin's session never share a JVM: MLlib's
child (:mod:`bench.stream_mllib`) has no plugin.

Our child (:func:`run_ps`) streams each :class:`StreamSpec` in turn through
``spark_ps.streaming.StreamingTrainer(LogisticRegression(...), modelPath,
snapshotEvery)``: a Parquet file source over the spec's files (hard links
into a fresh directory, so the source sees only this stream's files), one
file per micro-batch (``maxFilesPerTrigger=1``), triggers back to back,
``processAllAvailable()``. Per batch it joins ``trainer.metrics()`` (rows,
progressive AUC / log-loss, training and scoring seconds, model version) with
the query's progress events (``durationMs.triggerExecution`` and the
trigger's timestamp, by ``batchId``). Then it times ``trainer.stop()``
(query stop and a full snapshot). For a spec with a ``restart_file`` it
links that file into the source and times a **new** trainer and query on the
same model path and checkpoint up to their first committed batch: shards
rebuilt from the model path (snapshot + log), the batch scored, trained and
committed. Same session, so no JVM start-up: a restarted driver adds the
child's ``session_s``, reported beside it.

Before each of our streams, :func:`run_floor` streams the same files
through Structured Streaming with nothing but one barrier stage per batch
whose tasks receive the batch's rows as our training stage's tasks do
(:func:`spark_ps.streaming.stageinput.stage_input`: each task reads its share
of the batch's Parquet files, or Spark's Arrow batches of its partition for
another source) and count them: the per-batch floor of this host, measured
in the same child and session.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import pathlib
import time
import traceback
from typing import Any

from bench.config import ChildConfig
from bench.logs import error_summary
from bench.probes import PeakSampler, vm_hwm_mb
from bench.records import OK, OOM, PS, known_fields
from bench.stream_records import BatchStat, StreamRun

OOM_MARKER = "java.lang.OutOfMemoryError"


@dataclasses.dataclass(frozen=True)
class StreamSpec:
    """One stream: its micro-batch files in order, and the file a restart finds (``None``: no restart)."""

    batch_rows: int
    files: list[str]
    restart_file: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class StreamChildConfig:
    """Everything a child needs; the first eight fields are those :func:`bench.child.session` reads.

    Round trip:

    >>> import tempfile
    >>> cfg = StreamChildConfig(name="n", system=PS, master="local[2]", driver_memory="2g", partitions=2,
    ...                         warehouse="w", result="r.json", purpose="memory", d_log2=18,
    ...                         streams=[StreamSpec(10, ["a.parquet"])])
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     cfg.write(pathlib.Path(tmp, "c.json"))
    ...     StreamChildConfig.read(pathlib.Path(tmp, "c.json")) == cfg
    True
    """

    name: str
    system: str
    master: str
    driver_memory: str
    partitions: int
    warehouse: str
    result: str
    executor_memory: str | None = None
    purpose: str
    d_log2: int
    streams: list[StreamSpec]
    alpha: float = 0.2
    beta: float = 1.0
    batch_size: int = 4096
    snapshot_every: int = 10
    mllib_iterations: int = 50
    mllib_step: float = 5.0
    mllib_interval_s: float = 1.0
    timeout: float = 900.0

    #: Written as the MLlib bench's child configuration is: JSON of its fields.
    write = ChildConfig.write

    @classmethod
    def read(cls, path: str | pathlib.Path) -> StreamChildConfig:
        """Read from the JSON of :meth:`write`."""
        data = json.loads(pathlib.Path(path).read_text())
        return known_fields(cls, data, streams=[known_fields(StreamSpec, s) for s in data["streams"]])


def run_child(cfg_path: str) -> None:
    """Entry point of ``--child``: run the configuration's streams, write a JSON list of :class:`StreamRun`.

    Whatever fails is recorded in the runs (status, error), never raised:
    the parent reads the result file, or classifies a missing one.
    """
    cfg = StreamChildConfig.read(cfg_path)
    # The trainer's line per committed batch (rows, rows/s, AUC, model version) into the child's log.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("spark_ps.streaming").setLevel(logging.INFO)
    runs: list[StreamRun] = []
    spark = None
    with PeakSampler() as sampler:
        try:
            from bench.child import session

            t0 = time.perf_counter()
            spark = session(cfg)
            spark.sparkContext.setLogLevel("ERROR")
            if cfg.system == PS:
                from spark_ps.spark.context import PSContext

                PSContext.get(spark)  # session start-up, not streaming: every shard registered
                session_s = time.perf_counter() - t0
                run_ps(spark, cfg, runs, session_s)
            else:
                from bench.stream_mllib import run_mllib

                runs.append(run_mllib(spark, cfg, time.perf_counter() - t0))
        except Exception as exc:  # recorded, not swallowed: the report shows it, the log has the trace
            traceback.print_exc()
            failed = next((r for r in runs if r.status != OK), None)
            if failed is None:
                spec = cfg.streams[len(runs)] if len(runs) < len(cfg.streams) else cfg.streams[-1]
                failed = StreamRun(system=cfg.system, purpose=cfg.purpose, d_log2=cfg.d_log2,
                                   batch_rows=spec.batch_rows)
                runs.append(failed)
            failed.status = OOM if OOM_MARKER in str(exc) else failed.status
            failed.error = failed.error or error_summary(exc)
        finally:
            sampler.sample()
    peaks = sampler.by_role()
    for run in runs:
        run.driver_jvm_peak_mb = peaks.driver_jvm
        run.driver_python_peak_mb = vm_hwm_mb(os.getpid())
    pathlib.Path(cfg.result).write_text(json.dumps([r.to_dict() for r in runs]))
    if spark is not None and not any(r.status == OOM for r in runs):
        spark.stop()


def heap_after_gc_mb(spark) -> float:
    """The driver JVM's used heap (MB) after a full GC: what the driver holds, without the heap's sizing noise."""
    jvm = spark.sparkContext._jvm
    jvm.java.lang.System.gc()
    runtime = jvm.java.lang.Runtime.getRuntime()
    return (runtime.totalMemory() - runtime.freeMemory()) / 2**20


def _progress(query) -> dict[int, dict[str, Any]]:
    """``batchId`` -> the progress event of its trigger (the last one, if Spark reported several)."""
    out = {}
    for p in query.recentProgress:
        out[int(p.batchId)] = {"latency_s": p.durationMs.get("triggerExecution", 0) / 1000.0,
                               "start": datetime.datetime.fromisoformat(p.timestamp).timestamp()}
    return out


def _batch_stats(metrics: list, progress: dict[int, dict[str, Any]], snapshot_every: int) -> list[BatchStat]:
    """One :class:`BatchStat` per committed batch: ``trainer.metrics()`` rows joined with the progress events."""
    stats = []
    for i, m in enumerate(sorted(metrics, key=lambda r: r["batchId"])):
        p = progress.get(int(m["batchId"]), {})
        committed = m.get("committedAt")
        to_commit = committed.timestamp() - p["start"] if committed is not None and "start" in p else None
        stats.append(BatchStat(batch_id=int(m["batchId"]), rows=int(m["rows"]), latency_s=p.get("latency_s"),
                               to_commit_s=to_commit,
                               start=p.get("start"), train_s=m["trainSeconds"], score_s=m["scoreSeconds"],
                               auc=m["auc"], log_loss=m["logLoss"], model_version=int(m["modelVersion"]),
                               snapshot=(i + 1) % snapshot_every == 0))
    return stats


def _link_source(files: list[str], source: pathlib.Path) -> None:
    """Hard-link the stream's files into ``source`` (created), in order, so their mtimes keep that order."""
    source.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(files):
        os.link(f, source / f"part-{i:05d}.parquet")


def _batch_reader(files, workers: int):
    """A floor task: receive the task's share of the batch as a training task does (see :func:`run_floor`); its rows."""

    def read(batches):
        import pyarrow as pa
        from pyspark import TaskContext

        from spark_ps.streaming.stageinput import task_batches

        batches = task_batches(batches, files, TaskContext.get().partitionId(), workers)
        yield pa.RecordBatch.from_pydict({"rows": [sum(batch.num_rows for batch in batches)]})

    return read


def run_floor(spark, schema, files: list[str], root: pathlib.Path, estimator) -> list[BatchStat]:
    """Stream ``files`` (one a trigger) into a ``foreachBatch`` that runs one barrier stage of :func:`_batch_reader`.

    The stage's input is what ``StreamingTrainer`` would give ``estimator``'s
    training stage (:func:`~spark_ps.streaming.stageinput.stage_input`). One
    :class:`BatchStat` per batch: its rows and its trigger's latency.
    """
    from spark_ps.spark.tasks import task_slots
    from spark_ps.streaming.stageinput import ParquetSource, stage_input, training_columns

    _link_source(files, root / "source")
    rows = {}
    events = spark.readStream.schema(schema).option("maxFilesPerTrigger", 1).parquet(str(root / "source"))
    source = ParquetSource.of(events, training_columns(estimator))

    def read(df, batch_id):
        batch = stage_input(df, estimator, task_slots(spark), source)
        reader = _batch_reader(batch.files, batch.workers)
        rows[batch_id] = sum(r.rows for r in batch.stage.mapInArrow(reader, "rows long", barrier=True).collect())

    query = (events.writeStream.foreachBatch(read).option("checkpointLocation", str(root / "checkpoint")).start())
    query.processAllAvailable()
    query.stop()
    progress = _progress(query)
    return [BatchStat(batch_id=b, rows=n, latency_s=progress.get(b, {}).get("latency_s"),
                      start=progress.get(b, {}).get("start")) for b, n in sorted(rows.items())]


def run_ps(spark, cfg: StreamChildConfig, runs: list[StreamRun], session_s: float) -> None:
    """Stream each of ``cfg.streams`` through our ``StreamingTrainer``; append one :class:`StreamRun` each."""
    from spark_ps.ml.classification import LogisticRegression
    from spark_ps.streaming import StreamingTrainer

    # recentProgress keeps 100 events by default: a 40-batch stream with idle events could lose some.
    spark.conf.set("spark.sql.streaming.numRecentProgressUpdates", "100000")
    est = LogisticRegression(regParam=0.0, alpha=cfg.alpha, beta=cfg.beta, batchSize=cfg.batch_size)
    workers = spark.sparkContext.defaultParallelism
    root = pathlib.Path(cfg.warehouse)
    for spec in cfg.streams:
        run = StreamRun(system=PS, purpose=cfg.purpose, d_log2=cfg.d_log2, batch_rows=spec.batch_rows,
                        session_s=session_s, workers=workers,
                        settings=f"FTRL α={cfg.alpha:g}, β={cfg.beta:g}, batchSize={cfg.batch_size}, reg 0, "
                                 f"snapshotEvery={cfg.snapshot_every}")
        runs.append(run)
        base = root / f"b{spec.batch_rows}"
        source, model, ckpt = base / "source", str(base / "model"), str(base / "checkpoint")
        _link_source(spec.files, source)
        schema = spark.read.parquet(str(source)).schema
        run.floor_batches = run_floor(spark, schema, spec.files, base / "floor", est)

        def events():
            return spark.readStream.schema(schema).option("maxFilesPerTrigger", 1).parquet(str(source))

        trainer = StreamingTrainer(est, modelPath=model, snapshotEvery=cfg.snapshot_every)
        query = trainer.start(events(), checkpointLocation=ckpt)
        query.processAllAvailable()
        progress = _progress(query)
        run.heap_after_gc_mb = heap_after_gc_mb(spark)
        t0 = time.perf_counter()
        trainer.stop()
        run.stop_s = time.perf_counter() - t0
        metrics = [r.asDict() for r in trainer.metrics().collect()]
        run.batches = _batch_stats(metrics, progress, cfg.snapshot_every)
        print(f"[bench.stream] {PS} d=2^{cfg.d_log2} {spec.batch_rows} rows/batch: {len(run.batches)} batches, "
              f"stop+snapshot {run.stop_s:.2f} s", flush=True)
        if spec.restart_file is not None:
            os.link(spec.restart_file, source / "part-restart.parquet")
            t0 = time.perf_counter()
            again = StreamingTrainer(est, modelPath=model, snapshotEvery=cfg.snapshot_every)
            query = again.start(events(), checkpointLocation=ckpt)
            query.processAllAvailable()
            run.restart_s = time.perf_counter() - t0
            restart_progress = _progress(query)
            again.stop()
            done = {b.batch_id for b in run.batches}
            new = [r.asDict() for r in again.metrics().collect() if r["batchId"] not in done]
            if len(new) != 1:
                raise RuntimeError(f"restart of {model}: expected one new committed batch, got {len(new)}")
            run.restart_batch = _batch_stats(new, restart_progress, cfg.snapshot_every)[0]
            run.restart_batch.snapshot = False
            run.restart_rows = run.restart_batch.rows
            print(f"[bench.stream] restart to first commit {run.restart_s:.2f} s", flush=True)
        run.status = OK

