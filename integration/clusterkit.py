"""Helpers for the integration tests: a real ``local-cluster`` Spark with spark-ps.

``local-cluster[2,1,1024]`` runs a standalone master and two workers inside the
driver JVM, and each executor in its own JVM, so sidecars have distinct
parents exactly as on a cluster. A Python process runs one SparkContext at
a time: the ``cluster_spark`` fixture (``conftest.py``) is the process's shared
session (``sparkkit.SHARED``), and :func:`start_cluster_session` gives a test a
session of its own after stopping the shared one. Importing this module sets
the environment the JVM reads when it starts, so ``conftest.py`` imports it
before any session exists.

Executor stdout/stderr (where the sidecars log) land in the local-cluster
workers' directory, ``$SPARK_HOME/work/<app-id>/<executor-id>/`` (Spark gives
local-cluster workers no other choice; ``$SPARK_HOME`` is the pyspark package).
:func:`executor_logs` reads them; :func:`stop_cluster_session` deletes them
(about 15 MB of copied jars per application) unless a test failed.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import psutil
from sparkkit import SHARED, TEST_CONF, new_session, stop_session

# Read by the JVM when it starts, so set before any session: loopback only,
# and PySpark workers on this interpreter.
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

CLUSTER_MASTER = "local-cluster[2,1,1024]"
CLUSTER_EXECUTORS = 2
SESSION_TIMEOUT = 120.0
EXIT_TIMEOUT = 30.0

#: The tests' settings (sparkkit.TEST_CONF), with a shuffle partition and a task per core of the two executors.
CLUSTER_CONF = {**TEST_CONF, "spark.sql.shuffle.partitions": "4", "spark.default.parallelism": "4"}


def start_cluster_session(app_name: str, master: str = CLUSTER_MASTER, conf: dict[str, str] | None = None,
                          **ps_options):
    """A ``local-cluster`` SparkSession of the caller's own, with spark-ps and Delta, its sidecars registered.

    Stops the process's shared session first (``sparkkit.SHARED.release()``; it
    restarts when a fixture next asks for it) and refuses to run while any
    other SparkContext is alive. ``conf`` adds Spark settings; ``ps_options``
    go to ``configure_spark_with_ps``. Stop it with :func:`stop_cluster_session`.

    Returns only once every expected sidecar is in the driver's registry
    (``wait_for_servers``), so tests never race executor start-up.

    Examples
    --------
    >>> spark = start_cluster_session("doc")                       # doctest: +SKIP
    >>> len(spark_ps.spark.registry.read_registry(spark))                # doctest: +SKIP
    2
    """
    SHARED.release()
    return _new_cluster_session(app_name, master, conf, **ps_options)


def shared_cluster_session(*, failures=lambda: 0):
    """The shared ``local-cluster[2,1,1024]`` session of ``integration/``, its 2 sidecars registered.

    Its executors' logs are kept when it stops if a test failed while it ran
    (``failures`` counts the failed tests).
    """
    return SHARED.get("cluster", lambda: _new_cluster_session("spark-ps-integration"),
                      lambda spark, app_id, failed: stop_cluster_session(spark, app_id, keep_logs=failed),
                      failures=failures)


def _new_cluster_session(app_name: str, master: str = CLUSTER_MASTER, conf: dict[str, str] | None = None,
                         **ps_options):
    from spark_ps.spark.registry import wait_for_servers

    spark = new_session(master, app_name, {**CLUSTER_CONF, **(conf or {})}, **ps_options)
    try:
        wait_for_servers(spark, timeout=SESSION_TIMEOUT)
    except BaseException:
        print(executor_logs(spark), file=sys.stderr)
        stop_cluster_session(spark, spark.sparkContext.applicationId, keep_logs=True)
        raise
    return spark


def stop_cluster_session(spark, app_id: str, *, keep_logs: bool = False) -> None:
    """Stop ``spark`` (if still running), wait (bounded) for its executor JVMs, drop their work dirs.

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
        The session; stopping it again is harmless.
    app_id : str
        Its ``sparkContext.applicationId``, read while it ran (not available after a stop).
    keep_logs : bool
        Keep ``$SPARK_HOME/work/<app-id>`` (executor and sidecar logs), e.g. after a failure.

    Examples
    --------
    >>> app_id = spark.sparkContext.applicationId                  # doctest: +SKIP
    >>> stop_cluster_session(spark, app_id)                        # doctest: +SKIP
    """
    app_dir = _app_work_dir(app_id)
    executors = executor_jvms()
    stop_session(spark)
    _, alive = psutil.wait_procs(executors, timeout=EXIT_TIMEOUT)
    if alive:
        # Not a test failure here: the teardown tests assert on this directly.
        print(f"executor JVMs still running {EXIT_TIMEOUT:g} s after spark.stop(): {alive}", file=sys.stderr)
        keep_logs = True
    if keep_logs:
        print(f"executor logs kept in {app_dir}", file=sys.stderr)
    elif app_dir.is_dir():
        shutil.rmtree(app_dir)


def _app_work_dir(app_id: str) -> Path:
    from pyspark.find_spark_home import _find_spark_home

    return Path(_find_spark_home()) / "work" / app_id


def executor_logs(spark, tail_lines: int = 40) -> str:
    """The last lines of each executor's stderr for ``spark``'s (running) application, for failure messages.

    Examples
    --------
    >>> print(executor_logs(spark))                                # doctest: +SKIP
    ==> .../app-20250101000000-0000/0/stderr <==
    ...
    """
    app_dir = _app_work_dir(spark.sparkContext.applicationId)
    chunks = []
    for path in sorted(app_dir.glob("*/stderr")):
        lines = path.read_text(errors="replace").splitlines()[-tail_lines:]
        chunks.append(f"==> {path} <==\n" + "\n".join(lines))
    return "\n".join(chunks)


def executor_jvms() -> list[psutil.Process]:
    """Executor JVMs started by this test process's driver (children of the driver JVM).

    Examples
    --------
    >>> [p.pid for p in executor_jvms()]                           # doctest: +SKIP
    [8123, 8124]
    """
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "org.apache.spark.executor.CoarseGrainedExecutorBackend" in proc.cmdline():
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue  # an executor that exited while we looked is not one we want
    return found
