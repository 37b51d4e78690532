"""ClockTable: staleness bounds under BSP/SSP, freedom under ASP, deadlines.

The bound is checked from the workers' side, independently of the table's
own bookkeeping: before calling ``advance`` a worker records (under a test
lock) the clock it is about to enter; whenever a worker is let into clock
``c``, every other unfinished worker must already have *entered* at least
``c - staleness``. Finished workers are excluded from the check *before* they
tell the table, so the test never relies on the table's view.
"""

from __future__ import annotations

import threading
import time

import pytest

from spark_ps.server.clock import ClockTable


def run_workers(clock: ClockTable, work_seconds: list[float], iterations: int) -> list[int]:
    """Run one thread per worker; return the gap observed at every admission."""
    n = len(work_seconds)
    entered = [0] * n
    finished = [False] * n
    gaps: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(w: int) -> None:
        try:
            for _ in range(iterations):
                time.sleep(work_seconds[w])  # simulated compute of unequal speed, not synchronisation
                with lock:
                    entered[w] += 1
                admitted = clock.advance(w, timeout=20)
                with lock:
                    assert admitted == entered[w]
                    slowest = min(e for e, done in zip(entered, finished, strict=True) if not done)
                    gaps.append(admitted - slowest)
            with lock:
                finished[w] = True
            clock.finish(w)
        except BaseException as exc:  # surfaced by the assertion in the test
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(gaps) == n * iterations
    return gaps


@pytest.mark.parametrize("staleness", [0, 1, 3])
def test_bsp_and_ssp_bound_the_gap_to_the_slowest_worker(staleness):
    iterations = 12
    clock = ClockTable(3, staleness)
    gaps = run_workers(clock, [0.0, 0.001, 0.004], iterations)
    assert max(gaps) <= staleness
    # The fast worker did use the slack it was given (the bound is not just trivially met).
    assert max(gaps) == staleness
    assert clock.clocks() == (iterations,) * 3


def test_asp_lets_a_fast_worker_run_arbitrarily_far_ahead():
    clock = ClockTable(2, staleness=None)
    for expected in range(1, 101):
        assert clock.advance(0, timeout=0) == expected  # would time out at once if it had to wait
    assert clock.clocks() == (100, 0)


def test_blocked_worker_times_out_naming_itself_and_the_clocks():
    clock = ClockTable(2, staleness=0)
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=r"worker 0 waited 0.2 s to enter clock 1.*clocks \[0, 0\]"):
        clock.advance(0, timeout=0.2)
    assert time.monotonic() - start >= 0.2
    # The failed advance was undone: a retry enters the same clock once worker 1 arrives.
    assert clock.clocks() == (0, 0)
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(clock.advance(1, timeout=5)))
    t.start()
    assert clock.advance(0, timeout=5) == 1
    t.join(5)
    assert result == [1]


def test_finish_releases_waiters():
    clock = ClockTable(2, staleness=0)
    admitted: list[int] = []
    waiter = threading.Thread(target=lambda: admitted.append(clock.advance(0, timeout=10)))
    waiter.start()
    # Worker 0 is blocked until worker 1 advances or leaves; it leaves.
    clock.finish(1)
    waiter.join(10)
    assert admitted == [1]
    clock.finish(1)  # idempotent


def test_validation():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="num_workers"):
            ClockTable(bad, 0)
    for bad in (-1, 0.5, True):
        with pytest.raises(ValueError, match="staleness"):
            ClockTable(2, bad)
    clock = ClockTable(2, 1)
    for bad in (-1, 2, 0.0, True):
        with pytest.raises(ValueError, match=r"worker id must be an integer in \[0, 2\)"):
            clock.advance(bad, timeout=1)
        with pytest.raises(ValueError, match="worker id"):
            clock.finish(bad)
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="timeout"):
            clock.advance(0, timeout=bad)
    clock.finish(0)
    with pytest.raises(ValueError, match="worker 0 has finished"):
        clock.advance(0, timeout=1)
    assert clock.clocks() == (0, 0)
