"""``make bench`` (head-to-head): spark-ps vs MLlib ``LogisticRegression`` on synthetic CTR data.

One invocation runs the whole matrix: every feature dimension ``d`` of
``--dims`` on every master of ``--masters`` (default ``local[2]`` and
``local-cluster[2,1,2048]``), MLlib on the first master only (its target AUC
is a property of the data, not of the master; ``--mllib-all-masters`` runs it
on each), spark-ps on every master, and the single-process numpy FTRL
reference once per ``d``. Everything lands in one ``results.json`` and one
report section.

For each ``d`` the harness writes a train/test set with ``ctr_data.py``
(VectorUDT Parquet, the same files for both systems and both masters) and runs
every configuration in its **own** Python + JVM (``python bench_mllib.py
--child CONFIG``), so a driver ``OutOfMemoryError`` (MLlib keeps several dense
``d``-vectors on the driver) is recorded as ``OOM`` instead of taking the
harness down. The JVMs run with ``-XX:+ExitOnOutOfMemoryError`` so an OOM
ends the run at once instead of leaving a half-dead driver to time out, and
with ``spark.driver.maxResultSize=0`` so MLlib's large-``d`` failure is its
memory, not that safety limit. Each configuration has a timeout (``--timeout``);
a run that fails or times out keeps its error, the tail of its driver log and
(local-cluster) the tails of its executors' logs in the record and the report.

Order (what survives a ``--budget-min`` cut-off first): masters in the order
given, ``d`` ascending inside each; at each ``(master, d)`` MLlib, then
spark-ps. With the default masters that is: 2^18 and 2^22 on ``local[2]``
(both systems), 2^26 and 2^30 on ``local[2]`` (spark-ps, and MLlib's OOM
check), then everything again on ``local-cluster``. ``results.json`` and the
report are rewritten after every ``(master, d)``, and the report lists exactly
which cells ran and which did not.

MLlib: a grid over ``regParam`` x ``standardization`` at ``maxIter`` (40);
the best by held-out AUC. **The target AUC at ``d`` is MLlib's best held-out
AUC at that ``d``** (the maximum over every MLlib run there). Where MLlib
failed (OOM) it is MLlib's best at the largest ``d`` where it succeeded, and
the report says so. MLlib's time to target: the fit time of the cheapest of
its runs that reaches the target; a ``maxIter`` ladder (30, 20, 10, 5, tried
in that order on the best setting, stopping at the first rung below the
target) looks for one cheaper than the ``maxIter=40`` fit. spark-ps: a
``numEpochs`` ladder (1, 2, 4) with FTRL, in ascending order, stopping at the
first rung that reaches the target (``--ps-full-ladder`` runs every rung);
each rung is a complete fit, so the first to reach the target gives our time
to it. See :func:`fit_spark_ps` for the one function that wires our estimator
in.

Per run, the child records: fit wall time (the training DataFrame is read,
repartitioned if needed and cached, and for spark-ps the shards registered,
*before* the clock starts, identically for both systems), held-out AUC
(``BinaryClassificationEvaluator`` with ``numBins=0``, exact) and log-loss (a
Spark SQL aggregate), both computed on the executors; peak RSS (``VmHWM``) of
the driver JVM, of the driver Python process and of executor-side processes;
CPU seconds of all the run's processes during the fit (less sensitive than
wall time to other load on a shared machine); the bytes of task results sent
to the driver during the fit (sum of the stages' ``resultSize`` from the Spark
UI REST API on 127.0.0.1, read after draining the listener bus); and for
spark-ps the per-epoch seconds our estimator logs (``spark_ps.ml``:
``epoch i/n: ... rows/s (S s)``, S being the mean task time of the epoch).

Training throughput per core (spark-ps): ``rows / S / workers`` with ``S`` the
median logged epoch time of our longest run at that ``d`` (the epoch loop
only: no barrier-stage launch, repartition or weight save); the report also
gives ``rows x epochs / fit time / workers`` (everything the fit clock sees).
The numpy FTRL reference: ``rows / train time`` (one pass, key mapping
included, median of ``--ref-repeats``), one core.

Target checks (the issue's), each MET / MISSED / NOT RUN, per master:
speed-up to MLlib's best AUC >= 3x at 2^18 and >= 10x at 2^22; our AUC at
2^26 and 2^30 within 0.01 of ours at 2^22; driver RSS growth (driver JVM +
driver Python peak, our worst run at ``d`` minus our worst at 2^18) < 150 MB at
2^26 and 2^30; our training throughput per core >= 40% of the numpy FTRL's at
every ``d`` run.

Writes a Markdown report to stdout and into ``docs/benchmarks.md`` between
``<!-- bench-mllib:begin -->`` and ``<!-- bench-mllib:end -->`` (other
sections untouched), a plot ``docs/bench_mllib.png``, and every run's raw
record to ``integration/out/bench_mllib/results.json``.

Examples
--------
The quick end-to-end check (d = 2**18, a few minutes on 2 cores)::

    python integration/bench_mllib.py --dims 18 --rows 50000 --test-rows 20000 --masters 'local[2]'

The full comparison (``make bench``)::

    python integration/bench_mllib.py --dims 18,22,26,30 --rows 400000 --test-rows 100000 \
        --masters 'local[2],local-cluster[2,1,2048]'
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import pathlib
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
from collections.abc import Callable
from typing import Any

import numpy as np
import psutil

import ctr_data

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
PLOT = ROOT / "docs" / "bench_mllib.png"
OUT = ROOT / "integration" / "out" / "bench_mllib"
BEGIN, END = "<!-- bench-mllib:begin -->", "<!-- bench-mllib:end -->"
MLLIB, PS, REF = "MLlib", "spark-ps", "numpy FTRL"
OOM_MARKER = "java.lang.OutOfMemoryError"
DEFAULT_MASTERS = "local[2],local-cluster[2,1,2048]"

# The issue's targets.
SPEEDUP_TARGETS = {18: 3.0, 22: 10.0}
AUC_BASE_D, AUC_CHECK_DIMS, AUC_TOLERANCE = 22, (26, 30), 0.01
RSS_BASE_D, RSS_CHECK_DIMS, RSS_GROWTH_MB = 18, (26, 30), 150.0
THROUGHPUT_FRACTION = 0.40


def partitions_of(master: str) -> int:
    """Task slots of a master: ``local[N]`` -> N, ``local-cluster[E,C,M]`` -> E*C.

    Examples
    --------
    >>> partitions_of("local[2]"), partitions_of("local-cluster[2,1,2048]")
    (2, 2)
    """
    m = re.fullmatch(r"local\[(\d+|\*)\]", master)
    if m:
        return (os.cpu_count() or 1) if m.group(1) == "*" else int(m.group(1))
    m = re.fullmatch(r"local-cluster\[(\d+),\s*(\d+),\s*(\d+)\]", master)
    if m:
        return int(m.group(1)) * int(m.group(2))
    return 2


def worker_memory_mb(master: str) -> int | None:
    """Worker memory of ``local-cluster[E,C,M]`` (used as ``spark.executor.memory``), else ``None``.

    Examples
    --------
    >>> worker_memory_mb("local-cluster[2,1,2048]"), worker_memory_mb("local[2]")
    (2048, None)
    """
    m = re.fullmatch(r"local-cluster\[(\d+),\s*(\d+),\s*(\d+)\]", master)
    return int(m.group(3)) if m else None


# =============================================================================
# Child: one configuration in its own Python + JVM
# =============================================================================

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


def fit_spark_ps(train, params: dict[str, Any], data_format: str):
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
    params : dict
        ``numEpochs``, ``regParam``, ``alpha``, ``beta``, ``batchSize`` from the command line.
    data_format : {"vector", "keys"}

    Returns
    -------
    pyspark.ml.Model

    Examples
    --------
    >>> fit_spark_ps(None, {}, "keys")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    NotImplementedError: spark-ps LogisticRegression takes a VectorUDT features column only; ...
    """
    if data_format != "vector":
        raise NotImplementedError("spark-ps LogisticRegression takes a VectorUDT features column only; raw int64 "
                                  "keys (d > 2**31 - 1) need an estimator input for them")
    from spark_ps.ml.classification import LogisticRegression

    lr = LogisticRegression(featuresCol="features", labelCol="label", regParam=params["regParam"],
                            maxIter=params["numEpochs"], numEpochs=params["numEpochs"], alpha=params["alpha"],
                            beta=params["beta"], batchSize=params["batchSize"])
    return lr.fit(train)


def fit_mllib(train, params: dict[str, Any], data_format: str):
    """Fit MLlib's ``LogisticRegression`` (binomial, L2) with ``maxIter``, ``regParam``, ``standardization``."""
    from pyspark.ml.classification import LogisticRegression

    if data_format != "vector":
        raise ValueError("MLlib needs a VectorUDT column (d <= 2**31 - 1)")
    lr = LogisticRegression(featuresCol="features", labelCol="label", maxIter=params["maxIter"],
                            regParam=params["regParam"], standardization=params["standardization"],
                            elasticNetParam=0.0, family="binomial")
    return lr.fit(train)


