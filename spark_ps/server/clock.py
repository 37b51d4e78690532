"""Iteration clocks for bulk-synchronous, stale-synchronous and asynchronous training.

Every worker owns a clock, the number of iterations it has completed. In the
stale-synchronous parallel model (SSP, Ho et al., NIPS 2013) a worker at clock
``c`` may run iteration ``c`` only while it is at most ``staleness`` clocks
ahead of the slowest worker still training; its reads then miss at most
``staleness`` iterations of anyone's updates. Two special cases:

* ``staleness=0`` is BSP: nobody starts iteration ``c`` before everyone has
  finished iteration ``c - 1`` (a barrier per iteration);
* ``staleness=None`` is ASP: workers never wait.

A worker that has finished its share calls :meth:`ClockTable.finish` so that it
no longer holds back the others (otherwise the last iteration of a fast
partition would block on a worker that has already left).

Waiting uses one :class:`threading.Condition`: the server serves each
connection on its own thread, so a blocked :meth:`ClockTable.advance` is simply
a thread waiting for the slowest worker's advance to notify it.
"""

from __future__ import annotations

import math
import numbers
import threading

__all__ = ["ClockTable"]


class ClockTable:
    """Clocks of ``num_workers`` workers with a bounded staleness.

    Parameters
    ----------
    num_workers : int
        Number of workers, >= 1; workers are identified by ``0 .. num_workers - 1``.
    staleness : int or None
        How many clocks a worker may run ahead of the slowest unfinished one:
        0 for BSP, ``s > 0`` for SSP, None for ASP (unbounded).

    Examples
    --------
    >>> clock = ClockTable(2, staleness=1)
    >>> clock.advance(0, timeout=1.0)   # 1 ahead of worker 1: allowed
    1

    Two ahead is not: worker 0 waits for worker 1, who never comes.

    >>> clock.advance(0, timeout=0.05)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    TimeoutError: worker 0 waited 0.05 s to enter clock 2, but ... unfinished workers [0, 1]
    >>> clock.finish(1)                 # worker 1 leaves: worker 0 runs free
    >>> clock.advance(0, timeout=1.0)
    2
    >>> clock.clocks()
    (2, 0)
    """

    def __init__(self, num_workers: int, staleness: int | None = 0) -> None:
        if isinstance(num_workers, bool) or not isinstance(num_workers, numbers.Integral) or num_workers < 1:
            raise ValueError(f"num_workers must be a positive integer, got {num_workers!r}")
        if staleness is not None and (isinstance(staleness, bool) or not isinstance(staleness, numbers.Integral)
                                      or staleness < 0):
            raise ValueError(f"staleness must be a non-negative integer (0 = BSP) or None (ASP), got {staleness!r}")
        self.num_workers = int(num_workers)
        self.staleness = None if staleness is None else int(staleness)
        self._clocks = [0] * self.num_workers
        self._finished = [False] * self.num_workers
        self._dropped = False
        self._changed = threading.Condition(threading.Lock())

    def __repr__(self) -> str:
        return f"ClockTable(num_workers={self.num_workers}, staleness={self.staleness}, clocks={self.clocks()})"

    def advance(self, worker: int, timeout: float | None = None) -> int:
        """Mark ``worker``'s current iteration done and wait until it may run the next.

        Increments the worker's clock to ``c`` and blocks until ``c`` is at most
        ``staleness`` ahead of every unfinished worker.

        Parameters
        ----------
        worker : int
            The calling worker's id.
        timeout : float or None
            Seconds to wait at most; None waits indefinitely.

        Returns
        -------
        int
            The worker's new clock ``c``: it may now run iteration ``c``.

        Raises
        ------
        TimeoutError
            If the slowest worker did not catch up in time. The increment is
            undone, so the worker may call :meth:`advance` again.
        ValueError
            For an unknown worker id, a worker that has finished, or a bad timeout.

        Examples
        --------
        >>> clock = ClockTable(1, staleness=0)
        >>> clock.advance(0), clock.advance(0)
        (1, 2)
        """
        self.check_tick(worker, timeout)
        clock = self.tick(worker)
        try:
            self.wait(worker, clock, timeout)
        except TimeoutError:
            with self._changed:
                self._clocks[worker] -= 1
                raise self._timed_out(worker, clock, timeout) from None  # naming the clocks as they are now
        return clock

    def check_tick(self, worker: int, timeout: float | None) -> None:
        """Raise ``ValueError`` now if :meth:`advance` of ``worker`` with ``timeout`` would be refused.

        A push that carries a tick is checked with this before it is applied,
        so that it is applied with its tick or not at all.

        Examples
        --------
        >>> ClockTable(2, staleness=0).check_tick(5, 1.0)
        Traceback (most recent call last):
        ...
        ValueError: advance: worker id must be an integer in [0, 2), got 5
        """
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, numbers.Real)
                                    or not math.isfinite(timeout) or timeout < 0):
            raise ValueError(f"timeout must be a finite number of seconds >= 0 or None, got {timeout!r}")
        with self._changed:
            self._check_worker(worker, "advance")
            if self._finished[worker]:
                raise ValueError(f"worker {worker} has finished; it cannot advance its clock")

    def tick(self, worker: int) -> int:
        """Increment ``worker``'s clock (checked by :meth:`check_tick` first) and return it; never waits.

        Examples
        --------
        >>> clock = ClockTable(2, staleness=0)
        >>> clock.tick(0), clock.clocks()
        (1, (1, 0))
        """
        with self._changed:
            self._check_worker(worker, "advance")
            self._clocks[worker] += 1
            self._changed.notify_all()  # this worker may have been the slowest one
            return self._clocks[worker]

    def wait(self, worker: int, clock: int, timeout: float | None) -> None:
        """Wait until a worker at ``clock`` may run: within ``staleness`` of the slowest; ``TimeoutError`` if not.

        Nothing is undone on a timeout: the tick stays (see :meth:`advance` for a tick that is undone).

        Examples
        --------
        >>> clock = ClockTable(2, staleness=0); c = clock.tick(0)
        >>> clock.wait(0, c, timeout=0.01)
        Traceback (most recent call last):
        ...
        TimeoutError: worker 0 waited 0.01 s to enter clock 1, but ... unfinished workers [0, 1]
        """
        with self._changed:
            if not self._changed.wait_for(lambda: self._dropped or self._may_run(clock), timeout):
                raise self._timed_out(worker, clock, timeout)
            if self._dropped:
                raise KeyError(f"worker {worker} waited to enter clock {clock}, but the clock was dropped: its "
                               "run was given up (a task of it failed), so this worker stops too")

    def _timed_out(self, worker: int, clock: int, timeout: float | None) -> TimeoutError:
        return TimeoutError(
            f"worker {worker} waited {timeout:g} s to enter clock {clock}, but it may run at most "
            f"{self.staleness} clock(s) ahead of the slowest unfinished worker; clocks {self._clocks}, "
            f"unfinished workers {[w for w, done in enumerate(self._finished) if not done]}")

    def drop(self) -> None:
        """Wake every waiter with ``KeyError``: the run the clock paces was given up. Idempotent.

        A barrier stage's other tasks would otherwise wait out their timeout
        after one of them failed; Spark frees their slots only when they end
        (it kills a Python worker 2-4 s after its task was killed), and the
        next barrier stage needs every slot.

        Examples
        --------
        >>> import threading
        >>> clock, errors = ClockTable(2, staleness=0), []
        >>> def worker_0():
        ...     try:
        ...         clock.advance(0, timeout=60.0)
        ...     except KeyError as exc:
        ...         errors.append(exc)
        >>> waiter = threading.Thread(target=worker_0); waiter.start()
        >>> clock.drop(); waiter.join(timeout=10.0)
        >>> "the clock was dropped" in str(errors[0])
        True
        """
        with self._changed:
            self._dropped = True
            self._changed.notify_all()

    def finish(self, worker: int) -> None:
        """Mark ``worker`` as done: it no longer holds the others back. Idempotent.

        Examples
        --------
        >>> clock = ClockTable(2, staleness=0)
        >>> clock.finish(1)
        >>> clock.advance(0, timeout=1.0)
        1
        """
        with self._changed:
            self._check_worker(worker, "finish")
            self._finished[worker] = True
            self._changed.notify_all()

    def clocks(self) -> tuple[int, ...]:
        """A snapshot of every worker's clock, finished ones included.

        Examples
        --------
        >>> ClockTable(3, staleness=None).clocks()
        (0, 0, 0)
        """
        with self._changed:
            return tuple(self._clocks)

    def _may_run(self, clock: int) -> bool:
        """Whether a worker at ``clock`` is within ``staleness`` of the slowest unfinished worker."""
        if self.staleness is None:
            return True
        # The default covers a waiter whose own id another thread finished meanwhile.
        slowest = min((c for c, done in zip(self._clocks, self._finished, strict=True) if not done), default=clock)
        return clock - slowest <= self.staleness

    def _check_worker(self, worker: int, op: str) -> None:
        if isinstance(worker, bool) or not isinstance(worker, numbers.Integral) or not 0 <= worker < self.num_workers:
            raise ValueError(f"{op}: worker id must be an integer in [0, {self.num_workers}), got {worker!r}")
