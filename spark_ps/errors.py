"""The one exception hierarchy of spark-ps, shared by every process.

Every error spark-ps raises on purpose derives from :class:`PSError`, and
also from the builtin a caller would expect (``ValueError`` for bad input,
``RuntimeError`` for a missing resource, ...), so both ``except PSError`` and
``except ValueError`` work.

Errors raised on a shard travel back as an error frame carrying the exception
kind and message. The client re-raises them as :class:`RemoteError` subclasses
that *also* derive from the matching builtin (``ValueError``, ``KeyError``, ...)
so callers can keep writing ``except ValueError`` around a push.
"""

from __future__ import annotations


class PSError(Exception):
    """Base class of every error raised by spark-ps."""


class ProtocolError(PSError):
    """A frame is malformed, truncated, oversized or of an unknown version."""


class AuthenticationError(PSError):
    """The peer did not prove knowledge of the per-application secret."""


class PSConnectionError(PSError, ConnectionError):
    """A shard could not be reached, even after one reconnect."""


class PushError(PSError, RuntimeError):
    """A push across shards that some shards applied and others did not; retry it with :attr:`request_id`.

    Attributes
    ----------
    request_id : int
        Pass it as ``request_id=`` to the same client's push to apply only what was not applied.
    applied, failed : list of int
        Shards that applied their whole part, and shards that did not (or may not have).
    unreachable : list of int
        Those of ``failed`` whose connection broke (:class:`PSConnectionError`): the shard may be lost.

    The defaults (no id, no shards) are for an error rebuilt from its message
    alone, as :func:`spark_ps.spark.tasks.task_error` rebuilds a task's.
    """

    def __init__(self, message: str, request_id: int = -1, applied: list[int] = (), failed: list[int] = (),
                 unreachable: list[int] = ()):
        super().__init__(message)
        self.request_id = request_id
        self.applied = list(applied)
        self.failed = list(failed)
        self.unreachable = list(unreachable)


class PluginNotRunningError(PSError, RuntimeError):
    """The spark-ps JVM plugin is not loaded or not enabled in this Spark application."""


class UnavailableError(PSError, RuntimeError):
    """What the call needs is not there: a closed PSContext, the summary of a loaded model, shards to score with."""


class MissingColumnError(PSError, KeyError, ValueError):
    """A required column is not in the DataFrame or Arrow batch (catchable as ``KeyError`` or ``ValueError``)."""

    def __str__(self) -> str:  # KeyError would repr() the message otherwise
        return str(self.args[0])


class ColumnTypeError(PSError, TypeError, ValueError):
    """A column has a type the estimator cannot read, e.g. a features column that is not a vector."""


class MemoryBudgetError(PSError, MemoryError):
    """A shard refused a table or a push that would take its tables past ``spark.ps.maxMemory``; nothing changed."""


class RemoteError(PSError):
    """An error raised on a shard while it served a request.

    Attributes
    ----------
    kind : str
        Name of the exception type raised on the shard.
    shard : str
        ``host:port`` of the shard that raised it.
    """

    def __init__(self, message: str, kind: str = "RemoteError", shard: str = "?"):
        super().__init__(message)
        self.kind = kind
        self.shard = shard


class RemoteValueError(RemoteError, ValueError):
    """A shard rejected a request's values (NaN, width mismatch, bad option)."""


class RemoteKeyError(RemoteError, KeyError):
    """A shard does not know the named table or clock."""

    def __str__(self) -> str:  # KeyError would repr() the message otherwise
        return str(self.args[0])


class RemoteTypeError(RemoteError, TypeError):
    """A shard received an array of the wrong dtype."""


class RemoteTimeoutError(RemoteError, TimeoutError):
    """A blocking shard operation (a clock wait) passed its deadline."""


class RemoteMemoryBudgetError(RemoteError, MemoryError):
    """A shard refused a table or a push over its memory budget (``spark.ps.maxMemory``); the table is unchanged."""


_REMOTE_BY_KIND: dict[str, type[RemoteError]] = {
    "MemoryBudgetError": RemoteMemoryBudgetError,
    "ValueError": RemoteValueError,
    "KeyError": RemoteKeyError,
    "TypeError": RemoteTypeError,
    "TimeoutError": RemoteTimeoutError,
}


def remote_error(kind: str, message: str, shard: str) -> RemoteError:
    """Build the client-side exception for an error frame from ``shard``.

    Examples
    --------
    >>> err = remote_error("ValueError", "NaN gradient", "127.0.0.1:4000")
    >>> isinstance(err, ValueError), err.shard
    (True, '127.0.0.1:4000')
    """
    cls = _REMOTE_BY_KIND.get(kind, RemoteError)
    return cls(f"{message} [shard {shard}]", kind=kind, shard=shard)
