"""One shard's state and request dispatch, independent of sockets.

:class:`Shard` owns the named tables and clocks of one sidecar and turns a
request :class:`~spark_ps.wire.protocol.Frame` into reply frames. Keeping it free of
I/O lets the benchmark call the very same code in-process (the no-network
floor) and lets tests drive it without a server.

Marks. A push may name a ``mark`` table (width 1, ``delta``): the shard adds
1 to the mark row of every key it pushes, in the same exactly-once apply as
the push. An export may ask for ``keys_of`` a table: the rows of the keys
that table holds on this shard. Together they let a streaming micro-batch
export exactly the rows it changed. The first version had each training task
take ``np.unique`` of its mini-batches' keys and push them as marks, and the
export task fetch the marks, sort them with ``np.unique`` and send them back:
two sorts of ~10^6 keys (0.11 s of task CPU in a 100k-row batch at 2^22,
py-spy) and three transfers of them, on the path of every batch.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from spark_ps.native.keys import is_sorted_unique
from spark_ps.server.clock import ClockTable
from spark_ps.server.memory import MemoryBudget
from spark_ps.server.optim import make_optimizer
from spark_ps.server.pushlog import PushLog, push_id
from spark_ps.server.rowinit import make_init
from spark_ps.server.settings import KEYS, ShardSettings
from spark_ps.server.table import Table
from spark_ps.wire.protocol import Frame, Op, arrow_batches, arrow_payload
from spark_ps.wire.spec import TableSpec

#: Rows per exported Arrow batch: big enough to amortise framing, small enough
#: that one batch of a wide table stays a few MB.
EXPORT_BATCH_ROWS = 65536


def _sorted_unique_keys(arrays: list[np.ndarray], op: str) -> np.ndarray:
    if not arrays:
        raise ValueError(f"{op} needs a key array")
    keys = arrays[0]
    if keys.dtype != np.int64 or keys.ndim != 1:
        raise TypeError(f"{op} keys must be a 1-D int64 array, got {keys.dtype} with shape {keys.shape}")
    # The wire contract (ps-lite style) is sorted unique keys: the client does
    # the sort once, so the shard can trust ranges and skip a hash pass.
    if not is_sorted_unique(keys):
        raise ValueError(f"{op} keys must be sorted and unique on the wire")
    return keys


def _require_str(meta: dict[str, Any], name: str) -> str:
    value = meta.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"request needs a non-empty string {name!r}")
    return value


class Shard:
    """Tables and clocks of one parameter-server shard.

    Examples
    --------
    >>> import numpy as np
    >>> from spark_ps.wire.protocol import Frame, Op
    >>> from spark_ps.wire.spec import TableSpec
    >>> shard = Shard()
    >>> _ = list(shard.handle(Frame(Op.CREATE_TABLE, TableSpec("w").to_meta())))
    >>> keys = np.array([3, 7], dtype=np.int64)
    >>> _ = list(shard.handle(Frame(Op.PUSH, {"table": "w"}, [keys, np.ones((2, 1), np.float32)])))
    >>> next(shard.handle(Frame(Op.PULL, {"table": "w"}, [keys]))).arrays[0].ravel().tolist()
    [1.0, 1.0]
    """

    def __init__(self, settings: ShardSettings | None = None) -> None:
        self.settings = settings if settings is not None else ShardSettings()
        self._tables: dict[str, Table] = {}
        self._specs: dict[str, TableSpec] = {}
        self._clocks: dict[str, ClockTable] = {}
        self._pushes = PushLog(self.settings.push_window, self.settings.push_clients)
        self._lock = threading.Lock()  # guards the two dicts, not the tables
        self.budget = MemoryBudget(self.settings.max_memory_bytes, self.memory_used)

    def memory_used(self) -> int:
        """Bytes the tables hold (key index, weights, optimizer state), as ``spark.ps.maxMemory`` counts them.

        Examples
        --------
        >>> from spark_ps.wire.spec import TableSpec
        >>> shard = Shard(); _ = shard.create_table(TableSpec("w")); shard.memory_used() == shard.table("w").nbytes
        True
        """
        return sum(table.nbytes for table in list(self._tables.values()))

    # --- tables ----------------------------------------------------------
    def table(self, name: str) -> Table:
        """The table called ``name``; ``KeyError`` naming the tables there are if it does not exist.

        Examples
        --------
        >>> from spark_ps.wire.spec import TableSpec
        >>> shard = Shard(); _ = shard.create_table(TableSpec("w", width=3))
        >>> shard.table("w")
        Table('w', width=3, optimizer=Delta(), rows=0)
        >>> shard.table("v")
        Traceback (most recent call last):
        ...
        KeyError: "unknown table 'v' (tables on this shard: w)"
        """
        try:
            return self._tables[name]
        except KeyError:
            known = ", ".join(sorted(self._tables)) or "none"
            raise KeyError(f"unknown table {name!r} (tables on this shard: {known})") from None

    def create_table(self, spec: TableSpec) -> bool:
        """Create the table ``spec`` defines; return False if an identical one already exists.

        Raises ``ValueError`` if a table of that name exists with a different spec.

        Examples
        --------
        >>> from spark_ps.wire.spec import TableSpec
        >>> shard = Shard()
        >>> shard.create_table(TableSpec("w")), shard.create_table(TableSpec("w"))
        (True, False)
        >>> shard.create_table(TableSpec("w", width=2))
        Traceback (most recent call last):
        ...
        ValueError: table 'w' already exists with a different spec: ...
        """
        name = spec.name
        if spec.width > self.settings.max_table_width:
            raise ValueError(f"table {name!r}: width {spec.width} is over this shard's limit of "
                             f"{self.settings.max_table_width} ({KEYS['max_table_width']}); table not created")
        table = Table(name, spec.width, make_optimizer(spec.optimizer, **spec.hyper),
                      make_init(spec.init, **spec.init_params), spec.dim,
                      unpenalised_keys=list(spec.unpenalised_keys), budget=self.budget)
        created = []

        def add() -> None:
            with self._lock:
                if name in self._tables:
                    if self._specs[name] != spec:
                        raise ValueError(f"table {name!r} already exists with a different spec: "
                                         f"{self._specs[name]} != {spec}")
                    return
                self._tables[name] = table
                self._specs[name] = spec
                created.append(name)

        # An empty table holds its key index's first slots (256 bytes): counted like any growth.
        extra = 0 if name in self._tables else table.nbytes
        self.budget.grow(name, extra, "a new table", add)
        return bool(created)

    def drop_table(self, name: str) -> bool:
        """Drop table ``name``; return whether it existed.

        Examples
        --------
        >>> from spark_ps.wire.spec import TableSpec
        >>> shard = Shard(); _ = shard.create_table(TableSpec("w"))
        >>> shard.drop_table("w"), shard.drop_table("w")
        (True, False)
        """
        with self._lock:
            self._specs.pop(name, None)
            return self._tables.pop(name, None) is not None

    # --- clocks ----------------------------------------------------------
    def clock(self, name: str) -> ClockTable:
        """The clock called ``name`` (created by a CLOCK_CREATE request); ``KeyError`` if there is none.

        Examples
        --------
        >>> from spark_ps.wire.protocol import Frame, Op
        >>> shard = Shard()
        >>> _ = list(shard.handle(Frame(Op.CLOCK_CREATE, {"clock": "c", "num_workers": 2, "staleness": 1})))
        >>> shard.clock("c").clocks()
        (0, 0)
        """
        try:
            return self._clocks[name]
        except KeyError:
            raise KeyError(f"unknown clock {name!r}") from None

    # --- dispatch --------------------------------------------------------
    def handle(self, req: Frame) -> Iterator[Frame]:
        """Serve one request; yields one reply, or several for a streamed export.

        Request errors are raised (``ValueError``, ``KeyError``, ``TypeError``,
        ``TimeoutError``); the server turns them into error replies.

        Examples
        --------
        >>> from spark_ps.wire.protocol import Frame, Op
        >>> [reply.meta for reply in Shard().handle(Frame(Op.LIST_TABLES))]
        [{'tables': []}]
        >>> list(Shard().handle(Frame(Op.AUTH)))
        Traceback (most recent call last):
        ...
        ValueError: op AUTH is not a request a shard serves
        """
        handler = getattr(self, f"_on_{req.op.name.lower()}", None)
        if handler is None:
            raise ValueError(f"op {req.op.name} is not a request a shard serves")
        result = handler(req)
        if isinstance(result, Frame):
            yield result
        else:
            yield from result

    def _on_ping(self, req: Frame) -> Frame:
        return Frame(Op.PING, {"tables": len(self._tables)})

    def _on_create_table(self, req: Frame) -> Frame:
        created = self.create_table(TableSpec.from_meta(req.meta))
        return Frame(Op.CREATE_TABLE, {"created": created})

    def _on_drop_table(self, req: Frame) -> Frame:
        name = _require_str(req.meta, "table")
        dropped = self.drop_table(name)
        if not dropped and not req.meta.get("missing_ok", False):
            raise KeyError(f"unknown table {name!r}")
        return Frame(Op.DROP_TABLE, {"dropped": dropped})

    def _on_describe_table(self, req: Frame) -> Frame:
        name = _require_str(req.meta, "table")
        table = self.table(name)
        return Frame(Op.DESCRIBE_TABLE, {**self._specs[name].to_meta(), "rows": len(table), "nbytes": table.nbytes})

    def _on_list_tables(self, req: Frame) -> Frame:
        return Frame(Op.LIST_TABLES, {"tables": sorted(self._tables)})

    def _on_stats(self, req: Frame) -> Frame:
        tables = {name: table.nbytes for name, table in sorted(self._tables.items())}
        return Frame(Op.STATS, {"tables": tables, "used": sum(tables.values()), "budget": self.budget.limit,
                                "duplicates": self._pushes.duplicates})

    def _on_pull(self, req: Frame) -> Frame:
        table = self.table(_require_str(req.meta, "table"))
        keys = _sorted_unique_keys(req.arrays, "pull")
        size = keys.shape[0] * table.width * 4
        if size > self.settings.max_reply_bytes:  # refused before the reply is computed
            raise ValueError(f"pull of {keys.shape[0]} keys from table {table.name!r} (width {table.width}) would "
                             f"make a reply of {size} bytes, over the limit of {self.settings.max_reply_bytes} "
                             f"({KEYS['max_reply_bytes']}); pull fewer keys per request")
        return Frame(Op.PULL, arrays=[table.pull(keys)])

    def _on_push(self, req: Frame) -> Frame:
        table = self.table(_require_str(req.meta, "table"))
        keys = _sorted_unique_keys(req.arrays, "push")
        if len(req.arrays) != 2:
            raise ValueError(f"push needs keys and values, got {len(req.arrays)} arrays")
        values = req.arrays[1]
        if values.dtype != np.float32:
            raise TypeError(f"push values must be float32, got {values.dtype}")
        marks = self._mark_table(req.meta, table)
        # A push may carry the pusher's clock tick: one round trip per
        # mini-batch instead of two. The tick is checked in full before the
        # push, and applied right after it: both or neither (a refused tick
        # used to leave the push applied). Then the pusher waits for the
        # slowest worker; a timeout there undoes nothing, and says so.
        ident = push_id(req.meta)
        advance = req.meta.get("advance")
        clock, worker, timeout = (None, 0, 0.0) if advance is None else self._checked_tick(advance)

        def apply() -> dict[str, Any]:
            table.push(keys, values)
            if marks is not None:
                marks.push(keys, np.ones((keys.shape[0], 1), np.float32))
            return {} if clock is None else {"clock": clock.tick(worker)}

        meta = self._pushes.run(ident, apply)
        if clock is not None:
            try:
                clock.wait(worker, meta["clock"], timeout)
            except TimeoutError as exc:
                again = "a retry with the same request id waits again and applies nothing twice" if ident else \
                    "do not push it again"
                raise TimeoutError(f"the push and worker {worker}'s tick to clock {meta['clock']} were applied, "
                                   f"but {exc}; {again}") from None
        return Frame(Op.PUSH, meta)

    def _on_export(self, req: Frame) -> Iterator[Frame]:
        table = self.table(_require_str(req.meta, "table"))
        max_rows = int(req.meta.get("max_rows", EXPORT_BATCH_ROWS))
        # Batches fit in a reply: a row is its key and, at most, its weights and three optimizer states.
        max_rows = max(1, min(max_rows, self.settings.max_reply_bytes // (8 + 16 * table.width)))
        keys = _sorted_unique_keys(req.arrays, "export") if req.arrays else None  # else the whole table
        if "keys_of" in req.meta:
            if keys is not None:
                raise ValueError(f"export of table {table.name!r}: give keys or keys_of, not both")
            keys = self.table(_require_str(req.meta, "keys_of")).sorted_keys()
        for batch in table.export_batches(max_rows=max_rows, keys=keys):
            yield Frame(Op.EXPORT, {"more": True}, [arrow_payload(batch)])
        yield Frame(Op.EXPORT, {"more": False})

    def _mark_table(self, meta: dict[str, Any], pushed: Table) -> Table | None:
        """The push's ``mark`` table, checked before anything is applied; None when it names none."""
        if "mark" not in meta:
            return None
        marks = self.table(_require_str(meta, "mark"))
        if marks.width != 1 or marks is pushed:
            raise ValueError(f"push to table {pushed.name!r}: its mark table {marks.name!r} must be another table "
                             f"of width 1, got width {marks.width}; nothing was pushed")
        return marks

    def _on_import(self, req: Frame) -> Frame:
        table = self.table(_require_str(req.meta, "table"))
        if len(req.arrays) != 1 or req.arrays[0].dtype != np.uint8:
            raise ValueError("import needs exactly one uint8 array holding an Arrow IPC stream")
        batches = arrow_batches(req.arrays[0])
        table.import_batches(batches)
        return Frame(Op.IMPORT, {"rows": sum(b.num_rows for b in batches)})

    def _on_clock_create(self, req: Frame) -> Frame:
        name = _require_str(req.meta, "clock")
        staleness = req.meta.get("staleness")
        workers = req.meta.get("num_workers")
        if not isinstance(workers, int) or isinstance(workers, bool):
            raise ValueError(f"clock {name!r} needs an integer num_workers, got {workers!r}")
        if workers > self.settings.max_clock_workers:
            raise ValueError(f"clock {name!r}: {workers} workers is over this shard's limit of "
                             f"{self.settings.max_clock_workers} ({KEYS['max_clock_workers']}); clock not created")
        with self._lock:
            if name not in self._clocks:
                self._clocks[name] = ClockTable(workers, staleness)
        return Frame(Op.CLOCK_CREATE)

    def _on_clock_advance(self, req: Frame) -> Frame:
        clock, worker, timeout = self._checked_tick(req.meta)
        ident = push_id(req.meta)
        if ident is None:  # a tick that is undone on a timeout (ClockTable.advance)
            return Frame(Op.CLOCK_ADVANCE, {"clock": clock.advance(worker, timeout)})
        # With a request id, applied once as a push's tick is: a resend after a lost reply only waits again.
        meta = self._pushes.run(ident, lambda: {"clock": clock.tick(worker)})
        try:
            clock.wait(worker, meta["clock"], timeout)
        except TimeoutError as exc:
            raise TimeoutError(f"worker {worker}'s tick to clock {meta['clock']} was applied, but {exc}; a retry with "
                               "the same request id waits again and ticks nothing twice") from None
        return Frame(Op.CLOCK_ADVANCE, meta)

    def _checked_tick(self, meta: Any) -> tuple[ClockTable, int, float]:
        """The clock, worker and timeout of a clock advance, checked in full: ``ValueError`` if it would be refused."""
        if not isinstance(meta, dict):
            raise ValueError(f"a clock advance needs a JSON object with clock and worker, got {meta!r}; "
                             "nothing was applied")
        clock = self.clock(_require_str(meta, "clock"))
        worker, timeout = meta.get("worker"), meta.get("timeout", 600.0)
        if not isinstance(worker, int) or isinstance(worker, bool):
            raise ValueError(f"a clock advance needs an integer worker, got {worker!r}; nothing was applied")
        try:
            clock.check_tick(worker, timeout)
        except ValueError as exc:
            raise ValueError(f"{exc}; nothing was applied") from None
        return clock, worker, float(timeout)

    def _on_clock_finish(self, req: Frame) -> Frame:
        self.clock(_require_str(req.meta, "clock")).finish(int(req.meta["worker"]))
        return Frame(Op.CLOCK_FINISH)

    def _on_clock_drop(self, req: Frame) -> Frame:
        with self._lock:
            clock = self._clocks.pop(_require_str(req.meta, "clock"), None)
        if clock is not None:
            clock.drop()  # its waiters stop now, not at their timeout
        return Frame(Op.CLOCK_DROP)

