"""Sidecars never outlive their executor: not after SIGKILL, not after ``spark.stop()``.

Destructive, so this module has an application of its own (``own_cluster_spark``,
which stops the shared session first); the tests run in file order (the kill
first, then the stop that ends the session).
"""

from __future__ import annotations

import signal
import threading
import time

import psutil
import pytest
from clusterkit import CLUSTER_EXECUTORS, executor_logs

from spark_ps.spark.registry import read_registry

pytestmark = pytest.mark.cluster

EXIT_DEADLINE = 30.0


def _wait_until(predicate, timeout: float, interval: float = 0.2):
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        pause.wait(min(interval, max(0.0, deadline - time.monotonic())))


def test_sigkill_of_an_executor_jvm_ends_its_sidecar(own_cluster_spark):
    servers = read_registry(own_cluster_spark)
    assert len(servers) == CLUSTER_EXECUTORS
    victim = servers[0]
    sidecar = psutil.Process(victim.pid)
    executor = psutil.Process(sidecar.ppid())
    survivor = psutil.Process(servers[1].pid)

    executor.send_signal(signal.SIGKILL)
    _, alive = psutil.wait_procs([sidecar], timeout=EXIT_DEADLINE)
    assert not alive, (f"sidecar {victim} outlived its SIGKILLed executor by {EXIT_DEADLINE} s\n"
                       + executor_logs(own_cluster_spark))
    assert survivor.is_running(), "the other executor's sidecar must be unaffected"

    # The driver drops the dead executor's shard once Spark notices the loss.
    def dead_one_dropped():
        return all(s.executor_id != victim.executor_id for s in read_registry(own_cluster_spark))

    assert _wait_until(dead_one_dropped, EXIT_DEADLINE), read_registry(own_cluster_spark)


def test_spark_stop_leaves_no_sidecar_running(own_cluster_spark):
    # The standalone worker may have replaced the executor killed above; wait for
    # its sidecar too, so the check below also covers a replacement.
    def full_registry():
        servers = read_registry(own_cluster_spark)
        return servers if len(servers) >= CLUSTER_EXECUTORS else None

    servers = _wait_until(full_registry, EXIT_DEADLINE) or read_registry(own_cluster_spark)
    sidecars = [psutil.Process(s.pid) for s in servers]
    assert sidecars

    own_cluster_spark.stop()
    _, alive = psutil.wait_procs(sidecars, timeout=EXIT_DEADLINE)
    assert not alive, f"sidecars still running {EXIT_DEADLINE} s after spark.stop(): {alive}"
