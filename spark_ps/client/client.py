"""The Push/Pull client that tasks use, modelled on ps-lite's ``KVWorker``.

Callers hand over keys in any order, with repeats. The client sorts and
dedups them once, slices them across shards by hash, sends each shard its
sorted unique keys (in capped chunks, shards in parallel), and puts the rows
back into the caller's order. Duplicate keys in one push are summed, which is
what a mini-batch gradient needs.

The client is picklable: only addresses, the secret and options travel with
it; each process opens its own connections on first use.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from spark_ps.client.clocks import ClockOps
from spark_ps.client.connection import ShardConnection
from spark_ps.client.pushes import PushOps
from spark_ps.client.slicer import shard_of, slice_keys
from spark_ps.native.keys import as_keys, is_sorted_unique
from spark_ps.wire.faults import FaultSettings, injector
from spark_ps.wire.protocol import DEFAULT_MAX_FRAME_BYTES, Frame, Op, arrow_batches, arrow_payload
from spark_ps.wire.session import Protection
from spark_ps.wire.spec import TableSpec

#: Keys per request. Keeps every frame (and the shard's working set for one
#: request) bounded, whatever the caller passes in.
DEFAULT_MAX_REQUEST_KEYS = 1 << 18

class PSClient(PushOps, ClockOps):
    """Pull and push rows of named tables spread over shards.

    Parameters
    ----------
    servers : sequence of (host, port) or ServerInfo
        The shards, in the order that defines key routing. Every client of one
        application must use the same order (``PSContext.client()`` does).
    secret : bytes
        The per-application secret.
    max_request_keys : int
        Upper bound on keys in one request frame.
    timeout : float
        Socket timeout in seconds for one request.
    integrity : bool
        Tag every frame under the session key (``spark.ps.integrity.enabled``); a shard that asks for it gets it anyway.
    crypto : bool
        Encrypt every frame under the session key (``spark.ps.crypto.enabled``).
    resends : int
        Times a request is sent again after its connection broke (``spark.ps.client.resends``).
    faults : FaultSettings, optional
        Faults to inject into this client's messages (``spark.ps.client.faults.*``, tests and drills only).

    Examples
    --------
    >>> from spark_ps.server.tcp import ShardServer
    >>> server = ShardServer(b"s3cret").serve_in_background(); client = PSClient([server.address], b"s3cret")
    >>> _ = client.create_table("w", width=1, optimizer="sgd", lr=0.5)
    >>> client.push("w", [5, 2, 5], [[1.0], [1.0], [1.0]])
    >>> client.pull("w", [5, 2]).ravel().tolist()
    [-1.0, -0.5]
    >>> client.list_tables(), client.ping()
    (['w'], [1])
    >>> client.close(); server.shutdown()
    """

    def __init__(self, servers: Sequence[Any], secret: bytes, *,
                 max_request_keys: int = DEFAULT_MAX_REQUEST_KEYS, timeout: float = 120.0,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, integrity: bool = True, crypto: bool = False,
                 resends: int = 1, faults: FaultSettings | None = None):
        if not servers:
            raise ValueError("a client needs at least one shard address")
        if max_request_keys < 1:
            raise ValueError(f"max_request_keys must be positive, got {max_request_keys}")
        self.addresses: tuple[tuple[str, int], ...] = tuple(
            (s.host, int(s.port)) if hasattr(s, "host") else (str(s[0]), int(s[1])) for s in servers)
        self._secret = bytes(secret)
        self.max_request_keys = int(max_request_keys)
        self.timeout = float(timeout)
        self.max_frame_bytes = int(max_frame_bytes)
        self.integrity, self.crypto = bool(integrity), bool(crypto)
        self.resends, self.faults = resends, faults
        self._open()

    def _open(self) -> None:
        self._faults = injector(self.faults, "client")  # one draw sequence per client object, over its shards
        self._conns = [self._new_connection(i) for i in range(self.num_shards)]
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._widths: dict[str, int] = {}
        self._new_push_ids()  # a retry's request id is this client's: a new process is a new client

    def _new_connection(self, shard: int) -> ShardConnection:
        host, port = self.addresses[shard]
        return ShardConnection(host, port, self._secret, self.timeout, self.max_frame_bytes,
                               Protection.of(self.integrity, self.crypto), self.resends, self._faults)

    # Pickle only what defines the client; sockets and threads are per process.
    def __getstate__(self) -> dict[str, Any]:
        return {"addresses": self.addresses, "secret": self._secret, "max_request_keys": self.max_request_keys,
                "timeout": self.timeout, "max_frame_bytes": self.max_frame_bytes, "integrity": self.integrity,
                "crypto": self.crypto, "resends": self.resends, "faults": self.faults}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.addresses = state["addresses"]
        self._secret = state["secret"]
        self.max_request_keys = state["max_request_keys"]
        self.timeout = state["timeout"]
        self.max_frame_bytes = state["max_frame_bytes"]
        self.integrity, self.crypto = state["integrity"], state["crypto"]
        self.resends, self.faults = state["resends"], state["faults"]
        self._open()

    def __enter__(self) -> PSClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PSClient(shards={[f'{h}:{p}' for h, p in self.addresses]})"

    @property
    def num_shards(self) -> int:
        """Number of shards, in routing order.

        Examples
        --------
        >>> PSClient([("127.0.0.1", 7001), ("127.0.0.1", 7002)], b"k").num_shards   # connects on first use
        2
        """
        return len(self.addresses)

    def close(self) -> None:
        """Close every connection and the worker threads. Idempotent; the next request reconnects.

        Examples
        --------
        >>> from spark_ps.server.tcp import ShardServer
        >>> with ShardServer(b"k").serve_in_background() as server, PSClient([server.address], b"k") as client:
        ...     client.close(); client.close(); client.ping()
        [0]
        """
        for conn in self._conns:
            conn.close()
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    # --- fan-out -----------------------------------------------------------
    def _map_shards(self, fn, shards: Iterable[int]) -> list[Any]:
        shards = list(shards)
        if len(shards) <= 1:
            return [fn(s) for s in shards]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.num_shards, thread_name_prefix="ps-client")
            pool = self._pool
        return list(pool.map(fn, shards))

    def _broadcast(self, op: Op, meta: dict[str, Any], *, idempotent: bool = True) -> list[Frame]:
        return self._map_shards(
            lambda s: self._conns[s].request(Frame(op, meta), idempotent=idempotent), range(self.num_shards))

    def _chunks(self, n: int) -> Iterator[slice]:
        for start in range(0, n, self.max_request_keys):
            yield slice(start, min(start + self.max_request_keys, n))

    # --- tables --------------------------------------------------------------
    def create_table(self, spec: TableSpec | str, /, **fields: Any) -> TableSpec:
        """Create a table on every shard (a no-op where an identical one exists); return its spec.

        Parameters
        ----------
        spec : TableSpec or str
            The table's spec, or its name with the spec's fields as keywords
            (see :meth:`TableSpec.of <spark_ps.wire.spec.TableSpec.of>`).
        **fields
            :class:`~spark_ps.wire.spec.TableSpec` fields and hyper-parameters, with a name.

        Examples
        --------
        >>> from spark_ps.server.tcp import ShardServer
        >>> with ShardServer(b"k").serve_in_background() as server, PSClient([server.address], b"k") as client:
        ...     client.create_table("w", width=2, optimizer="adagrad", lr=0.1)
        TableSpec(name='w', width=2, optimizer='adagrad', hyper=mappingproxy({'lr': 0.1}), ...)
        """
        spec = TableSpec.of(spec, **fields)
        self._broadcast(Op.CREATE_TABLE, spec.to_meta(), idempotent=True)
        self._widths[spec.name] = spec.width
        return spec

    def drop_table(self, name: str, *, missing_ok: bool = False) -> None:
        """Drop ``name`` from every shard; ``KeyError`` if no shard had it, unless ``missing_ok``.

        Examples
        --------
        >>> from spark_ps.server.tcp import ShardServer
        >>> with ShardServer(b"k").serve_in_background() as server, PSClient([server.address], b"k") as client:
        ...     _ = client.create_table("w", width=1); client.drop_table("w"); client.drop_table("w", missing_ok=True)
        ...     client.list_tables()
        []
        """
        replies = self._broadcast(Op.DROP_TABLE, {"table": name, "missing_ok": True})
        self._widths.pop(name, None)
        if not missing_ok and not any(r.meta.get("dropped") for r in replies):
            raise KeyError(f"unknown table {name!r}")

    def ping(self) -> list[int]:
        """Round-trip every shard; return the number of tables on each (a liveness check).

        Examples
        --------
        >>> from spark_ps.server.tcp import ShardServer
        >>> with ShardServer(b"k").serve_in_background() as server, PSClient([server.address], b"k") as client:
        ...     _ = client.create_table("w", width=1); client.ping()
        [1]
        """
        return [int(r.meta["tables"]) for r in self._broadcast(Op.PING, {})]

    def list_tables(self) -> list[str]:
        """Names of the tables on the shards (every shard holds every table), sorted.

        Examples
        --------
        >>> from spark_ps.server.tcp import ShardServer
        >>> with ShardServer(b"k").serve_in_background() as server, PSClient([server.address], b"k") as client:
        ...     _ = client.create_table("w", width=1); _ = client.create_table("b", width=1); client.list_tables()
        ['b', 'w']
        """
        return sorted({name for r in self._broadcast(Op.LIST_TABLES, {}) for name in r.meta["tables"]})

    def describe(self, name: str) -> list[dict[str, Any]]:
        """Per-shard spec and size (rows, bytes) of ``name``: one small dict per shard.

        Examples
        --------
        >>> from spark_ps.server.tcp import ShardServer
        >>> with ShardServer(b"k").serve_in_background() as server, PSClient([server.address], b"k") as client:
        ...     _ = client.create_table("w", width=1); [(d["table"], d["rows"]) for d in client.describe("w")]
        [('w', 0)]
        """
        return [r.meta for r in self._broadcast(Op.DESCRIBE_TABLE, {"table": name})]

    def stats(self) -> list[dict[str, Any]]:
        """Per shard: each table's bytes, their total, the budget (``spark.ps.maxMemory``, 0: none), and resends
        the shard answered without applying them again (``duplicates``: lost replies, retries).

        Examples
        --------
        >>> from spark_ps.server.tcp import ShardServer
        >>> with ShardServer(b"k").serve_in_background() as server, PSClient([server.address], b"k") as client:
        ...     _ = client.create_table("w", width=4); client.push("w", range(1000), [[1.0] * 4] * 1000)
        ...     [(sorted(s["tables"]), s["tables"]["w"] == s["used"] > 1000 * 16, s["budget"]) for s in client.stats()]
        [(['w'], True, 0)]
        """
        return [r.meta for r in self._broadcast(Op.STATS, {})]

    def width(self, name: str) -> int:
        """Row width of table ``name`` (asked of shard 0 once, then remembered).

        Examples
        --------
        >>> from spark_ps.server.tcp import ShardServer
        >>> with ShardServer(b"k").serve_in_background() as server, PSClient([server.address], b"k") as client:
        ...     _ = client.create_table("e", width=9, init="normal", sigma=0.01); client.width("e")
        9
        """
        if name not in self._widths:
            reply = self._conns[0].request(Frame(Op.DESCRIBE_TABLE, {"table": name}), idempotent=True)
            self._widths[name] = int(reply.meta["width"])
        return self._widths[name]

    # --- pull / push ---------------------------------------------------------
    def pull(self, table: str, keys: Any) -> np.ndarray:
        """Rows of ``keys`` as float32 ``(n, width)``, in the caller's key order.

        Keys never pushed return the table's initial value (zeros, or the
        seeded normal draw for embedding tables).

        Examples
        --------
        >>> from spark_ps.server.tcp import ShardServer
        >>> with ShardServer(b"k").serve_in_background() as server, PSClient([server.address], b"k") as client:
        ...     _ = client.create_table("w", width=1, optimizer="delta"); client.push("w", [1, 2], [10.0, 20.0])
        ...     client.pull("w", [2, 1, 2, 3]).ravel().tolist()
        [20.0, 10.0, 20.0, 0.0]
        """
        keys = as_keys(keys)
        if is_sorted_unique(keys):
            uniq, inverse = keys, None
        else:
            uniq, inverse = np.unique(keys, return_inverse=True)
        rows = self._pull_unique(table, uniq)
        return rows if inverse is None else rows[inverse]

    def _pull_unique(self, table: str, uniq: np.ndarray) -> np.ndarray:
        if uniq.size == 0:
            return np.zeros((0, self.width(table)), dtype=np.float32)
        meta = {"table": table}
        if self.num_shards == 1:
            return self._pull_shard(0, uniq, meta)
        slices = slice_keys(uniq, self.num_shards)
        busy = [s for s in range(self.num_shards) if slices.bounds[s + 1] > slices.bounds[s]]
        parts = self._map_shards(lambda s: self._pull_shard(s, uniq[slices.positions(s)], meta), busy)
        out = np.empty((uniq.size, parts[0].shape[1]), dtype=np.float32)
        for s, part in zip(busy, parts):
            out[slices.positions(s)] = part
        return out

    def _pull_shard(self, shard: int, keys: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
        conn = self._conns[shard]
        parts = [conn.request(Frame(Op.PULL, meta, [keys[c]]), idempotent=True).arrays[0]
                 for c in self._chunks(keys.size)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    # --- export / import -----------------------------------------------------
    def export(self, table: str, *, shards: Iterable[int] | None = None, keys: Any = None,
               keys_of: str | None = None, max_rows: int = 65536) -> Iterator[pa.RecordBatch]:
        """Stream the rows (and optimizer state) of ``table`` as Arrow batches, shard by shard.

        Each shard streams over its own fresh connection, so the caller may
        keep using this client while it consumes the iterator. With ``keys``,
        only the stored rows of those keys (any order, repeats allowed) are
        exported, each from its own shard; keys never pushed have no row.
        With ``keys_of``, the rows of the keys that table holds on each shard
        (the marks of :meth:`push`'s ``mark``), ascending. ``shards`` limits
        the export to some shards, ``max_rows`` caps a batch.

        Examples
        --------
        >>> from spark_ps.server.tcp import ShardServer
        >>> with ShardServer(b"k").serve_in_background() as server, PSClient([server.address], b"k") as client:
        ...     _ = client.create_table("w", width=1, optimizer="adagrad", lr=0.5); client.push("w", [3, 8], [1.0, 1.0])
        ...     [b.num_rows for b in client.export("w")], [b.num_rows for b in client.export("w", keys=[8, 99])]
        ([2], [1])
        """
        if keys is not None and keys_of is not None:
            raise ValueError(f"export of table {table!r}: give keys or keys_of, not both")
        if keys is not None:
            uniq = np.unique(as_keys(keys))
            slices = slice_keys(uniq, self.num_shards)
            parts = {s: uniq[slices.positions(s)] for s in range(self.num_shards)}
        for shard in (range(self.num_shards) if shards is None else shards):
            if keys is not None and parts[shard].size == 0:
                continue
            conn = self._new_connection(shard)
            meta = {"table": table, "max_rows": max_rows, **({} if keys_of is None else {"keys_of": keys_of})}
            request = Frame(Op.EXPORT, meta, [] if keys is None else [parts[shard]])
            try:
                for frame in conn.stream(request):
                    yield from arrow_batches(frame.arrays[0])
            finally:
                conn.close()

    def import_batches(self, table: str, batches: Iterable[pa.RecordBatch]) -> int:
        """Upsert rows from Arrow batches (as produced by :meth:`export`) into ``table``.

        Rows are routed to their shard by key, so a table exported from one
        shard layout can be imported into another. Returns the rows imported.

        Examples
        --------
        >>> from spark_ps.server.tcp import ShardServer
        >>> with ShardServer(b"k").serve_in_background() as server, PSClient([server.address], b"k") as client:
        ...     _ = client.create_table("a", width=1, optimizer="delta"); _ = client.create_table("b", width=1)
        ...     client.push("a", [1, 2], [5.0, 6.0])
        ...     client.import_batches("b", client.export("a")), client.pull("b", [2, 1]).ravel().tolist()
        (2, [6.0, 5.0])
        """
        total = 0
        for batch in batches:
            keys = as_keys(batch.column("key").to_numpy())
            shards = shard_of(keys, self.num_shards)
            for s in range(self.num_shards):
                mask = shards == s
                if not mask.any():
                    continue
                part = batch.filter(pa.array(mask))
                # Import is an upsert of absolute values: replaying it is harmless.
                self._conns[s].request(Frame(Op.IMPORT, {"table": table}, [arrow_payload(part)]), idempotent=True)
                total += part.num_rows
        return total
