"""A shard that cannot be knocked over (issue 11, item 2): real sockets against real servers and sidecars.

Timeouts are configured short (1 s) so each test takes a few seconds; every
wait has a deadline and waits on a socket or a condition, never a sleep.
"""

from __future__ import annotations

import logging
import select
import socket
import time

import numpy as np
import pytest
from shardkit import SECRET, Sidecar, shards  # noqa: F401  (fixture)

from spark_ps.client.client import PSClient
from spark_ps.errors import PSConnectionError
from spark_ps.server.guard import RateLimitedLog
from spark_ps.server.settings import ShardSettings
from spark_ps.wire.auth import authenticate_to_server
from spark_ps.wire.protocol import Frame, Op, Status, encode, read_frame, write_frame
from spark_ps.wire.session import Session

TCP_LOG = "spark_ps.server.tcp"


def connect(address, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(address, timeout=timeout)


def logged_in(address) -> tuple[socket.socket, Session]:
    sock = connect(address)
    return sock, authenticate_to_server(sock, SECRET)


def wait_closed(sock: socket.socket, timeout: float) -> float:
    """Seconds until the peer closes ``sock`` (frames it sends first are read and dropped); fails after ``timeout``."""
    start = time.monotonic()
    sock.settimeout(timeout)
    while sock.recv(4096):
        pass
    return time.monotonic() - start


def test_accept_loop_survives_emfile_and_keeps_its_tables():
    """Audit row: 100 connections that never log in, open-file limit 64: accept() hit EMFILE and the sidecar exited 1."""
    sidecar = Sidecar(nofile=64)
    flood: list[socket.socket] = []
    try:
        with PSClient([sidecar.address], SECRET, timeout=10) as client:
            client.create_table("w", optimizer="delta")
            client.push("w", [1, 2, 3], np.array([[1.0], [2.0], [3.0]], np.float32))
        flood = [connect(sidecar.address) for _ in range(100)]  # the listen backlog (128) holds them all
        sidecar.wait_for_line("accept() failed with [Errno 24]", timeout=20)
        assert sidecar.proc.poll() is None, "the sidecar died of EMFILE"
        for sock in flood:
            sock.close()
        with PSClient([sidecar.address], SECRET, timeout=10) as client:
            np.testing.assert_array_equal(client.pull("w", [1, 2, 3]).ravel(), [1.0, 2.0, 3.0])
        assert sidecar.proc.poll() is None
    finally:
        for sock in flood:
            sock.close()
        assert sidecar.close() == 0


def test_connections_past_the_cap_get_an_error_reply_and_a_log_line(shards, caplog):
    cluster = shards(1, settings=ShardSettings(max_connections=2))
    address = cluster.addresses[0]
    (first, first_session), (second, second_session) = logged_in(address), logged_in(address)
    with caplog.at_level(logging.WARNING, logger=TCP_LOG):
        third = connect(address)
        refusal = read_frame(third)
        assert refusal.status == Status.ERROR
        assert "limit of 2 open connections (spark.ps.maxConnections)" in refusal.meta["error"]
        wait_closed(third, timeout=5)  # closed after the reply: by then the line is logged
    assert any("spark.ps.maxConnections" in r.getMessage() for r in caplog.records)
    with pytest.raises(PSConnectionError, match="limit of 2 open connections"), \
            PSClient([address], SECRET, timeout=5) as client:
        client.ping()
    second_session.send(second, Frame(Op.PING))  # the others are untouched
    assert second_session.recv(second).status == Status.OK
    first.sendall(b"garbage, not a frame....")  # the shard drops it, and frees its slot before it closes it
    assert first_session.recv(first).status == Status.ERROR
    wait_closed(first, timeout=5)
    first.close()
    with PSClient([address], SECRET, timeout=5) as client:
        assert client.ping() == [0]
    second.close()


def test_the_handshake_has_one_deadline_not_one_per_recv(shards, caplog):
    """Audit row: 1 header byte every 5 s before login held a connection 35 s and more (10 s per recv)."""
    cluster = shards(1, settings=ShardSettings(handshake_timeout=1.0))
    sock = connect(cluster.addresses[0])
    start = time.monotonic()
    assert read_frame(sock).op == Op.CHALLENGE
    answer = encode(Frame(Op.AUTH, {"mac": "0" * 64}))
    with caplog.at_level(logging.WARNING, logger=TCP_LOG):
        for byte in answer:  # one byte every 0.3 s: each recv is quick, the handshake never ends
            readable, _, _ = select.select([sock], [], [], 0.3)
            if readable or time.monotonic() - start > 5:
                break
            sock.sendall(bytes([byte]))
        reply = read_frame(sock)
        elapsed = time.monotonic() - start
        wait_closed(sock, timeout=5)
    assert reply.status == Status.ERROR
    assert "handshake (limit 1 s, spark.ps.handshakeTimeout) did not finish in time" in reply.meta["error"]
    assert 0.9 <= elapsed < 4.0, elapsed
    assert any("before login" in r.getMessage() and "handshakeTimeout" in r.getMessage() for r in caplog.records)
    sock.close()


def test_a_logged_in_client_stalled_in_a_frame_is_dropped_after_the_idle_timeout(shards):
    """Audit row: a logged-in client that sent half a frame held its connection (no limit after login)."""
    cluster = shards(1, settings=ShardSettings(idle_timeout=1.0))
    sock, _ = logged_in(cluster.addresses[0])
    push = encode(Frame(Op.PUSH, {"table": "w"}, [np.arange(4), np.ones((4, 1), np.float32)]))
    start = time.monotonic()
    sock.sendall(push[: len(push) // 2])
    sock.settimeout(5)
    reply = read_frame(sock)
    elapsed = time.monotonic() - start
    assert reply.status == Status.ERROR
    assert "stalled" in reply.meta["error"] and "spark.ps.idleTimeout" in reply.meta["error"]
    assert 0.9 <= elapsed < 4.0, elapsed
    wait_closed(sock, timeout=5)
    sock.close()


def test_an_idle_logged_in_connection_is_closed_and_a_client_reconnects(shards):
    cluster = shards(1, settings=ShardSettings(idle_timeout=1.0))
    address = cluster.addresses[0]
    with PSClient([address], SECRET, timeout=5) as client:
        client.create_table("w", optimizer="delta")
        client.push("w", [7], np.array([[2.0]], np.float32))
        idle, _ = logged_in(address)
        # No frame at all: closed silently (an unasked-for error frame would be taken for the next reply).
        assert 0.9 <= wait_closed(idle, timeout=5) < 4.0
        idle.close()
        # The client's connection went idle as long: the client sees the close and logs in again.
        assert client.pull("w", [7]).ravel().tolist() == [2.0]
        client.push("w", [7], np.array([[1.0]], np.float32))  # not idempotent: sent on a live connection
        assert client.pull("w", [7]).ravel().tolist() == [3.0]


def test_per_connection_errors_are_logged_at_a_limited_rate(shards, caplog):
    now = [0.0]
    ratelog = RateLimitedLog(logging.getLogger(TCP_LOG), burst=3, interval=60.0, clock=lambda: now[0])
    cluster = shards(1, ratelog=ratelog)
    address = cluster.addresses[0]

    def refused_login() -> None:
        sock = connect(address)
        read_frame(sock)  # the challenge
        write_frame(sock, Frame(Op.AUTH, {"nonce": "0" * 64, "protection": 1, "mac": "0" * 64}))
        assert read_frame(sock).status == Status.ERROR  # every refused peer gets its reply...
        wait_closed(sock, timeout=5)  # ...and the shard has logged (or counted) it before it closes
        sock.close()

    with caplog.at_level(logging.WARNING, logger=TCP_LOG):
        for _ in range(30):
            refused_login()
        assert sum("refused connection" in r.getMessage() for r in caplog.records) == 3
        now[0] = 61.0
        refused_login()
    messages = [r.getMessage() for r in caplog.records]
    assert "suppressed 27 similar 'login' lines in the last 60 s" in messages
    assert sum("refused connection" in m for m in messages) == 4
