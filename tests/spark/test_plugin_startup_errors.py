"""A sidecar that cannot start fails the executor (here: the local SparkContext) with a clear message."""

from __future__ import annotations

import stat
import sys

import psutil
import pytest
from py4j.protocol import Py4JJavaError
from pyspark import SparkContext
from sparkkit import start_ps_session

#: A local executor whose plugin failed in its constructor is never stopped, and its heartbeat thread runs
#: on against the stopped context; after spark.executor.heartbeat.maxFailures (60) heartbeats (10 minutes)
#: it calls System.exit, taking down the JVM that later sessions of the test run share (seen in make test:
#: "Executor: Exit as unable to send heartbeats to driver more than 60 times", ten minutes after this test).
#: That thread reads this session's conf: it never gives up, and so never exits the JVM.
LEAKED_HEARTBEAT_CONF = {"spark.executor.heartbeat.maxFailures": str(2**31 - 1)}


def _start_expecting_failure(**ps_options) -> str:
    with pytest.raises(Py4JJavaError) as info:
        start_ps_session("local[1]", "spark-ps-startup-error", LEAKED_HEARTBEAT_CONF, **ps_options).stop()
    # PySpark stops a context whose start failed, so the next test can start one.
    assert SparkContext._active_spark_context is None
    return str(info.value)


def test_a_python_that_exits_at_once_is_reported_with_its_exit_code():
    message = _start_expecting_failure(python="/bin/false")
    assert "could not start the sidecars of executor driver with python '/bin/false'" in message
    assert "exited with code 1 before the handshake" in message


def test_a_sidecar_that_never_prints_the_handshake_times_out_and_is_killed(tmp_path):
    pid_file = tmp_path / "pid"
    silent = tmp_path / "silent-python"
    # Records its pid, then reads stdin (the secret) until EOF and never prints the handshake.
    silent.write_text(f'#!/bin/sh\necho $$ > "{pid_file}"\n'
                      f'exec "{sys.executable}" -c "import sys; sys.stdin.buffer.read()"\n')
    silent.chmod(silent.stat().st_mode | stat.S_IXUSR)

    message = _start_expecting_failure(python=str(silent), startup_timeout=1)
    assert "did not print 'SPARK_PS_READY port=<port> pid=<pid>' within 1000 ms" in message
    assert str(silent) in message
    pid = int(pid_file.read_text())
    if psutil.pid_exists(pid):
        _, alive = psutil.wait_procs([psutil.Process(pid)], timeout=30)
        assert not alive, "the plugin left a sidecar that missed its deadline running"
