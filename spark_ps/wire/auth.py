"""Mutual challenge-response on every new connection, ending in a session key.

Three frames::

    shard  -> client  CHALLENGE {nonce_s, port, protection_s}
    client -> shard   AUTH      {nonce_c, protection_c, mac: HMAC(secret, "client" | transcript)}
    shard  -> client  AUTH      {mac: HMAC(secret, "shard" | transcript)}

    transcript = "spark-ps/2" | nonce_s | nonce_c | port | protection_s | protection_c

Both ends prove they know the application secret (issue 11's audit: only the
client did, so a fake shard without the secret logged a real client in,
served it weights of 666.0 and got its gradients). The client proves first;
the shard proves over the client's fresh nonce, so a recorded or reflected
answer never passes (each proof names its role). Nothing but the handshake
goes to a shard before it has proved itself.

Both ends then derive one key per direction from the secret, both nonces and
the transcript (:func:`~spark_ps.wire.session.hkdf`) and bind every later
frame to it (:class:`~spark_ps.wire.session.Session`). An attacker relaying a
real shard's challenge to a real client and its answer back (the audit's
relay: it then pushed +1000 and listed the tables) gets a logged-in
connection it cannot use: without the secret it has no session key, and its
frames fail their tags.

The shard's port is its identity in the transcript: a client that dialled
one port and reached a shard serving another (a relay, or a redirect to
another shard of the same application, which would send it keys that shard
does not own) is refused. So a shard cannot be reached through a port
forward to a different port; two shards on the same port of different hosts
are not told apart by this check (the session keys still are per
connection). The secret never crosses the socket and comparisons are
constant-time; the secret is created per application by the driver plugin and
reaches sidecars on their stdin and tasks inside the pickled client.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct

from spark_ps.errors import AuthenticationError, ProtocolError, PSConnectionError
from spark_ps.wire.protocol import Frame, Op, Status, error_frame, read_frame, write_frame
from spark_ps.wire.session import Protection, Session, hkdf

NONCE_BYTES = 32
#: Handshake frames are tiny; a peer that announces more is not one of ours.
HANDSHAKE_MAX_BYTES = 4096
_LABEL = b"spark-ps/2"


def transcript(nonce_s: bytes, nonce_c: bytes, port: int, shard_wants: int, client_wants: int) -> bytes:
    """What both proofs and both session keys are bound to.

    Examples
    --------
    >>> len(transcript(bytes(32), bytes(32), 7001, 1, 1))
    80
    """
    return _LABEL + nonce_s + nonce_c + struct.pack("<IBB", port, shard_wants, client_wants)


def mac(secret: bytes, role: bytes, data: bytes) -> str:
    """Hex HMAC-SHA256 under ``secret`` of ``role`` (``b"client"`` or ``b"shard"``) and ``data``.

    Examples
    --------
    >>> len(mac(b"secret", b"client", b"nonce")), mac(b"s", b"client", b"n") == mac(b"s", b"shard", b"n")
    (64, False)
    """
    return hmac.new(secret, role + b"\0" + data, hashlib.sha256).hexdigest()


def _session(secret: bytes, nonce_s: bytes, nonce_c: bytes, seen: bytes, protection: Protection,
             role: str) -> Session:
    to_shard = hkdf(secret, nonce_s + nonce_c, b"client->shard " + seen)
    to_client = hkdf(secret, nonce_s + nonce_c, b"shard->client " + seen)
    return Session(protection, to_shard, to_client) if role == "client" else Session(protection, to_client, to_shard)


def _proof_ok(answer: object, expected: str) -> bool:
    # compare_digest refuses a str with non-ASCII characters (TypeError): such an answer is just wrong.
    return isinstance(answer, str) and answer.isascii() and hmac.compare_digest(answer, expected)


def _nonce(value: object, who: str) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * NONCE_BYTES:
        raise ProtocolError(f"the {who}'s nonce must be {2 * NONCE_BYTES} hex digits, got {value!r:.80}")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ProtocolError(f"the {who}'s nonce is not hex: {value!r:.80}") from None


def _protection(value: object, who: str) -> Protection:
    if not isinstance(value, int) or isinstance(value, bool) or value not in {p.value for p in Protection}:
        raise ProtocolError(f"the {who} asked for an unknown protection {value!r:.40}")
    return Protection(value)


def _port(sock: socket.socket, end: str) -> int:
    try:
        address = sock.getsockname() if end == "local" else sock.getpeername()
    except (AttributeError, OSError):  # a wrapper without the call, or a socket already reset: no port to bind
        return 0
    return int(address[1]) if isinstance(address, tuple) else 0  # AF_UNIX pairs (doctests) have no port


def authenticate_client(sock: socket.socket, secret: bytes, *, port: int | None = None,
                        protection: Protection = Protection.MAC) -> Session:
    """Server side: challenge the peer, prove the secret back; the session, or :class:`AuthenticationError`.

    A refused peer is told why before the error is raised here.

    Parameters
    ----------
    sock : socket
        The accepted connection (or anything with ``recv_into`` and ``sendmsg``).
    secret : bytes
        The application secret.
    port : int, optional
        The port this shard serves, the shard's identity; ``sock``'s local port by default.
    protection : Protection
        The least this shard accepts for the session's frames.

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
    port = _port(sock, "local") if port is None else port
    nonce_s = os.urandom(NONCE_BYTES)
    write_frame(sock, Frame(Op.CHALLENGE, {"nonce": nonce_s.hex(), "port": port, "protection": int(protection)}))
    try:
        reply = read_frame(sock, HANDSHAKE_MAX_BYTES)
    except EOFError:
        raise AuthenticationError("peer closed the connection during the handshake") from None
    seen = b""
    if reply.op == Op.AUTH:
        nonce_c = _nonce(reply.meta.get("nonce"), "client")
        client_wants = _protection(reply.meta.get("protection"), "client")
        seen = transcript(nonce_s, nonce_c, port, protection, client_wants)
    if not seen or not _proof_ok(reply.meta.get("mac"), mac(secret, b"client", seen)):
        err = AuthenticationError("authentication failed: wrong or missing spark-ps application secret")
        write_frame(sock, error_frame(Op.AUTH, err))
        raise err
    write_frame(sock, Frame(Op.AUTH, {"mac": mac(secret, b"shard", seen)}))
    return _session(secret, nonce_s, nonce_c, seen, max(protection, client_wants), "shard")


