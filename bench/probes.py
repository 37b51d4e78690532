"""What a bench child measures besides wall time: peak RSS, CPU seconds, epoch lines, task result bytes.

* Peak RSS is the kernel's own high-water mark ``VmHWM`` of each process,
  not ``getrusage``'s ``ru_maxrss``: Linux carries ``ru_maxrss`` across fork
  and exec, so the child would report the harness's footprint at launch
  whenever that is larger. :class:`PeakSampler` reads the descendants (JVMs,
  Python workers, sidecars) periodically, since a process that dies first
  (an OOM-killed JVM) keeps only its last observed peak.
* CPU seconds of the whole process tree (:func:`tree_cpu_seconds`): on a
  shared machine wall time moves with other people's load; the CPU time
  spent by one run's processes does not, so the report gives both.
* Our estimator's per-epoch seconds, from its progress lines (logger
  ``spark_ps.ml``: ``epoch i/n: ... rows/s (S s)``, S the mean task time of
  the epoch): :class:`EpochLog`.
* Bytes of task results sent to the driver: the sum of the stages'
  ``resultSize`` from the Spark UI REST API on 127.0.0.1, read after draining
  the listener bus (:func:`stage_totals`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
import threading
import urllib.request

import psutil

ROLES = ("driver_jvm", "executor_jvm", "sidecar", "python_worker")


@dataclasses.dataclass(frozen=True)
class EpochStats:
    """Per-epoch seconds and rows/s our estimator logged, and its worker count (``None`` if not logged)."""

    epoch_seconds: list[float]
    epoch_rows_per_s: list[float]
    workers: int | None = None


class EpochLog(logging.Handler):
    """Collects our estimator's progress lines (logger ``spark_ps.ml``) and echoes them to stderr.

    Examples
    --------
    >>> EpochLog.parse(["LR[x] epoch 1/2: loss 0.450000, 41000 rows/s (9.76 s)",
    ...                 "LR[x]: training on 2 workers x 2 shards, 2 epochs, ssp"])
    EpochStats(epoch_seconds=[9.76], epoch_rows_per_s=[41000.0], workers=2)
    """

    EPOCH = re.compile(r"epoch (\d+)/(\d+): loss \S+, ([\d.]+) rows/s \(([\d.]+) s\)")
    WORKERS = re.compile(r"training (?:\d+ rows )?on (\d+) workers")

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the line and echo it to stderr (the child's log)."""
        line = record.getMessage()
        self.lines.append(line)
        print(f"[spark_ps.ml] {line}", file=sys.stderr, flush=True)

    @classmethod
    def parse(cls, lines: list[str]) -> EpochStats:
        """The epoch seconds, rows/s and worker count in ``lines``.

        Parameters
        ----------
        lines : list of str
            Progress lines of one fit.

        Returns
        -------
        EpochStats
        """
        seconds, rates, workers = [], [], None
        for line in lines:
            m = cls.EPOCH.search(line)
            if m:
                rates.append(float(m.group(3)))
                seconds.append(float(m.group(4)))
            m = cls.WORKERS.search(line)
            if m:
                workers = int(m.group(1))
        return EpochStats(seconds, rates, workers)


def vm_hwm_mb(pid: int) -> float | None:
    """Peak resident set (``VmHWM``) of a process in MB, or ``None`` if it is gone.

    Examples
    --------
    >>> import os
    >>> vm_hwm_mb(os.getpid()) > 0
    True
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (FileNotFoundError, ProcessLookupError):
        return None  # exited between listing and reading: its last sample stands
    return None


def role_of(proc: psutil.Process) -> str | None:
    """Which of :data:`ROLES` a Spark-run process plays, by its command line; ``None`` for others."""
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


@dataclasses.dataclass(frozen=True)
class RolePeaks:
    """Largest single-process peak (MB) of each role, and the sum over executor-side processes."""

    driver_jvm: float | None = None
    executor_jvm: float | None = None
    sidecar: float | None = None
    python_worker: float | None = None
    executor_side_sum: float | None = None


class PeakSampler:
    """Samples ``VmHWM`` of this process's descendants (JVMs, workers, sidecars) in a thread.

    ``VmHWM`` is the kernel's own high-water mark, so a final read is exact;
    the periodic samples only matter for processes that die first (an
    OOM-killed JVM keeps its last observed peak).

    Parameters
    ----------
    interval : float
        Seconds between samples.
    """

    def __init__(self, interval: float = 0.25):
        self._interval = interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.peaks: dict[int, tuple[str, float]] = {}
        self._thread = threading.Thread(target=self._run, name="peak-sampler", daemon=True)

    def __enter__(self) -> PeakSampler:
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
        """Read every descendant's ``VmHWM`` once and keep the maximum per process."""
        for proc in psutil.Process().children(recursive=True):
            try:
                role = role_of(proc)
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue  # exited (or became unreadable) since the listing
            hwm = vm_hwm_mb(proc.pid) if role else None
            if hwm is not None:
                with self._lock:
                    old = self.peaks.get(proc.pid, (role, 0.0))[1]
                    self.peaks[proc.pid] = (role, max(old, hwm))

    def by_role(self) -> RolePeaks:
        """Largest single-process peak per role and, for executor-side roles, their sum.

        Returns
        -------
        RolePeaks
        """
        with self._lock:
            out: dict[str, float] = {}
            for role, mb in self.peaks.values():
                out[role] = max(out.get(role, 0.0), mb)
                if role != "driver_jvm":
                    out["executor_side_sum"] = out.get("executor_side_sum", 0.0) + mb
            return RolePeaks(**out)


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


def listener_drained(spark) -> None:
    """Block until the Spark listener bus has delivered every event to the UI status store.

    The REST API reads that store, which the bus fills asynchronously; without
    this the last stage of a fit can be missing. ``waitUntilEmpty`` is
    ``private[spark]`` in Scala, which is public bytecode that py4j can call.
    """
    spark.sparkContext._jsc.sc().listenerBus().waitUntilEmpty(60_000)


@dataclasses.dataclass(frozen=True)
class StageTotals:
    """Sum of ``resultSize`` over every stage attempt so far, and the number of those attempts."""

    result_bytes: int
    stages: int


def stage_totals(spark) -> StageTotals:
    """Task result bytes and stage attempts of the application so far, from the UI's REST API on 127.0.0.1.

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
        A session with the UI enabled (``spark.ui.retainedStages`` large
        enough to keep every stage).

    Returns
    -------
    StageTotals
    """
    listener_drained(spark)
    port = int(re.search(r":(\d+)/?$", spark.sparkContext.uiWebUrl).group(1))
    base = f"http://127.0.0.1:{port}/api/v1/applications/{spark.sparkContext.applicationId}"
    with urllib.request.urlopen(f"{base}/stages", timeout=60) as resp:
        stages = json.load(resp)
    return StageTotals(sum(int(s.get("resultSize", 0)) for s in stages), len(stages))