FITTERS: dict[str, Callable] = {MLLIB: fit_mllib, PS: fit_spark_ps}


def warm_up(cfg: dict[str, Any], train) -> float:
    """Fit the configuration's system once on the first ``warmup_rows`` training rows; return the seconds.

    Untimed, for both systems alike, so that the timed fit measures training
    rather than the start-up of a fresh application: the JVM's JIT for both,
    and for spark-ps also Spark's Python workers, which a pure-JVM MLlib fit
    never starts (about 2.5 s of a first fit on this machine). The seconds
    returned are reported, so the cold start stays visible.
    """
    params = dict(cfg["params"])
    if cfg["system"] == MLLIB:
        params["maxIter"] = min(5, params.get("maxIter", 5))
    else:
        params["numEpochs"] = 1
    start = time.perf_counter()
    model = FITTERS[cfg["system"]](train.limit(cfg["warmup_rows"]), params, cfg["format"])
    if cfg["system"] == PS:
        model.numNonZeros  # waits for its background Delta export, which would overlap the timed fit
    return time.perf_counter() - start


class EpochLog(logging.Handler):
    """Collects our estimator's progress lines (logger ``spark_ps.ml``) and echoes them to stderr.

    Examples
    --------
    >>> h = EpochLog()
    >>> h.emit(logging.makeLogRecord({"msg": "LR[x] epoch %d/%d: loss %.6f, %.0f rows/s (%.2f s)",
    ...                               "args": ("LR[x]", 1, 2, 0.45, 41000.0, 9.76)}))  # doctest: +SKIP
    >>> EpochLog.parse(["LR[x] epoch 1/2: loss 0.450000, 41000 rows/s (9.76 s)",
    ...                 "LR[x]: training on 2 workers x 2 shards, 2 epochs, ssp"])
    {'epoch_seconds': [9.76], 'epoch_rows_per_s': [41000.0], 'workers': 2}
    """

    EPOCH = re.compile(r"epoch (\d+)/(\d+): loss \S+, ([\d.]+) rows/s \(([\d.]+) s\)")
    WORKERS = re.compile(r"training (?:\d+ rows )?on (\d+) workers")

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        self.lines.append(line)
        print(f"[spark_ps.ml] {line}", file=sys.stderr, flush=True)

    @classmethod
    def parse(cls, lines: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"epoch_seconds": [], "epoch_rows_per_s": []}
        for line in lines:
            m = cls.EPOCH.search(line)
            if m:
                out["epoch_rows_per_s"].append(float(m.group(3)))
                out["epoch_seconds"].append(float(m.group(4)))
            m = cls.WORKERS.search(line)
            if m:
                out["workers"] = int(m.group(1))
        return out


def _vm_hwm_mb(pid: int) -> float | None:
    """Peak resident set (``VmHWM``) of a process in MB, or ``None`` if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (FileNotFoundError, ProcessLookupError):
        return None  # exited between listing and reading: its last sample stands
    return None


def _role(proc: psutil.Process) -> str | None:
    cmd = " ".join(proc.cmdline())
    if "org.apache.spark.deploy.SparkSubmit" in cmd:
        return "driver_jvm"
    if "CoarseGrainedExecutorBackend" in cmd:
        return "executor_jvm"
    if "spark_ps.server.sidecar" in cmd:
        return "sidecar"
    if "pyspark.daemon" in cmd or "pyspark.worker" in cmd:
        return "python_worker"
    return None


class PeakSampler:
    """Samples ``VmHWM`` of this process's descendants (JVMs, workers, sidecars) in a thread.

    ``VmHWM`` is the kernel's own high-water mark, so a final read is exact;
    the periodic samples only matter for processes that die first (an
    OOM-killed JVM keeps its last observed peak).
    """

    def __init__(self, interval: float = 0.25):
        self._interval = interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.peaks: dict[int, tuple[str, float]] = {}
        self._thread = threading.Thread(target=self._run, name="peak-sampler", daemon=True)

    def __enter__(self) -> "PeakSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()

    def sample(self) -> None:
        for proc in psutil.Process().children(recursive=True):
            try:
                role = _role(proc)
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue  # exited (or became unreadable) since the listing
            hwm = _vm_hwm_mb(proc.pid) if role else None
            if hwm is not None:
                with self._lock:
                    old = self.peaks.get(proc.pid, (role, 0.0))[1]
                    self.peaks[proc.pid] = (role, max(old, hwm))

    def by_role(self) -> dict[str, float]:
        """Largest single-process peak per role and, for executor-side roles, their sum."""
        with self._lock:
            out: dict[str, float] = {}
            for role, mb in self.peaks.values():
                out[role] = max(out.get(role, 0.0), mb)
                if role != "driver_jvm":
                    out["executor_side_sum"] = out.get("executor_side_sum", 0.0) + mb
            return out


def tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process and every descendant, live or reaped.

    On a shared machine wall time moves with other people's load; CPU time
    spent by the JVMs, workers and sidecars of one run does not, so the
    report gives both.

    Examples
    --------
    >>> tree_cpu_seconds() > 0
    True
    """
    total = 0.0
    for proc in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            t = proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue  # exited since the listing; once reaped its time is in its parent's children_*
        total += t.user + t.system + t.children_user + t.children_system
    return total


def _listener_drained(spark) -> None:
    """Block until the Spark listener bus has delivered every event to the UI status store.

    The REST API reads that store, which the bus fills asynchronously; without
    this the last stage of a fit can be missing. ``waitUntilEmpty`` is
    ``private[spark]`` in Scala, which is public bytecode that py4j can call.
    """
    spark.sparkContext._jsc.sc().listenerBus().waitUntilEmpty(60_000)


def _stage_result_bytes(spark) -> tuple[int, int]:
    """(sum of ``resultSize`` over all stages so far, number of stage attempts), via the REST API."""
    _listener_drained(spark)
    port = int(re.search(r":(\d+)/?$", spark.sparkContext.uiWebUrl).group(1))
    base = f"http://127.0.0.1:{port}/api/v1/applications/{spark.sparkContext.applicationId}"
    with urllib.request.urlopen(f"{base}/stages", timeout=60) as resp:
        stages = json.load(resp)
    return sum(int(s.get("resultSize", 0)) for s in stages), len(stages)


def _spark(cfg: dict[str, Any]):
    from pyspark.sql import SparkSession

    builder = (SparkSession.builder.master(cfg["master"]).appName(f"bench-mllib {cfg['name']}")
               .config("spark.driver.host", "127.0.0.1")
               .config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.driver.memory", cfg["driver_memory"])
               # Die on the first OOM (exit, logged) rather than limp on with a broken driver.
               .config("spark.driver.extraJavaOptions", "-XX:+ExitOnOutOfMemoryError")
               .config("spark.executor.extraJavaOptions", "-XX:+ExitOnOutOfMemoryError")
               # Random free port (other sessions may hold 4040); bound to SPARK_LOCAL_IP=127.0.0.1.
               .config("spark.ui.enabled", "true")
               .config("spark.ui.port", "0")
               .config("spark.ui.retainedStages", "100000")
               .config("spark.ui.retainedJobs", "100000")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", str(cfg["partitions"]))
               .config("spark.sql.warehouse.dir", cfg["warehouse"])
               # Unlimited, for both systems: MLlib's large-d failure should be its memory, not this knob.
               .config("spark.driver.maxResultSize", "0")
               .config("spark.pyspark.python", sys.executable))
    if cfg.get("executor_memory"):
        # local-cluster[E,C,M]: give each executor its worker's whole M (Spark's default is 1g).
        builder = builder.config("spark.executor.memory", cfg["executor_memory"])
    if cfg["system"] == PS:
        from spark_ps.spark.session import configure_spark_with_ps
        builder = configure_spark_with_ps(builder, servers_per_executor=1)
    return builder.getOrCreate()


def _evaluate(model, test) -> tuple[float, float]:
    """Held-out AUC and log-loss, computed by Spark on the executors."""
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


def error_summary(exc: BaseException) -> str:
    """One line for the report: the exception, plus the innermost ``XxxError: ...`` line of its text.

    A Py4J error's first line is only "An error occurred while calling o184.x";
    the cause (e.g. a Python worker's ``AttributeError``) is further down.

    Examples
    --------
    >>> error_summary(RuntimeError("job aborted\\nTraceback:\\nAttributeError: no attribute 'x'\\n  at y"))
    "RuntimeError: job aborted | AttributeError: no attribute 'x'"
    """
    lines = [ln.strip() for ln in str(exc).strip().splitlines()]
    first = lines[0] if lines else ""
    causes = [ln for ln in lines if re.match(r"^[\w.$]+(Error|Exception): ", ln) and ln != first]
    text = f"{type(exc).__name__}: {first}" + (f" | {causes[-1]}" if causes else "")
    return text[:400]


def spark_work_dir(app_id: str) -> pathlib.Path:
    """``$SPARK_HOME/work/<app-id>``: where local-cluster executors (and their sidecars) log."""
    from pyspark.find_spark_home import _find_spark_home

    return pathlib.Path(_find_spark_home()) / "work" / app_id


