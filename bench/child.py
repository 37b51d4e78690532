"""One configuration of the MLlib bench in its own Python + JVM (``python -m bench.mllib --child CONFIG``).

The parent (:mod:`bench.harness`) starts one such process per
configuration, so a driver ``OutOfMemoryError`` (MLlib keeps several dense
``d``-vectors on the driver) is recorded as ``OOM`` instead of taking the
harness down. The JVMs run with ``-XX:+ExitOnOutOfMemoryError`` so an OOM
ends the run at once instead of leaving a half-dead driver to time out, and
with ``spark.driver.maxResultSize=0`` so MLlib's large-``d`` failure is its
memory, not that safety limit.

The fit clock: the training DataFrame is read, repartitioned if needed and
cached, and for spark-ps the shards registered, *before* it starts,
identically for both systems. Held-out AUC (``BinaryClassificationEvaluator``
with ``numBins=0``, exact) and log-loss (a Spark SQL aggregate) are both
computed on the executors. See :func:`fit_spark_ps` for the one function that
wires our estimator in.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import sys
import time
import traceback

from bench.config import ChildConfig
from bench.logs import error_summary, executor_log_tails
from bench.probes import EpochLog, PeakSampler, stage_totals, tree_cpu_seconds, vm_hwm_mb
from bench.records import ERROR, MLLIB, OK, OOM, PS, ChildResult, MLlibParams, PSParams

OOM_MARKER = "java.lang.OutOfMemoryError"


def spark_ps_unavailable() -> str | None:
    """Why the spark-ps half cannot run, or ``None`` if it can.

    Examples
    --------
    >>> reason = spark_ps_unavailable()
    >>> reason is None or isinstance(reason, str)
    True
    """
    try:
        from spark_ps.ml.classification import LogisticRegression  # noqa: F401
        from spark_ps.spark.session import plugin_jar_path
    except ImportError as exc:
        return f"spark_ps.ml.classification does not import ({exc})"
    try:
        plugin_jar_path()
    except FileNotFoundError as exc:
        return str(exc)
    return None


def fit_spark_ps(train, params: PSParams, data_format: str):
    """Fit spark-ps ``LogisticRegression`` on ``train``: the hook the harness calls for our side.

    This is the only place that knows our estimator's API; the harness times
    exactly this call. The returned model's ``transform`` must add
    ``rawPrediction`` (a 2-vector, ``[-margin, margin]``) and ``probability``
    (``[1 - p, p]``) like MLlib's, which is what the evaluation reads.

    Parameters
    ----------
    train : pyspark.sql.DataFrame
        Cached training data: ``label: double`` and ``features: vector``
        (``data_format == "vector"``), or ``label``, ``indices: array<bigint>``
        and ``values: array<double>`` (``"keys"``, for ``d > 2**31 - 1``).
    params : PSParams
        ``numEpochs``, ``regParam``, ``alpha``, ``beta``, ``batchSize`` from the command line; a 0 keeps
        the estimator's default.
    data_format : {"vector", "keys"}

    Returns
    -------
    pyspark.ml.Model

    Examples
    --------
    >>> fit_spark_ps(None, PSParams(1, 0.0, 0.2, 1.0, 4096), "keys")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    NotImplementedError: spark-ps LogisticRegression takes a VectorUDT features column only; ...
    """
    if data_format != "vector":
        raise NotImplementedError("spark-ps LogisticRegression takes a VectorUDT features column only; raw int64 "
                                  "keys (d > 2**31 - 1) need an estimator input for them")
    from spark_ps.ml.classification import LogisticRegression

    # A 0 leaves the Param at the estimator's default (PSParams.label says "defaults").
    chosen = {"numEpochs": params.numEpochs, "maxIter": params.numEpochs, "alpha": params.alpha,
              "batchSize": params.batchSize, "regParam": params.regParam}
    lr = LogisticRegression(featuresCol="features", labelCol="label", beta=params.beta,
                            **{name: value for name, value in chosen.items() if value})
    return lr.fit(train)


def fit_mllib(train, params: MLlibParams, data_format: str):
    """Fit MLlib's ``LogisticRegression`` (binomial, L2) with ``maxIter``, ``regParam``, ``standardization``.

    Parameters
    ----------
    train : pyspark.sql.DataFrame
        Cached ``label: double``, ``features: vector``.
    params : MLlibParams
    data_format : {"vector"}
        MLlib needs a VectorUDT column (``d <= 2**31 - 1``).

    Returns
    -------
    pyspark.ml.classification.LogisticRegressionModel
    """
    from pyspark.ml.classification import LogisticRegression

    if data_format != "vector":
        raise ValueError("MLlib needs a VectorUDT column (d <= 2**31 - 1)")
    lr = LogisticRegression(featuresCol="features", labelCol="label", maxIter=params.maxIter,
                            regParam=params.regParam, standardization=params.standardization,
                            elasticNetParam=0.0, family="binomial")
    return lr.fit(train)


FITTERS = {MLLIB: fit_mllib, PS: fit_spark_ps}


def warm_up(cfg: ChildConfig, train) -> float:
    """Fit the configuration's system once on the first ``warmup_rows`` training rows; return the seconds.

    Untimed, for both systems alike, so that the timed fit measures training
    rather than the start-up of a fresh application: the JVM's JIT for both,
    and for spark-ps also Spark's Python workers, which a pure-JVM MLlib fit
    never starts (about 2.5 s of a first fit on this machine). The seconds
    returned are reported, so the cold start stays visible.
    """
    if isinstance(cfg.params, MLlibParams):
        params = dataclasses.replace(cfg.params, maxIter=min(5, cfg.params.maxIter))
    else:
        params = dataclasses.replace(cfg.params, numEpochs=1)
    start = time.perf_counter()
    model = FITTERS[cfg.system](train.limit(cfg.warmup_rows), params, cfg.format)
    if cfg.system == PS:
        model.numNonZeros  # waits for its background Delta export, which would overlap the timed fit
    return time.perf_counter() - start


def session(cfg: ChildConfig):
    """The configuration's SparkSession: loopback, OOM kills the JVM, UI on a random port for the REST API."""
    from pyspark.sql import SparkSession

    builder = (SparkSession.builder.master(cfg.master).appName(f"bench-mllib {cfg.name}")
               .config("spark.driver.host", "127.0.0.1")
               .config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.driver.memory", cfg.driver_memory)
               # Die on the first OOM (exit, logged) rather than limp on with a broken driver.
               .config("spark.driver.extraJavaOptions", "-XX:+ExitOnOutOfMemoryError")
               .config("spark.executor.extraJavaOptions", "-XX:+ExitOnOutOfMemoryError")
               # Random free port (other sessions may hold 4040); bound to SPARK_LOCAL_IP=127.0.0.1.
               .config("spark.ui.enabled", "true")
               .config("spark.ui.port", "0")
               .config("spark.ui.retainedStages", "100000")
               .config("spark.ui.retainedJobs", "100000")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", str(cfg.partitions))
               .config("spark.sql.warehouse.dir", cfg.warehouse)
               # Unlimited, for both systems: MLlib's large-d failure should be its memory, not this knob.
               .config("spark.driver.maxResultSize", "0")
               .config("spark.pyspark.python", sys.executable))
    if cfg.executor_memory:
        # local-cluster[E,C,M]: give each executor its worker's whole M (Spark's default is 1g).
        builder = builder.config("spark.executor.memory", cfg.executor_memory)
    if cfg.system == PS:
        from spark_ps.spark.session import configure_spark_with_ps
        builder = configure_spark_with_ps(builder, servers_per_executor=1)
    return builder.getOrCreate()


