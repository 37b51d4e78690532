"""Leases on shard tables (issue 11, item 6): a table lives while something holds its lease.

Before, a fitted model's training table stayed on the shards until the
sidecars stopped (nothing dropped it: the tasks create it, and PSContext only
dropped the tables it created itself), and a table a model loaded from Delta
to score stayed until the PSContext shut down. A CrossValidator over 3 folds
x 3 values left 9 training tables behind, each as large as the model.

Now the holder of a table is explicit. A fit gives its model a
:class:`TableLease` on the training table; copies of the model, the
DataFrames its ``transform`` returned (whose tasks read the table when they
run) and the fit's background Delta export (which reads it) hold the same
lease. When the last of them is garbage-collected, the lease is queued for
dropping, and the next ``PSContext.get`` (every fit and every transform calls
it), ``PSContext.memory()`` or ``PSContext.shutdown()`` drops the queued
tables. ``lease.release()`` (``model.release()``) drops at once.

Why a queue and not a drop in the finalizer: a finalizer runs wherever the
garbage collector happens to run, possibly in a thread that holds a
connection's lock in the middle of a request; a drop from there would
deadlock on that lock. ``queue.SimpleQueue.put`` is documented as reentrant
and safe in finalizers; the drop itself then runs at a call into spark-ps
from user code, where no spark-ps lock is held.

What a released model costs: it still scores, from its Delta weights, which
the next ``transform`` loads into a new shard table (a Spark job over the
weights: about a second for a small model here). Dropping only when nothing
can read the table is what keeps a ``transform`` that is still to run from
finding its table gone.
"""

from __future__ import annotations

import logging
import queue
import weakref
from typing import Any

log = logging.getLogger(__name__)

#: (PSContext, table) of leases whose last holder is gone, waiting to be dropped.
RELEASED: queue.SimpleQueue[tuple[Any, str]] = queue.SimpleQueue()


class TableLease:
    """Keeps shard table ``name`` alive while this object is referenced; dropped through ``ps`` after.

    Parameters
    ----------
    ps : PSContext
        The handle that drops the table (its :meth:`~spark_ps.spark.context.PSContext.drop_table`).
    name : str
        The table.

    Examples
    --------
    >>> import gc
    >>> from spark_ps.spark.context import PSContext
    >>> ps = PSContext.get(spark)
    >>> _ = ps.create_table("leased", width=1); lease = ps.lease("leased")
    >>> del lease; _ = gc.collect()
    >>> "leased" in ps.memory()["tables"]               # memory() drops the released tables first
    False
    """

    def __init__(self, ps, name: str):
        self.name = name
        self._ps = ps
        self._finalizer = weakref.finalize(self, RELEASED.put, (ps, name))
        self._finalizer.atexit = False  # at interpreter exit the sidecars go with their executors

    def __repr__(self) -> str:
        return f"TableLease({self.name!r}{', released' if self.released else ''})"

    @property
    def released(self) -> bool:
        """Whether the table was released (explicitly, or queued once nothing held it)."""
        return not self._finalizer.alive

    def hold(self) -> None:
        """Do nothing: a callable whose holder (an export that reads the table) keeps the lease alive.

        Examples
        --------
        >>> from spark_ps.spark.context import PSContext
        >>> PSContext.get(spark).lease("nothing").hold()
        """

    def release(self) -> None:
        """Drop the table now (once; a second call does nothing).

        Examples
        --------
        >>> from spark_ps.spark.context import PSContext
        >>> ps = PSContext.get(spark)
        >>> _ = ps.create_table("leased", width=1); lease = ps.lease("leased")
        >>> lease.release(); lease.release(); lease.released, "leased" in ps.memory()["tables"]
        (True, False)
        """
        if self._finalizer.detach() is not None:
            self._ps.drop_table(self.name, missing_ok=True)


def drop_released(current) -> list[str]:
    """Drop the tables of the leases queued so far; return their names.

    Each through the PSContext that leased it, or ``current`` (the live handle
    of the same application) if that one was shut down; the tables of an
    application that is gone went with its sidecars and are skipped.

    Examples
    --------
    >>> from spark_ps.spark.context import PSContext
    >>> drop_released(PSContext.get(spark))
    []
    """
    dropped: list[str] = []
    if current.closed:  # called again by a second shutdown: the queue waits for a live handle
        return dropped
    while True:
        try:
            ps, name = RELEASED.get_nowait()
        except queue.Empty:  # the normal end: everything queued so far is done
            return dropped
        target = current if ps.closed and current.same_application(ps) else None if ps.closed else ps
        if target is None:
            continue
        try:
            target.drop_table(name, missing_ok=True)
        except ConnectionError as exc:  # its shards are gone (the session stopped): so is the table
            log.info("spark-ps: released table %s not dropped, its shards are unreachable: %s", name, exc)
            continue
        dropped.append(name)
