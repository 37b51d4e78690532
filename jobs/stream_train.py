"""Streaming online training: keep a model fresh from a stream of events (``spark_ps.streaming.StreamingTrainer``).

Run through spark-submit with the project's ``conf/spark-defaults.conf``
(``jobs/run_demo.sh`` does it: ``SPARK_PS_DEMO_JOB=jobs/stream_train.py``)::

    spark-submit --properties-file conf/spark-defaults.conf jobs/stream_train.py \\
        --impressions warehouse/ctr_events/impressions --clicks warehouse/ctr_events/clicks \\
        --model-path warehouse/ctr_online --checkpoint checkpoints/ctr_online --until-idle

One source, of three kinds:

* ``--events PATH``: labelled events (``label``, ``features`` vector and, if
  the estimator has one, the weight column), a Delta table or, with
  ``--format parquet``, a directory of Parquet files;
* ``--impressions PATH --clicks PATH``: two such tables joined by
  :func:`spark_ps.streaming.labels.join_delayed_labels` (``--key``,
  ``--event-time``, ``--delay``, ``--lateness``) into labelled impressions;
* ``--kafka-bootstrap HOST:PORT --topic NAME``: a topic whose values are JSON
  ``{"label": 1.0, "size": 4194304, "indices": [3, 17], "values": [1.0, 1.0]}``
  (a sparse vector); a value that does not parse trains nothing and lands in
  the model's quarantine. Needs spark-sql-kafka on ``spark.jars`` (``make kafka``).

Prints one line per committed micro-batch (the trainer's log line: rows,
rows/s of the training pass, the progressive-validation metrics the batch
was scored with *before* the model learnt from it, and the model version the
commit made). ``--until-idle`` processes what the source holds, then stops;
``--max-batches N`` stops after N commits; with neither, it runs until
interrupted (Ctrl-C stops it cleanly with a snapshot). A stopped or killed
job restarted with the same ``--checkpoint`` and ``--model-path`` resumes
after the last committed batch: the model path is the truth, and a batch
Spark replays that the model has committed is skipped.

``--score-output PATH`` also runs live scoring
(:class:`spark_ps.streaming.Scorer`) into a Delta table: the impressions (or
the events) scored by the newest committed model version, one version per
micro-batch, stamped ``modelVersion``. It starts once the model has a
committed version; with ``--until-idle`` it runs after training has drained
the source, so it scores everything with the final version.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import threading

import numpy as np
import pyarrow as pa
from pyspark.errors import AnalysisException, StreamingQueryException
from pyspark.ml.linalg import VectorUDT
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StructField, StructType

from spark_ps.ml.classification import FMClassifier, LogisticRegression
from spark_ps.ml.csrcolumns import VECTOR_ARROW_TYPE
from spark_ps.ml.modelstore import ModelStore
from spark_ps.ml.regression import LinearRegression
from spark_ps.spark.session import checkpoint_manager_setting
from spark_ps.streaming import Scorer, StreamingTrainer
from spark_ps.streaming.labels import join_delayed_labels

ESTIMATORS = {"lr": LogisticRegression, "fm": FMClassifier, "linreg": LinearRegression}
FORMATS = ("delta", "parquet")
#: Kafka values: JSON of a labelled sparse vector.
KAFKA_VALUE_SCHEMA = "label double, size int, indices array<int>, values array<double>"
KAFKA_EVENT_SCHEMA = StructType([StructField("label", DoubleType()), StructField("features", VectorUDT())])


@dataclasses.dataclass(frozen=True)
class StreamJobSettings:
    """The job's options, checked once; see the module docstring and ``--help`` for their meaning."""

    model_path: str
    checkpoint: str
    estimator: str = "lr"
    reg_param: float | None = None
    num_workers: int = 0
    snapshot_every: int = 10
    retention_hours: float | None = None
    initial_model: str | None = None
    events: str | None = None
    impressions: str | None = None
    clicks: str | None = None
    source_format: str = "delta"
    max_files_per_trigger: int | None = None
    key: str = "id"
    event_time: str = "t"
    click_time: str | None = None
    delay: str = "30 seconds"
    lateness: str = "5 seconds"
    kafka_bootstrap: str | None = None
    topic: str | None = None
    starting_offsets: str = "earliest"
    max_offsets_per_trigger: int | None = None
    score_output: str | None = None
    shuffle_partitions: int | None = None
    trigger: float = 0.0
    max_batches: int | None = None
    until_idle: bool = False

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"--estimator must be one of {sorted(ESTIMATORS)}, got {self.estimator!r}")
        if self.source_format not in FORMATS:
            raise ValueError(f"--format must be one of {FORMATS}, got {self.source_format!r}")
        if (self.impressions is None) != (self.clicks is None):
            raise ValueError("--impressions and --clicks go together: the delayed-label join needs both streams")
        if (self.kafka_bootstrap is None) != (self.topic is None):
            raise ValueError("--kafka-bootstrap and --topic go together")
        sources = [self.events is not None, self.impressions is not None, self.kafka_bootstrap is not None]
        if sum(sources) != 1:
            raise ValueError("give exactly one source: --events, --impressions with --clicks, or --kafka-bootstrap "
                             f"with --topic (got {sum(sources)})")
        if self.max_batches is not None and self.until_idle:
            raise ValueError("--max-batches and --until-idle exclude each other: pick one way to stop")
        for name in ("max_batches", "max_files_per_trigger", "max_offsets_per_trigger", "shuffle_partitions"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if self.trigger < 0 or self.snapshot_every < 1 or self.num_workers < 0:
            raise ValueError(f"need --trigger >= 0, --snapshot-every >= 1, --num-workers >= 0; got {self.trigger}, "
                             f"{self.snapshot_every}, {self.num_workers}")

    @property
    def train_checkpoint(self) -> str:
        """Spark checkpoint of the training query."""
        return os.path.join(self.checkpoint, "train")

    @property
    def score_checkpoint(self) -> str:
        """Spark checkpoint of the scoring query."""
        return os.path.join(self.checkpoint, "score")

    def trigger_spec(self) -> dict | None:
        """``DataStreamWriter.trigger`` keywords (None: each micro-batch starts when the previous one ends)."""
        return {"processingTime": f"{self.trigger:g} seconds"} if self.trigger > 0 else None


def build_estimator(settings: StreamJobSettings):
    """The estimator ``--estimator`` names, with ``--reg-param`` and ``--num-workers``."""
    est = ESTIMATORS[settings.estimator](numWorkers=settings.num_workers)
    return est if settings.reg_param is None else est.setRegParam(settings.reg_param)


def read_table_stream(spark: SparkSession, path: str, settings: StreamJobSettings) -> DataFrame:
    """A Delta table or a Parquet directory as a stream (a file source's schema: that of the files there now)."""
    reader = spark.readStream
    if settings.max_files_per_trigger is not None:
        reader = reader.option("maxFilesPerTrigger", settings.max_files_per_trigger)
    if settings.source_format == "delta":
        return reader.format("delta").load(path)
    try:
        schema = spark.read.parquet(path).schema
    except AnalysisException as exc:  # a file source takes its schema from the files; none there yet
        raise ValueError(f"--format parquet: no Parquet files to take the schema from under {path!r}; "
                         "write some first (Spark's file source needs a schema)") from exc
    return reader.schema(schema).parquet(path)


def _kafka_vectors(batches):
    """``mapInArrow``: parsed JSON columns to ``label, features`` (the sparse ``VectorUDT`` struct), no row loop."""
    fields = list(VECTOR_ARROW_TYPE)
    for batch in batches:
        features = pa.StructArray.from_arrays(
            [pa.array(np.zeros(batch.num_rows, np.int8)), batch.column("size"),
             batch.column("indices").cast(fields[2].type), batch.column("values").cast(fields[3].type)],
            fields=fields)
        yield pa.RecordBatch.from_arrays([batch.column("label"), features], names=["label", "features"])


def decode_kafka(raw: DataFrame) -> DataFrame:
    """Kafka records (``value``: JSON bytes, :data:`KAFKA_VALUE_SCHEMA`) as ``label double, features vector``.

    A value that is not such JSON gives null fields, which the trainer's
    quarantine sets aside (``features_malformed``) instead of training on.

    Examples
    --------
    >>> raw = spark.createDataFrame([('{"label": 1, "size": 8, "indices": [2, 5], "values": [1.0, 0.5]}',)],
    ...                             "value string").selectExpr("CAST(value AS binary) AS value")
    >>> decode_kafka(raw).first()
    Row(label=1.0, features=SparseVector(8, {2: 1.0, 5: 0.5}))
    """
    parsed = raw.select(F.from_json(F.col("value").cast("string"), KAFKA_VALUE_SCHEMA).alias("e")).select("e.*")
    return parsed.mapInArrow(_kafka_vectors, KAFKA_EVENT_SCHEMA)


def read_kafka(spark: SparkSession, settings: StreamJobSettings) -> DataFrame:
    """The topic's records as a stream of labelled events (:func:`decode_kafka`)."""
    reader = (spark.readStream.format("kafka").option("kafka.bootstrap.servers", settings.kafka_bootstrap)
              .option("subscribe", settings.topic).option("startingOffsets", settings.starting_offsets))
    if settings.max_offsets_per_trigger is not None:
        reader = reader.option("maxOffsetsPerTrigger", settings.max_offsets_per_trigger)
    try:
        raw = reader.load()
    except AnalysisException as exc:  # the one likely cause: the connector is not on the classpath
        raise RuntimeError(f"cannot read Kafka topic {settings.topic!r}: {str(exc).splitlines()[0]}. The Kafka "
                           "source needs spark-sql-kafka: run `make kafka` and add spark_ps/jars/kafka/*.jar to "
                           "spark.jars") from exc
    return decode_kafka(raw)


def training_events(spark: SparkSession, settings: StreamJobSettings) -> DataFrame:
    """The labelled stream the trainer learns from."""
    if settings.kafka_bootstrap is not None:
        return read_kafka(spark, settings)
    if settings.events is not None:
        return read_table_stream(spark, settings.events, settings)
    return join_delayed_labels(read_table_stream(spark, settings.impressions, settings),
                               read_table_stream(spark, settings.clicks, settings), key=settings.key,
                               eventTime=settings.event_time, clickTime=settings.click_time, delay=settings.delay,
                               lateness=settings.lateness)


def scoring_events(spark: SparkSession, settings: StreamJobSettings) -> DataFrame:
    """The stream live scoring scores: the impressions as they arrive (no label needed), else the events."""
    if settings.impressions is not None:
        return read_table_stream(spark, settings.impressions, settings)
    return training_events(spark, settings)


class BatchLines(logging.Handler):
    """Prints the ``spark_ps.streaming`` log to stdout, and notes the batches committed and skipped in this run.

    The trainer logs each commit as ``batch %d: %d rows, ..., model version %d``
    and each replay it skips as ``batch %d: committed already ...``; the
    counts below come from those records' arguments.
    """

    def __init__(self, max_batches: int | None = None):
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        self.committed: list[int] = []
        self.skipped: list[int] = []
        self.max_batches = max_batches
        self.first_commit = threading.Event()
        self.enough = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), flush=True)
        if not isinstance(record.msg, str) or not record.args:
            return
        if record.msg.startswith("batch %d: %d rows, ") and "model version" in record.msg:  # not "rows quarantined"
            self.committed.append(int(record.args[0]))
            self.first_commit.set()
            if self.max_batches is not None and len(self.committed) >= self.max_batches:
                self.enough.set()
        elif record.msg.startswith("batch %d: committed already"):
            self.skipped.append(int(record.args[0]))


