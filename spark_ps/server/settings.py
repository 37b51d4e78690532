"""A shard's limits, as one frozen dataclass validated once, at start-up.

Every limit is a ``spark.ps.*`` Spark conf. The executor plugin forwards each
``spark.ps.*`` conf it has to the sidecar as ``--conf key=value`` (argv: none
of them is secret; the application secret travels on stdin, never here), and
:meth:`ShardSettings.from_conf` keeps the keys listed in :data:`KEYS` and
ignores the others, which are the driver's or the plugin's (``spark.ps.python``,
``spark.ps.expectedServers``...). A bad value stops the sidecar before it
reports ready, with an error naming the key, the value and what is accepted;
the plugin then fails the executor's start with that sidecar's exit code, and
the line is in the executor's stderr log.

Why each default (issue 11's audit: a table of width 2^20 made a 128-byte pull
get a 32 MiB reply; a clock of 10^7 workers cost +121 MB; 100 connections that
never logged in killed a sidecar whose open-file limit was 64; 1 header byte
every 5 s held a connection for 35 s and more):

* ``spark.ps.maxConnections`` 1024: one per running task and shard, plus the
  driver's; each costs a thread and a file descriptor. Connections past it
  get an error reply and are closed at once.
* ``spark.ps.handshakeTimeout`` 10 s for the whole handshake (it was 10 s per
  ``recv``, so a byte every 5 s never timed out).
* ``spark.ps.idleTimeout`` 600 s, the training default of ``psTimeout``: how
  long a logged-in connection may sit between requests or stall inside one (each
  ``recv`` and ``send``). A client finds a connection the shard dropped while
  idle before its next request and opens a new one (``client/connection.py``),
  so the timeout costs an idle client one handshake, nothing else. A request
  the shard is serving (a clock wait) is not idle.
* ``spark.ps.maxTableWidth`` 65,536 floats (256 KiB a row, 1 MiB with three
  optimizer states): embeddings are 8-1,024 wide; a wider row is a mistake.
* ``spark.ps.maxClockWorkers`` 65,536: one worker per task slot; a clock of
  that many costs ~0.8 MB (12 bytes a worker, measured at 10^7).
* ``spark.ps.maxReplyBytes`` 256 MiB: a pull of 1M keys at width 64. The
  training path pulls a mini-batch's keys (at most a few MB); exports are cut
  into batches that fit.
* ``spark.ps.pushWindow`` 256 and ``spark.ps.pushClients`` 1,024: the
  applied push ids a shard remembers per client, and the clients it
  remembers (``server/pushlog.py`` says what a forgotten id costs).
* ``spark.ps.integrity.enabled`` true: every frame after login carries a
  Poly1305 tag under the session key (``wire/session.py``; bench-ps measures
  its cost). ``false`` only takes effect when the client says false too.
* ``spark.ps.crypto.enabled`` false: encryption (AES-256-GCM under the session
  key) is opt-in, as Spark's ``spark.network.crypto.enabled``; when either end
  enables it, the session is encrypted.
* ``spark.ps.maxMemory`` 0 (no budget): the bytes a shard's tables may hold
  (their key index, weights and optimizer state, as the ``STATS`` request reports them).
  A table or a push that would take them past it is refused with an error
  naming the table, the bytes and the key, and nothing changes
  (``server/memory.py``); without it, the kernel's OOM killer takes the
  sidecar and every table in it. No default budget: the sidecar's memory is
  outside the executor's JVM, and only the deployment knows how much is
  there (``spark.executor.memoryOverhead``, the container's limit).
* ``spark.ps.faults.*`` all 0 (off): fault injection, ps-lite's
  ``PS_DROP_MSG`` (``wire/faults.py``); for tests and drills only.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping

from spark_ps.wire.faults import SHARD_PREFIX, FaultSettings
from spark_ps.wire.session import parse_bool

#: Field name -> Spark conf key.
KEYS = {
    "max_connections": "spark.ps.maxConnections",
    "handshake_timeout": "spark.ps.handshakeTimeout",
    "idle_timeout": "spark.ps.idleTimeout",
    "max_table_width": "spark.ps.maxTableWidth",
    "max_clock_workers": "spark.ps.maxClockWorkers",
    "max_reply_bytes": "spark.ps.maxReplyBytes",
    "push_window": "spark.ps.pushWindow",
    "push_clients": "spark.ps.pushClients",
    "integrity_enabled": "spark.ps.integrity.enabled",
    "crypto_enabled": "spark.ps.crypto.enabled",
    "max_memory_bytes": "spark.ps.maxMemory",
    "faults": SHARD_PREFIX + "*",
}

_SECONDS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_BYTES = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "g": 1 << 30, "gb": 1 << 30}
_NUMBER_AND_UNIT = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([a-z]*)\s*")


def parse_seconds(key: str, text: str) -> float:
    """Seconds from a plain number or a Spark time string (``90s``, ``500ms``, ``2min``, ``1h``).

    Examples
    --------
    >>> parse_seconds("spark.ps.idleTimeout", "2min"), parse_seconds("spark.ps.idleTimeout", "2.5")
    (120.0, 2.5)
    >>> parse_seconds("spark.ps.idleTimeout", "soon")
    Traceback (most recent call last):
    ...
    ValueError: spark.ps.idleTimeout='soon' is not a duration: give seconds (2.5) or a Spark time string (500ms, ...)
    """
    match = _NUMBER_AND_UNIT.fullmatch(text.lower())
    if match is None or match.group(2) not in ("", *_SECONDS):
        raise ValueError(f"{key}={text!r} is not a duration: give seconds (2.5) or a Spark time string "
                         "(500ms, 90s, 2min, 1h)")
    return float(match.group(1)) * _SECONDS.get(match.group(2), 1.0)


def parse_bytes(key: str, text: str) -> int:
    """Bytes from a plain integer or a Spark size string (``64k``, ``256m``, ``1g``; powers of 1024).

    Examples
    --------
    >>> parse_bytes("spark.ps.maxReplyBytes", "256m"), parse_bytes("spark.ps.maxReplyBytes", "4096")
    (268435456, 4096)
    >>> parse_bytes("spark.ps.maxReplyBytes", "lots")
    Traceback (most recent call last):
    ...
    ValueError: spark.ps.maxReplyBytes='lots' is not a size: give bytes (4096) or a Spark size string (64k, 256m, 1g)
    """
    match = _NUMBER_AND_UNIT.fullmatch(text.lower())
    if match is None or match.group(2) not in _BYTES:
        raise ValueError(f"{key}={text!r} is not a size: give bytes (4096) or a Spark size string (64k, 256m, 1g)")
    return int(float(match.group(1)) * _BYTES[match.group(2)])


def _parse_int(key: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"{key}={text!r} is not an integer") from None


@dataclasses.dataclass(frozen=True)
class ShardSettings:
    """The limits one shard enforces; see the module docstring for each default and why.

    Parameters
    ----------
    max_connections : int
        Open connections at most (``spark.ps.maxConnections``); past it a new one gets an error reply and is closed.
    handshake_timeout : float
        Seconds for the whole handshake of a new connection (``spark.ps.handshakeTimeout``).
    idle_timeout : float
        Seconds a logged-in connection may wait for, or stall in, a request (``spark.ps.idleTimeout``).
    max_table_width : int
        Widest table a shard creates (``spark.ps.maxTableWidth``).
    max_clock_workers : int
        Most workers of one clock (``spark.ps.maxClockWorkers``).
    max_reply_bytes : int
        Largest reply a shard sends (``spark.ps.maxReplyBytes``).
    push_window : int
        Applied push ids remembered per client (``spark.ps.pushWindow``).
    push_clients : int
        Clients whose push ids are remembered (``spark.ps.pushClients``).
    integrity_enabled : bool
        Tag every frame after login (``spark.ps.integrity.enabled``).
    crypto_enabled : bool
        Encrypt every frame after login (``spark.ps.crypto.enabled``).
    max_memory_bytes : int
        Bytes the shard's tables may hold, 0 for no budget (``spark.ps.maxMemory``).
    faults : FaultSettings
        Faults injected into this shard's messages (``spark.ps.faults.*``); none by default.

    Examples
    --------
    >>> ShardSettings().max_connections, ShardSettings(idle_timeout=1.5).idle_timeout
    (1024, 1.5)
    >>> ShardSettings(max_connections=0)
    Traceback (most recent call last):
    ...
    ValueError: spark.ps.maxConnections must be an integer >= 1, got 0
    """

    max_connections: int = 1024
    handshake_timeout: float = 10.0
    idle_timeout: float = 600.0
    max_table_width: int = 1 << 16
    max_clock_workers: int = 1 << 16
    max_reply_bytes: int = 256 << 20
    push_window: int = 256
    push_clients: int = 1024
    integrity_enabled: bool = True
    crypto_enabled: bool = False
    max_memory_bytes: int = 0
    faults: FaultSettings = FaultSettings()

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            key = KEYS[field.name]
            if field.name == "faults":
                if not isinstance(value, FaultSettings):
                    raise ValueError(f"{key} must be FaultSettings, got {type(value).__name__}")
            elif field.name == "max_memory_bytes":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"{key} must be a number of bytes >= 0 (0: no budget), got {value!r}")
            elif field.type == "bool":
                if not isinstance(value, bool):
                    raise ValueError(f"{key} must be true or false, got {value!r}")
            elif field.type == "float":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                        or value <= 0:
                    raise ValueError(f"{key} must be a positive finite number of seconds, got {value!r}")
                object.__setattr__(self, field.name, float(value))
            elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be an integer >= 1, got {value!r}")

    @classmethod
    def from_conf(cls, conf: Mapping[str, str]) -> ShardSettings:
        """Settings from ``spark.ps.*`` confs (strings); keys not in :data:`KEYS` are not the shard's and are ignored.

        Examples
        --------
        >>> s = ShardSettings.from_conf({"spark.ps.idleTimeout": "2min", "spark.ps.maxReplyBytes": "1m",
        ...                              "spark.ps.maxConnections": "8", "spark.ps.python": "python3"})
        >>> s.idle_timeout, s.max_reply_bytes, s.max_connections
        (120.0, 1048576, 8)
        >>> s = ShardSettings.from_conf({"spark.ps.maxMemory": "64m", "spark.ps.faults.dropRate": "0.05"})
        >>> s.max_memory_bytes, s.faults.drop_rate
        (67108864, 0.05)
        >>> ShardSettings.from_conf({"spark.ps.maxTableWidth": "wide"})
        Traceback (most recent call last):
        ...
        ValueError: spark.ps.maxTableWidth='wide' is not an integer
        """
        values: dict[str, object] = {"faults": FaultSettings.from_conf(conf.get, SHARD_PREFIX)}
        for field in dataclasses.fields(cls):
            key = KEYS[field.name]
            if key not in conf:
                continue
            text = str(conf[key])
            if field.type == "bool":
                values[field.name] = parse_bool(key, text)
            elif field.type == "float":
                values[field.name] = parse_seconds(key, text)
            elif field.name.endswith("_bytes"):
                values[field.name] = parse_bytes(key, text)
            else:
                values[field.name] = _parse_int(key, text)
        return cls(**values)

    @classmethod
    def from_args(cls, pairs: Iterable[str]) -> ShardSettings:
        """Settings from the sidecar's ``--conf key=value`` arguments.

        Examples
        --------
        >>> ShardSettings.from_args(["spark.ps.maxConnections=4", "spark.ps.host=127.0.0.1"]).max_connections
        4
        >>> ShardSettings.from_args(["spark.ps.maxConnections"])
        Traceback (most recent call last):
        ...
        ValueError: --conf 'spark.ps.maxConnections' is not key=value
        """
        conf = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep:
                raise ValueError(f"--conf {pair!r} is not key=value")
            conf[key.strip()] = value
        return cls.from_conf(conf)