def log_tail(text: str, lines: int = 30) -> str:
    """The last ``lines`` lines of a log without JVM stack frames (``at ...``, ``... N more``).

    Examples
    --------
    >>> log_tail("a\\n\\tat x.y(Z.java:1)\\n\\t... 3 more\\nb", 5)
    'a\\nb'
    """
    keep = [ln for ln in text.splitlines()
            if ln.strip() and not re.match(r"^\s+(at |\.\.\. \d+ more)", ln)]
    return "\n".join(keep[-lines:])


def executor_log_tails(app_id: str | None, lines: int = 20) -> str:
    """Tails of each executor's stderr of a local-cluster application, or ``""``."""
    if not app_id:
        return ""
    chunks = []
    for path in sorted(spark_work_dir(app_id).glob("*/stderr")):
        chunks.append(f"==> executor {path.parent.name} stderr <==\n"
                      + log_tail(path.read_text(errors="replace"), lines))
    return "\n".join(chunks)


def run_child(cfg_path: str) -> None:
    """Entry point of ``--child``: fit and evaluate one configuration, write its record as JSON."""
    cfg = json.loads(pathlib.Path(cfg_path).read_text())
    record: dict[str, Any] = {"status": "error"}
    start = time.perf_counter()
    spark = None
    app_id = None
    epoch_log = EpochLog()
    if cfg["system"] == PS:
        ps_log = logging.getLogger("spark_ps.ml")
        ps_log.setLevel(logging.INFO)
        ps_log.addHandler(epoch_log)
    with PeakSampler() as sampler:
        try:
            spark = _spark(cfg)
            spark.sparkContext.setLogLevel("ERROR")
            app_id = spark.sparkContext.applicationId
            record["app_id"] = app_id
            # The parent reads executor logs by app id even if this process is killed (timeout).
            pathlib.Path(cfg["result"]).with_name("app_id").write_text(app_id)
            if cfg["system"] == PS:
                # Session start-up, not training: wait until every executor's shard has registered.
                from spark_ps.spark.context import PSContext
                PSContext.get(spark)
            t0 = time.perf_counter()
            train = spark.read.parquet(cfg["train"])
            if train.rdd.getNumPartitions() < cfg["partitions"]:
                train = train.repartition(cfg["partitions"])
            train = train.cache()
            record["train_rows"] = train.count()
            record["load_s"] = time.perf_counter() - t0
            if cfg.get("warmup_rows"):
                record["warmup_s"] = warm_up(cfg, train)
                epoch_log.lines.clear()  # the warm-up's progress lines are not the timed fit's
            bytes_before, stages_before = _stage_result_bytes(spark)
            record["load_avg_before"] = os.getloadavg()[0]
            cpu0, t0 = tree_cpu_seconds(), time.perf_counter()
            model = FITTERS[cfg["system"]](train, cfg["params"], cfg["format"])
            record["fit_s"] = time.perf_counter() - t0
            record["fit_cpu_s"] = tree_cpu_seconds() - cpu0
            record["load_avg_after"] = os.getloadavg()[0]
            bytes_after, stages_after = _stage_result_bytes(spark)
            record["result_bytes"] = bytes_after - bytes_before
            record["fit_stages"] = stages_after - stages_before
            if cfg["system"] == MLLIB:
                record["iterations"] = model.summary.totalIterations
            else:
                record.update(EpochLog.parse(epoch_log.lines))
            record["auc"], record["log_loss"] = _evaluate(model, spark.read.parquet(cfg["test"]))
            record["status"] = "ok"
        except Exception as exc:  # recorded, not swallowed: the parent reports it, the log has the trace
            record["status"] = "OOM" if OOM_MARKER in str(exc) else "error"
            record["error"] = error_summary(exc)
            traceback.print_exc()
            if cfg["system"] == PS:
                record.update(EpochLog.parse(epoch_log.lines))
            try:
                record["executor_log_tail"] = executor_log_tails(app_id)
            except OSError as log_exc:
                record["executor_log_tail"] = f"(could not read executor logs: {log_exc})"
        finally:
            sampler.sample()  # the JVM's final VmHWM, before stop() ends it
    peaks = sampler.by_role()
    record["driver_jvm_peak_mb"] = peaks.get("driver_jvm")
    record["executor_side_peak_mb"] = peaks.get("executor_side_sum")
    # VmHWM of our own mm, not getrusage's ru_maxrss: Linux carries ru_maxrss across fork and exec,
    # so it would report the harness's footprint at launch whenever that is larger.
    record["driver_python_peak_mb"] = _vm_hwm_mb(os.getpid())
    record["child_wall_s"] = time.perf_counter() - start
    pathlib.Path(cfg["result"]).write_text(json.dumps(record))
    if spark is not None and record["status"] != "OOM":
        spark.stop()


# =============================================================================
# Parent: data, the grid and ladders, the checks, the report
# =============================================================================

@dataclasses.dataclass
class Options:
    dims: list[int]
    rows: int
    test_rows: int
    masters: list[str]
    mllib_all_masters: bool
    driver_memory: str
    max_iter: int
    ladder: list[int]
    reg_params: list[float]
    ps_epochs: list[int]
    ps_params: dict[str, float]
    ps_full_ladder: bool
    target_auc: float | None
    timeout: float
    budget_s: float | None
    ref_repeats: int
    seed: int
    out: pathlib.Path
    skip_mllib: bool
    skip_ps: bool
    reference: bool
    warmup_rows: int

    @property
    def primary(self) -> str:
        """The master MLlib runs on (the first of ``--masters``), whose MLlib results set the targets."""
        return self.masters[0]

    def runs_mllib(self, master: str) -> bool:
        return not self.skip_mllib and (master == self.primary or self.mllib_all_masters)


def master_tag(master: str) -> str:
    """A directory-safe name of a master.

    Examples
    --------
    >>> master_tag("local[2]"), master_tag("local-cluster[2,1,2048]")
    ('local2', 'lc2x1x2048')
    """
    m = re.fullmatch(r"local-cluster\[(\d+),\s*(\d+),\s*(\d+)\]", master)
    if m:
        return "lc" + "x".join(m.groups())
    return re.sub(r"[^A-Za-z0-9]+", "", master)


def prepare_data(opts: Options, log2d: int) -> dict[str, Any]:
    """Train/test directories for ``d = 2**log2d``, written once and reused while the parameters match."""
    dim = 2**log2d
    data_format = "vector" if dim <= ctr_data.VECTOR_MAX_DIM else "keys"
    root = opts.out / "data" / f"d{log2d}_n{opts.rows}_t{opts.test_rows}_s{opts.seed}"
    spec = ctr_data.CTRSpec()
    n_files = max(2, *(partitions_of(m) for m in opts.masters))
    paths = {}
    for split, n, start in (("train", opts.rows, 0), ("test", opts.test_rows, opts.rows)):
        meta_path = root / split / "meta.json"
        want = {"rows": n, "dim": dim, "seed": opts.seed, "start_row": start, "spec": dataclasses.asdict(spec)}
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        if any(meta.get(k) != v for k, v in want.items()) or data_format not in meta.get("formats", []):
            ctr_data.write_dataset(root / split, n, dim, opts.seed, start_row=start, formats=(data_format,),
                                   n_files=n_files, spec=spec)
        paths[split] = str(root / split / data_format)
    return {"format": data_format, **paths}


def reference_run(opts: Options, log2d: int) -> dict[str, Any]:
    """Single-process numpy FTRL, one pass (median time of ``ref_repeats``): the accuracy and speed yardstick."""
    from metrics import auc, log_loss
    from numpy_ftrl import predict, train_ftrl

    dim = 2**log2d
    train = ctr_data.generate(opts.rows, dim, opts.seed)
    test = ctr_data.generate(opts.test_rows, dim, opts.seed, start_row=opts.rows)
    train_ftrl(np.array([0, 1]), np.array([0]), np.ones(1), np.ones(1))  # compile outside the clock
    times, load = [], os.getloadavg()[0]
    for _ in range(max(1, opts.ref_repeats)):
        t0 = time.perf_counter()
        model = train_ftrl(*train, alpha=opts.ps_params["alpha"], beta=opts.ps_params["beta"])
        times.append(time.perf_counter() - t0)
    fit_s = statistics.median(times)
    p = predict(model, *test[:3])
    return {"system": REF, "master": "1 process", "d_log2": log2d, "name": f"{REF} d=2^{log2d}",
            "params": {"epochs": 1}, "status": "ok", "fit_s": fit_s, "fit_s_all": times,
            "rows_per_s": opts.rows / fit_s, "load_avg_before": load, "auc": auc(test[3], p),
            "log_loss": log_loss(test[3], p)}


