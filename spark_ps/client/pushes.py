"""Exactly-once pushes (issue 11, item 3), as :class:`~spark_ps.client.client.PSClient` methods.

Every push gets a request id, a number in this client object (random per
process: ``_push_client``); each request frame of it carries
``[client, request id, part]``, ``part`` the frame's index among the push's
chunks to that shard. A shard applies an id once (``server/pushlog.py``), so:

* a push request is now safe to send again: after a connection dropped with
  the request sent, the connection resends it once, as it does a pull, and
  the shard answers a resend it already applied without applying it (it used
  to fail with "it may have been applied");
* a push across shards that some shards applied and others refused or did
  not answer raises :class:`~spark_ps.errors.PushError` naming exactly which
  shard did what; ``push(..., request_id=err.request_id)`` on the same client
  then completes only the rest. The issue's audit had an error saying
  "nothing was applied" while another shard's rows had changed. When no shard
  applied anything, the one shard's own error is raised, as before, and its
  "nothing was applied" is then true;
* a push with a clock tick (:meth:`PushOps.push_and_advance`) goes to the
  clock's shard last, only once every other shard applied its part, and the
  shard applies it with its tick or not at all.

Chosen over an all-or-nothing push across shards (a prepare and a commit per
shard): that would cost a second round trip on every push to buy a guarantee
a retry gives anyway.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from spark_ps.client.clocks import CLOCK_SHARD, blocking_timeout
from spark_ps.client.connection import ShardConnection
from spark_ps.client.slicer import slice_keys
from spark_ps.errors import PSConnectionError, PushError, RemoteError
from spark_ps.native.keys import as_keys, is_sorted_unique
from spark_ps.wire.protocol import Frame, Op


def _sum_duplicates(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniq, inverse = np.unique(keys, return_inverse=True)
    summed = np.empty((len(uniq), values.shape[1]), dtype=np.float32)
    for j in range(values.shape[1]):  # width is small (1 + k): loop columns, not rows
        summed[:, j] = np.bincount(inverse, weights=values[:, j], minlength=len(uniq))
    return uniq, summed


def prepared(table: str, keys: Any, values: Any) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique keys and their float32 ``(n, width)`` values (repeats summed); ``ValueError`` for bad ones.

    Examples
    --------
    >>> k, v = prepared("w", [5, 2, 5], [1.0, 2.0, 3.0]); k.tolist(), v.ravel().tolist()
    ([2, 5], [2.0, 4.0])
    >>> prepared("w", [1], [float("nan")])
    Traceback (most recent call last):
    ...
    ValueError: push to 'w': non-finite value [nan] for key 1 (NaN/inf gradients are rejected; the table is unchanged)
    """
    keys = as_keys(keys)
    values = np.asarray(values, dtype=np.float32)
    if values.ndim == 1:
        values = values.reshape(-1, 1)
    if values.ndim != 2 or values.shape[0] != keys.size:
        raise ValueError(f"push to {table!r}: values must have shape ({keys.size}, width), got {values.shape}")
    finite = np.isfinite(values)
    if not finite.all():
        row = int(np.argmin(finite.all(axis=1)))
        raise ValueError(f"push to {table!r}: non-finite value {values[row].tolist()} for key {keys[row]} "
                         f"(NaN/inf gradients are rejected; the table is unchanged)")
    if not is_sorted_unique(keys):
        keys, values = _sum_duplicates(keys, values)
    return keys, values


@dataclass
class _Part:
    """What one shard did with its part of a push: requests applied of all, and the error that stopped it."""

    shard: int
    total: int
    applied: int = 0
    error: Exception | None = None
    clock: int | None = None

    def describe(self, name: str) -> str:
        where = f"shard {self.shard} ({name})"
        if self.error is None:
            return f"{where} applied its part"
        sent = "the request was sent and its answer lost, so it may have been applied" \
            if isinstance(self.error, PSConnectionError) else "refused it"
        done = f"applied {self.applied} of its {self.total} requests, then " if self.applied else ""
        return f"{where} {done}{sent}: {self.error}"