def evaluate(model, test) -> tuple[float, float]:
    """Held-out AUC (exact ROC) and log-loss of ``model`` on ``test``, computed by Spark on the executors."""
    from pyspark.ml.evaluation import BinaryClassificationEvaluator
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    pred = model.transform(test).select("label", "rawPrediction", "probability").cache()
    # numBins=0: the exact ROC; the default 1000 bins down-samples it and biases the area.
    auc = BinaryClassificationEvaluator(labelCol="label", rawPredictionCol="rawPrediction",
                                        metricName="areaUnderROC", numBins=0).evaluate(pred)
    eps = 1e-15
    p = F.least(F.greatest(vector_to_array("probability")[1], F.lit(eps)), F.lit(1.0 - eps))
    y = F.col("label")
    loss = pred.select(F.avg(-(y * F.log(p) + (1.0 - y) * F.log(1.0 - p)))).first()[0]
    pred.unpersist()
    return float(auc), float(loss)


def _set_epochs(record: ChildResult, lines: list[str]) -> None:
    stats = EpochLog.parse(lines)
    record.epoch_seconds, record.epoch_rows_per_s, record.workers = (
        stats.epoch_seconds, stats.epoch_rows_per_s, stats.workers)


def run_child(cfg_path: str) -> None:
    """Entry point of ``--child``: fit and evaluate one configuration, write its :class:`ChildResult` as JSON.

    Parameters
    ----------
    cfg_path : str
        The :class:`~bench.records.ChildConfig` JSON the parent wrote.
    """
    cfg = ChildConfig.read(cfg_path)
    record = ChildResult(status=ERROR)
    start = time.perf_counter()
    spark = None
    app_id = None
    epoch_log = EpochLog()
    if cfg.system == PS:
        ps_log = logging.getLogger("spark_ps.ml")
        ps_log.setLevel(logging.INFO)
        ps_log.addHandler(epoch_log)
    with PeakSampler() as sampler:
        try:
            spark = session(cfg)
            spark.sparkContext.setLogLevel("ERROR")
            app_id = record.app_id = spark.sparkContext.applicationId
            # The parent reads executor logs by app id even if this process is killed (timeout).
            pathlib.Path(cfg.result).with_name("app_id").write_text(app_id)
            if cfg.system == PS:
                # Session start-up, not training: wait until every executor's shard has registered.
                from spark_ps.spark.context import PSContext
                PSContext.get(spark)
            t0 = time.perf_counter()
            train = spark.read.parquet(cfg.train)
            if train.rdd.getNumPartitions() < cfg.partitions:
                train = train.repartition(cfg.partitions)
            train = train.cache()
            record.train_rows = train.count()
            record.load_s = time.perf_counter() - t0
            if cfg.warmup_rows:
                record.warmup_s = warm_up(cfg, train)
                epoch_log.lines.clear()  # the warm-up's progress lines are not the timed fit's
            before = stage_totals(spark)
            record.load_avg_before = os.getloadavg()[0]
            cpu0, t0 = tree_cpu_seconds(), time.perf_counter()
            model = FITTERS[cfg.system](train, cfg.params, cfg.format)
            record.fit_s = time.perf_counter() - t0
            record.fit_cpu_s = tree_cpu_seconds() - cpu0
            record.load_avg_after = os.getloadavg()[0]
            after = stage_totals(spark)
            record.result_bytes = after.result_bytes - before.result_bytes
            record.fit_stages = after.stages - before.stages
            if cfg.system == MLLIB:
                record.iterations = model.summary.totalIterations
            else:
                _set_epochs(record, epoch_log.lines)
            record.auc, record.log_loss = evaluate(model, spark.read.parquet(cfg.test))
            record.status = OK
        except Exception as exc:  # recorded, not swallowed: the parent reports it, the log has the trace
            record.status = OOM if OOM_MARKER in str(exc) else ERROR
            record.error = error_summary(exc)
            traceback.print_exc()
            if cfg.system == PS:
                _set_epochs(record, epoch_log.lines)
            try:
                record.executor_log_tail = executor_log_tails(app_id)
            except OSError as log_exc:
                record.executor_log_tail = f"(could not read executor logs: {log_exc})"
        finally:
            sampler.sample()  # the JVM's final VmHWM, before stop() ends it
    peaks = sampler.by_role()
    record.driver_jvm_peak_mb = peaks.driver_jvm
    record.executor_side_peak_mb = peaks.executor_side_sum
    # VmHWM of our own mm, not getrusage's ru_maxrss: Linux carries ru_maxrss across fork and exec,
    # so it would report the harness's footprint at launch whenever that is larger.
    record.driver_python_peak_mb = vm_hwm_mb(os.getpid())
    record.child_wall_s = time.perf_counter() - start
    pathlib.Path(cfg.result).write_text(json.dumps(record.to_dict()))
    if spark is not None and record.status != OOM:
        spark.stop()


def oom_line(log_text: str) -> str | None:
    """The first line of a child's log that reports a JVM ``OutOfMemoryError``, or ``None``.

    Examples
    --------
    >>> oom_line("a\\nTerminating due to java.lang.OutOfMemoryError: Java heap space\\n")
    'Terminating due to java.lang.OutOfMemoryError: Java heap space'
    """
    return next((ln.strip() for ln in log_text.splitlines() if OOM_MARKER in ln), None)
