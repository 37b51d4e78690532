"""Helpers for the tests: the process's shared Spark session, and sessions of a test's own.

A Python process runs one SparkContext at a time, and starting one costs
5-20 s on two cores, so the tests share: :data:`SHARED` holds at most one
running session, started lazily by the fixtures ``local_spark`` (a ``local[2]``
session for ``tests/``, ``conftest.py``) and ``cluster_spark`` (a
``local-cluster[2,1,1024]`` one for ``integration/``). Asking for one kind
stops the other; each directory's ``conftest.py`` stops its kind once the run
leaves the directory, and at the end of the run.

A test that needs a session of its own (other plugin options, a fresh
application, a killed executor) starts it with :func:`start_ps_session` (or
``clusterkit.start_cluster_session``), which stops the shared session first,
and stops its own when done; the shared one restarts at the next fixture that
asks for it. A test that stops the shared session itself says so with
``SHARED.release()``.

Importing this module sets the environment the JVM reads when it starts
(loopback only, PySpark workers on this interpreter), so ``conftest.py``
imports it before any session exists. Import helpers from here, not from
``conftest`` (``integration/`` has a ``conftest`` module too); ``tests/`` and
``integration/`` are both on ``sys.path`` (``pythonpath`` in ``pyproject.toml``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

#: The test driver JVM's JIT: C1 alone, and the serial collector. A test application lives for minutes and
#: runs each of its many query plans a few times on a handful of rows, so C2's compiles (and G1's threads)
#: are CPU the tests never win back, on a host the tests keep CPU-bound (84% user time on both cores):
#: tests/ml/test_ml_api.py took 95-98 s and 117 s of JVM CPU with the defaults, 76-77 s and 61 s with these.
#: Only the tests' driver: local-cluster executors run the long numeric loops (MLlib's fits), where C2 pays.
TEST_DRIVER_JAVA_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"

#: The tests' query planning: no adaptive execution, no whole-stage code generation. The tests run thousands of
#: small plans once each, on a handful of rows: AQE's re-planning and Janino's compiles are CPU they never win back.
#: tests/ml/test_model_versions.py + tests/spark/test_deltalog.py + tests/ml/test_feature_keys.py, alternating runs:
#: 97.7 / 100.5 s with Spark's defaults, 91.1 / 90.9 s with these.
TEST_SQL_CONF = {"spark.sql.adaptive.enabled": "false", "spark.sql.codegen.wholeStage": "false"}

# Small shuffles: the tests move a handful of rows on a 2-core machine.
TEST_CONF = {
    "spark.driver.host": "127.0.0.1",
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.driver.extraJavaOptions": TEST_DRIVER_JAVA_OPTIONS,
    **TEST_SQL_CONF,
}

LOCAL_MASTER = "local[2]"

#: ``make kafka``: spark-sql-kafka and the jars it needs that pyspark does not ship.
SPARK_KAFKA_JARS_DIR = Path(__file__).resolve().parent.parent / "spark_ps" / "jars" / "kafka"


@dataclass
class _Running:
    kind: str
    spark: object
    app_id: str
    stop: Callable[[object, str, bool], None]
    failures: Callable[[], int]
    failures_at_start: int


class SharedSessions:
    """The one shared SparkSession of this process: started lazily, stopped on demand.

    ``get(kind, start, stop)`` returns the running shared session of that kind,
    starting it (``start()``) if none runs, if the one running is of another
    kind (stopped first), or if a test stopped it. ``release()`` stops it;
    ``stop(spark, app_id, failed)`` is told whether a test failed while it ran
    (``failures`` counts them), e.g. to keep the executors' logs.

    Examples
    --------
    >>> spark = SHARED.get("local", start, stop)                   # doctest: +SKIP
    >>> SHARED.get("local", start, stop) is spark                  # doctest: +SKIP
    True
    >>> SHARED.release()  # before a session of a test's own      # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._running: _Running | None = None

    def get(self, kind: str, start: Callable[[], object], stop: Callable[[object, str, bool], None], *,
            failures: Callable[[], int] = lambda: 0):
        running = self._running
        if running is not None and (running.kind != kind or not is_running(running.spark)):
            self.release()
        if self._running is None:
            failures_at_start = failures()
            spark = start()
            self._running = _Running(kind, spark, spark.sparkContext.applicationId, stop, failures,
                                     failures_at_start)
        return self._running.spark

    @property
    def kind(self) -> str | None:
        """The kind of the shared session that runs, if any."""
        return self._running.kind if self._running is not None else None

    def release(self) -> None:
        """Stop the shared session, if one was started (stopping it again is harmless)."""
        running, self._running = self._running, None
        if running is not None:
            running.stop(running.spark, running.app_id, running.failures() > running.failures_at_start)


#: The process's shared session (one per process, whichever directory's tests run).
SHARED = SharedSessions()