class Bench:
    """Runs the matrix: launches each configuration in a child, enforces the budget, saves as it goes."""

    def __init__(self, opts: Options, write_report: bool):
        self.opts = opts
        self.write_report = write_report
        self.t0 = time.perf_counter()
        spec = ctr_data.CTRSpec()
        self.ps_reason = "skipped (--skip-ps)" if opts.skip_ps else spark_ps_unavailable()
        self.results: dict[str, Any] = {"meta": {
            "rows": opts.rows, "test_rows": opts.test_rows, "masters": opts.masters, "primary": opts.primary,
            "mllib_all_masters": opts.mllib_all_masters, "dims": opts.dims, "driver_memory": opts.driver_memory,
            "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"), "started": time.strftime("%H:%M"),
            "ladder": opts.ladder, "n_fields": spec.n_fields, "ctr": spec.ctr, "max_iter": opts.max_iter,
            "reg_params": opts.reg_params, "ps_epochs": opts.ps_epochs, "ps_params": opts.ps_params,
            "ps_full_ladder": opts.ps_full_ladder, "target_auc": opts.target_auc, "timeout": opts.timeout,
            "budget_s": opts.budget_s, "seed": opts.seed, "skip_mllib": opts.skip_mllib,
            "skip_ps": opts.skip_ps, "warmup_rows": opts.warmup_rows, "complete": False},
            "dims": {}, "runs": [], "notes": []}
        if self.ps_reason:
            self.results["notes"].append(f"spark-ps not run: {self.ps_reason}")
            print(f"spark-ps half skipped: {self.ps_reason}", flush=True)

    # --- budget and persistence ------------------------------------------------
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def over_budget(self) -> bool:
        return self.opts.budget_s is not None and self.elapsed() > self.opts.budget_s

    def save(self) -> None:
        self.results["meta"]["wall_s"] = self.elapsed()
        self.opts.out.mkdir(parents=True, exist_ok=True)
        path = self.opts.out / "results.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.results, indent=1, default=str))
        os.replace(tmp, path)
        if self.write_report:
            write_doc(markdown(self.results))
            try:
                plot(self.results, PLOT)
            except Exception as exc:  # a plot must never cost the run
                print(f"plot failed: {exc}", flush=True)

    # --- the matrix -------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        opts = self.opts
        data: dict[int, dict[str, Any]] = {}
        for master in opts.masters:
            for log2d in opts.dims:
                per_d = self.results["dims"].setdefault(str(log2d), {"masters": {}})
                if log2d not in data:
                    if self.over_budget():
                        per_d["masters"].setdefault(master, {})
                        self._not_run(master, log2d, "time budget (--budget-min) used up before its data")
                        continue
                    print(f"d = 2^{log2d}: data ...", flush=True)
                    data[log2d] = prepare_data(opts, log2d)
                    if opts.reference:
                        per_d[REF] = reference_run(opts, log2d)
                        print(f"  {format_run(per_d[REF])}, {per_d[REF]['rows_per_s']:,.0f} rows/s", flush=True)
                cell = per_d["masters"].setdefault(master, {})
                print(f"d = 2^{log2d} on {master}:", flush=True)
                if opts.runs_mllib(master):
                    cell[MLLIB] = self.bench_mllib(master, log2d, data[log2d])
                    self.save()
                target, source = self.resolve_target(log2d)
                if "target_auc" not in per_d or master == opts.primary:
                    per_d["target_auc"], per_d["target_source"] = target, source
                print(f"  target AUC {_fmt(target, '.4f')} ({source})", flush=True)
                if self.ps_reason is None:
                    cell[PS] = self.bench_ps(master, log2d, data[log2d], per_d["target_auc"])
                elif not opts.skip_ps:
                    cell[PS] = {"best": None, "target_run": None, "status": "skipped", "note": self.ps_reason}
                self.save()
        self.results["meta"]["complete"] = all(
            (c := _cell(self.results, d, m, system)) is not None and c["status"] != "not run"
            for m, d, system in _cells_expected(self.results)) and not any(
            r["status"] == "not run" for r in self.results["runs"])
        return self.results

    def _not_run(self, master: str, log2d: int, why: str) -> None:
        cell = self.results["dims"][str(log2d)]["masters"][master]
        for system in ([MLLIB] if self.opts.runs_mllib(master) else []) + ([PS] if self.ps_reason is None else []):
            cell[system] = {"best": None, "target_run": None, "status": "not run", "note": why}

    def resolve_target(self, log2d: int) -> tuple[float | None, str]:
        """MLlib's best held-out AUC at ``d`` (primary master); where it failed, its best at the largest ``d`` that worked."""
        if self.opts.target_auc is not None:
            return self.opts.target_auc, "fixed with --target-auc"
        dims = self.results["dims"]
        here = dims.get(str(log2d), {}).get("masters", {}).get(self.opts.primary, {}).get(MLLIB)
        if here and here.get("best"):
            return here["best"]["auc"], f"MLlib's best at 2^{log2d}"
        ok = [int(d) for d, per in dims.items()
              if (per.get("masters", {}).get(self.opts.primary, {}).get(MLLIB) or {}).get("best")]
        why = f"MLlib {here['status']}" if here else "MLlib not run"
        if ok:
            d2 = max(ok)
            auc = dims[str(d2)]["masters"][self.opts.primary][MLLIB]["best"]["auc"]
            return auc, f"{why} at 2^{log2d}: fallback to MLlib's best at 2^{d2}"
        return None, f"{why} at 2^{log2d} and at every smaller d: no target"

    def launch(self, system: str, master: str, log2d: int, data: dict[str, Any],
               params: dict[str, Any]) -> dict[str, Any]:
        """Run one configuration in a child process; classify OOM, timeout and crashes; keep log tails."""
        opts = self.opts
        label = ",".join(f"{k}={v}" for k, v in params.items())
        name = f"{system}_{master_tag(master)}_d{log2d}_{label}".replace("=", "").replace(",", "_").replace(" ", "")
        base = {"system": system, "master": master, "d_log2": log2d, "name": name, "params": params}
        if self.over_budget():
            record = {**base, "status": "not run",
                      "error": f"time budget (--budget-min {opts.budget_s / 60:g}) used up"}
            self.results["runs"].append(record)
            print(f"  {format_run(record)}", flush=True)
            return record
        run_dir = opts.out / "runs" / name
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        result_path = run_dir / "result.json"
        mem = worker_memory_mb(master)
        cfg = {"name": name, "system": system, "params": params, "format": data["format"], "train": data["train"],
               "test": data["test"], "master": master, "driver_memory": opts.driver_memory,
               "executor_memory": f"{mem}m" if mem else None, "partitions": partitions_of(master),
               "warehouse": str(run_dir / "warehouse"), "result": str(result_path), "warmup_rows": opts.warmup_rows}
        cfg_path = run_dir / "config.json"
        cfg_path.write_text(json.dumps(cfg, indent=2))
        env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable)
        log_path = run_dir / "child.log"
        t0 = time.perf_counter()
        with open(log_path, "wb") as log:
            # Own process group (pgid = child pid) so a timeout kills the child, its JVMs and sidecars together.
            proc = subprocess.Popen([sys.executable, str(pathlib.Path(__file__).resolve()), "--child", str(cfg_path)],
                                    stdout=log, stderr=subprocess.STDOUT, cwd=run_dir, env=env,
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=opts.timeout)
            except subprocess.TimeoutExpired:
                _kill_tree(proc)
                rc = None
        log_text = log_path.read_text(errors="replace")
        if result_path.exists():
            record = json.loads(result_path.read_text())
        elif rc is None:
            record = {"status": "timeout", "error": f"no result after {opts.timeout:.0f} s (killed)"}
        else:
            record = {"status": "error", "error": f"child exited with {rc} and no result"}
        if OOM_MARKER in log_text and record["status"] != "ok":
            # The JVM exits on OOM (-XX:+ExitOnOutOfMemoryError); Python then sees only a broken py4j link.
            record["status"] = "OOM"
            line = next(ln for ln in log_text.splitlines() if OOM_MARKER in ln)
            record["error"] = line.strip()[:300]
        app_id_path = run_dir / "app_id"
        app_id = record.get("app_id") or (app_id_path.read_text().strip() if app_id_path.exists() else None)
        executor_tails = _collect_executor_logs(app_id, run_dir)
        if record["status"] != "ok":
            record["log_tail"] = log_tail(log_text, 30)
            if not record.get("executor_log_tail"):
                record["executor_log_tail"] = executor_tails
        record.update(base, log=str(log_path), wall_s=time.perf_counter() - t0)
        self.results["runs"].append(record)
        print(f"  {format_run(record)}", flush=True)
        return record

    def bench_mllib(self, master: str, log2d: int, data: dict[str, Any]) -> dict[str, Any]:
        """Grid at ``maxIter``; then the ``maxIter`` ladder on the best setting, descending, while it keeps the best AUC."""
        opts = self.opts
        if data["format"] != "vector":
            return {"status": "unsupported", "best": None, "target_run": None,
                    "note": "d > 2^31-1: SparseVector indices are int32"}
        runs: list[dict[str, Any]] = []
        stop = None
        for reg in opts.reg_params:
            for std in (False, True):
                params = {"maxIter": opts.max_iter, "regParam": reg, "standardization": std}
                if stop is not None:
                    # Memory is set by d, not by these knobs: another run would only fail again, slowly.
                    record = {"system": MLLIB, "master": master, "d_log2": log2d, "name": "", "params": params,
                              "status": "skipped", "error": f"not run: {stop}"}
                    self.results["runs"].append(record)
                    runs.append(record)
                    continue
                run = self.launch(MLLIB, master, log2d, data, params)
                runs.append(run)
                if run["status"] in ("OOM", "timeout"):
                    stop = f"{_config_label(run)} hit {run['status']} at this d"
        ok = [r for r in runs if r["status"] == "ok"]
        oom = next((r for r in runs if r["status"] == "OOM"), None)
        if not ok:
            return {"status": _status(runs), "best": None, "target_run": None, "oom_run": oom,
                    "note": stop or ""}
        best = max(ok, key=lambda r: r["auc"])
        for it in sorted((i for i in opts.ladder if i < opts.max_iter), reverse=True):
            run = self.launch(MLLIB, master, log2d, data, {**best["params"], "maxIter": it})
            runs.append(run)
            if run["status"] != "ok" or run["auc"] < best["auc"]:
                break
            best = run  # as good as the best so far (or better): the target moves up to it
        target = best["auc"]
        hit = min((r for r in runs if r["status"] == "ok" and r["auc"] >= target), key=lambda r: r["fit_s"])
        return {"status": "ok", "best": best, "target_run": hit, "oom_run": oom, "note": ""}

    def bench_ps(self, master: str, log2d: int, data: dict[str, Any], target: float | None) -> dict[str, Any]:
        """``numEpochs`` ladder, ascending; stops at the first rung that reaches the target (unless --ps-full-ladder)."""
        opts = self.opts
        runs: list[dict[str, Any]] = []
        note = ""
        for epochs in sorted(opts.ps_epochs):
            run = self.launch(PS, master, log2d, data, {"numEpochs": epochs, "regParam": 0.0, **opts.ps_params})
            runs.append(run)
            if run["status"] == "timeout":
                note = f"epochs={epochs} timed out: larger rungs not run"
                break
            if (not opts.ps_full_ladder and run["status"] == "ok" and target is not None
                    and run["auc"] >= target):
                break
        ok = [r for r in runs if r["status"] == "ok"]
        best = max(ok, key=lambda r: r["auc"]) if ok else None
        reached = [r for r in ok if target is not None and r["auc"] >= target]
        hit = min(reached, key=lambda r: r["fit_s"]) if reached else None
        oom = next((r for r in runs if r["status"] == "OOM"), None)
        failed = [r for r in runs if r["status"] not in ("ok", "not run")]
        if failed and not note:
            note = f"{len(failed)} of {len(runs)} rungs failed ({', '.join(r['status'] for r in failed)})"
        return {"status": _status(runs), "best": best, "target_run": hit, "oom_run": oom, "note": note}


