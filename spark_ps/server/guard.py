"""What keeps one bad peer from flooding a shard's log or holding its handshake open.

* :class:`RateLimitedLog`: per-connection errors (refused logins, garbage,
  stalls, failed ``accept`` calls) are logged at most ``burst`` times per
  ``interval`` per kind; the rest are counted and reported as one
  "suppressed K similar" line when the kind next logs. A flood of 100,000 bad
  connections then writes a few dozen lines a minute, not 100,000, while the
  first of each kind is always seen. Kinds are a handful of fixed strings,
  never peer addresses, so the counters cannot grow without bound.
* :class:`DeadlineSocket`: the handshake's reads and writes share one
  deadline. A socket timeout alone bounds each ``recv``: with 10 s per
  ``recv``, a peer sending one header byte every 5 s held a connection for
  35 s and more (issue 11's audit); with the deadline it is dropped at 10 s.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable


class RateLimitedLog:
    """At most ``burst`` lines per ``interval`` seconds per kind; then one line saying how many were suppressed.

    Parameters
    ----------
    logger : logging.Logger
        Where the lines go.
    burst : int
        Lines of one kind logged per interval.
    interval : float
        Seconds of one window.
    clock : callable
        Monotonic seconds (tests pass their own).

    Examples
    --------
    >>> import logging
    >>> lines = []
    >>> class Keep(logging.Handler):
    ...     def emit(self, record): lines.append(record.getMessage())
    >>> logger = logging.getLogger("guard-example"); logger.addHandler(Keep()); logger.propagate = False
    >>> now = [0.0]
    >>> log = RateLimitedLog(logger, burst=2, interval=60.0, clock=lambda: now[0])
    >>> for i in range(5):
    ...     log.warning("refused", "refused connection %d", i)
    >>> now[0] = 61.0; log.warning("refused", "refused connection %d", 5)
    >>> print(*lines, sep="\\n")
    refused connection 0
    refused connection 1
    suppressed 3 similar 'refused' lines in the last 60 s
    refused connection 5
    """

    def __init__(self, logger: logging.Logger, burst: int = 10, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.burst = burst
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, list] = {}  # kind -> [window start, lines logged, lines suppressed]

    def log(self, level: int, kind: str, msg: str, *args: object) -> None:
        """Log ``msg % args`` at ``level`` unless ``kind`` used up its lines in this window.

        Examples
        --------
        >>> import logging
        >>> RateLimitedLog(logging.getLogger("guard-example-2")).log(logging.DEBUG, "idle", "closed %s", "x")
        """
        if not self.logger.isEnabledFor(level):
            return
        now = self._clock()
        with self._lock:
            window = self._windows.setdefault(kind, [now, 0, 0])
            suppressed = 0
            if now - window[0] >= self.interval:
                suppressed = window[2]
                window[:] = [now, 0, 0]
            window[1] += 1
            if window[1] > self.burst:
                window[2] += 1
                return
        if suppressed:
            self.logger.log(level, "suppressed %d similar %r lines in the last %.0f s", suppressed, kind,
                            self.interval)
        self.logger.log(level, msg, *args)

    def warning(self, kind: str, msg: str, *args: object) -> None:
        """:meth:`log` at WARNING.

        Examples
        --------
        >>> import logging
        >>> RateLimitedLog(logging.getLogger("guard-example-3")).warning("accept", "accept failed: %s", "EMFILE")
        """
        self.log(logging.WARNING, kind, msg, *args)


class DeadlineSocket:
    """A socket whose reads and writes must all finish by one deadline: what the handshake runs on.

    Only ``recv_into`` and ``sendmsg`` are offered, the two calls
    :func:`~spark_ps.wire.protocol.read_frame` and
    :func:`~spark_ps.wire.protocol.write_frame` make. Past the deadline they
    raise ``TimeoutError`` naming ``what``.

    Examples
    --------
    >>> import socket, time
    >>> shard_end, peer = socket.socketpair()
    >>> sock = DeadlineSocket(shard_end, time.monotonic() + 0.05, "the handshake (limit 0.05 s)")
    >>> sock.recv_into(bytearray(1), 1)
    Traceback (most recent call last):
    ...
    TimeoutError: the handshake (limit 0.05 s) did not finish in time
    >>> shard_end.close(); peer.close()
    """

    def __init__(self, sock: socket.socket, deadline: float, what: str):
        self._sock = sock
        self._deadline = deadline
        self._what = what

    def _arm(self) -> None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{self._what} did not finish in time")
        self._sock.settimeout(remaining)

    def recv_into(self, buffer, nbytes: int = 0) -> int:
        """``socket.recv_into`` within what is left of the deadline.

        Examples
        --------
        >>> import socket, time
        >>> a, b = socket.socketpair(); b.sendall(b"x")
        >>> buf = bytearray(1); DeadlineSocket(a, time.monotonic() + 5, "a read").recv_into(buf, 1), bytes(buf)
        (1, b'x')
        >>> a.close(); b.close()
        """
        self._arm()
        try:
            return self._sock.recv_into(buffer, nbytes)
        except TimeoutError:
            raise TimeoutError(f"{self._what} did not finish in time") from None

    def sendmsg(self, buffers) -> int:
        """``socket.sendmsg`` within what is left of the deadline.

        Examples
        --------
        >>> import socket, time
        >>> a, b = socket.socketpair()
        >>> DeadlineSocket(a, time.monotonic() + 5, "a write").sendmsg([b"ab", b"c"]), b.recv(3)
        (3, b'abc')
        >>> a.close(); b.close()
        """
        self._arm()
        try:
            return self._sock.sendmsg(buffers)
        except TimeoutError:
            raise TimeoutError(f"{self._what} did not finish in time") from None
