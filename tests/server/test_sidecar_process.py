"""The real sidecar process: handshake line, secret on stdin, dies with its parent."""

from __future__ import annotations

import ctypes
import os
import platform
import selectors
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from spark_ps.client.client import PSClient
from spark_ps.server.sidecar import HEARTBEAT_LINE, READY_PREFIX, TICK_SECONDS

SECRET = os.urandom(16)


def start_sidecar(secret: bytes | None = SECRET):
    proc = subprocess.Popen([sys.executable, "-m", "spark_ps.server.sidecar", "--host", "127.0.0.1"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    if secret is not None:
        proc.stdin.write(secret.hex().encode() + b"\n")
        proc.stdin.flush()
    return proc


def read_ready_line(proc, deadline: float = 60.0) -> dict[str, int]:
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    assert sel.select(deadline), "sidecar did not report ready in time"
    line = proc.stdout.readline().decode()
    assert line.startswith(READY_PREFIX), line
    return {k: int(v) for k, v in (part.split("=") for part in line.split()[1:])}


def test_sidecar_serves_then_exits_on_stdin_eof():
    proc = start_sidecar()
    try:
        ready = read_ready_line(proc)
        assert ready["pid"] == proc.pid and ready["port"] > 0
        with PSClient([("127.0.0.1", ready["port"])], SECRET) as client:
            client.create_table("w", optimizer="sgd", hyper={"lr": 0.5})
            client.push("w", [10, 20], np.ones((2, 1), np.float32))
            np.testing.assert_array_equal(client.pull("w", [20, 10]).ravel(), [-0.5, -0.5])
        proc.stdin.close()  # what the kernel does when the executor JVM dies
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()


def test_a_ready_sidecar_beats_once_a_second_and_a_stopped_one_does_not():
    proc = start_sidecar()
    try:
        read_ready_line(proc)
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        start = time.monotonic()
        for _ in range(2):
            assert sel.select(3 * TICK_SECONDS), "no heartbeat"
            assert proc.stdout.readline().decode().strip() == HEARTBEAT_LINE
        assert time.monotonic() - start < 3 * TICK_SECONDS
        proc.send_signal(signal.SIGSTOP)  # what the plugin's watchdog sees: silence
        while sel.select(0.1):  # a beat written just before the stop
            proc.stdout.readline()
        assert not sel.select(2 * TICK_SECONDS), "a stopped sidecar kept beating"
        proc.send_signal(signal.SIGCONT)
        assert sel.select(3 * TICK_SECONDS) and proc.stdout.readline().decode().strip() == HEARTBEAT_LINE
    finally:
        proc.kill()
        proc.wait(timeout=20)


def test_sidecar_stops_on_sigterm():
    proc = start_sidecar()
    try:
        read_ready_line(proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()


TGKILL = {"x86_64": 234, "aarch64": 131}.get(platform.machine())


@pytest.mark.skipif(TGKILL is None, reason="tgkill's syscall number is known here for x86_64 and aarch64 only")
def test_sidecar_stops_on_sigterm_taken_by_another_thread():
    # The kernel may hand a process-wide SIGTERM to any thread; tgkill makes it
    # pick one that is not the main thread. A handler that stopped the server
    # from the main thread never ran: the main thread stayed in accept().
    proc = start_sidecar()
    try:
        read_ready_line(proc)
        threads = [int(tid) for tid in os.listdir(f"/proc/{proc.pid}/task") if int(tid) != proc.pid]
        assert threads, "the sidecar runs a thread besides its main thread"
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.syscall(TGKILL, proc.pid, threads[0], signal.SIGTERM) == 0, os.strerror(ctypes.get_errno())
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()


def test_sidecar_without_secret_refuses_to_start():
    proc = start_sidecar(secret=None)
    proc.stdin.close()
    assert proc.wait(timeout=30) == 2
    assert proc.stdout.read() == b""  # never claimed to be ready


def test_secret_is_not_in_argv():
    proc = start_sidecar()
    try:
        read_ready_line(proc)
        with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
            assert SECRET.hex().encode() not in f.read()
    finally:
        proc.kill()
        proc.wait(timeout=20)


@pytest.mark.parametrize("wrong", [b"nope", b""])
def test_client_with_wrong_secret_is_refused(wrong):
    from spark_ps.errors import AuthenticationError
    proc = start_sidecar()
    try:
        port = read_ready_line(proc)["port"]
        with pytest.raises((AuthenticationError, ValueError)):
            PSClient([("127.0.0.1", port)], wrong).pull("w", [1])
    finally:
        proc.kill()
        proc.wait(timeout=20)
