"""Exactly-once pushes (issue 11, item 3): which pushes of which client this shard has applied.

A client sends every push request with an id ``(client, push, part)``: a
random id per client object (per process), the push's number in that client
(kept in the :class:`~spark_ps.client.pushes.PushError` of a push that did not
complete, for a retry) and the request's index among the push's chunks to this
shard. The shard applies an id once: a retry (the client's own resend after a
dropped connection, or a caller's retry with the same ``request_id``) gets the
first reply back, marked ``duplicate``, and nothing is applied again, as
ps-lite's resend does. Ids are recorded only once applied: a refused push is
not remembered, so its retry is tried afresh. One lock per client makes a
retry that arrives while the first attempt is still being applied wait for it.

Bounded memory, and what that costs (the window):

* per client, the last ``window`` applied ids (``spark.ps.pushWindow``,
  default 256). An id of a push older than the oldest forgotten one is
  *refused* ("too old to tell"), never applied a second time; a retry must
  come before 256 more requests of the same client reach this shard (a
  client retries within one push: it never gets near that).
* at most ``clients`` clients (``spark.ps.pushClients``, default 1024), the
  least recently seen forgotten first. A client forgotten that way and then
  retrying could apply a push twice: that takes 1024 other clients pushing to
  this shard between its attempt and its retry.

Worst case about 256 x 1024 small entries (~40 MB); a training job has a
client per running task, so in practice a few hundred entries per client and
a few dozen clients.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

PushId = tuple[str, int, int]


def push_id(meta: dict[str, Any]) -> PushId | None:
    """The ``(client, push, part)`` id of a push request's meta, None if it has none; ``ValueError`` if malformed.

    Examples
    --------
    >>> push_id({"table": "w", "id": ["c0ffee", 7, 0]}), push_id({"table": "w"})
    (('c0ffee', 7, 0), None)
    >>> push_id({"id": ["c0ffee", -1, 0]})
    Traceback (most recent call last):
    ...
    ValueError: a push id must be [client (...), push (int >= 0), part (int >= 0)], got ['c0ffee', -1, 0]
    """
    raw = meta.get("id")
    if raw is None:
        return None
    ok = isinstance(raw, list) and len(raw) == 3 and isinstance(raw[0], str) and 0 < len(raw[0]) <= 64 \
        and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in raw[1:])
    if not ok:
        raise ValueError("a push id must be [client (non-empty string of at most 64 characters), push (int >= 0), "
                         f"part (int >= 0)], got {raw!r:.120}")
    return raw[0], raw[1], raw[2]


class _Client:
    __slots__ = ("applied", "floor", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.applied: OrderedDict[tuple[int, int], dict[str, Any]] = OrderedDict()
        self.floor = 0  # pushes below this number may have been forgotten


class PushLog:
    """The applied push ids of up to ``clients`` clients, ``window`` per client.

    Parameters
    ----------
    window : int
        Applied ids remembered per client.
    clients : int
        Clients remembered.

    Examples
    --------
    >>> log, applied = PushLog(window=2, clients=8), []
    >>> def apply():
    ...     applied.append(1); return {"clock": len(applied)}
    >>> log.run(("c", 0, 0), apply), log.run(("c", 0, 0), apply), len(applied)
    ({'clock': 1}, {'clock': 1, 'duplicate': True}, 1)
    >>> _ = log.run(("c", 1, 0), apply); _ = log.run(("c", 2, 0), apply)     # push 0 is forgotten
    >>> log.run(("c", 0, 0), apply)
    Traceback (most recent call last):
    ...
    ValueError: push 0 (part 0) of client c is older than the last 2 requests ... so it is not applied again
    """

    def __init__(self, window: int = 256, clients: int = 1024):
        self.window = window
        self.clients = clients
        self._lock = threading.Lock()
        self._clients: OrderedDict[str, _Client] = OrderedDict()
        #: Resends answered without applying them again (lost replies, retries): for STATS.
        self.duplicates = 0

    def _client(self, name: str) -> _Client:
        with self._lock:
            entry = self._clients.get(name)
            if entry is None:
                entry = self._clients[name] = _Client()
                while len(self._clients) > self.clients:
                    self._clients.popitem(last=False)
            else:
                self._clients.move_to_end(name)
            return entry

    def run(self, ident: PushId | None, apply: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """``apply()``'s reply meta, unless ``ident`` was applied: then its first reply, with ``duplicate: True``.

        Examples
        --------
        >>> PushLog().run(None, lambda: {"applied": True})           # no id: applied every time
        {'applied': True}
        """
        if ident is None:
            return apply()
        name, push, part = ident
        entry = self._client(name)
        with entry.lock:
            done = entry.applied.get((push, part))
            if done is not None:
                with self._lock:
                    self.duplicates += 1
                return {**done, "duplicate": True}
            if push < entry.floor:
                raise ValueError(f"push {push} (part {part}) of client {name} is older than the last {self.window} "
                                 "requests this shard remembers of that client (spark.ps.pushWindow): it may have "
                                 "been applied, so it is not applied again")
            reply = apply()
            entry.applied[(push, part)] = reply
            while len(entry.applied) > self.window:
                (old, _), _ = entry.applied.popitem(last=False)
                entry.floor = max(entry.floor, old + 1)
            return reply
