"""The executor plugin on a real local-cluster: one sidecar per executor JVM, all registered."""

from __future__ import annotations

import psutil
import pytest
from clusterkit import CLUSTER_EXECUTORS, executor_jvms

from spark_ps.spark.registry import app_secret, expected_server_count, read_registry

pytestmark = pytest.mark.cluster


def test_each_executor_jvm_is_the_parent_of_its_own_sidecar(cluster_spark):
    servers = read_registry(cluster_spark)
    assert len(servers) == CLUSTER_EXECUTORS
    executors = {p.pid: p for p in executor_jvms()}
    parents = []
    for server in servers:
        sidecar = psutil.Process(server.pid)
        assert sidecar.is_running() and sidecar.status() != psutil.STATUS_ZOMBIE
        cmdline = sidecar.cmdline()
        assert cmdline[cmdline.index("--executor-id") + 1] == server.executor_id
        assert sidecar.ppid() in executors, f"sidecar {server} is not a child of an executor JVM"
        parents.append(sidecar.ppid())
    assert len(set(parents)) == CLUSTER_EXECUTORS, "two sidecars share one executor JVM"
    assert all(psutil.pid_exists(pid) for pid in parents)


def test_driver_registry_lists_one_sidecar_per_executor(cluster_spark):
    servers = read_registry(cluster_spark)
    assert expected_server_count(cluster_spark) == CLUSTER_EXECUTORS
    assert [s.executor_id for s in servers] == ["0", "1"]  # sorted, numeric ids
    assert all(s.host == "127.0.0.1" and s.index == 0 and s.port > 0 for s in servers), servers
    assert len({(s.host, s.port) for s in servers}) == CLUSTER_EXECUTORS
    assert len(app_secret(cluster_spark)) == 32


def test_sidecar_command_line_does_not_carry_the_secret(cluster_spark):
    secret_hex = app_secret(cluster_spark).hex()
    for server in read_registry(cluster_spark):
        assert secret_hex not in " ".join(psutil.Process(server.pid).cmdline())