def _print_summary(trainer: StreamingTrainer, lines: BatchLines, regression: bool) -> None:
    metrics = trainer.metrics()
    cols = ["batchId", "modelVersion", "rows", "quarantined"] + (["rmse", "r2"] if regression else ["auc", "logLoss"])
    print(f"this run: committed batches {lines.committed}, skipped (committed before the restart) {lines.skipped}")
    print("every committed batch of the model:", flush=True)
    metrics.select(*cols, F.round("trainSeconds", 2).alias("trainSeconds")).show(n=100000, truncate=False)
    total = metrics.agg(F.sum("rows"), F.count("*")).first()
    print(f"model: {total[1]} committed batches, {total[0] or 0} rows trained", flush=True)


def run(spark: SparkSession, settings: StreamJobSettings) -> int:
    """Run the job on ``spark``; return 0, or 1 if a query failed (its error printed)."""
    est = build_estimator(settings)
    trainer = StreamingTrainer(est, modelPath=settings.model_path, snapshotEvery=settings.snapshot_every,
                               initialModel=settings.initial_model, retentionHours=settings.retention_hours)
    lines = BatchLines(settings.max_batches)
    if settings.shuffle_partitions is not None:  # read by the query's first batch, then fixed by its checkpoint
        spark.conf.set("spark.sql.shuffle.partitions", settings.shuffle_partitions)
    logger = logging.getLogger("spark_ps.streaming")
    level = logger.level
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    scorer, stopped = None, False
    try:
        query = trainer.start(training_events(spark, settings), checkpointLocation=settings.train_checkpoint,
                              trigger=settings.trigger_spec(), queryName="spark_ps_train")
        print(f"training {type(est).__name__} into {settings.model_path} (checkpoint {settings.checkpoint})",
              flush=True)
        if ModelStore(spark, settings.model_path).last_commit() is not None:
            lines.first_commit.set()  # a restart: live scoring can start at once
        try:
            if settings.until_idle:
                query.processAllAvailable()
                if settings.score_output and lines.first_commit.is_set():
                    scorer = _start_scorer(spark, settings)
                    scorer.processAllAvailable()
            else:
                # Wake every second to start scoring after the first commit, and to notice a failed query.
                while not lines.enough.wait(timeout=1.0) and query.isActive:
                    if settings.score_output and scorer is None and lines.first_commit.is_set():
                        scorer = _start_scorer(spark, settings)
        except StreamingQueryException as exc:
            print(f"streaming query failed: {exc}", file=sys.stderr, flush=True)
            return 1
        except KeyboardInterrupt:
            print("interrupted: stopping after the last committed batch", flush=True)
        failed = query.exception() or (scorer.exception() if scorer is not None else None)
        if failed is not None:
            print(f"streaming query failed: {failed}", file=sys.stderr, flush=True)
            return 1
        if scorer is not None:
            scorer.stop()
        snapshot = trainer.stop()
        stopped = True
        print(f"stopped; snapshot of model version {snapshot}", flush=True)
        _print_summary(trainer, lines, regression=settings.estimator == "linreg")
        return 0
    finally:
        if scorer is not None and scorer.isActive:
            scorer.stop()
        if not stopped:
            trainer.stop()  # the query may still run after a failed scorer; a snapshot of committed state only
        logger.removeHandler(lines)
        logger.setLevel(level)


