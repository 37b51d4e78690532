"""A shard's memory budget (issue 11, item 6): ``spark.ps.maxMemory`` refuses growth instead of the OOM killer.

What is counted: each table's :attr:`~spark_ps.server.table.Table.nbytes`,
its key index's slots and its row arrays (weights and optimizer state) at
their allocated capacity, which is what the process holds. Not counted:
clocks (12 bytes a worker), the push log (``server/pushlog.py``, bounded by
its own limits), a request's frames and scratch arrays while it is served
(bounded by the frame and reply limits), and the process itself: measured
here, an idle sidecar's RSS is 141 MB, and 190 MB after its first push (the
numba kernels compiled and loaded) while its one table held 40 KB. Set the
budget below the sidecar's real limit by about 200 MB plus the frames of the
largest requests.

When it is checked: a table only allocates when it grows (its row arrays
double, its key index doubles at load factor 1/2), so the check runs only
then, a few dozen times over a table's life, and costs nothing on the
pushes that fit in the allocated capacity. A growth is checked and allocated
under one lock of the shard, so two tables growing at once cannot both pass
the check against the same total. The check is made before anything of the
request is written (``Table._reserve``), so a refused push or import leaves
the table unchanged, as a refused gradient does.

What a growth costs while it runs: the old arrays and the new ones coexist
during the copy, so the peak is briefly the budget plus the table's old
capacity. The budget is on what is held between requests, which is what
accumulates; leave headroom for one doubling of the largest table.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from spark_ps.errors import MemoryBudgetError

#: The conf that sets the budget.
MAX_MEMORY_KEY = "spark.ps.maxMemory"


class MemoryBudget:
    """The bytes a shard's tables may hold; ``limit`` 0 means no budget.

    Parameters
    ----------
    limit : int
        Bytes the tables may hold together; 0 for no limit.
    used : callable
        Returns the bytes the shard's tables hold now.

    Examples
    --------
    >>> held = [900]
    >>> budget = MemoryBudget(1000, lambda: held[0])
    >>> budget.grow("w", 50, "a push of 3 new rows", lambda: held.__setitem__(0, 950))
    >>> budget.grow("w", 100, "a push of 7 new rows", lambda: held.__setitem__(0, 1050))
    Traceback (most recent call last):
    ...
    spark_ps.errors.MemoryBudgetError: table 'w': a push of 7 new rows needs 100 more bytes, but the shard's tables \
hold 950 of its budget of 1000 bytes (spark.ps.maxMemory); refused, nothing changed. Drop the tables no longer \
needed (PSContext.memory() lists each table's bytes) or raise spark.ps.maxMemory
    >>> held[0]
    950
    """

    def __init__(self, limit: int, used: Callable[[], int]):
        self.limit = int(limit)
        self._used = used
        self._lock = threading.Lock()

    def used(self) -> int:
        """Bytes the shard's tables hold now.

        Examples
        --------
        >>> MemoryBudget(0, lambda: 42).used()
        42
        """
        return self._used()

    def grow(self, table: str, extra: int, what: str, allocate: Callable[[], None]) -> None:
        """Run ``allocate()`` (``extra`` more bytes for ``table``) if the budget allows; else raise, allocating nothing.

        ``what`` says what needs the bytes, for the error.

        Examples
        --------
        >>> MemoryBudget(0, lambda: 10**12).grow("w", 10**9, "a new table", lambda: None)   # no budget: allowed
        """
        if self.limit == 0 or extra <= 0:
            allocate()
            return
        with self._lock:
            used = self._used()
            if used + extra > self.limit:
                raise MemoryBudgetError(
                    f"table {table!r}: {what} needs {extra} more bytes, but the shard's tables hold {used} of its "
                    f"budget of {self.limit} bytes ({MAX_MEMORY_KEY}); refused, nothing changed. Drop the "
                    f"tables no longer needed (PSContext.memory() lists each table's bytes) or raise "
                    f"{MAX_MEMORY_KEY}")
            allocate()
