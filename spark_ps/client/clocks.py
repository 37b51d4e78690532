"""Clocks of bulk-synchronous, stale-synchronous and asynchronous training, as :class:`PSClient` methods.

Every clock lives on shard 0 (:data:`CLOCK_SHARD`), so all workers meet
there; the clock itself is ``spark_ps.server.clock``. Split out of
``client.py`` to keep that module under 500 lines.
"""

from __future__ import annotations

from collections.abc import Iterator

from spark_ps.client.connection import ShardConnection
from spark_ps.wire.protocol import Frame, Op

#: The shard that hosts every clock, so that all workers meet there.
CLOCK_SHARD = 0


def blocking_timeout(clock_timeout: float) -> float:
    """Socket timeout of a request that may wait ``clock_timeout`` on a clock: the shard answers first.

    Examples
    --------
    >>> blocking_timeout(600.0)
    630.0
    """
    return clock_timeout + 30.0


class ClockOps:
    """The clock requests of :class:`~spark_ps.client.client.PSClient` (which supplies ``_conns``)."""

    _conns: list[ShardConnection]
    _push_client: str
    _push_ids: Iterator[int]

    def _clock_conn(self) -> ShardConnection:
        return self._conns[CLOCK_SHARD]

    def clock_create(self, name: str, num_workers: int, staleness: int | None) -> None:
        """Create a clock for ``num_workers`` workers on shard 0 (a no-op if it exists).

        ``staleness`` 0 is BSP, ``k`` is SSP (up to ``k`` ticks ahead of the slowest), None is ASP.

        Examples
        --------
        >>> from spark_ps.client.client import PSClient
        >>> from spark_ps.server.tcp import ShardServer
        >>> with ShardServer(b"k").serve_in_background() as server, PSClient([server.address], b"k") as client:
        ...     client.clock_create("c", num_workers=2, staleness=1); client.clock_advance("c", worker=0)
        1
        """
        self._clock_conn().request(Frame(Op.CLOCK_CREATE, {"clock": name, "num_workers": num_workers,
                                                           "staleness": staleness}), idempotent=True)

    def clock_advance(self, name: str, worker: int, timeout: float = 600.0) -> int:
        """Tick ``worker``'s clock; block while it is more than ``staleness`` ahead; return its new clock.

        Raises ``TimeoutError`` (from the shard) if the others do not catch up within ``timeout`` seconds;
        the tick stays applied. Sent with a request id, so a resend after a lost reply does not tick twice.

        Examples
        --------
        >>> from spark_ps.client.client import PSClient
        >>> from spark_ps.server.tcp import ShardServer
        >>> with ShardServer(b"k").serve_in_background() as server, PSClient([server.address], b"k") as client:
        ...     client.clock_create("c", 2, 0); client.clock_advance("c", 0, timeout=0.1)   # worker 1 never ticks
        Traceback (most recent call last):
        ...
        spark_ps.errors.RemoteTimeoutError: ...
        """
        # A request id, as a push's (client/pushes.py): a resend after a lost reply ticks once and waits again.
        ident = [self._push_client, next(self._push_ids), 0]
        reply = self._clock_conn().request(
            Frame(Op.CLOCK_ADVANCE, {"clock": name, "worker": worker, "timeout": timeout, "id": ident}),
            idempotent=True, timeout=blocking_timeout(timeout))
        return int(reply.meta["clock"])

    def clock_finish(self, name: str, worker: int) -> None:
        """Mark ``worker`` done so it never holds the others back.

        Examples
        --------
        >>> from spark_ps.client.client import PSClient
        >>> from spark_ps.server.tcp import ShardServer
        >>> with ShardServer(b"k").serve_in_background() as server, PSClient([server.address], b"k") as client:
        ...     client.clock_create("c", 2, 0); client.clock_finish("c", 1)     # worker 1 is done
        ...     [client.clock_advance("c", 0) for _ in range(2)]
        [1, 2]
        """
        self._clock_conn().request(Frame(Op.CLOCK_FINISH, {"clock": name, "worker": worker}), idempotent=True)

    def clock_drop(self, name: str) -> None:
        """Remove clock ``name`` from shard 0.

        Examples
        --------
        >>> from spark_ps.client.client import PSClient
        >>> from spark_ps.server.tcp import ShardServer
        >>> with ShardServer(b"k").serve_in_background() as server, PSClient([server.address], b"k") as client:
        ...     client.clock_create("c", 1, 0); first = client.clock_advance("c", 0); client.clock_drop("c")
        ...     client.clock_create("c", 1, 0); first, client.clock_advance("c", 0)    # the new clock starts afresh
        (1, 1)
        """
        self._clock_conn().request(Frame(Op.CLOCK_DROP, {"clock": name}), idempotent=True)
