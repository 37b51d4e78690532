"""Fault injection (issue 11, item 4), as ps-lite's ``PS_DROP_MSG``: drop, cut or delay messages at a rate.

Off by default. Shards read ``spark.ps.faults.*`` once, at start-up
(:class:`~spark_ps.server.settings.ShardSettings`, passed by the plugin as
``--conf``); clients read ``spark.ps.client.faults.*`` from the session's conf
each time ``PSContext.client()`` makes one, so a test (or a drill on a live
application) can turn them on for one fit and off again without a new session.

Keys (the same four after either prefix, plus a seed):

* ``dropRate``: the message is lost and its connection closed. A request
  dropped by the client is never sent; a reply dropped by the client is read
  and thrown away, so the shard *has* applied the request: this is the case
  exactly-once pushes exist for. A shard drops a request before serving it,
  or a reply after serving it.
* ``cutRate``: the connection is closed half-way through the message: the
  peer reads part of a frame, then EOF. (A cut of a message already read in
  full, an incoming one, is a drop.)
* ``delayRate`` and ``delayMs``: the message waits ``delayMs`` before it is
  sent or served (a slow link or a busy peer; with a delay past the socket
  timeout it becomes a timeout).
* ``seed``: the draws come from ``random.Random`` seeded with it and the
  side (``client``/``shard``), so the same seed draws the same faults for the
  same sequence of messages: a run with one worker repeats exactly. With
  several threads the sequence depends on their interleaving.

Why drop means "close the connection": on a TCP stream a lost message that
leaves the connection open is not what a network does (TCP retransmits); what
a peer sees of a lost packet, a reset or a dead middlebox is a connection that
breaks with a request in flight. Closing is also what lets the client see the
loss at once instead of at a 600 s timeout. ps-lite drops on a datagram-like
van and resends after ``PS_RESEND_TIMEOUT``; here the client resends on a new
connection (``spark.ps.client.resends``), and exactly-once push ids
(``server/pushlog.py``) make the resend of an applied push harmless.

Every draw is a message: a round trip is two (request and reply) on each end
that injects. Streamed exports are not faulted: a broken export is not
resent, it fails, so faults there would only show that it fails. Measured
cost when off: one attribute test per message (the injector is None).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable

#: Field name -> conf key suffix, after ``spark.ps.faults.`` (shards) or ``spark.ps.client.faults.`` (clients).
SUFFIXES = {"drop_rate": "dropRate", "cut_rate": "cutRate", "delay_rate": "delayRate", "delay_ms": "delayMs",
            "seed": "seed"}
SHARD_PREFIX = "spark.ps.faults."
CLIENT_PREFIX = "spark.ps.client.faults."
#: Longest injected delay: past the handshake and idle limits a delay is a different test.
MAX_DELAY_MS = 60_000.0


class Fault(enum.Enum):
    """What happens to one message."""

    DROP = "drop"
    CUT = "cut"
    DELAY = "delay"


@dataclasses.dataclass(frozen=True)
class FaultSettings:
    """Rates of injected faults at one end, validated once; all zero (off) by default.

    Parameters
    ----------
    drop_rate, cut_rate, delay_rate : float
        Fraction of messages dropped, cut half-way, delayed; each in [0, 1], their sum at most 1.
    delay_ms : float
        Milliseconds a delayed message waits, in [0, 60000].
    seed : int
        Seed of the draws (>= 0).
    prefix : str
        The conf prefix, for error messages.

    Examples
    --------
    >>> FaultSettings().enabled, FaultSettings(drop_rate=0.05).enabled
    (False, True)
    >>> FaultSettings(drop_rate=0.7, cut_rate=0.5)
    Traceback (most recent call last):
    ...
    ValueError: spark.ps.faults.dropRate + cutRate + delayRate must be at most 1, got 1.2
    """

    drop_rate: float = 0.0
    cut_rate: float = 0.0
    delay_rate: float = 0.0
    delay_ms: float = 0.0
    seed: int = 0
    prefix: str = SHARD_PREFIX

    def __post_init__(self) -> None:
        for name in ("drop_rate", "cut_rate", "delay_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{self.prefix}{SUFFIXES[name]} must be a fraction in [0, 1], got {value!r}")
        total = self.drop_rate + self.cut_rate + self.delay_rate
        if total > 1.0:
            raise ValueError(f"{self.prefix}dropRate + cutRate + delayRate must be at most 1, got {total:g}")
        delay = self.delay_ms
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not math.isfinite(delay) \
                or not 0.0 <= delay <= MAX_DELAY_MS:
            raise ValueError(f"{self.prefix}delayMs must be a number of milliseconds in [0, {MAX_DELAY_MS:g}], "
                             f"got {delay!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"{self.prefix}seed must be an integer >= 0, got {self.seed!r}")

    @property
    def enabled(self) -> bool:
        """Whether any fault is ever injected."""
        return self.drop_rate > 0 or self.cut_rate > 0 or (self.delay_rate > 0 and self.delay_ms > 0)

    @classmethod
    def from_conf(cls, get: Callable[[str, str | None], str | None], prefix: str) -> FaultSettings:
        """Settings from the confs under ``prefix``; ``get(key, default)`` reads one (a dict's or a conf's ``get``).

        Examples
        --------
        >>> conf = {"spark.ps.client.faults.dropRate": "0.05", "spark.ps.client.faults.seed": "7"}
        >>> s = FaultSettings.from_conf(conf.get, CLIENT_PREFIX); s.drop_rate, s.seed, s.enabled
        (0.05, 7, True)
        >>> FaultSettings.from_conf({"spark.ps.faults.delayMs": "soon"}.get, SHARD_PREFIX)
        Traceback (most recent call last):
        ...
        ValueError: spark.ps.faults.delayMs='soon' is not a number
        """
        values: dict[str, object] = {}
        for name, suffix in SUFFIXES.items():
            text = get(prefix + suffix, None)
            if text is None:
                continue
            try:
                values[name] = int(str(text).strip()) if name == "seed" else float(str(text).strip())
            except ValueError:
                raise ValueError(f"{prefix}{suffix}={text!r} is not {'an integer' if name == 'seed' else 'a number'}"
                                 ) from None
        return cls(**values, prefix=prefix)


class FaultInjector:
    """Draws, for each message, whether it is dropped, cut or delayed; counts what it injected.

    Parameters
    ----------
    settings : FaultSettings
        The rates and the seed.
    side : str
        ``"client"`` or ``"shard"``: mixed into the seed, so both ends do not draw alike.

    Examples
    --------
    >>> faults = FaultInjector(FaultSettings(drop_rate=0.5, seed=1), "client")
    >>> draws = [faults.draw() for _ in range(1000)]
    >>> 400 < draws.count(Fault.DROP) < 600, faults.counts[Fault.DROP] == draws.count(Fault.DROP)
    (True, True)
    >>> again = FaultInjector(FaultSettings(drop_rate=0.5, seed=1), "client")
    >>> [again.draw() for _ in range(1000)] == draws      # seeded: the same draws again
    True
    """

    def __init__(self, settings: FaultSettings, side: str):
        self.settings = settings
        self._rng = random.Random(f"{settings.seed}:{side}")
        self._lock = threading.Lock()
        self.counts: Counter[Fault] = Counter()

    def draw(self) -> Fault | None:
        """The fault of the next message, or None.

        Examples
        --------
        >>> FaultInjector(FaultSettings(cut_rate=1.0), "shard").draw()
        <Fault.CUT: 'cut'>
        """
        s = self.settings
        with self._lock:
            u = self._rng.random()
            fault = Fault.DROP if u < s.drop_rate else Fault.CUT if u < s.drop_rate + s.cut_rate else \
                Fault.DELAY if u < s.drop_rate + s.cut_rate + s.delay_rate and s.delay_ms > 0 else None
            if fault is not None:
                self.counts[fault] += 1
            return fault

    def delay(self) -> None:
        """Hold the message for ``delay_ms``: injected latency, not a wait for anything.

        Examples
        --------
        >>> FaultInjector(FaultSettings(delay_rate=1.0, delay_ms=1.0), "client").delay()
        """
        time.sleep(self.settings.delay_ms / 1000.0)  # the fault itself: a slow link, not synchronisation


def injector(settings: FaultSettings | None, side: str) -> FaultInjector | None:
    """A :class:`FaultInjector` if ``settings`` inject anything, else None (the hot path tests for None only).

    Examples
    --------
    >>> injector(FaultSettings(), "client") is None, injector(FaultSettings(drop_rate=0.1), "client") is None
    (True, False)
    """
    return FaultInjector(settings, side) if settings is not None and settings.enabled else None


class CutSocket:
    """A socket stand-in whose sends stop after ``limit`` bytes and then fail: a connection cut mid-frame.

    Parameters
    ----------
    sock : socket.socket
        The real socket; the cut shuts it down.
    limit : int, optional
        Bytes let through before the cut; half of the first write by default.

    Examples
    --------
    >>> import socket
    >>> a, b = socket.socketpair()
    >>> CutSocket(a, 3).sendmsg([b"abc", b"def"])
    Traceback (most recent call last):
    ...
    ConnectionResetError: injected fault: connection cut after 3 bytes of a frame
    >>> b.recv(10), b.recv(10)
    (b'abc', b'')
    """

    def __init__(self, sock: socket.socket, limit: int | None = None):
        self._sock = sock
        self._left = limit

    def sendmsg(self, buffers) -> int:
        data = b"".join(bytes(b) for b in buffers)
        if self._left is None:
            self._left = len(data) // 2
        if len(data) < self._left:
            self._left -= len(data)
            return self._sock.sendmsg([data])
        self._sock.sendall(data[:self._left])
        sent = self._left
        self._left = 0
        self.cut()
        raise ConnectionResetError(f"injected fault: connection cut after {sent} bytes of a frame")

    def cut(self) -> None:
        """Shut the real socket down both ways (the peer reads EOF after what was sent)."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # the peer closed it first: it is cut either way