def is_running(spark) -> bool:
    """Whether ``spark`` is the process's live SparkContext (not stopped, not replaced)."""
    from pyspark import SparkContext

    sc = spark.sparkContext
    return sc._jsc is not None and SparkContext._active_spark_context is sc


def require_no_spark_context() -> None:
    """Raise if a SparkContext is alive: ``getOrCreate()`` would return it whatever master we ask for."""
    from pyspark import SparkContext

    active = SparkContext._active_spark_context
    if active is not None:
        raise RuntimeError(f"a SparkContext ({active.master}, app {active.appName!r}) is still running; "
                           "a test that starts its own session must stop it when done")


def spark_kafka_jars() -> list[Path]:
    """The jars Spark needs for ``format("kafka")``, or ``[]`` if ``make kafka`` has not fetched them.

    Only jars for the installed pyspark count: a directory left from another
    Spark version gives ``[]``.
    """
    import pyspark

    if not (SPARK_KAFKA_JARS_DIR / f"spark-sql-kafka-0-10_2.13-{pyspark.__version__}.jar").is_file():
        return []
    return sorted(SPARK_KAFKA_JARS_DIR.glob("*.jar"))


def new_session(master: str, app_name: str, conf: dict[str, str], **ps_options):
    """A SparkSession with the spark-ps plugin and Delta; refuses while any SparkContext is alive.

    Every session carries :func:`spark_kafka_jars` on ``spark.jars``
    (``configure_spark_with_ps`` appends its own): the driver JVM's classpath
    is fixed by the first session of the process, whichever test starts it,
    and the Kafka test runs in the same process as the rest.
    """
    from pyspark.sql import SparkSession

    from spark_ps.spark.session import configure_spark_with_ps

    require_no_spark_context()
    builder = SparkSession.builder.master(master).appName(app_name)
    jars = spark_kafka_jars()
    if jars:
        builder = builder.config("spark.jars", ",".join(str(p) for p in jars))
    for key, value in conf.items():
        builder = builder.config(key, value)
    return configure_spark_with_ps(builder, **ps_options).getOrCreate()


def start_ps_session(master: str, app_name: str, conf: dict[str, str] | None = None, **ps_options):
    """A session of the caller's own, with the spark-ps plugin and Delta; the caller stops it.

    Stops the shared session first (``SHARED.release()``; it restarts when a
    fixture next asks for it), then refuses to run while any other
    SparkContext is alive, since ``getOrCreate()`` would return that one.
    ``conf`` adds Spark settings to :data:`TEST_CONF`; ``ps_options`` go to
    ``configure_spark_with_ps`` (``servers_per_executor``, ``python``,
    ``startup_timeout``, ...).

    Examples
    --------
    >>> spark = start_ps_session("local[1]", "doc", servers_per_executor=2)  # doctest: +SKIP
    >>> spark.sparkContext.master                                  # doctest: +SKIP
    'local[1]'
    >>> spark.stop()                                               # doctest: +SKIP
    """
    SHARED.release()
    return new_session(master, app_name, {**TEST_CONF, **(conf or {})}, **ps_options)


def stop_session(spark) -> None:
    """Stop ``spark`` once the fits' background exports have finished (a stop would cut them off)."""
    from spark_ps.ml.weights import wait_for_exports

    wait_for_exports(timeout=120)
    spark.stop()


def shared_local_session(checkpoint_dir: str | os.PathLike, *, failures: Callable[[], int] = lambda: 0):
    """The shared ``local[2]`` session of ``tests/`` (one sidecar, on executor ``driver``).

    Fitted weights go under ``checkpoint_dir`` (``spark.ps.checkpointDir``);
    used only when the session starts. Console progress bars are off.
    """
    conf = {**TEST_CONF, "spark.ui.showConsoleProgress": "false", "spark.ps.checkpointDir": str(checkpoint_dir)}
    return SHARED.get("local", lambda: new_session(LOCAL_MASTER, "spark-ps-tests", conf),
                      lambda spark, _app_id, _failed: stop_session(spark), failures=failures)


def shared_session_users_last(items: list, directory, fixture: str) -> None:
    """Reorder ``items`` in place: under ``directory``, the modules that use ``fixture`` run after the others.

    A module that starts sessions of its own stops the shared one, which the
    next module using it must start again; run those modules first and the
    shared session starts once. Docstring examples count as users: those that
    need a session borrow the running one (the root ``conftest.py``). Each
    module's items stay together and in order, and so do the modules of each
    group; items elsewhere keep their places.
    """
    from _pytest.doctest import DoctestItem

    positions = [i for i, item in enumerate(items) if directory in item.path.parents]
    modules: dict = {}
    for i in positions:
        modules.setdefault(items[i].path, []).append(items[i])
    uses = {path: any(fixture in item.fixturenames or isinstance(item, DoctestItem) for item in group)
            for path, group in modules.items()}
    ordered = [item for path in sorted(modules, key=lambda p: uses[p]) for item in modules[path]]
    for i, item in zip(positions, ordered):
        items[i] = item
