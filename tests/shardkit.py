"""Shard servers on loopback for the fast tests: in-process (import the `shards` fixture) or a real sidecar."""

from __future__ import annotations

import os
import resource
import selectors
import socket
import subprocess
import sys
import threading

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

from spark_ps.server.tcp import ShardServer

SECRET = b"test-secret-0123456789"


class ShardCluster:
    """A few shard servers on 127.0.0.1, each served by a background thread."""

    def __init__(self, n: int, **server_options):
        self.servers = [ShardServer(SECRET, host="127.0.0.1", **server_options) for _ in range(n)]
        self.threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in self.servers]
        for t in self.threads:
            t.start()

    @property
    def addresses(self):
        return [s.address for s in self.servers]

    def close(self):
        for s in self.servers:
            s.shutdown()
        for t in self.threads:
            t.join(timeout=10)
            assert not t.is_alive(), "accept loop did not stop"


@pytest.fixture
def shards():
    """Factory: ``shards(n, **options)`` starts n servers, stopped after the test."""
    made = []

    def make(n=2, **options):
        cluster = ShardCluster(n, **options)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.close()


class Sidecar:
    """A real ``python -m spark_ps.server.sidecar`` process on 127.0.0.1, its stderr lines collected.

    ``conf`` are ``spark.ps.*=value`` pairs passed as ``--conf``; ``nofile``
    sets its open-file limit (soft and hard) before it starts.
    """

    def __init__(self, *conf: str, nofile: int | None = None, secret: bytes = SECRET, ready_within: float = 60.0):
        def limit_files():
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        args = [a for pair in conf for a in ("--conf", pair)]
        self.proc = subprocess.Popen([sys.executable, "-m", "spark_ps.server.sidecar", "--host", "127.0.0.1", *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     preexec_fn=limit_files if nofile else None)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._collector = threading.Thread(target=self._collect_stderr, daemon=True)
        self._collector.start()
        self.proc.stdin.write(secret.hex().encode() + b"\n")
        self.proc.stdin.flush()
        ready = selectors.DefaultSelector()
        ready.register(self.proc.stdout, selectors.EVENT_READ)
        if not ready.select(ready_within):
            self.close()
            raise AssertionError(f"sidecar not ready within {ready_within} s; stderr: {self.lines}")
        line = self.proc.stdout.readline().decode()
        if not line.startswith("SPARK_PS_READY"):
            self.close()
            raise AssertionError(f"sidecar printed {line!r}, exit code {self.proc.poll()}; stderr: {self.lines}")
        self.address = ("127.0.0.1", int(line.split()[1].partition("=")[2]))

    def _collect_stderr(self) -> None:
        for raw in self.proc.stderr:
            with self._changed:
                self.lines.append(raw.decode(errors="replace").rstrip())
                self._changed.notify_all()
        with self._changed:  # EOF: the process is exiting; wake anyone waiting for a line
            self._changed.notify_all()

    def wait_for_line(self, text: str, timeout: float) -> str:
        """The first stderr line containing ``text``; AssertionError if the sidecar exits or ``timeout`` passes."""
        def found():
            return next((line for line in self.lines if text in line), None) or self.proc.poll() is not None

        with self._changed:
            self._changed.wait_for(found, timeout)
            line = next((line for line in self.lines if text in line), None)
        assert line is not None, (f"no stderr line with {text!r} within {timeout} s; exit code {self.proc.poll()}; "
                                  f"stderr: {self.lines[-20:]}")
        return line

    def close(self) -> int:
        """Close stdin (the sidecar's signal that its executor is gone) and return its exit code; stderr is all read."""
        self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=20)
        finally:
            self.proc.kill()
            self.proc.wait()
            self._collector.join(timeout=10)


class Relay:
    """A TCP relay on the path between a client and a shard: listens on ``host`` at the shard's own port.

    127.0.0.2 is loopback too, and a shard bound to 127.0.0.1 leaves that
    address's port free, so a client that dials the relay sees the shard's
    port, as it would through an attacker on the network path. Everything the
    client sends is kept in :attr:`to_shard`; :attr:`alter` (one-shot) rewrites
    the next chunk on its way to the shard, :attr:`drop_reply` (one-shot) cuts
    the connection in place of the shard's next reply, :meth:`inject` sends the shard
    bytes of the test's own, and :attr:`shard_closed` is set when the shard
    closes its side.
    """

    def __init__(self, shard_address, host: str = "127.0.0.2", port: int | None = None):
        self.shard_address = tuple(shard_address)
        self.listener = socket.create_server((host, shard_address[1] if port is None else port))
        self.address = self.listener.getsockname()[:2]
        self.to_shard = bytearray()
        self.alter = None
        self.drop_reply = False  # one-shot: cut the connection instead of forwarding the shard's next reply
        self.shard_closed = threading.Event()
        self._connected = threading.Event()
        self._client: socket.socket | None = None
        self._shard: socket.socket | None = None
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:  # one connection at a time: a client that reconnects gets a new upstream
            try:
                self._client, _ = self.listener.accept()
            except OSError:  # closed by close()
                return
            self._shard = socket.create_connection(self.shard_address)
            self._connected.set()
            threading.Thread(target=self._pump, args=(self._client, self._shard, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(self._shard, self._client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, to_shard: bool) -> None:
        while True:
            try:
                chunk = src.recv(1 << 16)
            except OSError:  # closed by close() below
                chunk = b""
            if not chunk:
                if not to_shard:
                    self.shard_closed.set()
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass  # the other side is gone already
                return
            if not to_shard and self.drop_reply:
                self.drop_reply = False
                dst.shutdown(socket.SHUT_RDWR)  # the client sees the connection drop with its request applied
                src.close()
                return
            if to_shard:
                if self.alter is not None:
                    chunk, self.alter = self.alter(chunk), None
                self.to_shard += chunk
            try:
                dst.sendall(chunk)
            except OSError:  # the other side is gone: so is the relay
                return

    def inject(self, data: bytes) -> None:
        """Send ``data`` to the shard as if the client had sent it."""
        assert self._connected.wait(5), "no client connected through the relay"
        self._shard.sendall(data)

    def close(self) -> None:
        for sock in (self.listener, self._client, self._shard):
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the threads blocked on it (close() alone does not)
                except OSError:
                    pass  # not connected, or gone already
                sock.close()