def _start_scorer(spark: SparkSession, settings: StreamJobSettings):
    query = Scorer(settings.model_path).start(scoring_events(spark, settings), settings.score_checkpoint,
                                              sink=settings.score_output, trigger=settings.trigger_spec(),
                                              queryName="spark_ps_score")
    print(f"live scoring into {settings.score_output}", flush=True)
    return query


def parse_args(argv: list[str] | None) -> StreamJobSettings:
    """The command line as :class:`StreamJobSettings` (``argparse`` reports a bad option and exits)."""
    d = {f.name: f.default for f in dataclasses.fields(StreamJobSettings)}
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-path", required=True, help="the model directory: the source of truth")
    p.add_argument("--checkpoint", required=True, help="Spark checkpoints (train/, score/): reuse to resume")
    p.add_argument("--estimator", choices=sorted(ESTIMATORS), default=d["estimator"])
    p.add_argument("--reg-param", type=float, help="regParam (per row of the summed loss; default the estimator's)")
    p.add_argument("--num-workers", type=int, default=d["num_workers"], help="training tasks (0: one per slot)")
    p.add_argument("--snapshot-every", type=int, default=d["snapshot_every"])
    p.add_argument("--retention-hours", type=float, help="delete log and versions older than this at snapshots")
    p.add_argument("--initial-model", help="a saved model to continue from (weights and optimizer state)")
    src = p.add_argument_group("source (exactly one)")
    src.add_argument("--events", help="labelled events: label, features (a Delta table or Parquet directory)")
    src.add_argument("--impressions", help="impressions (key, event time, features), joined with --clicks")
    src.add_argument("--clicks", help="clicks (key, click time)")
    src.add_argument("--kafka-bootstrap", help="Kafka bootstrap servers; values: JSON label, size, indices, values")
    src.add_argument("--topic", help="Kafka topic")
    src.add_argument("--format", dest="source_format", choices=FORMATS, default=d["source_format"])
    src.add_argument("--max-files-per-trigger", type=int, help="files (Delta: of the log) a micro-batch reads")
    src.add_argument("--starting-offsets", default=d["starting_offsets"], help="Kafka: earliest | latest | JSON")
    src.add_argument("--max-offsets-per-trigger", type=int, help="Kafka: offsets a micro-batch reads")
    join = p.add_argument_group("delayed-label join (with --impressions/--clicks)")
    join.add_argument("--key", default=d["key"], help="impression id column of both streams")
    join.add_argument("--event-time", default=d["event_time"], help="impressions' event-time column")
    join.add_argument("--click-time", help="clicks' event-time column (default: --event-time)")
    join.add_argument("--delay", default=d["delay"], help="a click counts if at most this long after its impression")
    join.add_argument("--lateness", default=d["lateness"], help="watermark delay of both streams")
    run_ = p.add_argument_group("running")
    run_.add_argument("--score-output", help="also score the events live into this Delta table")
    run_.add_argument("--shuffle-partitions", type=int,
                      help="spark.sql.shuffle.partitions of a new query: the join's state is split this many ways")
    run_.add_argument("--trigger", type=float, default=d["trigger"], help="seconds between micro-batches (0: asap)")
    stop = run_.add_mutually_exclusive_group()
    stop.add_argument("--max-batches", type=int, help="stop after this many committed micro-batches")
    stop.add_argument("--until-idle", action="store_true", help="process what the source holds, then stop")
    args = p.parse_args(argv)
    try:
        return StreamJobSettings(**vars(args))
    except ValueError as exc:
        p.error(str(exc))


def main(argv: list[str] | None = None, spark: SparkSession | None = None) -> int:
    """Entry point: parse ``argv``, run on ``spark`` (default: the spark-submit session, stopped at the end)."""
    settings = parse_args(argv)
    own = spark is None
    if own:
        spark = SparkSession.builder.appName("spark-ps: streaming training").getOrCreate()
        spark.sparkContext.setLogLevel("WARN")
        checkpoints = checkpoint_manager_setting()  # spark_ps.spark.session's decision, for a spark-submit session
        if checkpoints is not None and spark.conf.get(checkpoints[0], None) is None:
            spark.conf.set(*checkpoints)
    try:
        return run(spark, settings)
    finally:
        if own:
            spark.stop()


if __name__ == "__main__":
    raise SystemExit(main())