def _kill_tree(proc: subprocess.Popen) -> None:
    """Kill a timed-out child: its process group, then any descendant that left it (by pid)."""
    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for p in descendants:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()
    psutil.wait_procs(descendants, timeout=30)


def _collect_executor_logs(app_id: str | None, run_dir: pathlib.Path) -> str:
    """Move a local-cluster application's executor logs into ``run_dir/executors``; return their tails."""
    if not app_id:
        return ""
    src = spark_work_dir(app_id)
    if not src.is_dir():
        return ""
    tails = executor_log_tails(app_id)
    dest = run_dir / "executors"
    dest.mkdir(exist_ok=True)
    for path in src.glob("*/std*"):
        shutil.copy(path, dest / f"{path.parent.name}.{path.name}")
    shutil.rmtree(src, ignore_errors=True)  # ~15 MB of copied jars per application
    return tails


def format_run(r: dict[str, Any]) -> str:
    params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
    head = f"{r['system']:>10} {r.get('master', ''):>23} d=2^{r['d_log2']} [{params}]"
    if r["status"] != "ok":
        return f"{head}: {r['status']} {r.get('error', '')}"
    extra = f", warm-up {r['warmup_s']:.1f} s" if r.get("warmup_s") is not None else ""
    if r.get("epoch_seconds"):
        extra += f", epochs {'/'.join(f'{s:.1f}' for s in r['epoch_seconds'])} s"
    return (f"{head}: fit {r['fit_s']:.1f} s, AUC {r['auc']:.4f}, log-loss {r['log_loss']:.4f}, "
            f"driver JVM {_mb(r.get('driver_jvm_peak_mb'))}, Python {_mb(r.get('driver_python_peak_mb'))}, "
            f"results {_bytes(r.get('result_bytes'))}{extra}")


def _warmup_text(rows: int) -> str:
    if not rows:
        return "No warm-up: each timed fit is the first of a fresh application."
    return (f"*Warm-up*: before the timed fit, the same system fits once, untimed, on the first {rows:,} training "
            f"rows (MLlib maxIter ≤ 5, spark-ps 1 epoch), so the timed fit measures training, not a fresh "
            f"application's start-up: JIT for both, and for spark-ps Spark's Python workers, which MLlib never "
            f"starts; the warm-up's own seconds are in the last table (for spark-ps they include that cold "
            f"start and Delta's first write).")


def _status(runs: list[dict[str, Any]]) -> str:
    statuses = {r["status"] for r in runs}
    for s in ("ok", "OOM", "timeout", "error", "not run"):
        if s in statuses:
            return s
    return "skipped"


# --- derived numbers and the target checks ---------------------------------------

def _cell(results: dict[str, Any], log2d: int, master: str, system: str) -> dict[str, Any] | None:
    return results["dims"].get(str(log2d), {}).get("masters", {}).get(master, {}).get(system)


def _runs(results: dict[str, Any], log2d: int, master: str, system: str, ok_only: bool = True) -> list[dict]:
    return [r for r in results["runs"] if r["d_log2"] == log2d and r.get("master") == master
            and r["system"] == system and (r["status"] == "ok" or not ok_only)]


def mllib_for(results: dict[str, Any], log2d: int, master: str) -> tuple[dict[str, Any] | None, str]:
    """MLlib's entry to compare ``master``'s spark-ps with: its own master's if run there, else the primary's."""
    own = _cell(results, log2d, master, MLLIB)
    if own is not None:
        return own, master
    return _cell(results, log2d, results["meta"]["primary"], MLLIB), results["meta"]["primary"]


def speedup(results: dict[str, Any], log2d: int, master: str) -> dict[str, Any]:
    """MLlib's time to target over ours (> 1: ours is faster), with why when it cannot be computed."""
    ours = _cell(results, log2d, master, PS)
    ml, ml_master = mllib_for(results, log2d, master)
    out: dict[str, Any] = {"ratio": None, "mllib_master": ml_master}
    if ml is None or ml.get("target_run") is None:
        out["why"] = f"MLlib {ml['status'] if ml else 'not run'} at 2^{log2d}"
    elif ours is None or ours.get("status") == "not run":
        out["why"] = "spark-ps not run"
    elif ours.get("target_run") is None:
        out["why"] = ("spark-ps did not reach the target" if ours.get("best")
                      else f"spark-ps {ours.get('status')}")
    else:
        out["ratio"] = ml["target_run"]["fit_s"] / ours["target_run"]["fit_s"]
        out["mllib_s"], out["ours_s"] = ml["target_run"]["fit_s"], ours["target_run"]["fit_s"]
    return out


def throughput(results: dict[str, Any], log2d: int, master: str) -> dict[str, Any] | None:
    """Our training rows/s per core at ``d`` on ``master`` (logged epochs and fit time) and the numpy FTRL's."""
    runs = [r for r in _runs(results, log2d, master, PS) if r.get("epoch_seconds")]
    if not runs:
        return None
    run = max(runs, key=lambda r: (len(r["epoch_seconds"]), r["fit_s"]))
    rows = results["meta"]["rows"]
    workers = run.get("workers") or partitions_of(master)
    epoch_s = statistics.median(run["epoch_seconds"])
    out = {"run": _config_label(run), "workers": workers, "epoch_s": epoch_s,
           "per_core_epoch": rows / epoch_s / workers,
           "per_core_fit": rows * run["params"]["numEpochs"] / run["fit_s"] / workers}
    ref = results["dims"].get(str(log2d), {}).get(REF)
    if ref:
        out["ref"] = ref["rows_per_s"]
        out["fraction"] = out["per_core_epoch"] / ref["rows_per_s"]
        out["fraction_fit"] = out["per_core_fit"] / ref["rows_per_s"]
    return out


def driver_rss(results: dict[str, Any], log2d: int, master: str, worst: bool = True) -> float | None:
    """Worst (or best) driver JVM + driver Python peak over our successful runs at ``d`` on ``master``."""
    vals = [r["driver_jvm_peak_mb"] + r["driver_python_peak_mb"] for r in _runs(results, log2d, master, PS)
            if r.get("driver_jvm_peak_mb") and r.get("driver_python_peak_mb")]
    return (max(vals) if worst else min(vals)) if vals else None


