"""HMAC challenge-response on every new connection.

The shard opens with a random nonce; the client answers with
``HMAC-SHA256(secret, nonce)``. The secret itself never crosses the socket, a
recorded answer is useless against a fresh nonce, and the comparison is
constant-time. The secret is created per application by the driver plugin and
reaches sidecars on their stdin and tasks inside the pickled client.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket

from spark_ps.errors import AuthenticationError, ProtocolError, PSConnectionError
from spark_ps.wire.protocol import Frame, Op, Status, error_frame, read_frame, write_frame

NONCE_BYTES = 32
#: Handshake frames are tiny; a peer that announces more is not one of ours.
HANDSHAKE_MAX_BYTES = 4096


def mac(secret: bytes, nonce: bytes) -> str:
    """Hex HMAC-SHA256 of ``nonce`` under ``secret``.

    Examples
    --------
    >>> len(mac(b"secret", b"nonce"))
    64
    """
    return hmac.new(secret, nonce, hashlib.sha256).hexdigest()


def authenticate_client(sock: socket.socket, secret: bytes) -> None:
    """Server side: challenge the peer; raise :class:`AuthenticationError` if it fails.

    A refused peer is told why before the error is raised here.

    Examples
    --------
    >>> import socket, threading
    >>> shard_end, task_end = socket.socketpair()
    >>> refused = []
    >>> def shard():
    ...     try:
    ...         authenticate_client(shard_end, b"secret")
    ...     except AuthenticationError as exc:
    ...         refused.append(str(exc))
    >>> thread = threading.Thread(target=shard); thread.start()
    >>> authenticate_to_server(task_end, b"guess")
    Traceback (most recent call last):
    ...
    spark_ps.errors.AuthenticationError: authentication failed: wrong or missing spark-ps application secret
    >>> thread.join(); refused
    ['authentication failed: wrong or missing spark-ps application secret']
    """
    nonce = os.urandom(NONCE_BYTES)
    write_frame(sock, Frame(Op.CHALLENGE, {"nonce": nonce.hex()}))
    try:
        reply = read_frame(sock, HANDSHAKE_MAX_BYTES)
    except EOFError:
        raise AuthenticationError("peer closed the connection during the handshake") from None
    answer = reply.meta.get("mac")
    # compare_digest refuses a str with non-ASCII characters (TypeError): such an answer is just wrong.
    if reply.op != Op.AUTH or not isinstance(answer, str) or not answer.isascii() \
            or not hmac.compare_digest(answer, mac(secret, nonce)):
        err = AuthenticationError("authentication failed: wrong or missing spark-ps application secret")
        write_frame(sock, error_frame(Op.AUTH, err))
        raise err
    write_frame(sock, Frame(Op.AUTH))


def authenticate_to_server(sock: socket.socket, secret: bytes) -> None:
    """Client side: answer the shard's challenge; raise :class:`AuthenticationError` if the shard refuses.

    A shard that refuses the connection before its challenge (at its limit of
    connections) replies with an error instead; that is raised as
    :class:`~spark_ps.errors.PSConnectionError` with the shard's reason.

    Examples
    --------
    >>> import socket, threading
    >>> shard_end, task_end = socket.socketpair()
    >>> shard = threading.Thread(target=authenticate_client, args=(shard_end, b"secret")); shard.start()
    >>> authenticate_to_server(task_end, b"secret"); shard.join()
    >>> write_frame(task_end, Frame(Op.PING)); read_frame(shard_end).op      # authenticated: requests flow
    <Op.PING: 3>
    """
    challenge = read_frame(sock, HANDSHAKE_MAX_BYTES)
    if challenge.status != Status.OK:  # the shard refused before its challenge (at its connection limit)
        raise PSConnectionError(f"shard refused the connection: {challenge.meta.get('error', 'no reason given')}")
    nonce_hex = challenge.meta.get("nonce")
    if challenge.op != Op.CHALLENGE or not isinstance(nonce_hex, str):
        raise ProtocolError("expected a CHALLENGE frame from the shard")
    write_frame(sock, Frame(Op.AUTH, {"mac": mac(secret, bytes.fromhex(nonce_hex))}))
    try:
        verdict = read_frame(sock, HANDSHAKE_MAX_BYTES)
    except EOFError:
        raise AuthenticationError("shard closed the connection during the handshake") from None
    if verdict.status != Status.OK:
        raise AuthenticationError(verdict.meta.get("error", "authentication refused by shard"))
