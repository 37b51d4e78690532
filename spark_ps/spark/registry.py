"""Driver-side view of the sidecar registry kept by ``io.sparkps.PSDriverPlugin``.

Executor plugins register each sidecar with the driver plugin once its
handshake arrives; the driver plugin drops the sidecars of removed executors.
This module reads that registry (and the per-application secret) through
py4j, and waits, with a hard deadline, until enough shards are up.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from spark_ps.errors import PluginNotRunningError
from spark_ps.wire.faults import CLIENT_PREFIX, FaultSettings
from spark_ps.wire.session import conf_flags

DRIVER_PLUGIN_CLASS = "io.sparkps.PSDriverPlugin"
_POLL_SECONDS = 0.2
_LOCAL_MASTER = re.compile(r"local(\[.*\])?")
_LOCAL_CLUSTER_MASTER = re.compile(r"local-cluster\[\s*(\d+)\s*,.*\]")


@dataclass(frozen=True)
class ServerInfo:
    """One sidecar shard: where it listens and which executor owns it.

    Examples
    --------
    >>> ServerInfo("0", "127.0.0.1", 41234, 4321)
    ServerInfo(executor_id='0', host='127.0.0.1', port=41234, pid=4321, index=0)
    """

    executor_id: str
    host: str
    port: int
    pid: int
    index: int = 0


def _driver_plugin(spark):
    from py4j.java_gateway import JavaClass
    from py4j.protocol import Py4JError

    jvm = spark.sparkContext._jvm
    try:
        cls = jvm.io.sparkps.PSDriverPlugin
    except Py4JError as exc:
        raise PluginNotRunningError(f"cannot look up {DRIVER_PLUGIN_CLASS} in the driver JVM: {exc}") from exc
    # py4j resolves an unknown class name to a JavaPackage rather than failing.
    if not isinstance(cls, JavaClass):
        raise PluginNotRunningError(
            f"{DRIVER_PLUGIN_CLASS} is not on the driver's classpath: build the jar with `make plugin` and "
            "create the session through spark_ps.configure_spark_with_ps (or put spark_ps/jars/"
            "spark-ps-plugin.jar in spark.jars and set spark.plugins=io.sparkps.PSPlugin)")
    return cls


def _call(spark, method: str) -> str:
    from py4j.protocol import Py4JJavaError

    cls = _driver_plugin(spark)
    try:
        return getattr(cls, method)()
    except Py4JJavaError as exc:
        message = exc.java_exception.getMessage()
        raise PluginNotRunningError(message or str(exc)) from None


def read_registry(spark) -> list[ServerInfo]:
    """The sidecars registered right now, sorted by (executor id, index).

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
        A session started with the spark-ps plugin.

    Returns
    -------
    list of ServerInfo

    Raises
    ------
    PluginNotRunningError
        If the plugin class is missing from the driver or the plugin is not enabled.

    Examples
    --------
    >>> _ = wait_for_servers(spark)          # sidecars register while their executors start
    >>> read_registry(spark)
    [ServerInfo(executor_id='...', host='127.0.0.1', port=..., pid=..., index=0)...]
    """
    entries = json.loads(_call(spark, "registryJson"))
    return [ServerInfo(executor_id=str(e["executorId"]), host=str(e["host"]), port=int(e["port"]),
                       pid=int(e["pid"]), index=int(e["index"])) for e in entries]


def app_secret(spark) -> bytes:
    """The per-application secret the sidecars authenticate clients with.

    Raises
    ------
    PluginNotRunningError
        If the plugin class is missing from the driver or the plugin is not enabled.

    Examples
    --------
    >>> secret = app_secret(spark)
    >>> type(secret), len(secret), secret == app_secret(spark)
    (<class 'bytes'>, 32, True)
    """
    return bytes.fromhex(_call(spark, "secret"))


def wire_options(spark) -> dict[str, bool]:
    """The clients' wire protection from the application's conf: ``integrity`` and ``crypto`` options of PSClient.

    ``spark.ps.integrity.enabled`` (default true) and ``spark.ps.crypto.enabled``
    (default false); the sidecars read the same keys (``spark_ps.server.settings``).

    Examples
    --------
    >>> wire_options(spark)
    {'integrity': True, 'crypto': False}
    """
    return conf_flags(spark.sparkContext.getConf().get)


#: Times a client sends a request again after its connection broke (``client/connection.py``).
RESENDS_KEY = "spark.ps.client.resends"


def client_conf(spark) -> dict[str, Any]:
    """``resends`` and ``faults`` of a PSClient, from the session's conf: read each time a client is made.

    ``spark.ps.client.resends`` (default 1) and ``spark.ps.client.faults.*``
    (``spark_ps.wire.faults``; off by default). Read from the session's
    runtime conf, not the SparkConf fixed at start-up, so a session can turn
    faults on for one fit and off again.

    Examples
    --------
    >>> client_conf(spark)["resends"], client_conf(spark)["faults"].enabled
    (1, False)
    >>> spark.conf.set("spark.ps.client.resends", "-1"); client_conf(spark)
    Traceback (most recent call last):
    ...
    ValueError: spark.ps.client.resends='-1' must be an integer >= 0
    >>> spark.conf.unset("spark.ps.client.resends")
    """
    get = spark.conf.get
    text = get(RESENDS_KEY, None)
    resends = 1
    if text is not None:
        try:
            resends = int(str(text).strip())
        except ValueError:
            resends = -1
        if resends < 0:
            raise ValueError(f"{RESENDS_KEY}={text!r} must be an integer >= 0")
    return {"resends": resends, "faults": FaultSettings.from_conf(get, CLIENT_PREFIX)}


def expected_server_count(spark) -> int:
    """How many sidecars this application should end up with.

    ``spark.ps.expectedServers`` if set; otherwise executors times
    ``spark.ps.serversPerExecutor``, where executors is 1 for ``local``/
    ``local[...]`` (the driver runs the only executor), ``N`` for
    ``local-cluster[N,c,m]``, else ``spark.executor.instances``, else the
    number of executors registered right now (at least 1).

    Examples
    --------
    >>> spark.conf.get("spark.ps.serversPerExecutor"), expected_server_count(spark) == len(wait_for_servers(spark))
    ('1', True)
    """
    conf = spark.sparkContext.getConf()
    explicit = conf.get("spark.ps.expectedServers", None)
    if explicit is not None:
        return int(explicit)
    per_executor = int(conf.get("spark.ps.serversPerExecutor", "1"))
    master = spark.sparkContext.master.strip()
    cluster = _LOCAL_CLUSTER_MASTER.fullmatch(master)
    if cluster:
        executors = int(cluster.group(1))
    elif _LOCAL_MASTER.fullmatch(master):
        executors = 1
    elif conf.get("spark.executor.instances", None) is not None:
        executors = int(conf.get("spark.executor.instances"))
    else:
        # getExecutorMemoryStatus has one entry per block manager, the driver's included.
        registered = spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1
        executors = max(1, registered)
    return executors * per_executor


def wait_for_servers(spark, expected: int | None = None, timeout: float = 120.0) -> list[ServerInfo]:
    """Wait until at least ``expected`` sidecars are registered; return the registry.

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
        A session started with the spark-ps plugin.
    expected : int, optional
        Number of sidecars to wait for; :func:`expected_server_count` by default.
    timeout : float
        Hard deadline in seconds.

    Returns
    -------
    list of ServerInfo
        Every registered sidecar (possibly more than ``expected``).

    Raises
    ------
    TimeoutError
        If fewer than ``expected`` sidecars registered before the deadline.

    Examples
    --------
    >>> servers = wait_for_servers(spark, timeout=60)
    >>> len(servers) == expected_server_count(spark), all(s.port > 0 for s in servers)
    (True, True)
    >>> wait_for_servers(spark, expected=len(servers) + 1, timeout=0.5)
    Traceback (most recent call last):
    ...
    TimeoutError: only ... of ... spark-ps sidecars registered within 0.5 s; check the executor logs ...
    """
    if expected is None:
        expected = expected_server_count(spark)
    deadline = time.monotonic() + timeout
    # The registry lives in the JVM and has no change notification we can block
    # on from Python, so poll it; the Event only bounds each pause.
    pause = threading.Event()
    while True:
        servers = read_registry(spark)
        if len(servers) >= expected:
            return servers
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(
                f"only {len(servers)} of {expected} spark-ps sidecars registered within {timeout:g} s; "
                "check the executor logs for sidecar start-up errors (spark.ps.startupTimeout, spark.ps.python)")
        pause.wait(min(_POLL_SECONDS, remaining))
