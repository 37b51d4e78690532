"""``PSContext``: the driver's handle on the shards of one Spark application.

The driver never holds table data. It learns where the shards are (from the
plugin's registry, through py4j), creates and drops tables, and hands tasks a
picklable :class:`~spark_ps.client.PSClient`; the weights themselves only
ever move between tasks, sidecars and storage.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, ClassVar

from py4j.protocol import Py4JError
from pyspark.errors import PySparkException

from spark_ps.client.client import PSClient
from spark_ps.errors import UnavailableError
from spark_ps.spark.leases import TableLease, drop_released
from spark_ps.spark.registry import ServerInfo, app_secret, client_conf, wait_for_servers, wire_options
from spark_ps.spark.warmup import warm_workers
from spark_ps.wire.spec import TableSpec

log = logging.getLogger(__name__)


def _warm_workers(spark) -> None:
    """Start the Python workers of the first fit's tasks (see :mod:`spark_ps.spark.warmup`), in the background."""
    try:
        warm_workers(spark)
    except (Py4JError, PySparkException) as exc:  # the session stopped under it, say: the first fit pays instead
        log.info("spark-ps: the Python workers' warm-up did not finish: %s", exc)


class PSContext:
    """Driver-side handle: shard registry, table lifecycle, clients.

    Get it with :meth:`get`; use it as a context manager. :meth:`shutdown`
    drops the tables this handle created and closes its connections; it is
    idempotent, and the sidecars themselves stay up until their executors stop.
    Tables can also be leased (:meth:`lease`): dropped once nothing holds
    the lease (:mod:`spark_ps.spark.leases`); :meth:`memory` reports what each
    table holds on the shards.
    The first handle of an application also starts, in the background, a
    Python worker in every task slot (:mod:`spark_ps.spark.warmup`): a job
    that calls ``PSContext.get(spark)`` as soon as its session exists has
    both the shards and the workers ready when its first fit starts.

    Examples
    --------
    The driver creates a table; tasks push to it through a client they
    carry in their closure; the driver pulls a few rows back:

    >>> with PSContext.get(spark) as ps, ps.client() as client:    # the client is picklable
    ...     spec = ps.create_table("hits", width=1, optimizer="delta")
    ...     def count(rows):
    ...         keys = [row.id % 3 for row in rows]
    ...         client.push("hits", keys, [1.0] * len(keys))
    ...     spark.range(99, numPartitions=2).foreachPartition(count)
    ...     client.pull("hits", [0, 1, 2, 3]).ravel().tolist()
    [33.0, 33.0, 33.0, 0.0]
    >>> "hits" in PSContext.get(spark).client().list_tables()      # leaving the block dropped it
    False
    """

    _instances: ClassVar[dict[int, PSContext]] = {}
    _instances_lock: ClassVar[threading.Lock] = threading.Lock()
    #: Applications whose Python workers were started (spark_ps.spark.warmup), once each.
    _warmed_apps: ClassVar[set[str]] = set()

    def __init__(self, spark, servers: list[ServerInfo], secret: bytes, **client_options: Any):
        self._spark = spark
        self._servers = list(servers)
        self._secret = secret
        self._client_options = client_options
        self._admin = PSClient(self._servers, secret, **client_options)
        self._own_tables: set[str] = set()
        self._closed = False
        self._lock = threading.Lock()
        self._app_id = spark.sparkContext.applicationId

    @classmethod
    def get(cls, spark, *, expected_servers: int | None = None, timeout: float = 120.0,
            **client_options: Any) -> PSContext:
        """The live handle for ``spark``'s application, waiting for its shards.

        Waits (with a deadline, never blindly) until ``expected_servers``
        sidecars have registered; by default that is the number of executors
        Spark was asked for times ``spark.ps.serversPerExecutor``.

        Parameters
        ----------
        spark : pyspark.sql.SparkSession
            A session started with the spark-ps plugin.
        expected_servers : int, optional
            Sidecars to wait for.
        timeout : float
            Seconds to wait for them before ``TimeoutError``.
        **client_options
            Options of every :class:`~spark_ps.client.client.PSClient` it makes (``timeout``, ...).

        Examples
        --------
        >>> from spark_ps.spark.registry import expected_server_count
        >>> ps = PSContext.get(spark)
        >>> ps is PSContext.get(spark), len(ps.servers) == expected_server_count(spark)
        (True, True)
        """
        key = id(spark.sparkContext._jsc)
        with cls._instances_lock:
            ctx = cls._instances.get(key)
            if ctx is None or ctx._closed:
                servers = wait_for_servers(spark, expected=expected_servers, timeout=timeout)
                ctx = cls(spark, servers, app_secret(spark), **{**wire_options(spark), **client_options})
                cls._instances[key] = ctx
                app = spark.sparkContext.applicationId
                if app not in cls._warmed_apps:
                    cls._warmed_apps.add(app)
                    threading.Thread(target=_warm_workers, args=(spark,), daemon=True, name="ps-warm-up").start()
        drop_released(ctx)  # every fit and transform comes here: tables whose last holder went are dropped
        return ctx

    def __enter__(self) -> PSContext:
        return self

    def __exit__(self, *exc_info) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._servers)} shards"
        return f"PSContext({state})"

    @property
    def servers(self) -> list[ServerInfo]:
        """The shards, in routing order: ``[ServerInfo(executor_id, host, port, pid), ...]``.

        Examples
        --------
        >>> PSContext.get(spark).servers
        [ServerInfo(executor_id='...', host='127.0.0.1', port=..., pid=..., index=0)...]
        """
        return list(self._servers)

    @property
    def closed(self) -> bool:
        """Whether :meth:`shutdown` was called."""
        return self._closed

    def same_application(self, other: PSContext) -> bool:
        """Whether ``other`` is a handle on the same Spark application's shards."""
        return self._app_id == other._app_id

    def _check_open(self) -> None:
        if self._closed:
            raise UnavailableError("this PSContext was shut down; call PSContext.get(spark) again")

    def client(self, **overrides: Any) -> PSClient:
        """A new picklable client over every shard, for use inside tasks; ``overrides`` change its options.

        ``spark.ps.client.resends`` and ``spark.ps.client.faults.*`` are read
        from the session's conf now (:func:`~spark_ps.spark.registry.client_conf`).

        Examples
        --------
        >>> import pickle
        >>> ps = PSContext.get(spark)
        >>> with ps.client(timeout=30) as client, pickle.loads(pickle.dumps(client)) as copy:
        ...     copy.addresses == client.addresses == tuple((s.host, s.port) for s in ps.servers), copy.timeout
        (True, 30.0)
        """
        self._check_open()
        return PSClient(self._servers, self._secret, **{**self._client_options, **client_conf(self._spark),
                                                        **overrides})

    def create_table(self, spec: TableSpec | str, /, **fields: Any) -> TableSpec:
        """Create a table on every shard; it is dropped again by :meth:`shutdown`.

        Parameters
        ----------
        spec : TableSpec or str
            The table's spec, or its name with the spec's fields as keywords:
            ``width``, ``optimizer``, ``init``, ``sigma``, ``seed``, ``dim``,
            ``unpenalised_keys`` and the update rule's hyper-parameters
            (``alpha=0.1``); see :meth:`TableSpec.of <spark_ps.wire.spec.TableSpec.of>`.
        **fields
            The spec's fields, with a name.

        Returns
        -------
        TableSpec
            The spec the shards hold.

        Examples
        --------
        >>> ps = PSContext.get(spark)
        >>> ps.create_table("emb", width=5, optimizer="adagrad", init="normal", sigma=0.01, lr=0.1)
        TableSpec(name='emb', width=5, optimizer='adagrad', hyper=mappingproxy({'lr': 0.1}), init='normal', ...)
        >>> ps.drop_table("emb")
        """
        self._check_open()
        spec = self._admin.create_table(spec, **fields)
        with self._lock:
            self._own_tables.add(spec.name)
        return spec

    def drop_table(self, name: str, *, missing_ok: bool = False) -> None:
        """Drop table ``name`` from every shard; ``KeyError`` if it does not exist, unless ``missing_ok``.

        Examples
        --------
        >>> ps = PSContext.get(spark)
        >>> _ = ps.create_table("tmp", width=1); ps.drop_table("tmp"); ps.drop_table("tmp", missing_ok=True)
        >>> "tmp" in ps.client().list_tables()
        False
        """
        self._check_open()
        self._admin.drop_table(name, missing_ok=missing_ok)
        with self._lock:
            self._own_tables.discard(name)

    def describe(self, name: str) -> list[dict[str, Any]]:
        """Per-shard spec, row count and bytes of ``name`` (small: one dict per shard).

        Examples
        --------
        >>> ps = PSContext.get(spark)
        >>> _ = ps.create_table("w", width=1)
        >>> with ps.client() as client:
        ...     client.push("w", [1, 2, 3], [0.5, 0.5, 0.5])
        >>> sum(d["rows"] for d in ps.describe("w")), {d["optimizer"] for d in ps.describe("w")}
        (3, {'delta'})
        >>> ps.drop_table("w")
        """
        self._check_open()
        return self._admin.describe(name)

    def lease(self, name: str) -> TableLease:
        """A :class:`~spark_ps.spark.leases.TableLease` on table ``name``: dropped once nothing holds it.

        Examples
        --------
        >>> ps = PSContext.get(spark)
        >>> _ = ps.create_table("scores", width=1); lease = ps.lease("scores")
        >>> "scores" in ps.memory()["tables"], lease.released
        (True, False)
        >>> del lease; "scores" in ps.memory()["tables"]           # nothing holds it: dropped
        False
        """
        self._check_open()
        return TableLease(self, name)

    def memory(self) -> dict[str, Any]:
        """Bytes each table holds over all shards, and each shard's total and budget (``spark.ps.maxMemory``).

        Tables whose lease was released are dropped first. ``budget`` 0 means none.

        Examples
        --------
        >>> ps = PSContext.get(spark)
        >>> _ = ps.create_table("w", width=8)
        >>> with ps.client() as client:
        ...     client.push("w", range(10_000), [[0.5] * 8] * 10_000)
        >>> report = ps.memory()
        >>> report["tables"]["w"] > 10_000 * 8 * 4, [sorted(s) for s in report["shards"]][0]
        (True, ['budget', 'shard', 'used'])
        >>> ps.drop_table("w")
        """
        self._check_open()
        drop_released(self)
        tables: dict[str, int] = {}
        shards = []
        for conn, reply in zip(self._admin._conns, self._admin.stats()):
            for name, nbytes in reply["tables"].items():
                tables[name] = tables.get(name, 0) + int(nbytes)
            shards.append({"shard": conn.name, "used": int(reply["used"]), "budget": int(reply["budget"])})
        return {"tables": dict(sorted(tables.items())), "shards": shards}

    def refresh(self, timeout: float = 60.0) -> bool:
        """Follow the registry after a shard was lost; return whether the shards' addresses changed.

        The executor plugin restarts a sidecar that died while its executor
        lives, on a new port and with no tables, and re-registers it. This
        waits until the registry holds as many shards as before and every one
        of them answers, then routes this handle (and every client it makes
        from now on) to them. Clients made before keep the old addresses.

        Parameters
        ----------
        timeout : float
            Seconds to wait for the registry to hold live shards only.

        Raises
        ------
        TimeoutError
            If some shard is still missing or unreachable at the deadline.

        Examples
        --------
        >>> ps = PSContext.get(spark)
        >>> before = ps.servers
        >>> ps.refresh(), ps.servers == before      # every shard alive: nothing changes
        (False, True)
        """
        self._check_open()
        deadline = time.monotonic() + timeout
        pause = threading.Event()  # bounds each wait between polls of the JVM's registry
        while True:
            remaining = deadline - time.monotonic()
            servers = wait_for_servers(self._spark, expected=len(self._servers), timeout=max(remaining, 0.1))
            try:
                with PSClient(servers, self._secret, **{**self._client_options, "timeout": 5.0}) as probe:
                    probe.ping()
                break
            except OSError as exc:  # a dead shard not yet unregistered, or its successor not yet up
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"spark-ps shards still unreachable after {timeout:g} s: {exc}") from exc
                pause.wait(min(0.2, max(remaining, 0.0)))
        if servers == self._servers:
            return False
        log.warning("spark-ps shards moved: %s -> %s", [(s.host, s.port) for s in self._servers],
                    [(s.host, s.port) for s in servers])
        with self._lock:
            old, self._servers = self._admin, list(servers)
            self._admin = PSClient(self._servers, self._secret, **self._client_options)
        old.close()
        return True

    def shutdown(self) -> None:
        """Drop the tables this handle created and close its connections. Idempotent.

        Examples
        --------
        >>> ps = PSContext.get(spark)
        >>> _ = ps.create_table("scratch", width=1)
        >>> ps.shutdown(); ps.shutdown(); ps
        PSContext(closed)
        >>> ps.client()
        Traceback (most recent call last):
        ...
        spark_ps.errors.UnavailableError: this PSContext was shut down; call PSContext.get(spark) again
        >>> "scratch" in PSContext.get(spark).client().list_tables()      # a new handle; the table is gone
        False
        """
        drop_released(self)
        with self._lock:
            if self._closed:
                return
            self._closed = True
            tables = sorted(self._own_tables)
            self._own_tables.clear()
        try:
            for name in tables:
                self._admin.drop_table(name, missing_ok=True)
        except ConnectionError as exc:
            # Shards die with their executors (e.g. after spark.stop()); their
            # tables are gone with them, so there is nothing left to drop.
            log.info("shards unreachable at shutdown, tables already gone: %s", exc)
        finally:
            self._admin.close()
