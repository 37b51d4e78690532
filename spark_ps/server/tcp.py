"""TCP front end of a shard: accept, authenticate, serve frames.

One thread per connection. Tasks keep one long-lived connection per shard, so
the thread count follows the number of concurrently running tasks, and the
heavy lifting (numba kernels, numpy, socket I/O) releases the GIL.

A malformed frame cannot desynchronise anything but its own connection: the
shard answers with an error frame where the stream is still intact, and
closes the connection where it is not. Tables are only ever touched by a
fully received, validated request.

No peer can knock the shard over (issue 11, item 2); the limits are
:class:`~spark_ps.server.settings.ShardSettings`:

* The accept loop survives every error that concerns one connection or a
  passing shortage. Out of descriptors (EMFILE, ENFILE) or memory (ENOBUFS,
  ENOMEM) it logs and waits, 10 ms doubling to 1 s, on the stop event, so a
  shutdown still ends it at once; a connection aborted before ``accept``
  (ECONNABORTED, EPROTO...) is skipped. Only a broken listener (EBADF,
  EINVAL, ENOTSOCK) ends it. It used to treat any error as fatal: 100
  connections that never logged in, with the sidecar's open-file limit at 64,
  made ``accept`` fail with EMFILE and the sidecar exit with code 1, its
  tables gone. A waiting connection stays in the listen backlog and is served
  once descriptors are free again (the handshake deadline frees them), rather
  than being closed by the "spare descriptor" trick.
* At most ``max_connections`` connections: one more gets an error reply
  naming the limit and is closed by the accept loop itself, without a thread.
* The handshake has one deadline for all its reads and writes
  (:class:`~spark_ps.server.guard.DeadlineSocket`), not a timeout per ``recv``.
* A logged-in connection is closed after ``idle_timeout`` without a request
  (silently: the client sees the close before its next request and
  reconnects), and dropped with an error reply if a request stalls that long
  half-sent. Telling the two apart costs one ``recv(1, MSG_PEEK)`` per request;
  the timeouts are the kernel's (SO_RCVTIMEO, SO_SNDTIMEO: see
  :func:`_kernel_timeouts` for what ``settimeout`` cost instead).
* A reply larger than ``max_reply_bytes`` becomes an error reply (the shard
  refuses oversized pulls before computing them; this is the backstop).
* Every error before login gets an error reply where the stream allows one, and
  a log line; per-connection log lines are rate-limited per kind
  (:class:`~spark_ps.server.guard.RateLimitedLog`).

Fault injection (``spark.ps.faults.*``, off by default; ``wire/faults.py``):
one draw per request received (a drop or a cut closes the connection
before the request is served) and one per reply (a drop closes it after
the request was served, a cut after half the reply); a delay holds the
message. Export streams are not faulted.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
import threading
import time

from spark_ps.errors import AuthenticationError, MemoryBudgetError, ProtocolError
from spark_ps.server.guard import DeadlineSocket, RateLimitedLog
from spark_ps.server.settings import KEYS, ShardSettings
from spark_ps.server.shard import Shard
from spark_ps.wire.auth import authenticate_client
from spark_ps.wire.faults import CutSocket, Fault, injector
from spark_ps.wire.protocol import DEFAULT_MAX_FRAME_BYTES, Frame, Op, error_frame, write_frame
from spark_ps.wire.session import Protection, Session

log = logging.getLogger(__name__)

#: ``accept`` errors of a passing shortage: wait, then try again.
SHORTAGE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: ``accept`` errors that mean the listener itself is unusable: the loop ends.
FATAL_ERRNOS = frozenset({errno.EBADF, errno.EINVAL, errno.ENOTSOCK, errno.EOPNOTSUPP})
ACCEPT_BACKOFF_MIN = 0.01
ACCEPT_BACKOFF_MAX = 1.0
#: How long the shard tries to deliver an error reply to a peer it is dropping.
ERROR_SEND_TIMEOUT = 1.0


def _kernel_timeouts(conn: socket.socket, seconds: float) -> None:
    """Blocking mode plus SO_RCVTIMEO/SO_SNDTIMEO: a call that waits that long fails with EAGAIN (BlockingIOError).

    Not ``settimeout``: Python then polls before every call. Loopback pings
    from a client in the same process (best of 5 x 3,000, a loaded 2-core
    host): 68-70 us with ``settimeout`` against 42-47 us for the code before
    any timeout, in two runs; with these socket options (and the peek per
    request), 44.0 us against 44.7 us in the quietest run. Other runs were too
    noisy to tell any of them apart.
    """
    conn.settimeout(None)
    whole = int(seconds)
    timeval = struct.pack("@ll", whole, int((seconds - whole) * 1e6))
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)


class _ReplyNotSent(OSError):
    """A reply could not be written (peer gone, or not reading for the idle timeout)."""


class _InjectedFault(OSError):
    """A fault that ``spark.ps.faults.*`` injected: the connection is closed on purpose."""


def _send_reply(conn: socket.socket, session: Session, reply: Frame) -> None:
    try:
        session.send(conn, reply)
    except OSError as exc:
        raise _ReplyNotSent(f"could not send the {reply.op.name} reply: {exc}") from exc


class ShardServer:
    """Serve one :class:`~spark_ps.server.shard.Shard` over TCP.

    Binds port 0 by default and reports the real port in :attr:`address`.
    Use as a context manager; :meth:`shutdown` is idempotent.

    Parameters
    ----------
    secret : bytes
        The application secret clients must prove they know.
    host, port : str, int
        Address to bind; port 0 picks a free one.
    max_frame_bytes : int
        Largest request body accepted.
    shard : Shard, optional
        The state to serve; a new one with ``settings`` by default.
    settings : ShardSettings, optional
        Connection limits and timeouts (and the new shard's bounds); the defaults by default.
    ratelog : RateLimitedLog, optional
        Where per-connection errors are logged; at most 10 lines per kind a minute by default.

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
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, shard: Shard | None = None,
                 settings: ShardSettings | None = None, ratelog: RateLimitedLog | None = None):
        if not secret:
            raise ValueError("a shard server needs a non-empty secret")
        self.secret = secret
        self.max_frame_bytes = max_frame_bytes
        self.settings = settings if settings is not None else ShardSettings()
        self.shard = shard if shard is not None else Shard(self.settings)
        self._log = ratelog if ratelog is not None else RateLimitedLog(log)
        self._listener = socket.create_server((host, port))
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._protection = Protection.of(self.settings.integrity_enabled, self.settings.crypto_enabled)
        self.faults = injector(self.settings.faults, "shard")

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
        backoff = 0.0
        while not self._closed.is_set():
            try:
                conn, peer = self._listener.accept()
            except OSError as exc:
                if self._closed.is_set():
                    return
                if exc.errno in FATAL_ERRNOS:
                    raise
                if exc.errno in SHORTAGE_ERRNOS:
                    backoff = min(max(2 * backoff, ACCEPT_BACKOFF_MIN), ACCEPT_BACKOFF_MAX)
                    self._log.warning("accept", "accept() failed with %s, %d connections open; retrying in %.2f s",
                                      exc, self.connection_count(), backoff)
                    self._closed.wait(backoff)
                else:  # one connection that went wrong before accept() returned it
                    self._log.warning("accept", "accept() failed for one connection, skipped: %s", exc)
                continue
            backoff = 0.0
            self._admit(conn, peer)

    def _admit(self, conn: socket.socket, peer) -> None:
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:  # the peer reset it between accept() and here: nothing to serve
            self._log.warning("accept", "connection from %s failed at once: %s", peer, exc)
            conn.close()
            return
        with self._lock:
            admitted = len(self._connections) < self.settings.max_connections
            if admitted:
                self._connections.add(conn)
        if not admitted:
            limit = self.settings.max_connections
            self._log.warning("refused", "refused connection from %s: %d connections open, the limit (%s)",
                              peer, limit, KEYS["max_connections"])
            self._drop(conn, ConnectionRefusedError(
                f"shard at its limit of {limit} open connections ({KEYS['max_connections']}): connection refused; "
                "try again later"))
            return
        try:
            threading.Thread(target=self._serve_connection, args=(conn, peer),
                             name=f"ps-conn-{peer[1]}", daemon=True).start()
        except RuntimeError as exc:  # "can't start new thread": out of threads or memory, as EMFILE for threads
            self._log.warning("accept", "no thread for connection from %s: %s", peer, exc)
            self._forget(conn)
            self._drop(conn, exc)

    def connection_count(self) -> int:
        """Connections open now, logged in or not.

        Examples
        --------
        >>> with ShardServer(b"k") as server:
        ...     server.connection_count()
        0
        """
        with self._lock:
            return len(self._connections)

    def serve_in_background(self) -> ShardServer:
        """Run :meth:`serve_forever` on a daemon thread of this process; return ``self``.

        A sidecar serves this way too; its main thread waits for a reason to stop.

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

    def _forget(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.discard(conn)

    def _serve_connection(self, conn: socket.socket, peer) -> None:
        session = None
        try:
            session = self._log_in(conn, peer)
            if session is not None:
                self._request_loop(conn, peer, session)
        except _InjectedFault as exc:
            self._log.log(logging.INFO, "fault", "closed connection from %s: %s", peer, exc)
        except _ReplyNotSent as exc:
            self._log.warning("dropped", "dropping connection from %s: %s", peer, exc)
        except OSError as exc:  # reset by the peer, or closed by shutdown(): nothing to tell anyone
            log.debug("connection from %s ended: %s", peer, exc)
        except Exception as exc:
            # The connection thread's last resort: a bug must not end it with no reply
            # and nothing but a traceback on stderr; other connections are unaffected.
            log.exception("internal error on the connection from %s", peer)
            self._try_send_error(conn, exc, session)
        finally:
            self._forget(conn)
            conn.close()

    def _log_in(self, conn: socket.socket, peer) -> Session | None:
        """Run the handshake under its deadline; the session if the peer logged in, else None (it was told why)."""
        limit = self.settings.handshake_timeout
        guarded = DeadlineSocket(conn, time.monotonic() + limit,
                                 f"the handshake (limit {limit:g} s, {KEYS['handshake_timeout']})")
        try:
            return authenticate_client(guarded, self.secret, port=self.address[1],  # type: ignore[arg-type]
                                       protection=self._protection)
        except AuthenticationError as exc:  # the peer has had its error reply from authenticate_client
            self._log.warning("login", "refused connection from %s: %s", peer, exc)
        except (TimeoutError, ProtocolError) as exc:
            self._log.warning("login", "dropped connection from %s before login: %s", peer, exc)
            self._try_send_error(conn, exc)
        except OSError as exc:  # reset by the peer, or closed by shutdown(): no one to reply to
            if not self._closed.is_set():
                self._log.warning("login", "connection from %s broke before login: %s", peer, exc)
        return None

    def _request_loop(self, conn: socket.socket, peer, session: Session) -> None:
        idle = self.settings.idle_timeout
        _kernel_timeouts(conn, idle)  # bounds every recv and send of a logged-in connection
        while True:
            try:
                if not conn.recv(1, socket.MSG_PEEK):
                    return  # the client closed the connection between requests: the normal end
            except BlockingIOError:  # SO_RCVTIMEO ran out
                self._log.log(logging.INFO, "idle", "closed connection from %s: no request for %g s (%s)",
                              peer, idle, KEYS["idle_timeout"])
                return
            try:
                req = session.recv(conn, self.max_frame_bytes)
            except BlockingIOError:  # SO_RCVTIMEO ran out with part of a frame received
                exc = TimeoutError(f"request stalled: no bytes for {idle:g} s in the middle of a frame "
                                   f"({KEYS['idle_timeout']}); connection dropped")
                self._log.warning("dropped", "dropping connection from %s: %s", peer, exc)
                self._try_send_error(conn, exc, session)
                return
            except (ProtocolError, EOFError) as exc:  # incl. IntegrityError: the stream cannot be trusted on
                self._log.warning("dropped", "dropping connection from %s: %s", peer, exc)
                self._try_send_error(conn, exc, session)
                return
            if self.faults is not None and req.op != Op.EXPORT:
                fault = self.faults.draw()
                if fault in (Fault.DROP, Fault.CUT):  # a cut of a frame read in full is a drop
                    raise _InjectedFault(f"injected fault ({fault.value}, spark.ps.faults.*): {req.op.name} request "
                                         "dropped unserved")
                if fault is Fault.DELAY:
                    self.faults.delay()
            self._serve_request(conn, session, req)

    def _serve_request(self, conn: socket.socket, session: Session, req: Frame) -> None:
        try:
            for reply in self.shard.handle(req):
                self._check_reply_size(req, reply)
                reply.request_id = req.request_id
                self._reply(conn, session, req, reply)
        except (_ReplyNotSent, _InjectedFault):
            raise  # the connection is gone, or its peer does not read, or a fault closes it: nothing more goes on it
        except (ValueError, KeyError, TypeError, TimeoutError, ProtocolError, MemoryBudgetError) as exc:
            # Request-level failures leave the stream in sync: report and go on.
            self._reply(conn, session, req, error_frame(req.op, exc, req.request_id))
        except Exception as exc:
            log.exception("internal error serving %s", req.op.name)
            self._reply(conn, session, req, error_frame(req.op, exc, req.request_id))

    def _reply(self, conn: socket.socket, session: Session, req: Frame, reply: Frame) -> None:
        """Send ``reply``, unless an injected fault drops it, cuts it half-way or delays it first."""
        fault = self.faults.draw() if self.faults is not None and req.op != Op.EXPORT else None
        if fault is Fault.DROP:
            raise _InjectedFault(f"injected fault (drop, spark.ps.faults.*): the {req.op.name} reply, after the "
                                 "request was served")
        if fault is Fault.CUT:
            try:
                session.send(CutSocket(conn), reply)  # type: ignore[arg-type]
            except ConnectionResetError as exc:
                raise _InjectedFault(f"{exc} (the {req.op.name} reply, spark.ps.faults.*)") from None
        if fault is Fault.DELAY:
            self.faults.delay()
        _send_reply(conn, session, reply)

    def _check_reply_size(self, req: Frame, reply: Frame) -> None:
        size = sum(a.nbytes for a in reply.arrays)
        if size > self.settings.max_reply_bytes:
            raise ValueError(f"the reply to {req.op.name} would be {size} bytes, over the limit of "
                             f"{self.settings.max_reply_bytes} ({KEYS['max_reply_bytes']}); nothing was sent: "
                             "ask for fewer keys or rows per request")

    def _drop(self, conn: socket.socket, exc: BaseException) -> None:
        """Tell a peer why it is dropped, without waiting on it, and close."""
        self._try_send_error(conn, exc)
        try:
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the peer is gone already; close() below is all that is left
        conn.close()

    @staticmethod
    def _try_send_error(conn: socket.socket, exc: BaseException, session: Session | None = None) -> None:
        """Tell the peer why it is dropped: in clear before login, under the session after it."""
        try:
            conn.settimeout(ERROR_SEND_TIMEOUT)
            if session is None:
                write_frame(conn, error_frame(0, exc))
            else:
                session.send(conn, error_frame(0, exc))
        except OSError:
            pass  # the peer is gone or not reading; the close that follows is all we can do