def target_checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with a value and MET / MISSED / NOT RUN per master."""
    masters = results["meta"]["masters"]
    dims = set(results["meta"]["dims"])
    checks = []

    def ran(log2d: int, master: str) -> bool:
        c = _cell(results, log2d, master, PS)
        return c is not None and c.get("status") != "not run"

    for log2d, want in SPEEDUP_TARGETS.items():
        row = {"check": f"speed-up to MLlib's best AUC at 2^{log2d} (MLlib time ÷ ours)",
               "threshold": f"≥ {want:g}×", "cells": {}}
        for m in masters:
            if log2d not in dims or not ran(log2d, m):
                row["cells"][m] = ("NOT RUN", "")
                continue
            s = speedup(results, log2d, m)
            if s["ratio"] is None:
                verdict = "NOT RUN" if "MLlib" in s["why"] and "not run" in s["why"] else "MISSED"
                row["cells"][m] = (verdict, s["why"])
            else:
                vs = "" if s["mllib_master"] == m else f" vs MLlib on {s['mllib_master']}"
                row["cells"][m] = ("MET" if s["ratio"] >= want else "MISSED",
                                   f"{s['ratio']:.2f}× ({s['mllib_s']:.1f} s / {s['ours_s']:.1f} s{vs})")
        checks.append(row)
    for log2d in AUC_CHECK_DIMS:
        row = {"check": f"our AUC at 2^{log2d} within {AUC_TOLERANCE:g} of ours at 2^{AUC_BASE_D}",
               "threshold": f"≤ {AUC_TOLERANCE:g} either way", "cells": {}}
        for m in masters:
            here, base = _cell(results, log2d, m, PS), _cell(results, AUC_BASE_D, m, PS)
            if not (here and here.get("best") and base and base.get("best")):
                failed = here and here.get("status") not in (None, "not run", "ok")
                row["cells"][m] = ("MISSED" if failed else "NOT RUN",
                                   f"spark-ps {here['status']} at 2^{log2d}" if failed else "")
                continue
            delta = here["best"]["auc"] - base["best"]["auc"]
            row["cells"][m] = ("MET" if abs(delta) <= AUC_TOLERANCE else "MISSED",
                               f"{here['best']['auc']:.4f} vs {base['best']['auc']:.4f} (Δ {delta:+.4f})")
        checks.append(row)
    for log2d in RSS_CHECK_DIMS:
        row = {"check": f"driver RSS growth at 2^{log2d} (JVM + Python peak, vs ours at 2^{RSS_BASE_D})",
               "threshold": f"< {RSS_GROWTH_MB:g} MB", "cells": {}}
        for m in masters:
            here, base = driver_rss(results, log2d, m), driver_rss(results, RSS_BASE_D, m)
            if here is None or base is None:
                row["cells"][m] = ("NOT RUN", "")
                continue
            growth = here - base
            row["cells"][m] = ("MET" if growth < RSS_GROWTH_MB else "MISSED",
                               f"{growth:+,.0f} MB ({here:,.0f} vs {base:,.0f} MB)")
        checks.append(row)
    row = {"check": "training throughput per core vs single-process numpy FTRL (logged epoch time; every d run)",
           "threshold": f"≥ {THROUGHPUT_FRACTION:.0%}", "cells": {}}
    for m in masters:
        vals = [(d, t) for d in sorted(dims) if (t := throughput(results, d, m)) and "fraction" in t]
        if not vals:
            row["cells"][m] = ("NOT RUN", "")
            continue
        d_min, t_min = min(vals, key=lambda v: v[1]["fraction"])
        row["cells"][m] = ("MET" if t_min["fraction"] >= THROUGHPUT_FRACTION else "MISSED",
                           f"min {t_min['fraction']:.1%} at 2^{d_min} ({t_min['per_core_epoch']:,.0f} vs "
                           f"{t_min['ref']:,.0f} rows/s)")
    checks.append(row)
    return checks


# --- report -------------------------------------------------------------------

def _mb(v: float | None) -> str:
    return "—" if v is None else f"{v:,.0f} MB"


def _bytes(v: int | None) -> str:
    if v is None:
        return "—"
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if v >= scale:
            return f"{v / scale:.1f} {unit}"
    return f"{v} B"


def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _config_label(r: dict[str, Any] | None) -> str:
    if r is None:
        return "—"
    p = r["params"]
    if r["system"] == MLLIB:
        return f"maxIter={p['maxIter']}, reg={p['regParam']:g}, std={'T' if p['standardization'] else 'F'}"
    if r["system"] == PS:
        return f"epochs={p['numEpochs']}, reg={p['regParam']:g}, α={p['alpha']:g}"
    return "1 pass"


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "—"
    r = a / b
    return f"{r:.2f}×" if r >= 0.01 else f"{r:.1e}×"


def _cells_expected(results: dict[str, Any]) -> list[tuple[str, int, str]]:
    meta = results["meta"]
    out = []
    for m in meta["masters"]:
        for d in meta["dims"]:
            if not meta.get("skip_mllib") and (m == meta["primary"] or meta.get("mllib_all_masters")):
                out.append((m, d, MLLIB))
            if not meta.get("skip_ps"):
                out.append((m, d, PS))
    return out


def coverage_lines(results: dict[str, Any]) -> list[str]:
    """Exactly what ran and what did not, cell by cell."""
    lines = []
    for m, d, system in _cells_expected(results):
        c = _cell(results, d, m, system)
        if c is None:
            lines.append(f"{system} 2^{d} on `{m}`: **not run** (the harness stopped before it)")
            continue
        runs = _runs(results, d, m, system, ok_only=False)
        counts: dict[str, int] = {}
        for r in runs:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        detail = ", ".join(f"{n} {s}" for s, n in counts.items()) or "no runs"
        note = f"; {c['note']}" if c.get("note") else ""
        bold = "**" if c["status"] != "ok" else ""
        lines.append(f"{system} 2^{d} on `{m}`: {bold}{c['status']}{bold} ({detail}{note})")
    return lines


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    masters, primary = meta["masters"], meta["primary"]
    state = "complete" if meta.get("complete") else "**partial: see Coverage**"
    lines = [
        "## spark-ps vs MLlib LogisticRegression (`integration/bench_mllib.py`)",
        "",
        f"Synthetic CTR data (`integration/ctr_data.py`: {meta['n_fields']} hashed Zipf fields, ~30 binary "
        f"non-zeros per row, CTR ≈ {meta['ctr']:.2f}), {meta['rows']:,} training / {meta['test_rows']:,} "
        f"held-out rows; d ∈ {{{', '.join(f'2^{d}' for d in meta['dims'])}}}; masters "
        f"{', '.join(f'`{m}`' for m in masters)} (MLlib on `{primary}`"
        f"{' and every other master' if meta.get('mllib_all_masters') else ' only'}); driver memory "
        f"{meta['driver_memory']}, {meta['cores']} cores (shared with other work), {meta['date']}, started "
        f"{meta.get('started', '?')}, **{meta.get('wall_s', 0) / 60:.1f} min wall time in all**, {state}. "
        f"One invocation, one `results.json`.",
        "",
        "*How to read it.* Each configuration runs in its own Python + JVM (timeout "
        f"{meta.get('timeout', 0):.0f} s each); the training DataFrame is cached (and our shards registered) "
        f"before the fit clock starts. {_warmup_text(meta.get('warmup_rows', 0))} **Target AUC at d = MLlib's best held-out AUC at that d** (best of its "
        f"grid regParam ∈ {meta['reg_params']} × standardization ∈ {{F, T}} at maxIter={meta['max_iter']}, and "
        f"of a maxIter ladder {sorted(meta['ladder'], reverse=True)} on the best setting); where MLlib failed, "
        f"MLlib's best at the largest d where it succeeded (marked †). *Time to target*: fit wall time of "
        f"the cheapest run reaching the target (MLlib: cheapest of its runs at that d; spark-ps: fewest of "
        f"{meta['ps_epochs']} epochs, FTRL α={meta['ps_params']['alpha']:g}, β={meta['ps_params']['beta']:g}, "
        f"batch {meta['ps_params']['batchSize']}, reg 0). *Speed-up* = MLlib's time ÷ ours (spark-ps on a "
        f"master without MLlib is compared with MLlib on `{primary}`). AUC (exact, `numBins=0`) and log-loss "
        f"are on the held-out rows, computed by Spark; for each system the *best* run's. Peak RSS is `VmHWM` "
        f"of the best run; *task results* is the sum of `resultSize` over the fit's stages (what executors "
        f"sent the driver). *Rows/s per core* (spark-ps) = training rows ÷ median logged epoch time "
        f"(`spark_ps.ml` progress lines: mean task time of the epoch) ÷ workers, from our longest run at that "
        f"d; numpy FTRL: training rows ÷ one-pass train time (key mapping included, median of repeats), one "
        f"core.",
        "",
        "| d | master | system | best config | time to target | speed-up | AUC | log-loss | target AUC | "
        "driver JVM peak | driver Python peak | task results to driver | train rows/s per core | status |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    dims_sorted = sorted(results["dims"].items(), key=lambda kv: int(kv[0]))
    for log2d, per_d in dims_sorted:
        d = int(log2d)
        target = per_d.get("target_auc")
        dagger = "†" if "fallback" in per_d.get("target_source", "") else ""
        tgt = f"{_fmt(target, '.4f')}{dagger}"
        for m in masters:
            for system in (MLLIB, PS):
                c = _cell(results, d, m, system)
                if c is None:
                    continue
                b, h = c.get("best"), c.get("target_run")
                if h is not None:
                    ttt = f"{h['fit_s']:.1f} s ({_config_label(h).split(',')[0]})"
                elif b is not None:
                    ttt = "not reached" if target is not None else "no target"
                else:
                    ttt = "—"
                sp = "—"
                if system == PS:
                    s = speedup(results, d, m)
                    sp = f"{s['ratio']:.2f}×" if s["ratio"] is not None else "—"
                tp = throughput(results, d, m) if system == PS else None
                jvm = _mb(b and b.get("driver_jvm_peak_mb"))
                oom = c.get("oom_run")
                if b is None and oom and oom.get("driver_jvm_peak_mb"):
                    jvm = f"{_mb(oom['driver_jvm_peak_mb'])} at OOM"
                status = c["status"] + (f": {c['note']}" if c.get("note") else "")
                if b is None and oom:
                    status += f" ({oom.get('error', '')[:120]})"
                lines.append(
                    f"| 2^{d} | {m} | {system} | {_config_label(b)} | {ttt} | {sp} | {_fmt(b and b['auc'], '.4f')} | "
                    f"{_fmt(b and b['log_loss'], '.4f')} | {tgt} | {jvm} | "
                    f"{_mb(b and b.get('driver_python_peak_mb'))} | {_bytes(b and b.get('result_bytes'))} | "
                    f"{_fmt(tp and tp['per_core_epoch'], ',.0f')} | {status} |")
        ref = per_d.get(REF)
        if ref:
            reached = ("—" if target is None else
                       f"{ref['fit_s']:.2f} s" if ref["auc"] >= target else "not reached")
            lines.append(f"| 2^{d} | 1 process | {REF} | 1 pass | {reached} | — | {ref['auc']:.4f} | "
                         f"{ref['log_loss']:.4f} | {tgt} | — | — | — | {ref['rows_per_s']:,.0f} | ok |")
    sources = [f"2^{d}: {per_d.get('target_source', '—')}" for d, per_d in dims_sorted]
    lines += ["", "Targets: " + "; ".join(sources) + "."]

    lines += ["", "### Target checks", "", "| check | target | " + " | ".join(f"`{m}`" for m in masters) + " |",
              "|---|---|" + "---|" * len(masters)]
    for row in target_checks(results):
        cells = [f"**{v}** {txt}".strip() for v, txt in (row["cells"][m] for m in masters)]
        lines.append(f"| {row['check']} | {row['threshold']} | " + " | ".join(cells) + " |")

    lines += ["", "### Ratios spark-ps / MLlib (best configs; < 1 means spark-ps is smaller or faster)", "",
              "| d | master | MLlib on | fit time | fit CPU time | time to target | driver JVM peak | "
              "driver Python peak | task results to driver | AUC difference |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for log2d, _ in dims_sorted:
        d = int(log2d)
        for m in masters:
            p = _cell(results, d, m, PS)
            if p is None:
                continue
            ml, ml_m = mllib_for(results, d, m)
            pb, mb = p.get("best"), (ml or {}).get("best")
            if pb is None or mb is None:
                why = (f"spark-ps {p.get('status')}" if pb is None else f"MLlib {(ml or {}).get('status', 'not run')}")
                lines.append(f"| 2^{d} | {m} | {ml_m} | {why} | | | | | | |")
                continue
            ph, mh = p.get("target_run"), ml.get("target_run")
            lines.append(
                f"| 2^{d} | {m} | {ml_m} | {_ratio(pb['fit_s'], mb['fit_s'])} | "
                f"{_ratio(pb.get('fit_cpu_s'), mb.get('fit_cpu_s'))} | {_ratio(ph and ph['fit_s'], mh and mh['fit_s'])} | "
                f"{_ratio(pb.get('driver_jvm_peak_mb'), mb.get('driver_jvm_peak_mb'))} | "
                f"{_ratio(pb.get('driver_python_peak_mb'), mb.get('driver_python_peak_mb'))} | "
                f"{_ratio(pb.get('result_bytes'), mb.get('result_bytes'))} | {pb['auc'] - mb['auc']:+.4f} |")

    lines += ["", "### Training throughput (spark-ps vs single-process numpy FTRL)", "",
              "| d | master | our run | workers | median epoch s | rows/s per core (epochs) | "
              "rows/s per core (fit time) | numpy FTRL rows/s (1 core) | ours ÷ numpy (epochs) | "
              f"ours ÷ numpy (fit time) | ≥ {THROUGHPUT_FRACTION:.0%} |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for log2d, _ in dims_sorted:
        for m in masters:
            t = throughput(results, int(log2d), m)
            if t is None:
                continue
            frac = t.get("fraction")
            verdict = "—" if frac is None else ("PASS" if frac >= THROUGHPUT_FRACTION else "FAIL")
            lines.append(f"| 2^{log2d} | {m} | {t['run']} | {t['workers']} | {t['epoch_s']:.2f} | "
                         f"{t['per_core_epoch']:,.0f} | {t['per_core_fit']:,.0f} | {_fmt(t.get('ref'), ',.0f')} | "
                         f"{_pct(frac)} | {_pct(t.get('fraction_fit'))} | "
                         f"{verdict} |")

    lines += ["", "### Driver memory of spark-ps (driver JVM + driver Python peak: worst of our runs at each d, "
              "growth vs 2^18 in brackets, and the range over the runs: the JVM's heap sizing makes it noisy)", "",
              "| master | " + " | ".join(f"2^{d}" for d, _ in dims_sorted) + " |",
              "|---|" + "---:|" * len(dims_sorted)]
    for m in masters:
        base = driver_rss(results, RSS_BASE_D, m)
        cells = []
        for log2d, _ in dims_sorted:
            v = driver_rss(results, int(log2d), m)
            growth = "" if v is None or base is None or int(log2d) == RSS_BASE_D else f" ({v - base:+,.0f})"
            lo = driver_rss(results, int(log2d), m, worst=False)
            spread = f"; runs {lo:,.0f}–{v:,.0f}" if v is not None and lo is not None and lo != v else ""
            cells.append(f"{_mb(v)}{growth}{spread}")
        lines.append(f"| `{m}` JVM + Python | " + " | ".join(cells) + " |")

    lines += ["", "### Coverage", ""] + [f"* {ln}" for ln in coverage_lines(results)]

    failed = [r for r in results["runs"] if r["status"] not in ("ok", "skipped", "not run")]
    if failed:
        lines += ["", "### Failures", ""]
        for r in failed:
            lines += [f"<details><summary>{r['system']} 2^{r['d_log2']} on {r.get('master')} "
                      f"[{_config_label(r)}]: {r['status']}: {r.get('error', '')[:200]}</summary>", "", "```"]
            lines += [(r.get("log_tail") or "(no driver log)")[-4000:]]
            if r.get("executor_log_tail"):
                lines += ["", r["executor_log_tail"][-4000:]]
            lines += ["```", "", f"Full log: `{pathlib.Path(r.get('log', '')).relative_to(ROOT) if r.get('log') else '—'}`",
                      "</details>", ""]

    lines += ["", "<details><summary>Every run</summary>", "",
              "| d | master | system | config | status | warm-up s (untimed) | fit s | fit CPU s | load avg | "
              "iterations / epoch s | AUC | log-loss | driver JVM peak | driver Python peak | "
              "executor-side peak (sum) | task results | fit stages |",
              "|---|---|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["runs"]:
        it = r.get("iterations", "—")
        if r.get("epoch_seconds"):
            it = "/".join(f"{s:.1f}" for s in r["epoch_seconds"]) + " s"
        lines.append(
            f"| 2^{r['d_log2']} | {r.get('master', '—')} | {r['system']} | {_config_label(r)} | {r['status']} | "
            f"{_fmt(r.get('warmup_s'), '.1f')} | {_fmt(r.get('fit_s'), '.1f')} | {_fmt(r.get('fit_cpu_s'), '.1f')} | "
            f"{_fmt(r.get('load_avg_before'), '.1f')} | {it} | {_fmt(r.get('auc'), '.4f')} | "
            f"{_fmt(r.get('log_loss'), '.4f')} | {_mb(r.get('driver_jvm_peak_mb'))} | "
            f"{_mb(r.get('driver_python_peak_mb'))} | {_mb(r.get('executor_side_peak_mb'))} | "
            f"{_bytes(r.get('result_bytes'))} | {r.get('fit_stages', '—')} |")
    lines += ["", "</details>"]
    if results.get("notes"):
        lines += [""] + [f"* {n}" for n in results["notes"]]
    lines += ["", f"![time to target and AUC vs d]({PLOT.relative_to(DOC.parent).as_posix()})"]
    return "\n".join(lines)


def checks_text(results: dict[str, Any]) -> str:
    """The target checks as plain lines for the console."""
    out = []
    for row in target_checks(results):
        for m, (verdict, txt) in row["cells"].items():
            out.append(f"{verdict:>8}  {row['check']} [{row['threshold']}] on {m}: {txt}")
    return "\n".join(out)


def write_doc(text: str) -> None:
    """Replace (or append) only the bench-mllib block of ``docs/benchmarks.md``."""
    block = f"{BEGIN}\n{text}\n{END}"
    # Read as late as possible: another bench writes its own section of the same file.
    current = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if BEGIN in current and END in current:
        new = current[: current.index(BEGIN)] + block + current[current.index(END) + len(END):]
    else:
        new = current.rstrip() + "\n\n" + block + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    tmp = DOC.with_suffix(".md.tmp")
    tmp.write_text(new)
    os.replace(tmp, DOC)


def plot(results: dict[str, Any], path: pathlib.Path) -> None:
    """Time to target and AUC vs d: MLlib, spark-ps per master, the numpy reference; failures marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta = results["meta"]
    fig, (ax_t, ax_a) = plt.subplots(1, 2, figsize=(12, 4.4))
    series = []
    ps_colors = ["tab:blue", "tab:green", "tab:purple", "tab:cyan"]
    for i, m in enumerate(meta["masters"]):
        if meta.get("mllib_all_masters") or m == meta["primary"]:
            series.append((MLLIB, m, "tab:red", "o", "-" if i == 0 else "--"))
        series.append((PS, m, ps_colors[i % len(ps_colors)], "s", "-" if i == 0 else "--"))
    dims = sorted(int(d) for d in results["dims"])
    times = [c["target_run"]["fit_s"] for d in dims for m in meta["masters"] for s in (MLLIB, PS)
             if (c := _cell(results, d, m, s)) and c.get("target_run")]
    top = max(times + [1.0]) * 2
    for system, m, color, marker, ls in series:
        label = f"{system} {m}"
        pts_t, pts_a = [], []
        for d in dims:
            c = _cell(results, d, m, system)
            if c is None:
                continue
            if c.get("target_run"):
                pts_t.append((d, c["target_run"]["fit_s"]))
            if c.get("best"):
                pts_a.append((d, c["best"]["auc"]))
            failed = c["status"] in ("OOM", "timeout", "error", "unsupported")
            if failed or (c.get("best") and not c.get("target_run")):
                ax_t.plot(d, top, color=color, marker="x" if failed else "v", markersize=9, linestyle="none")
                ax_t.annotate(f"{system}: {c['status'] if failed else 'not reached'}", (d, top),
                              textcoords="offset points", xytext=(4, -12 - 10 * (system == PS)),
                              color=color, fontsize=7)
        if pts_t:
            ax_t.plot(*zip(*pts_t), color=color, marker=marker, linestyle=ls, label=label)
        if pts_a:
            ax_a.plot(*zip(*pts_a), color=color, marker=marker, linestyle=ls, label=label)
    ref = [(d, results["dims"][str(d)][REF]) for d in dims if results["dims"][str(d)].get(REF)]
    if ref:
        ax_a.plot([d for d, _ in ref], [r["auc"] for _, r in ref], color="tab:gray", marker="^", label=REF)
        ax_t.plot([d for d, _ in ref], [r["fit_s"] for _, r in ref], color="tab:gray", marker="^",
                  label=f"{REF} (1 pass, any AUC)")
    tg = [(d, results["dims"][str(d)].get("target_auc")) for d in dims]
    tg = [(d, t) for d, t in tg if t is not None]
    if tg:
        ax_a.plot(*zip(*tg), color="black", linestyle=":", label="target (MLlib best)")
    ax_t.set_yscale("log")
    ax_t.set_ylabel("seconds to reach target AUC")
    ax_t.set_title("time to MLlib's best AUC (x = failed, v = not reached)")
    ax_a.set_ylabel("held-out AUC (best run)")
    ax_a.set_title("accuracy")
    for ax in (ax_t, ax_a):
        ax.set_xlabel("log2(d)")
        ax.set_xticks(dims or [18])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{meta['rows']:,} train rows, {meta['cores']} cores, {', '.join(meta['masters'])}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- main ---------------------------------------------------------------------

