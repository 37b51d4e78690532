"""``make bench`` (head-to-head): spark-ps vs MLlib ``LogisticRegression`` on synthetic CTR data.

For each feature dimension ``d`` the harness writes a train/test set with
``ctr_data.py`` (VectorUDT Parquet, the same files for both systems) and runs
every configuration in its **own** Python + JVM (``python bench_mllib.py
--child CONFIG``), so a driver ``OutOfMemoryError`` (MLlib keeps several dense
``d``-vectors on the driver) is recorded as ``OOM`` instead of taking the
harness down. The JVMs run with ``-XX:+ExitOnOutOfMemoryError`` so an OOM
ends the run at once instead of leaving a half-dead driver to time out.

MLlib: a grid over ``regParam`` x ``standardization`` at ``maxIter`` (40),
the best by held-out AUC, then a ``maxIter`` ladder (5, 10, 20) on the best
setting: the smallest ``maxIter`` whose model reaches the target AUC gives
"time to target". spark-ps: a ``numEpochs`` ladder (1, 2, 4) with FTRL; see
:func:`fit_spark_ps` for the one function that wires our estimator in. It is
skipped, with the reason printed, while ``spark_ps.ml.classification`` does
not import.

Per run, the child records: fit wall time (the training DataFrame is read,
repartitioned if needed and cached *before* the clock starts, identically for
both systems), held-out AUC (``BinaryClassificationEvaluator`` with
``numBins=0``, exact) and log-loss (a Spark SQL aggregate), both computed on
the executors; peak RSS (``VmHWM``) of the driver JVM, of the driver Python
process and of executor-side processes; CPU seconds of all the run's processes
during the fit (less sensitive than wall time to other load on a shared
machine); and the bytes of task results sent to
the driver during the fit (sum of the stages' ``resultSize`` from the Spark UI
REST API on 127.0.0.1, read after draining the listener bus).

The target AUC defaults to 99% of what the single-process numpy FTRL
reference (``numpy_ftrl.py``, one pass) reaches on the same data, so it
scales with ``--rows``; ``--target-auc 0.79`` fixes it instead.

Writes a Markdown report to stdout and into ``docs/benchmarks.md`` between
``<!-- bench-mllib:begin -->`` and ``<!-- bench-mllib:end -->`` (other
sections untouched), a plot ``docs/bench_mllib.png``, and every run's raw
record to ``integration/out/bench_mllib/results.json``.

Examples
--------
The quick end-to-end check (d = 2**18, a few minutes on 2 cores)::

    python integration/bench_mllib.py --dims 18 --rows 50000 --test-rows 20000

The full comparison::

    python integration/bench_mllib.py --dims 18,22,26,30 --rows 400000 --test-rows 100000 \
        --master 'local-cluster[2,1,2048]'
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import re
import signal
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
        from spark_ps.session import plugin_jar_path
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
    if "spark_ps.sidecar" in cmd:
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
               .config("spark.pyspark.python", sys.executable))
    if cfg["system"] == PS:
        from spark_ps.session import configure_spark_with_ps
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


def run_child(cfg_path: str) -> None:
    """Entry point of ``--child``: fit and evaluate one configuration, write its record as JSON."""
    cfg = json.loads(pathlib.Path(cfg_path).read_text())
    record: dict[str, Any] = {"status": "error"}
    start = time.perf_counter()
    spark = None
    with PeakSampler() as sampler:
        try:
            spark = _spark(cfg)
            spark.sparkContext.setLogLevel("ERROR")
            t0 = time.perf_counter()
            train = spark.read.parquet(cfg["train"])
            if train.rdd.getNumPartitions() < cfg["partitions"]:
                train = train.repartition(cfg["partitions"])
            train = train.cache()
            record["train_rows"] = train.count()
            record["load_s"] = time.perf_counter() - t0
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
            record["auc"], record["log_loss"] = _evaluate(model, spark.read.parquet(cfg["test"]))
            record["status"] = "ok"
        except Exception as exc:  # recorded, not swallowed: the parent reports it, the log has the trace
            record["status"] = "OOM" if OOM_MARKER in str(exc) else "error"
            record["error"] = error_summary(exc)
            traceback.print_exc()
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
# Parent: data, the grid and ladders, the report
# =============================================================================

@dataclasses.dataclass
class Options:
    dims: list[int]
    rows: int
    test_rows: int
    master: str
    driver_memory: str
    max_iter: int
    ladder: list[int]
    reg_params: list[float]
    ps_epochs: list[int]
    ps_params: dict[str, float]
    target_auc: float | None
    timeout: float
    seed: int
    out: pathlib.Path
    skip_mllib: bool
    skip_ps: bool
    reference: bool

    @property
    def partitions(self) -> int:
        """Task slots of the master: ``local[N]`` -> N, ``local-cluster[E,C,M]`` -> E*C."""
        m = re.fullmatch(r"local\[(\d+|\*)\]", self.master)
        if m:
            return (os.cpu_count() or 1) if m.group(1) == "*" else int(m.group(1))
        m = re.fullmatch(r"local-cluster\[(\d+),\s*(\d+),\s*(\d+)\]", self.master)
        if m:
            return int(m.group(1)) * int(m.group(2))
        return 2


def prepare_data(opts: Options, log2d: int) -> dict[str, Any]:
    """Train/test directories for ``d = 2**log2d``, written once and reused while the parameters match."""
    dim = 2**log2d
    data_format = "vector" if dim <= ctr_data.VECTOR_MAX_DIM else "keys"
    root = opts.out / "data" / f"d{log2d}_n{opts.rows}_t{opts.test_rows}_s{opts.seed}"
    spec = ctr_data.CTRSpec()
    paths = {}
    for split, n, start in (("train", opts.rows, 0), ("test", opts.test_rows, opts.rows)):
        meta_path = root / split / "meta.json"
        want = {"rows": n, "dim": dim, "seed": opts.seed, "start_row": start, "spec": dataclasses.asdict(spec)}
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        if any(meta.get(k) != v for k, v in want.items()) or data_format not in meta.get("formats", []):
            ctr_data.write_dataset(root / split, n, dim, opts.seed, start_row=start, formats=(data_format,),
                                   n_files=max(2, opts.partitions), spec=spec)
        paths[split] = str(root / split / data_format)
    return {"format": data_format, **paths}


def reference_run(opts: Options, log2d: int) -> dict[str, Any]:
    """Single-process numpy FTRL, one pass: the accuracy yardstick and the default target's base."""
    from metrics import auc, log_loss
    from numpy_ftrl import predict, train_ftrl

    dim = 2**log2d
    train = ctr_data.generate(opts.rows, dim, opts.seed)
    test = ctr_data.generate(opts.test_rows, dim, opts.seed, start_row=opts.rows)
    train_ftrl(np.array([0, 1]), np.array([0]), np.ones(1), np.ones(1))  # compile outside the clock
    t0 = time.perf_counter()
    model = train_ftrl(*train, alpha=opts.ps_params["alpha"], beta=opts.ps_params["beta"])
    fit_s = time.perf_counter() - t0
    p = predict(model, *test[:3])
    return {"system": REF, "d_log2": log2d, "name": f"{REF} d=2^{log2d}", "params": {"epochs": 1},
            "status": "ok", "fit_s": fit_s, "auc": auc(test[3], p), "log_loss": log_loss(test[3], p)}


