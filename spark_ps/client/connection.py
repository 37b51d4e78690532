"""One authenticated, reconnect-once connection to one shard.

Each (re)connection logs in afresh (``wire/auth.py``: both ends prove the
application secret) and every frame then goes through that login's
:class:`~spark_ps.wire.session.Session`: a shard that cannot prove the secret
gets no request, and a frame altered on the way is refused.

Resends: a request whose connection broke is sent again on a new one when
that cannot apply it twice (every request is now, pushes and clock ticks by
their request ids), up to ``resends`` times (``spark.ps.client.resends``,
default 1, as before). One is enough for the rare connection a network or an
idle timeout drops; with injected faults (``spark.ps.client.faults.*``,
``wire/faults.py``) a request fails each attempt with the probability of a
fault on its request or its reply (~10% at 5% drops), so a test of a fit
under faults sets more (10 resends: ~1e-11 per request). A timeout is a
failed attempt like any other: a shard that does not answer costs
``resends + 1`` timeouts before the error.
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterator

from spark_ps.errors import AuthenticationError, ProtocolError, PSConnectionError, remote_error
from spark_ps.wire.auth import authenticate_to_server
from spark_ps.wire.faults import CutSocket, Fault, FaultInjector
from spark_ps.wire.protocol import DEFAULT_MAX_FRAME_BYTES, Frame, Status
from spark_ps.wire.session import Protection, Session


def _unusable(sock: socket.socket) -> bool:
    """True if ``sock`` is readable between requests: the peer closed it, or sent a frame no one asked for.

    Checked before each request so that a connection the shard dropped while
    idle is replaced *before* a non-idempotent push is sent on it. A frame
    that arrives unasked is the error a shard sends as it drops a connection
    (say, after a frame injected on the path failed its tag): read as the
    reply to the next request, it would be taken for that request's answer.
    """
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


class ShardConnection:
    """A lazily opened connection to ``host:port``, safe to share between threads.

    A request that fails because the connection dropped is sent again on a
    fresh connection, up to ``resends`` times, when that cannot apply it
    twice: always for idempotent requests (pull, describe, pushes and ticks
    with request ids), and for the others only if the failure happened before
    the request was completely sent. The last failure raises
    :class:`~spark_ps.errors.PSConnectionError` naming the shard.

    Parameters
    ----------
    host, port : str, int
        The shard's address.
    secret : bytes
        The per-application secret the shard challenges for.
    timeout : float
        Socket timeout in seconds (connect and each request).
    max_frame_bytes : int
        Largest reply accepted.
    protection : Protection
        The least protection this end accepts for its frames (the shard may ask for more).
    resends : int
        Times a request is sent again after its connection broke (``spark.ps.client.resends``).
    faults : FaultInjector, optional
        Faults to inject into this connection's requests and replies (``spark.ps.client.faults.*``).

    Examples
    --------
    >>> from spark_ps.server.tcp import ShardServer
    >>> from spark_ps.wire.protocol import Frame, Op
    >>> server = ShardServer(b"k").serve_in_background()
    >>> ShardConnection(*server.address, b"k").request(Frame(Op.PING), idempotent=True).meta
    {'tables': 0}
    >>> ShardConnection(*server.address, b"wrong").request(Frame(Op.PING), idempotent=True)
    Traceback (most recent call last):
    ...
    spark_ps.errors.AuthenticationError: authentication failed: wrong or missing spark-ps application secret
    >>> server.shutdown()
    """

    def __init__(self, host: str, port: int, secret: bytes, timeout: float = 120.0,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, protection: Protection = Protection.MAC,
                 resends: int = 1, faults: FaultInjector | None = None):
        if isinstance(resends, bool) or not isinstance(resends, int) or resends < 0:
            raise ValueError(f"spark.ps.client.resends must be an integer >= 0, got {resends!r}")
        self.host, self.port = host, port
        self.name = f"{host}:{port}"
        self._secret = secret
        self._timeout = timeout
        self._max_frame_bytes = max_frame_bytes
        self._protection = Protection(protection)
        self._resends = resends
        self._faults = faults
        self._sock: socket.socket | None = None
        self._session: Session | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the socket, if open; the next request opens a new one.

        Examples
        --------
        >>> from spark_ps.server.tcp import ShardServer
        >>> from spark_ps.wire.protocol import Frame, Op
        >>> with ShardServer(b"k").serve_in_background() as server:
        ...     conn = ShardConnection(*server.address, b"k"); conn.close()
        ...     conn.request(Frame(Op.PING), idempotent=True).status; conn.close(); conn.close()
        <Status.OK: 0>
        """
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self._session = None

    def _connected(self) -> tuple[socket.socket, Session]:
        if self._sock is not None and _unusable(self._sock):
            self._drop()
        if self._sock is None:
            sock = socket.create_connection((self.host, self.port), timeout=self._timeout)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                session = authenticate_to_server(sock, self._secret, port=self.port, protection=self._protection)
            except BaseException:
                sock.close()
                raise
            self._sock, self._session = sock, session
        return self._sock, self._session

    def _check(self, reply: Frame) -> Frame:
        if reply.status != Status.OK:
            raise remote_error(str(reply.meta.get("kind", "RemoteError")),
                               str(reply.meta.get("error", "unknown error")), self.name)
        return reply

    def request(self, frame: Frame, *, idempotent: bool, timeout: float | None = None) -> Frame:
        """Send ``frame`` and return the reply; raise the shard's error if it failed.

        ``idempotent`` says whether the request may be sent again after a
        dropped connection; ``timeout`` overrides the socket timeout for a
        request that may block on the shard (a clock).

        Examples
        --------
        >>> from spark_ps.server.tcp import ShardServer
        >>> from spark_ps.wire.protocol import Frame, Op
        >>> server = ShardServer(b"k").serve_in_background(); conn = ShardConnection(*server.address, b"k")
        >>> conn.request(Frame(Op.LIST_TABLES), idempotent=True).meta
        {'tables': []}
        >>> conn.request(Frame(Op.DESCRIBE_TABLE, {"table": "nope"}), idempotent=True)
        Traceback (most recent call last):
        ...
        spark_ps.errors.RemoteKeyError: unknown table 'nope' (tables on this shard: none) [shard 127.0.0.1:...]
        >>> conn.close(); server.shutdown()
        """
        attempts = 1 + self._resends
        with self._lock:
            for attempt in range(1, attempts + 1):
                sent = False
                try:
                    sock, session = self._connected()
                    sock.settimeout(timeout or self._timeout)
                    if self._faults is None:
                        session.send(sock, frame)
                        sent = True
                        reply = session.recv(sock, self._max_frame_bytes)
                    else:
                        sent = self._send_with_faults(sock, session, frame)
                        reply = session.recv(sock, self._max_frame_bytes)
                        self._receive_with_faults(frame)
                except AuthenticationError:
                    self._drop()
                    raise
                except (OSError, EOFError, ProtocolError) as exc:
                    self._drop()
                    if attempt < attempts and (idempotent or not sent):
                        continue
                    state = "after sending it (it may have been applied)" if sent else "before sending it"
                    raise PSConnectionError(
                        f"shard {self.name}: {frame.op.name} failed {state}, "
                        f"after {attempt} attempt(s): {exc!r}") from exc
                return self._check(reply)
        raise AssertionError("unreachable")

    def _send_with_faults(self, sock: socket.socket, session: Session, frame: Frame) -> bool:
        """Send ``frame`` unless a drawn fault drops or cuts it (then raise); True once it is sent in full."""
        fault = self._faults.draw()
        if fault is Fault.DROP:
            raise ConnectionResetError(f"injected fault (drop, spark.ps.client.faults.*): {frame.op.name} request "
                                       "dropped before it was sent")
        if fault is Fault.CUT:
            session.send(CutSocket(sock), frame)  # type: ignore[arg-type]  # raises once half is sent
        if fault is Fault.DELAY:
            self._faults.delay()
        session.send(sock, frame)
        return True

    def _receive_with_faults(self, frame: Frame) -> None:
        """Raise if a drawn fault drops the reply just read (the shard served the request); delay it if drawn."""
        fault = self._faults.draw()
        if fault in (Fault.DROP, Fault.CUT):  # a cut of a reply read in full is a drop
            raise ConnectionResetError(f"injected fault ({fault.value}, spark.ps.client.faults.*): the "
                                       f"{frame.op.name} reply was lost after the shard served the request")
        if fault is Fault.DELAY:
            self._faults.delay()

    def stream(self, frame: Frame) -> Iterator[Frame]:
        """Send ``frame`` and yield reply frames until one has ``more: false`` (an export).

        Examples
        --------
        >>> import numpy as np
        >>> from spark_ps.server.tcp import ShardServer
        >>> from spark_ps.wire.protocol import Frame, Op
        >>> from spark_ps.wire.spec import TableSpec
        >>> with ShardServer(b"k").serve_in_background() as server:
        ...     conn = ShardConnection(*server.address, b"k")
        ...     _ = conn.request(Frame(Op.CREATE_TABLE, TableSpec("w", width=1).to_meta()), idempotent=True)
        ...     _ = conn.request(Frame(Op.PUSH, {"table": "w"}, [np.arange(3), np.ones((3, 1), np.float32)]),
        ...                      idempotent=False)
        ...     [frame.meta for frame in conn.stream(Frame(Op.EXPORT, {"table": "w", "max_rows": 2}))]
        [{'more': True}, {'more': True}]
        """
        with self._lock:
            try:
                sock, session = self._connected()
                sock.settimeout(self._timeout)
                session.send(sock, frame)
                while True:
                    reply = self._check(session.recv(sock, self._max_frame_bytes))
                    if not reply.meta.get("more", False):
                        return
                    yield reply
            except (OSError, EOFError, ProtocolError) as exc:
                self._drop()
                raise PSConnectionError(f"shard {self.name}: {frame.op.name} stream broke: {exc!r}") from exc
            except GeneratorExit:
                # The caller stopped early: the rest of the stream is still in
                # flight, so this connection is out of sync. Start afresh next time.
                self._drop()
                raise