def _floats(s: str) -> list[float]:
    return [float(x) for x in s.split(",") if x.strip()]


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def _masters(s: str) -> list[str]:
    """Split ``--masters`` on commas outside brackets.

    Examples
    --------
    >>> _masters("local[2],local-cluster[2,1,2048]")
    ['local[2]', 'local-cluster[2,1,2048]']
    """
    return [m.strip() for m in re.findall(r"[^,\[]+(?:\[[^\]]*\])?", s) if m.strip()]


def parse_args(argv: list[str] | None = None) -> tuple[Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--dims", default="18,22,26,30", help="comma-separated log2(d), each in 10..40")
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--test-rows", type=int, default=100_000)
    parser.add_argument("--masters", default=None,
                        help=f"comma-separated masters, run in this order; the first is MLlib's "
                             f"(default '{DEFAULT_MASTERS}')")
    parser.add_argument("--master", default=None, help="one master (same as --masters with one entry)")
    parser.add_argument("--mllib-all-masters", action="store_true", help="run MLlib on every master, not just the first")
    parser.add_argument("--driver-memory", default="4g")
    parser.add_argument("--max-iter", type=int, default=40, help="MLlib maxIter of the grid")
    parser.add_argument("--ladder", default="30,20,10,5",
                        help="MLlib maxIter values tried (descending) on the best setting for time to target")
    # 0 and 1e-3 lost clearly to 1e-4 at 50k rows (docs/benchmarks.md history); with 8x the rows the best
    # L2 strength can only move down, so the grid brackets it with 1e-5 and 1e-4.
    parser.add_argument("--reg-params", default="1e-5,1e-4", help="MLlib regParam grid (x standardization F/T)")
    parser.add_argument("--ps-epochs", default="1,2,4", help="spark-ps numEpochs ladder")
    parser.add_argument("--ps-full-ladder", action="store_true",
                        help="run every spark-ps rung, not only up to the first that reaches the target")
    # 4096-row batches share most of their features, so a pass pulls and pushes ~2.5x fewer keys per row than
    # at 1024 (3x the rows/s here); the larger summed steps want a larger alpha, and at 0.2 one pass reaches a
    # higher held-out AUC than 1024 rows at 0.1 (single-process replay of the same FTRL, d = 2^18 and 2^22).
    parser.add_argument("--ps-alpha", type=float, default=0.2)
    parser.add_argument("--ps-beta", type=float, default=1.0)
    parser.add_argument("--ps-batch-size", type=int, default=4096)
    parser.add_argument("--warmup-rows", type=int, default=20_000,
                        help="before the timed fit, fit each configuration once, untimed, on this many training "
                             "rows (0: no warm-up, the timed fit is the application's first)")
    parser.add_argument("--target-auc", default="mllib",
                        help="AUC to reach, or 'mllib' = MLlib's best held-out AUC at each d (the issue's definition)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per configuration")
    parser.add_argument("--budget-min", type=float, default=None,
                        help="stop launching configurations after this many minutes (those left are reported "
                             "as not run)")
    parser.add_argument("--ref-repeats", type=int, default=3, help="numpy FTRL timings (median)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--skip-mllib", action="store_true")
    parser.add_argument("--skip-ps", action="store_true")
    parser.add_argument("--no-reference", action="store_true", help="skip the numpy FTRL reference")
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/ untouched")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from results.json")
    args = parser.parse_args(argv)
    dims = _ints(args.dims)
    if any(not 10 <= d <= 40 for d in dims):
        parser.error("--dims entries must be in 10..40")
    if args.master and args.masters:
        parser.error("give --masters or --master, not both")
    masters = [args.master] if args.master else _masters(args.masters or DEFAULT_MASTERS)
    target = None if args.target_auc in ("mllib", "auto") else float(args.target_auc)
    if target is None and args.skip_mllib:
        parser.error("--skip-mllib leaves no MLlib target: give --target-auc")
    opts = Options(dims=dims, rows=args.rows, test_rows=args.test_rows, masters=masters,
                   mllib_all_masters=args.mllib_all_masters, driver_memory=args.driver_memory,
                   max_iter=args.max_iter, ladder=_ints(args.ladder), reg_params=_floats(args.reg_params),
                   ps_epochs=_ints(args.ps_epochs),
                   ps_params={"alpha": args.ps_alpha, "beta": args.ps_beta, "batchSize": args.ps_batch_size},
                   ps_full_ladder=args.ps_full_ladder, target_auc=target, timeout=args.timeout,
                   budget_s=None if args.budget_min is None else 60 * args.budget_min,
                   ref_repeats=args.ref_repeats, seed=args.seed, out=pathlib.Path(args.out),
                   skip_mllib=args.skip_mllib, skip_ps=args.skip_ps, reference=not args.no_reference,
                   warmup_rows=args.warmup_rows)
    return opts, args


def main(argv: list[str] | None = None) -> None:
    opts, args = parse_args(argv)
    if args.child:
        run_child(args.child)
        return
    results_path = opts.out / "results.json"
    if args.report_only:
        results = json.loads(results_path.read_text())
    else:
        bench = Bench(opts, write_report=not args.no_doc)
        try:
            results = bench.run()
        finally:
            bench.save()  # also after Ctrl-C: what ran so far, marked partial
        results = bench.results
    text = markdown(results)
    print("\n" + text)
    print("\nTarget checks:\n" + checks_text(results))
    if not args.no_doc:
        write_doc(text)
        plot(results, PLOT)
        print(f"\nwrote {DOC.relative_to(ROOT)} (bench-mllib section) and {PLOT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
