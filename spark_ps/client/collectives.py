"""Group operations of a set of workers, run on the shards: a barrier and an all-reduce.

Spark's own ``BarrierTaskContext.barrier()`` and ``allGather()`` took about
a second each here, and they exist only inside a barrier stage. These take
a round trip or two to shard 0, and work from any process that holds a
:class:`~spark_ps.client.client.PSClient` (a task, the driver, a streaming
batch):

* :class:`Barrier` is a staleness-0 clock: :meth:`Barrier.wait` returns once
  every worker has called it as often.
* :class:`AllReduce` sums named float fields over workers, per slot (an
  epoch, a stream batch), in a ``delta`` table: a worker adds its values
  with :meth:`AllReduce.add` and anyone reads the sums by name. Sums are
  float32: exact for counts below 2**24, and the same for every reader.

Each handle owns shard objects named after it; :meth:`create` makes them,
:meth:`reset` returns them to zero, :meth:`drop` removes them. Handles are
small frozen dataclasses, so they travel in a task closure beside the client.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from spark_ps.client.client import PSClient

__all__ = ["AllReduce", "Barrier"]


@dataclass(frozen=True)
class Barrier:
    """Workers ``0..num_workers-1`` wait in :meth:`wait` until all have called it as often.

    Examples
    --------
    >>> from spark_ps.server.tcp import ShardServer
    >>> server = ShardServer(b"k").serve_in_background(); client = PSClient([server.address], b"k")
    >>> barrier = Barrier("meet", num_workers=1)
    >>> barrier.create(client)
    >>> barrier.wait(client, worker=0), barrier.wait(client, worker=0)
    (1, 2)
    >>> barrier.drop(client); client.close(); server.shutdown()
    """

    name: str
    num_workers: int

    def create(self, client: PSClient) -> None:
        """Create the barrier's clock (a no-op if it exists).

        Examples
        --------
        >>> from spark_ps.server.tcp import ShardServer
        >>> with ShardServer(b"k").serve_in_background() as server, PSClient([server.address], b"k") as client:
        ...     Barrier("meet", num_workers=2).create(client); Barrier("meet", num_workers=2).create(client)
        ...     Barrier("meet", num_workers=2).wait(client, worker=0, timeout=0.1)    # worker 1 never comes
        Traceback (most recent call last):
        ...
        spark_ps.errors.RemoteTimeoutError: ...
        """
        client.clock_create(self.name, self.num_workers, 0)

    def wait(self, client: PSClient, worker: int, timeout: float = 600.0) -> int:
        """Block until every worker has reached this call; return how many times this worker has waited.

        Examples
        --------
        >>> from spark_ps.server.tcp import ShardServer
        >>> with ShardServer(b"k").serve_in_background() as server, PSClient([server.address], b"k") as client:
        ...     barrier = Barrier("meet", num_workers=1); barrier.create(client)
        ...     [barrier.wait(client, worker=0) for _ in range(3)]
        [1, 2, 3]
        """
        return client.clock_advance(self.name, worker, timeout=timeout)

    def reset(self, client: PSClient) -> None:
        """Forget every wait so far (for a restarted attempt).

        Examples
        --------
        >>> from spark_ps.server.tcp import ShardServer
        >>> with ShardServer(b"k").serve_in_background() as server, PSClient([server.address], b"k") as client:
        ...     barrier = Barrier("meet", num_workers=1); barrier.create(client); _ = barrier.wait(client, 0)
        ...     barrier.reset(client); barrier.wait(client, 0)
        1
        """
        self.drop(client)
        self.create(client)

    def drop(self, client: PSClient) -> None:
        """Remove the barrier from the shard.

        Examples
        --------
        >>> from spark_ps.server.tcp import ShardServer
        >>> with ShardServer(b"k").serve_in_background() as server, PSClient([server.address], b"k") as client:
        ...     barrier = Barrier("meet", num_workers=1); barrier.create(client); barrier.drop(client)
        ...     barrier.wait(client, 0)
        Traceback (most recent call last):
        ...
        spark_ps.errors.RemoteKeyError: ...
        """
        client.clock_drop(self.name)


@dataclass(frozen=True)
class AllReduce:
    """Per-slot sums of named fields, added to by any number of workers.

    Examples
    --------
    >>> from spark_ps.server.tcp import ShardServer
    >>> server = ShardServer(b"k").serve_in_background(); client = PSClient([server.address], b"k")
    >>> totals = AllReduce("totals", ("rows", "labels"))
    >>> totals.create(client)
    >>> totals.add(client, 0, rows=3, labels=1); totals.add(client, 0, rows=2, labels=2)
    >>> totals.get(client, 0)
    {'rows': 5.0, 'labels': 3.0}
    >>> totals.drop(client); client.close(); server.shutdown()
    """

    name: str
    fields: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.fields or len(set(self.fields)) != len(self.fields):
            raise ValueError(f"all-reduce {self.name!r} needs distinct field names, got {self.fields!r}")

    def create(self, client: PSClient) -> None:
        """Create the table that holds the sums (a no-op if it exists).

        Examples
        --------
        >>> from spark_ps.server.tcp import ShardServer
        >>> with ShardServer(b"k").serve_in_background() as server, PSClient([server.address], b"k") as client:
        ...     AllReduce("totals", ("rows", "loss")).create(client); client.list_tables()
        ['totals']
        """
        client.create_table(self.name, width=len(self.fields), optimizer="delta")

    def add(self, client: PSClient, slot: int, **values: float) -> None:
        """Add this worker's ``values`` (every field, by name) to slot ``slot``.

        Examples
        --------
        >>> from spark_ps.server.tcp import ShardServer
        >>> with ShardServer(b"k").serve_in_background() as server, PSClient([server.address], b"k") as client:
        ...     totals = AllReduce("totals", ("rows", "loss")); totals.create(client)
        ...     totals.add(client, 3, rows=10, loss=4.5); totals.add(client, 3, rows=5, loss=0.5); totals.get(client, 3)
        {'rows': 15.0, 'loss': 5.0}
        """
        if set(values) != set(self.fields):
            raise ValueError(f"all-reduce {self.name!r}: expected fields {list(self.fields)}, "
                             f"got {sorted(values)}")
        client.push(self.name, [slot], [[float(values[f]) for f in self.fields]])

    def get(self, client: PSClient, slot: int) -> dict[str, float]:
        """The sums of slot ``slot`` by field name (zeros where nobody added).

        Examples
        --------
        >>> from spark_ps.server.tcp import ShardServer
        >>> with ShardServer(b"k").serve_in_background() as server, PSClient([server.address], b"k") as client:
        ...     totals = AllReduce("totals", ("rows",)); totals.create(client); totals.add(client, 0, rows=2)
        ...     totals.get(client, 0), totals.get(client, 1)
        ({'rows': 2.0}, {'rows': 0.0})
        """
        return self.get_many(client, [slot])[0]

    def get_many(self, client: PSClient, slots: Sequence[int]) -> list[dict[str, float]]:
        """The sums of several slots, in one request.

        Examples
        --------
        >>> from spark_ps.server.tcp import ShardServer
        >>> with ShardServer(b"k").serve_in_background() as server, PSClient([server.address], b"k") as client:
        ...     totals = AllReduce("totals", ("rows",)); totals.create(client); totals.add(client, 1, rows=7)
        ...     totals.get_many(client, [0, 1])
        [{'rows': 0.0}, {'rows': 7.0}]
        """
        rows = client.pull(self.name, np.asarray(slots, dtype=np.int64))
        return [dict(zip(self.fields, map(float, row))) for row in rows]

    def reset(self, client: PSClient) -> None:
        """Set every sum back to zero.

        Examples
        --------
        >>> from spark_ps.server.tcp import ShardServer
        >>> with ShardServer(b"k").serve_in_background() as server, PSClient([server.address], b"k") as client:
        ...     totals = AllReduce("totals", ("rows",)); totals.create(client); totals.add(client, 0, rows=2)
        ...     totals.reset(client); totals.get(client, 0)
        {'rows': 0.0}
        """
        self.drop(client)
        self.create(client)

    def drop(self, client: PSClient) -> None:
        """Remove the sums from the shards.

        Examples
        --------
        >>> from spark_ps.server.tcp import ShardServer
        >>> with ShardServer(b"k").serve_in_background() as server, PSClient([server.address], b"k") as client:
        ...     totals = AllReduce("totals", ("rows",)); totals.create(client); totals.drop(client)
        ...     client.list_tables()
        []
        """
        client.drop_table(self.name, missing_ok=True)
