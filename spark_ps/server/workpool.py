"""Split a large request into row spans and run them on the shard's cores.

A shard's hot loops (hash probing, gathering and scattering rows, optimizer
kernels) are numba or numpy code that releases the GIL, so plain threads run
them in parallel. Parallelism pays only for large requests: below
:data:`MIN_ROWS_PER_SPAN` rows per span, handing work to a thread costs more
than it saves, and the request runs on the calling thread.

One process-wide pool serves every table and connection: the cores do not
multiply with the number of clients, so neither should the threads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

__all__ = ["MIN_ROWS_PER_SPAN", "run_spans", "spans"]

#: Fewest rows worth a span of their own (~1 ms of work for a push of width 1).
MIN_ROWS_PER_SPAN = 16384

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _shared_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_workers(), thread_name_prefix="shard-span")
        return _pool


def spans(n_rows: int, max_spans: int | None = None) -> list[tuple[int, int]]:
    """Contiguous ``(start, stop)`` spans covering ``range(n_rows)``, each of at least :data:`MIN_ROWS_PER_SPAN` rows.

    Parameters
    ----------
    n_rows : int
        Rows to cover, >= 0.
    max_spans : int, optional
        Upper bound on the number of spans; the number of usable cores by default.

    Examples
    --------
    >>> spans(100_000, max_spans=2)
    [(0, 50000), (50000, 100000)]
    >>> spans(1000, max_spans=4)
    [(0, 1000)]
    """
    count = max(1, min(max_spans or _workers(), n_rows // MIN_ROWS_PER_SPAN))
    bounds = [n_rows * i // count for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def run_spans(fn: Callable[[int, int], object], n_rows: int) -> list[object]:
    """Call ``fn(start, stop)`` for each span of :func:`spans`; return the results in span order.

    Every span runs to completion before this returns, also when some raise,
    so the caller can undo the spans that succeeded; then the exception of
    the first failing span (in span order) is raised.

    Examples
    --------
    >>> import numpy as np
    >>> data = np.arange(100_000)
    >>> sum(run_spans(lambda a, b: int(data[a:b].sum()), len(data))) == int(data.sum())
    True
    """
    parts = spans(n_rows)
    if len(parts) == 1:
        return [fn(*parts[0])]
    pool = _shared_pool()
    # The calling thread takes the first span itself: one hand-off fewer, and
    # no deadlock if every pool thread is busy with other requests.
    futures: list[Future] = [pool.submit(fn, *span) for span in parts[1:]]
    try:
        first = fn(*parts[0])
    finally:
        wait(futures)
    return [first] + [f.result() for f in futures]