def launch(opts: Options, system: str, log2d: int, data: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration in a child process; classify OOM, timeout and crashes."""
    label = ",".join(f"{k}={v}" for k, v in params.items())
    name = f"{system}_d{log2d}_{label}".replace("=", "").replace(",", "_").replace(" ", "")
    run_dir = opts.out / "runs" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    result_path = run_dir / "result.json"
    result_path.unlink(missing_ok=True)
    cfg = {"name": name, "system": system, "params": params, "format": data["format"], "train": data["train"],
           "test": data["test"], "master": opts.master, "driver_memory": opts.driver_memory,
           "partitions": opts.partitions, "warehouse": str(run_dir / "warehouse"), "result": str(result_path)}
    cfg_path = run_dir / "config.json"
    cfg_path.write_text(json.dumps(cfg, indent=2))
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable)
    log_path = run_dir / "child.log"
    record: dict[str, Any]
    t0 = time.perf_counter()
    with open(log_path, "wb") as log:
        # Own process group (pgid = child pid) so a timeout kills the child, its JVM and sidecars together.
        proc = subprocess.Popen([sys.executable, str(pathlib.Path(__file__).resolve()), "--child", str(cfg_path)],
                                stdout=log, stderr=subprocess.STDOUT, cwd=run_dir, env=env,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=opts.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
    log_text = log_path.read_text(errors="replace")
    if result_path.exists():
        record = json.loads(result_path.read_text())
    elif rc is None:
        record = {"status": "timeout", "error": f"no result after {opts.timeout:.0f} s"}
    else:
        record = {"status": "error", "error": f"child exited with {rc} and no result"}
    if OOM_MARKER in log_text and record["status"] != "ok":
        # The JVM exits on OOM (-XX:+ExitOnOutOfMemoryError); Python then sees only a broken py4j link.
        record["status"] = "OOM"
        line = next(ln for ln in log_text.splitlines() if OOM_MARKER in ln)
        record["error"] = line.strip()[:300]
    record.update(system=system, d_log2=log2d, name=name, params=params, log=str(log_path),
                  wall_s=time.perf_counter() - t0)
    print(f"  {format_run(record)}", flush=True)
    return record


def format_run(r: dict[str, Any]) -> str:
    params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
    if r["status"] != "ok":
        return f"{r['system']:>10} d=2^{r['d_log2']} [{params}]: {r['status']} {r.get('error', '')}"
    return (f"{r['system']:>10} d=2^{r['d_log2']} [{params}]: fit {r['fit_s']:.1f} s, AUC {r['auc']:.4f}, "
            f"log-loss {r['log_loss']:.4f}, driver JVM {_mb(r.get('driver_jvm_peak_mb'))}, "
            f"results {_bytes(r.get('result_bytes'))}")


def bench_mllib(opts: Options, log2d: int, data: dict[str, Any], target: float | None) -> dict[str, Any]:
    """Grid at ``maxIter``, then the ``maxIter`` ladder on the best setting."""
    if data["format"] != "vector":
        return {"runs": [], "status": "unsupported", "note": "d > 2^31-1: SparseVector indices are int32"}
    runs: list[dict[str, Any]] = []
    oom_at = None
    for reg in opts.reg_params:
        for std in (False, True):
            params = {"maxIter": opts.max_iter, "regParam": reg, "standardization": std}
            if oom_at is not None:
                # Memory is set by d, not by these knobs: another run would only OOM again, slowly.
                runs.append({"system": MLLIB, "d_log2": log2d, "name": "", "params": params, "status": "skipped",
                             "error": f"not run: {oom_at} ran out of memory at this d"})
                continue
            run = launch(opts, MLLIB, log2d, data, params)
            runs.append(run)
            if run["status"] == "OOM":
                oom_at = ", ".join(f"{k}={v}" for k, v in params.items())
    oom = next((r for r in runs if r["status"] == "OOM"), None)
    return {"runs": runs, "oom_run": oom, **_time_to_target(opts, log2d, data, runs, target, MLLIB)}


def bench_ps(opts: Options, log2d: int, data: dict[str, Any], target: float | None) -> dict[str, Any]:
    """``numEpochs`` ladder; each rung is a complete fit, so the first to reach the target is the time to it."""
    runs = [launch(opts, PS, log2d, data, {"numEpochs": e, "regParam": 0.0, **opts.ps_params})
            for e in sorted(opts.ps_epochs)]
    ok = [r for r in runs if r["status"] == "ok"]
    best = max(ok, key=lambda r: r["auc"]) if ok else None
    hit = next((r for r in ok if target is not None and r["auc"] >= target), None)
    oom = next((r for r in runs if r["status"] == "OOM"), None)
    return {"runs": runs, "oom_run": oom, "best": best, "target_run": hit, "status": _status(runs)}


def _time_to_target(opts, log2d, data, grid, target, system) -> dict[str, Any]:
    ok = [r for r in grid if r["status"] == "ok"]
    if not ok:
        return {"best": None, "target_run": None, "status": _status(grid)}
    best = max(ok, key=lambda r: r["auc"])
    if target is None or best["auc"] < target:
        return {"best": best, "target_run": None, "status": "ok"}
    hit = None
    for it in sorted(i for i in opts.ladder if i < opts.max_iter):
        run = launch(opts, system, log2d, data, {**best["params"], "maxIter": it})
        grid.append(run)
        if run["status"] == "ok" and run["auc"] >= target:
            hit = run
            break
    return {"best": best, "target_run": hit or best, "status": "ok"}


def _status(runs: list[dict[str, Any]]) -> str:
    statuses = {r["status"] for r in runs}
    for s in ("ok", "OOM", "timeout", "error"):
        if s in statuses:
            return s
    return "skipped"


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


def summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (d, system) with the best run, the time to target and the status."""
    rows = []
    for log2d, per_d in sorted(results["dims"].items(), key=lambda kv: int(kv[0])):
        target = per_d.get("target_auc")
        for system in (MLLIB, PS, REF):
            entry = per_d.get(system)
            if entry is None:
                continue
            best, hit = entry.get("best"), entry.get("target_run")
            rows.append({"d": int(log2d), "system": system, "status": entry["status"], "best": best, "hit": hit,
                         "target": target, "note": entry.get("note", ""), "oom_run": entry.get("oom_run")})
    return rows


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        "## spark-ps vs MLlib LogisticRegression (`integration/bench_mllib.py`)",
        "",
        f"Synthetic CTR data (`integration/ctr_data.py`: {meta['n_fields']} hashed Zipf fields, ~30 binary "
        f"non-zeros per row, CTR ≈ {meta['ctr']:.2f}), {meta['rows']:,} training / {meta['test_rows']:,} "
        f"held-out rows; master `{meta['master']}`, driver memory {meta['driver_memory']}, "
        f"{meta['cores']} cores, {meta['date']}, {meta.get('wall_s', 0) / 60:.1f} min in all. "
        f"Each configuration runs in its own Python + JVM; "
        f"the training DataFrame is cached before the fit clock starts. AUC (exact, `numBins=0`) and "
        f"log-loss are on the held-out rows, computed by Spark. *Time to target*: wall time of the "
        f"cheapest fit (MLlib: smallest `maxIter` of {meta['ladder']} on the best grid setting; "
        f"spark-ps: fewest epochs) whose model reaches the target AUC. Peak RSS is `VmHWM`; "
        f"*task results* is the sum of `resultSize` over the fit's stages (what executors sent the driver). "
        f"The machine is shared: *fit CPU s* (user+system of every process of the run) is less sensitive to "
        f"other load than wall time; *load avg* is the 1-minute load when the fit started.",
        "",
        "| d | system | best config | fit s | AUC | log-loss | target AUC | time to target | "
        "driver JVM peak | driver Python peak | task results to driver | status |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for row in summary_rows(results):
        b, h = row["best"], row["hit"]
        ttt = "—"
        if row["system"] == REF and b is not None and row["target"] is not None:
            ttt = f"{b['fit_s']:.1f} s" if b["auc"] >= row["target"] else "not reached"
        elif h is not None:
            ttt = f"{h['fit_s']:.1f} s ({_config_label(h).split(',')[0]})"
        elif b is not None:
            ttt = "not reached"
        status = row["status"] + (f": {row['note']}" if row["note"] else "")
        jvm = _mb(b and b.get("driver_jvm_peak_mb"))
        if b is None and row["oom_run"] and row["oom_run"].get("driver_jvm_peak_mb"):
            jvm = f"{_mb(row['oom_run']['driver_jvm_peak_mb'])} at OOM"
        lines.append(
            f"| 2^{row['d']} | {row['system']} | {_config_label(b)} | {_fmt(b and b['fit_s'], '.1f')} | "
            f"{_fmt(b and b['auc'], '.4f')} | {_fmt(b and b['log_loss'], '.4f')} | {_fmt(row['target'], '.3f')} | "
            f"{ttt} | {jvm} | {_mb(b and b.get('driver_python_peak_mb'))} | "
            f"{_bytes(b and b.get('result_bytes'))} | {status} |")
    lines += ["", "Ratios spark-ps / MLlib (best configs; < 1 means spark-ps is smaller or faster):", "",
              "| d | fit time | fit CPU time | time to target | driver JVM peak | task results to driver "
              "| AUC difference |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for log2d, per_d in sorted(results["dims"].items(), key=lambda kv: int(kv[0])):
        m, p = per_d.get(MLLIB) or {}, per_d.get(PS) or {}
        mb, pb = m.get("best"), p.get("best")
        if pb is None:
            why = p.get("note") or p.get("status") or "not run"
            lines.append(f"| 2^{log2d} | {why} | | | | | |")
            continue
        if mb is None:
            lines.append(f"| 2^{log2d} | MLlib {m.get('status', 'not run')} | | | | | AUC spark-ps {pb['auc']:.4f} |")
            continue
        mh, ph = m.get("target_run"), p.get("target_run")
        lines.append(
            f"| 2^{log2d} | {_ratio(pb['fit_s'], mb['fit_s'])} | {_ratio(pb.get('fit_cpu_s'), mb.get('fit_cpu_s'))} | "
            f"{_ratio(ph and ph['fit_s'], mh and mh['fit_s'])} | "
            f"{_ratio(pb.get('driver_jvm_peak_mb'), mb.get('driver_jvm_peak_mb'))} | "
            f"{_ratio(pb.get('result_bytes'), mb.get('result_bytes'))} | {pb['auc'] - mb['auc']:+.4f} |")
    lines += ["", "<details><summary>Every run</summary>", "",
              "| d | system | config | status | fit s | fit CPU s | load avg | iterations | AUC | log-loss | "
              "driver JVM peak | driver Python peak | executor-side peak (sum) | task results | fit stages |",
              "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["runs"]:
        lines.append(
            f"| 2^{r['d_log2']} | {r['system']} | {_config_label(r)} | {r['status']} | {_fmt(r.get('fit_s'), '.1f')} | "
            f"{_fmt(r.get('fit_cpu_s'), '.1f')} | {_fmt(r.get('load_avg_before'), '.1f')} | "
            f"{r.get('iterations', '—')} | {_fmt(r.get('auc'), '.4f')} | {_fmt(r.get('log_loss'), '.4f')} | "
            f"{_mb(r.get('driver_jvm_peak_mb'))} | {_mb(r.get('driver_python_peak_mb'))} | "
            f"{_mb(r.get('executor_side_peak_mb'))} | {_bytes(r.get('result_bytes'))} | "
            f"{r.get('fit_stages', '—')} |")
    lines += ["", "</details>"]
    if results.get("notes"):
        lines += [""] + [f"* {n}" for n in results["notes"]]
    lines += ["", f"![time to target and AUC vs d]({PLOT.relative_to(DOC.parent).as_posix()})"]
    return "\n".join(lines)


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "—"
    r = a / b
    return f"{r:.2f}×" if r >= 0.01 else f"{r:.1e}×"


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
    """Time to target and AUC vs d for both systems (and the numpy reference); OOM marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary_rows(results)
    fig, (ax_t, ax_a) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {MLLIB: ("tab:red", "o"), PS: ("tab:blue", "s"), REF: ("tab:gray", "^")}
    top = max([r["hit"]["fit_s"] for r in rows if r["hit"]] +
              [r["best"]["fit_s"] for r in rows if r["best"]] + [1.0]) * 2
    for system, (color, marker) in styles.items():
        mine = [r for r in rows if r["system"] == system]
        if not mine:
            continue
        pts_t = [(r["d"], (r["hit"] or (r["best"] if system == REF and r["best"] and r["target"] is not None
                                         and r["best"]["auc"] >= r["target"] else None) or {}).get("fit_s"))
                 for r in mine]
        pts_t = [(d, t) for d, t in pts_t if t is not None]
        if pts_t:
            ax_t.plot(*zip(*pts_t), color=color, marker=marker, label=system)
        pts_a = [(r["d"], r["best"]["auc"]) for r in mine if r["best"]]
        if pts_a:
            ax_a.plot(*zip(*pts_a), color=color, marker=marker, label=system)
        for r in mine:
            if r["status"] in ("OOM", "timeout", "error", "unsupported"):
                ax_t.plot(r["d"], top, color=color, marker="x", markersize=10, linestyle="none")
                ax_t.annotate(r["status"], (r["d"], top), textcoords="offset points", xytext=(4, -12),
                              color=color, fontsize=8)
    ax_t.set_yscale("log")
    ax_t.set_ylabel("seconds to reach target AUC")
    ax_t.set_title("time to target AUC (x = failed)")
    ax_a.set_ylabel("held-out AUC (best config)")
    ax_a.set_title("accuracy")
    dims = sorted({r["d"] for r in rows})
    for ax in (ax_t, ax_a):
        ax.set_xlabel("log2(d)")
        ax.set_xticks(dims)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{results['meta']['rows']:,} train rows, {results['meta']['master']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- main ---------------------------------------------------------------------

def _floats(s: str) -> list[float]:
    return [float(x) for x in s.split(",") if x.strip()]


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> tuple[Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--dims", default="18,22,26,30", help="comma-separated log2(d), each in 10..40")
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--test-rows", type=int, default=100_000)
    parser.add_argument("--master", default="local[2]", help="e.g. local[2] or 'local-cluster[2,1,2048]'")
    parser.add_argument("--driver-memory", default="4g")
    parser.add_argument("--max-iter", type=int, default=40, help="MLlib maxIter of the grid")
    parser.add_argument("--ladder", default="5,10,20", help="MLlib maxIter values tried for time to target")
    parser.add_argument("--reg-params", default="0,1e-4,1e-3", help="MLlib regParam grid")
    parser.add_argument("--ps-epochs", default="1,2,4", help="spark-ps numEpochs ladder")
    parser.add_argument("--ps-alpha", type=float, default=0.1)
    parser.add_argument("--ps-beta", type=float, default=1.0)
    parser.add_argument("--ps-batch-size", type=int, default=1024)
    parser.add_argument("--target-auc", default="auto",
                        help="AUC to reach, or 'auto' = 0.99 x the numpy FTRL reference at each d")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per configuration")
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
    target = None if args.target_auc == "auto" else float(args.target_auc)
    if target is None and args.no_reference:
        parser.error("--target-auc auto needs the reference; give a number with --no-reference")
    opts = Options(dims=dims, rows=args.rows, test_rows=args.test_rows, master=args.master,
                   driver_memory=args.driver_memory, max_iter=args.max_iter, ladder=_ints(args.ladder),
                   reg_params=_floats(args.reg_params), ps_epochs=_ints(args.ps_epochs),
                   ps_params={"alpha": args.ps_alpha, "beta": args.ps_beta, "batchSize": args.ps_batch_size},
                   target_auc=target, timeout=args.timeout, seed=args.seed, out=pathlib.Path(args.out),
                   skip_mllib=args.skip_mllib, skip_ps=args.skip_ps, reference=not args.no_reference)
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
        t0 = time.perf_counter()
        results = run_all(opts)
        results["meta"]["wall_s"] = time.perf_counter() - t0
        opts.out.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=1, default=str))
    text = markdown(results)
    print("\n" + text)
    if not args.no_doc:
        write_doc(text)
        plot(results, PLOT)
        print(f"\nwrote {DOC.relative_to(ROOT)} (bench-mllib section) and {PLOT.relative_to(ROOT)}")


def run_all(opts: Options) -> dict[str, Any]:
    spec = ctr_data.CTRSpec()
    ps_reason = "skipped (--skip-ps)" if opts.skip_ps else spark_ps_unavailable()
    notes = []
    if ps_reason:
        notes.append(f"spark-ps not run: {ps_reason}")
        print(f"spark-ps half skipped: {ps_reason}", flush=True)
    results: dict[str, Any] = {"meta": {
        "rows": opts.rows, "test_rows": opts.test_rows, "master": opts.master, "driver_memory": opts.driver_memory,
        "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"), "ladder": opts.ladder, "n_fields": spec.n_fields,
        "ctr": spec.ctr, "max_iter": opts.max_iter, "reg_params": opts.reg_params, "ps_epochs": opts.ps_epochs,
        "ps_params": opts.ps_params, "seed": opts.seed}, "dims": {}, "runs": [], "notes": notes}
    for log2d in opts.dims:
        print(f"d = 2^{log2d}: data ...", flush=True)
        data = prepare_data(opts, log2d)
        per_d: dict[str, Any] = {}
        target = opts.target_auc
        if opts.reference:
            ref = reference_run(opts, log2d)
            per_d[REF] = {"best": ref, "target_run": None, "status": "ok"}
            print(f"  {format_run(ref)}", flush=True)
            if target is None:
                target = math.floor(0.99 * ref["auc"] * 1000) / 1000
        per_d["target_auc"] = target
        print(f"  target AUC {target}", flush=True)
        if not opts.skip_mllib:
            per_d[MLLIB] = bench_mllib(opts, log2d, data, target)
            results["runs"] += per_d[MLLIB].pop("runs")
        if ps_reason is None:
            per_d[PS] = bench_ps(opts, log2d, data, target)
            results["runs"] += per_d[PS].pop("runs")
        elif not opts.skip_ps:
            per_d[PS] = {"best": None, "target_run": None, "status": "skipped", "note": ps_reason}
        results["dims"][str(log2d)] = per_d
    return results


if __name__ == "__main__":
    main()