def authenticate_to_server(sock: socket.socket, secret: bytes, *, port: int | None = None,
                           protection: Protection = Protection.MAC) -> Session:
    """Client side: answer the shard's challenge and check its proof; the session, or an error.

    Raises :class:`AuthenticationError` if the shard refuses the client or
    fails to prove that it knows the secret (then nothing but the handshake
    was sent to it). A shard that refuses the connection before its challenge
    (at its limit of connections) replies with an error instead; that is
    raised as :class:`~spark_ps.errors.PSConnectionError` with the shard's reason.

    Parameters
    ----------
    sock : socket
        The connected socket.
    secret : bytes
        The application secret.
    port : int, optional
        The port the client dialled; ``sock``'s peer port by default.
    protection : Protection
        The least this client accepts for the session's frames.

    Examples
    --------
    >>> import socket, threading
    >>> shard_end, task_end = socket.socketpair()
    >>> sessions = []
    >>> shard = threading.Thread(target=lambda: sessions.append(authenticate_client(shard_end, b"secret")))
    >>> shard.start(); session = authenticate_to_server(task_end, b"secret"); shard.join()
    >>> session.send(task_end, Frame(Op.PING)); sessions[0].recv(shard_end).op      # logged in: requests flow
    <Op.PING: 3>
    """
    port = _port(sock, "peer") if port is None else port
    challenge = read_frame(sock, HANDSHAKE_MAX_BYTES)
    if challenge.status != Status.OK:  # the shard refused before its challenge (at its connection limit)
        raise PSConnectionError(f"shard refused the connection: {challenge.meta.get('error', 'no reason given')}")
    if challenge.op != Op.CHALLENGE:
        raise ProtocolError("expected a CHALLENGE frame from the shard")
    nonce_s = _nonce(challenge.meta.get("nonce"), "shard")
    shard_wants = _protection(challenge.meta.get("protection"), "shard")
    shard_port = challenge.meta.get("port")
    if port and shard_port != port:
        raise AuthenticationError(
            f"dialled port {port} but the shard there serves port {shard_port!r}: a relay or a redirect to "
            "another shard; refused, nothing was sent to it (spark-ps needs a direct path to each shard's own port)")
    nonce_c = os.urandom(NONCE_BYTES)
    seen = transcript(nonce_s, nonce_c, port, shard_wants, protection)
    write_frame(sock, Frame(Op.AUTH, {"nonce": nonce_c.hex(), "protection": int(protection),
                                      "mac": mac(secret, b"client", seen)}))
    try:
        verdict = read_frame(sock, HANDSHAKE_MAX_BYTES)
    except EOFError:
        raise AuthenticationError("shard closed the connection during the handshake") from None
    if verdict.status != Status.OK:
        raise AuthenticationError(verdict.meta.get("error", "authentication refused by shard"))
    if verdict.op != Op.AUTH or not _proof_ok(verdict.meta.get("mac"), mac(secret, b"shard", seen)):
        raise AuthenticationError(
            "the shard did not prove that it knows the application secret: not a shard of this application "
            "(or one started with another secret); refused, nothing was sent to it")
    return _session(secret, nonce_s, nonce_c, seen, max(protection, shard_wants), "client")