class PushOps:
    """The push requests of :class:`~spark_ps.client.client.PSClient` (which supplies the connections and fan-out)."""

    _conns: list[ShardConnection]
    _push_client: str
    _push_ids: Iterator[int]
    num_shards: int
    _map_shards: Callable[..., list[Any]]
    _chunks: Callable[[int], Iterator[slice]]

    def _new_push_ids(self) -> None:
        self._push_client = os.urandom(8).hex()
        self._push_ids = itertools.count()

    def push(self, table: str, keys: Any, values: Any, *, request_id: int | None = None,
             mark: str | None = None) -> None:
        """Send ``values`` for ``keys`` to the table's server-side optimizer, exactly once.

        ``values`` is ``(n, width)`` (or ``(n,)`` for width 1). What the
        shard does with them depends on the table's optimizer: ``delta`` adds
        them, the others treat them as gradients. Rows for repeated keys are
        summed first. NaN or infinite values are refused before anything is
        sent, and the shards refuse them again, so a table is never changed by
        a bad push. ``request_id`` is for a retry only: the ``request_id``
        attribute of the error of a push from this client (a
        :class:`~spark_ps.errors.PushError`, or one shard's error), whose push
        is then completed where it was not applied. ``mark`` names a width-1
        table whose row of every pushed key each shard increments in the same
        apply (:mod:`spark_ps.server.shard`, "Marks"); :meth:`export` with
        ``keys_of`` reads them back as the rows they changed.

        Examples
        --------
        >>> from spark_ps.client.client import PSClient
        >>> from spark_ps.server.tcp import ShardServer
        >>> with ShardServer(b"k").serve_in_background() as server, PSClient([server.address], b"k") as client:
        ...     _ = client.create_table("w", width=1, optimizer="sgd", lr=1.0)
        ...     client.push("w", [4, 4, 5], [1.0, 2.0, -1.0])      # w -= lr * (summed) gradient
        ...     client.push("w", [4, 4, 5], [1.0, 2.0, -1.0], request_id=0)   # the same push again: not applied
        ...     client.pull("w", [4, 5]).ravel().tolist()
        [-3.0, 1.0]
        """
        self._push(table, keys, values, None, request_id, mark)

    def push_and_advance(self, table: str, keys: Any, values: Any, clock: str, worker: int,
                         timeout: float = 600.0, *, request_id: int | None = None, mark: str | None = None) -> int:
        """:meth:`push`, then :meth:`clock_advance` for ``worker``, in as few round trips as possible.

        The tick rides on the push to the clock's shard, which is sent after
        every other shard has applied its part: whoever sees the tick sees
        the whole push, exactly as with a separate :meth:`clock_advance`.
        That shard applies its part with the tick or neither. Returns the
        worker's new clock. If waiting for the slowest worker times out, the
        push and the tick stay applied (the error says so); a retry with the
        error's ``request_id`` only waits again. ``mark`` as in :meth:`push`.

        Examples
        --------
        >>> from spark_ps.client.client import PSClient
        >>> from spark_ps.server.tcp import ShardServer
        >>> with ShardServer(b"k").serve_in_background() as server, PSClient([server.address], b"k") as client:
        ...     _ = client.create_table("w", width=1, optimizer="delta")
        ...     client.clock_create("c", num_workers=1, staleness=0)
        ...     client.push_and_advance("w", [3], [[2.0]], "c", worker=0), client.pull("w", [3]).ravel().tolist()
        (1, [2.0])
        """
        tick = {"clock": clock, "worker": int(worker), "timeout": float(timeout)}
        return self._push(table, keys, values, tick, request_id, mark)

    def _push(self, table: str, keys: Any, values: Any, tick: dict[str, Any] | None,
              request_id: int | None, mark: str | None = None) -> int | None:
        keys, values = prepared(table, keys, values)
        rid = next(self._push_ids) if request_id is None else int(request_id)
        if self.num_shards == 1:
            parts = {0: (keys, values)}
        else:
            slices = slice_keys(keys, self.num_shards)
            parts = {s: (keys[slices.positions(s)], values[slices.positions(s)]) for s in range(self.num_shards)
                     if slices.bounds[s + 1] > slices.bounds[s]}
        clock_shard = CLOCK_SHARD if tick is not None else None  # pushed last, with the tick
        if clock_shard is not None and clock_shard not in parts:  # a tick with no keys there: an empty push
            parts[clock_shard] = (keys[:0], values[:0])
        meta = {"table": table, **({} if mark is None else {"mark": mark})}
        first = [s for s in parts if s != clock_shard]
        done = self._map_shards(lambda s: self._push_part(s, *parts[s], meta, rid, None), first)
        if clock_shard is not None and all(p.error is None for p in done):
            done.append(self._push_part(clock_shard, *parts[clock_shard], meta, rid, tick))
        failed = [p for p in done if p.error is not None]
        if failed:
            error = self._push_error(table, rid, done, failed, clock_shard if len(done) < len(parts) else None)
            error.request_id = rid  # every failed push says how to retry it, a shard's own error too
            raise error
        return None if tick is None else done[-1].clock

    def _push_part(self, shard: int, keys: np.ndarray, values: np.ndarray, meta: dict[str, Any], rid: int,
                   tick: dict[str, Any] | None) -> _Part:
        """Push one shard's part in capped chunks (the last one with ``tick``); what it did, errors included."""
        chunks = list(self._chunks(keys.size)) or [slice(0, 0)]
        part = _Part(shard, len(chunks))
        for i, c in enumerate(chunks):
            ticks = tick is not None and i == len(chunks) - 1
            frame_meta = {**meta, "id": [self._push_client, rid, i], **({"advance": tick} if ticks else {})}
            try:
                reply = self._conns[shard].request(
                    Frame(Op.PUSH, frame_meta, [keys[c], values[c]]), idempotent=True,
                    timeout=blocking_timeout(tick["timeout"]) if ticks else None)
            except (RemoteError, PSConnectionError) as exc:  # kept for the report: which shard did what
                part.error = exc
                return part
            part.applied += 1
            if ticks:
                part.clock = int(reply.meta["clock"])
        return part

    def _push_error(self, table: str, rid: int, done: Iterable[_Part], failed: list[_Part],
                    unsent: int | None) -> Exception:
        done = list(done)
        if not any(p.applied for p in done):  # nothing applied anywhere: a shard's own error is true as it stands
            unknown = [p.error for p in failed if isinstance(p.error, PSConnectionError)]
            return (unknown or [failed[0].error])[0]  # "it may have been applied" first, if a shard says so
        names = [conn.name for conn in self._conns]
        lines = [p.describe(names[p.shard]) for p in done]
        if unsent is not None:
            lines.append(f"shard {unsent} ({names[unsent]}) was not sent its part (it carries the clock tick, "
                         "sent only once every other shard applied its part)")
        return PushError(f"push {rid} to table {table!r} was not applied everywhere: {'; '.join(lines)}. "
                         f"Retry with push(..., request_id={rid}) on this client: shards that applied their part "
                         "skip it, the others apply it once",
                         rid, [p.shard for p in done if p.error is None],
                         sorted([p.shard for p in failed] + ([] if unsent is None else [unsent])),
                         [p.shard for p in failed if isinstance(p.error, PSConnectionError)])
