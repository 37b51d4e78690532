"""TCP front end of a shard: accept, authenticate, serve frames.

One thread per connection. Tasks keep one long-lived connection per shard, so
the thread count follows the number of concurrently running tasks, and the
heavy lifting (numba kernels, numpy, socket I/O) releases the GIL.

A malformed frame cannot desynchronise anything but its own connection: the
shard answers with an error frame where the stream is still intact, and
closes the connection where it is not. Tables are only ever touched by a
fully received, validated request.
"""

from __future__ import annotations

import logging
import socket
import threading

from spark_ps.errors import AuthenticationError, ProtocolError
from spark_ps.server.shard import Shard
from spark_ps.wire.auth import authenticate_client
from spark_ps.wire.protocol import DEFAULT_MAX_FRAME_BYTES, error_frame, read_frame, write_frame

log = logging.getLogger(__name__)

#: A connection must finish the handshake within this many seconds, so idle
#: unauthenticated sockets cannot pin threads.
HANDSHAKE_TIMEOUT = 10.0


class ShardServer:
    """Serve one :class:`~spark_ps.server.shard.Shard` over TCP.

    Binds port 0 by default and reports the real port in :attr:`address`.
    Use as a context manager; :meth:`shutdown` is idempotent.

    Examples
    --------
    >>> import threading
    >>> with ShardServer(b"secret", host="127.0.0.1") as server:
    ...     t = threading.Thread(target=server.serve_forever, daemon=True)
    ...     t.start()
    ...     server.address[1] > 0
    True
    """

    def __init__(self, secret: bytes, host: str = "127.0.0.1", port: int = 0,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, shard: Shard | None = None):
        if not secret:
            raise ValueError("a shard server needs a non-empty secret")
        self.secret = secret
        self.max_frame_bytes = max_frame_bytes
        self.shard = shard if shard is not None else Shard()
        self._listener = socket.create_server((host, port))
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()

    def __enter__(self) -> ShardServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.shutdown()

    def serve_forever(self) -> None:
        """Accept connections until :meth:`shutdown`; each gets its own thread.

        Examples
        --------
        >>> import threading
        >>> server = ShardServer(b"k")
        >>> serving = threading.Thread(target=server.serve_forever); serving.start()
        >>> server.shutdown(); serving.join(timeout=10); serving.is_alive()
        False
        """
        while not self._closed.is_set():
            try:
                conn, peer = self._listener.accept()
            except OSError:
                if self._closed.is_set():
                    return
                raise
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._connections.add(conn)
            threading.Thread(target=self._serve_connection, args=(conn, peer),
                             name=f"ps-conn-{peer[1]}", daemon=True).start()

    def serve_in_background(self) -> ShardServer:
        """Run :meth:`serve_forever` on a daemon thread of this process; return ``self``.

        For tests and examples: a sidecar serves from its main thread.

        Examples
        --------
        >>> from spark_ps.client.client import PSClient
        >>> with ShardServer(b"k").serve_in_background() as server, PSClient([server.address], b"k") as client:
        ...     client.ping()
        [0]
        """
        threading.Thread(target=self.serve_forever, name=f"ps-serve-{self.address[1]}", daemon=True).start()
        return self

    def shutdown(self) -> None:
        """Stop accepting and close every connection. Safe to call twice.

        Examples
        --------
        >>> server = ShardServer(b"k").serve_in_background()
        >>> server.shutdown(); server.shutdown()
        """
        if self._closed.is_set():
            return
        self._closed.set()
        # shutdown() (not just close()) is what wakes a thread blocked in accept().
        for sock in [self._listener, *self._snapshot_connections()]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already disconnected: nothing left to wake up
            sock.close()

    def _snapshot_connections(self) -> list[socket.socket]:
        with self._lock:
            return list(self._connections)

    def _serve_connection(self, conn: socket.socket, peer) -> None:
        try:
            conn.settimeout(HANDSHAKE_TIMEOUT)
            authenticate_client(conn, self.secret)
            conn.settimeout(None)
            self._request_loop(conn)
        except AuthenticationError as exc:
            log.warning("refused connection from %s: %s", peer, exc)
        except (TimeoutError, ProtocolError) as exc:
            log.warning("dropping connection from %s: %s", peer, exc)
            self._try_send_error(conn, exc)
        except (EOFError, ConnectionError, OSError) as exc:
            log.debug("connection from %s ended: %s", peer, exc)
        finally:
            with self._lock:
                self._connections.discard(conn)
            conn.close()

    def _request_loop(self, conn: socket.socket) -> None:
        while True:
            req = read_frame(conn, self.max_frame_bytes)
            try:
                for reply in self.shard.handle(req):
                    reply.request_id = req.request_id
                    write_frame(conn, reply)
            except (ValueError, KeyError, TypeError, TimeoutError, ProtocolError) as exc:
                # Request-level failures leave the stream in sync: report and go on.
                write_frame(conn, error_frame(req.op, exc, req.request_id))
            except Exception as exc:
                log.exception("internal error serving %s", req.op.name)
                write_frame(conn, error_frame(req.op, exc, req.request_id))

    @staticmethod
    def _try_send_error(conn: socket.socket, exc: BaseException) -> None:
        try:
            write_frame(conn, error_frame(0, exc))
        except OSError:
            pass  # the peer is gone; the close that follows is all we can do
