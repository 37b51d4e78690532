"""``spark.ps.serversPerExecutor`` in local mode: several sidecars per executor, or none."""

from __future__ import annotations

import psutil
from sparkkit import start_ps_session

from spark_ps.spark.registry import expected_server_count, read_registry, wait_for_servers


def test_two_sidecars_per_executor_get_distinct_indices_and_ports():
    spark = start_ps_session("local[1]", "spark-ps-two-per-executor", servers_per_executor=2)
    try:
        assert expected_server_count(spark) == 2
        servers = wait_for_servers(spark, timeout=60)
        assert [(s.executor_id, s.index) for s in servers] == [("driver", 0), ("driver", 1)]
        assert len({s.port for s in servers}) == 2
        sidecars = [psutil.Process(s.pid) for s in servers]
        assert sidecars[0].ppid() == sidecars[1].ppid()  # both children of the one (driver) JVM
    finally:
        spark.stop()
    _, alive = psutil.wait_procs(sidecars, timeout=30)
    assert not alive


def test_zero_servers_per_executor_starts_no_sidecar():
    spark = start_ps_session("local[1]", "spark-ps-no-sidecars", servers_per_executor=0)
    try:
        assert expected_server_count(spark) == 0
        assert wait_for_servers(spark, timeout=5) == []
        assert read_registry(spark) == []
    finally:
        spark.stop()
