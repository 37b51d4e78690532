"""Wire format: a small versioned header, a JSON control block, raw arrays.

A frame is laid out as::

    +--------------------------- 24-byte header ----------------------------+
    | magic "SPPS" | version u8 | op u8 | status u8 | n_arrays u8 |
    | meta_len u32 | request_id u32 | body_len u64                          |
    +------------------------------------------------------------------------+
    | meta: meta_len bytes of UTF-8 JSON (table name, options, error text)   |
    | zero padding to a multiple of 8                                        |
    +------------------------------------------------------------------------+
    | body: n_arrays x ( 24-byte descriptor | raw data | pad to 8 )          |
    |   descriptor = dtype code u8, 7 pad bytes, rows u64, cols u64          |
    |   cols == 0 means a 1-D array of ``rows`` items                        |
    +------------------------------------------------------------------------+

Everything is little-endian. Arrays are sent straight from their buffers with
``sendmsg`` (no copy) and received into one preallocated buffer that
``np.frombuffer`` views without copying; padding keeps each array 8-byte
aligned. Only the JSON block is parsed with a general parser, and it is capped
at :data:`MAX_META_BYTES`, so no payload is ever unpickled or ``eval``-ed.
"""

from __future__ import annotations

import enum
import json
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from spark_ps.errors import ProtocolError

MAGIC = b"SPPS"
#: 2: the handshake is mutual and frames after it are bound to a session (``wire/session.py``).
VERSION = 2
HEADER = struct.Struct("<4sBBBBIIQ")
DESCRIPTOR = struct.Struct("<B7xQQ")
MAX_META_BYTES = 64 * 1024
MAX_ARRAYS = 16
#: Default cap on one frame's body; a shard refuses larger frames before
#: allocating anything, so a hostile length field cannot exhaust memory.
DEFAULT_MAX_FRAME_BYTES = 1 << 30

_ALIGN = 8


class Op(enum.IntEnum):
    """Request kinds. A reply carries the op of its request.

    Examples
    --------
    >>> Op.PULL, Op(21).name
    (<Op.PULL: 20>, 'PUSH')
    """

    CHALLENGE = 1
    AUTH = 2
    PING = 3
    CREATE_TABLE = 10
    DROP_TABLE = 11
    DESCRIBE_TABLE = 12
    LIST_TABLES = 13
    STATS = 14
    PULL = 20
    PUSH = 21
    EXPORT = 30
    IMPORT = 31
    CLOCK_CREATE = 40
    CLOCK_ADVANCE = 41
    CLOCK_FINISH = 42
    CLOCK_DROP = 43


class Status(enum.IntEnum):
    """Outcome of a request, in its reply: an ERROR reply carries ``kind`` and ``error`` in its meta.

    Examples
    --------
    >>> error_frame(Op.PULL, KeyError("unknown table 'w'")).status
    <Status.ERROR: 1>
    """

    OK = 0
    ERROR = 1


_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<i8"),
    2: np.dtype("<f4"),
    3: np.dtype("<f8"),
    4: np.dtype("u1"),
    5: np.dtype("<i4"),
}
_CODES = {dt: code for code, dt in _DTYPES.items()}


@dataclass
class Frame:
    """One message: an op, a small JSON ``meta`` dict and raw ``arrays``.

    Examples
    --------
    >>> import numpy as np
    >>> f = Frame(Op.PULL, {"table": "w"}, [np.arange(3, dtype=np.int64)])
    >>> decode(encode(f)).arrays[0].tolist()
    [0, 1, 2]
    """

    op: Op
    meta: dict[str, Any] = field(default_factory=dict)
    arrays: list[np.ndarray] = field(default_factory=list)
    status: Status = Status.OK
    request_id: int = 0


def _pad(n: int) -> int:
    return -n % _ALIGN


def _as_wire_array(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    if a.ndim not in (1, 2):
        raise ProtocolError(f"only 1-D and 2-D arrays go on the wire, got ndim={a.ndim}")
    dt = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
    if dt not in _CODES:
        raise ProtocolError(f"dtype {a.dtype} cannot go on the wire")
    return a.astype(dt, copy=False)


def frame_buffers(frame: Frame) -> list[memoryview | bytes]:
    """The buffers of ``frame`` in wire order, for a zero-copy ``sendmsg``.

    Header, padded meta, then per array its descriptor, its data (a view of
    the array, not a copy) and padding to 8 bytes.

    Examples
    --------
    >>> import numpy as np
    >>> buffers = frame_buffers(Frame(Op.PULL, {"table": "w"}, [np.arange(3, dtype=np.int64)]))
    >>> [len(b) for b in buffers]          # header, meta (14 bytes + 2 padding), descriptor, 3 keys
    [24, 16, 24, 24]
    """
    if len(frame.arrays) > MAX_ARRAYS:
        raise ProtocolError(f"{len(frame.arrays)} arrays exceed the limit of {MAX_ARRAYS}")
    meta = json.dumps(frame.meta, separators=(",", ":"), allow_nan=False).encode()
    if len(meta) > MAX_META_BYTES:
        raise ProtocolError(f"meta block of {len(meta)} bytes exceeds {MAX_META_BYTES}")
    body: list[memoryview | bytes] = []
    body_len = 0
    for a in frame.arrays:
        a = _as_wire_array(a)
        rows, cols = (a.shape[0], 0) if a.ndim == 1 else a.shape
        if a.ndim == 2 and cols == 0:
            raise ProtocolError("a 2-D array on the wire needs at least one column")
        body.append(DESCRIPTOR.pack(_CODES[a.dtype], rows, cols))
        body.append(memoryview(a).cast("B") if a.nbytes else b"")
        pad = _pad(a.nbytes)
        if pad:
            body.append(bytes(pad))
        body_len += DESCRIPTOR.size + a.nbytes + pad
    header = HEADER.pack(MAGIC, VERSION, int(frame.op), int(frame.status),
                         len(frame.arrays), len(meta), frame.request_id, body_len)
    return [header, meta + bytes(_pad(len(meta))), *body]


def encode(frame: Frame) -> bytes:
    """Serialise ``frame`` to one ``bytes`` object (tests and small frames).

    Examples
    --------
    >>> raw = encode(Frame(Op.PING))
    >>> len(raw), raw[:4]                  # the header and an empty JSON object, padded
    (32, b'SPPS')
    """
    return b"".join(bytes(b) for b in frame_buffers(frame))


@dataclass(frozen=True)
class Header:
    """The fixed 24-byte header's fields, as :func:`parse_header` validated them.

    Examples
    --------
    >>> parse_header(encode(Frame(Op.PING))[:HEADER.size], DEFAULT_MAX_FRAME_BYTES)
    Header(op=3, status=0, n_arrays=0, meta_len=2, request_id=0, body_len=0)
    """

    op: int
    status: int
    n_arrays: int
    meta_len: int
    request_id: int
    body_len: int


def parse_header(raw: bytes | memoryview, max_frame_bytes: int) -> Header:
    """Validate the fixed header before anything is allocated for the frame.

    Raises
    ------
    ProtocolError
        For a wrong magic or version, or counts and lengths over the limits.

    Examples
    --------
    >>> import numpy as np
    >>> raw = encode(Frame(Op.PUSH, {}, [np.zeros(1000, np.float32)]))
    >>> parse_header(raw[:HEADER.size], DEFAULT_MAX_FRAME_BYTES).body_len
    4024
    >>> parse_header(raw[:HEADER.size], max_frame_bytes=1024)
    Traceback (most recent call last):
    ...
    spark_ps.errors.ProtocolError: frame body of 4024 bytes exceeds the limit of 1024
    """
    if len(raw) != HEADER.size:
        raise ProtocolError(f"truncated header: {len(raw)} of {HEADER.size} bytes")
    magic, version, op, status, n_arrays, meta_len, request_id, body_len = HEADER.unpack(raw)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic {bytes(magic)!r}: not a spark-ps peer")
    if version != VERSION:
        raise ProtocolError(f"protocol version {version} is not supported (this side speaks {VERSION})")
    if n_arrays > MAX_ARRAYS:
        raise ProtocolError(f"{n_arrays} arrays exceed the limit of {MAX_ARRAYS}")
    if meta_len > MAX_META_BYTES:
        raise ProtocolError(f"meta block of {meta_len} bytes exceeds {MAX_META_BYTES}")
    if body_len > max_frame_bytes:
        raise ProtocolError(f"frame body of {body_len} bytes exceeds the limit of {max_frame_bytes}")
    return Header(op, status, n_arrays, meta_len, request_id, body_len)


def parse_meta(raw: bytes | memoryview) -> dict[str, Any]:
    """The meta block as a dict (trailing padding ignored); :class:`ProtocolError` unless a JSON object.

    Examples
    --------
    >>> parse_meta(b'{"table":"w"}' + bytes(3))
    {'table': 'w'}
    >>> parse_meta(b'[1, 2]')
    Traceback (most recent call last):
    ...
    spark_ps.errors.ProtocolError: meta block must be a JSON object, got list
    >>> parse_meta(b'{"a": ' + b'[' * 5000 + b']' * 5000 + b'}')
    Traceback (most recent call last):
    ...
    spark_ps.errors.ProtocolError: meta block is nested too deeply
    """
    try:
        meta = json.loads(bytes(raw).rstrip(b"\0") or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"meta block is not valid JSON: {exc}") from None
    except RecursionError:  # e.g. 5,000 nested lists: json's parser recurses once per level
        raise ProtocolError("meta block is nested too deeply") from None
    if not isinstance(meta, dict):
        raise ProtocolError(f"meta block must be a JSON object, got {type(meta).__name__}")
    return meta


def parse_body(body: bytearray | bytes | memoryview | np.ndarray, n_arrays: int) -> list[np.ndarray]:
    """View each array of ``body`` without copying; reject any inconsistency.

    Examples
    --------
    >>> import numpy as np
    >>> raw = encode(Frame(Op.PUSH, {}, [np.arange(2), np.ones((2, 3), np.float32)]))
    >>> [a.shape for a in parse_body(raw[HEADER.size + 8:], 2)]        # after the header and meta
    [(2,), (2, 3)]
    >>> parse_body(raw[HEADER.size + 8:-8], 2)
    Traceback (most recent call last):
    ...
    spark_ps.errors.ProtocolError: array 1: 24 data bytes run past the end of the frame
    """
    arrays = []
    offset = 0
    view = memoryview(body)
    for i in range(n_arrays):
        if offset + DESCRIPTOR.size > len(view):
            raise ProtocolError(f"array {i}: descriptor runs past the end of the frame")
        code, rows, cols = DESCRIPTOR.unpack_from(view, offset)
        offset += DESCRIPTOR.size
        dtype = _DTYPES.get(code)
        if dtype is None:
            raise ProtocolError(f"array {i}: unknown dtype code {code}")
        count = rows * max(cols, 1)
        nbytes = count * dtype.itemsize
        if offset + nbytes > len(view):
            raise ProtocolError(f"array {i}: {nbytes} data bytes run past the end of the frame")
        a = np.frombuffer(view, dtype=dtype, count=count, offset=offset)
        arrays.append(a.reshape(rows, cols) if cols else a)
        offset += nbytes + _pad(nbytes)
    if offset != len(view):
        raise ProtocolError(f"frame body has {len(view) - offset} trailing bytes")
    return arrays


def decode(raw: bytes, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Frame:
    """Parse one complete frame held in memory (the inverse of :func:`encode`).

    Examples
    --------
    >>> frame = decode(encode(Frame(Op.DESCRIBE_TABLE, {"table": "w"}, request_id=7)))
    >>> frame.op, frame.meta, frame.request_id
    (<Op.DESCRIBE_TABLE: 12>, {'table': 'w'}, 7)
    """
    header = parse_header(memoryview(raw)[: HEADER.size], max_frame_bytes)
    meta_end = HEADER.size + header.meta_len + _pad(header.meta_len)
    if len(raw) != meta_end + header.body_len:
        raise ProtocolError(f"frame is {len(raw)} bytes, header announces {meta_end + header.body_len}")
    return frame_of(header, raw[HEADER.size: HEADER.size + header.meta_len],
                  bytearray(raw[meta_end:]))


def frame_of(header: Header, meta_raw: bytes | bytearray | memoryview | np.ndarray,
             body: bytearray | bytes | memoryview | np.ndarray) -> Frame:
    """The frame of a validated ``header``, its meta block (unpadded) and its body.

    Examples
    --------
    >>> raw = encode(Frame(Op.PING, {"n": 1}))
    >>> frame_of(parse_header(raw[:HEADER.size], DEFAULT_MAX_FRAME_BYTES), raw[HEADER.size:HEADER.size + 7], b"").meta
    {'n': 1}
    """
    try:
        op = Op(header.op)
        status = Status(header.status)
    except ValueError:
        raise ProtocolError(f"unknown op {header.op} or status {header.status}") from None
    return Frame(op, parse_meta(meta_raw), parse_body(body, header.n_arrays), status, header.request_id)


# --- socket I/O -------------------------------------------------------------

def recv_exact(sock: socket.socket, n: int, *, zeroed: bool = True) -> bytearray | np.ndarray:
    """Exactly ``n`` bytes from ``sock``: ``EOFError`` on a close before a header, else :class:`ProtocolError`.

    ``zeroed=False`` receives into uninitialised memory (a uint8 array), for bodies.

    Examples
    --------
    >>> import socket
    >>> a, b = socket.socketpair(); a.sendall(b"abc"); a.close()
    >>> bytes(recv_exact(b, 2)), bytes(recv_exact(b, 1, zeroed=False))
    (b'ab', b'c')
    """
    # A body of megabytes is received into uninitialised memory: zero-filling
    # it first (bytearray) costs a pass over it, ~0.5 ms per 4 MB push here.
    buf = bytearray(n) if zeroed else np.empty(n, dtype=np.uint8)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            if got == 0 and n == HEADER.size:
                raise EOFError("peer closed the connection")
            raise ProtocolError(f"connection closed mid-frame after {got} of {n} bytes")
        got += k
    return buf


def read_frame(sock: socket.socket, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Frame:
    """Read one frame; arrays are views into a single freshly received buffer.

    Raises ``EOFError`` on a clean close between frames, :class:`ProtocolError`
    on anything malformed (the caller then drops the connection, since the
    stream can no longer be resynchronised).

    Examples
    --------
    >>> import socket
    >>> a, b = socket.socketpair()
    >>> write_frame(a, Frame(Op.PING, {"n": 1})); a.close()
    >>> read_frame(b).meta
    {'n': 1}
    >>> read_frame(b)
    Traceback (most recent call last):
    ...
    EOFError: peer closed the connection
    """
    header = parse_header(recv_exact(sock, HEADER.size), max_frame_bytes)
    meta_raw = recv_exact(sock, header.meta_len + _pad(header.meta_len))
    body = recv_exact(sock, header.body_len, zeroed=False) if header.body_len else bytearray()
    return frame_of(header, meta_raw[: header.meta_len], body)


def write_frame(sock: socket.socket, frame: Frame) -> None:
    """Send ``frame`` with scatter-gather I/O, resuming after partial sends.

    Examples
    --------
    >>> import numpy as np, socket
    >>> a, b = socket.socketpair()
    >>> write_frame(a, Frame(Op.PULL, {"table": "w"}, [np.array([3, 5])]))
    >>> read_frame(b).arrays[0].tolist()
    [3, 5]
    """
    send_buffers(sock, frame_buffers(frame))


def send_buffers(sock: socket.socket, buffers: list[memoryview | bytes] | list[bytes]) -> None:
    """Send ``buffers`` in order with scatter-gather ``sendmsg`` (64 at a time), resuming after partial sends.

    Examples
    --------
    >>> import socket
    >>> a, b = socket.socketpair(); send_buffers(a, [b"ab", b"", b"c"]); b.recv(3)
    b'abc'
    """
    pending = [memoryview(b).cast("B") for b in buffers]
    while pending and len(pending[0]) == 0:
        pending.pop(0)
    while pending:
        sent = sock.sendmsg(pending[:64])
        while sent:
            head = pending[0]
            if sent >= len(head):
                sent -= len(head)
                pending.pop(0)
            else:
                pending[0] = head[sent:]
                sent = 0
        while pending and len(pending[0]) == 0:
            pending.pop(0)


def error_frame(op: int, exc: BaseException, request_id: int = 0) -> Frame:
    """The reply that reports ``exc`` to the peer (kind + message, no traceback).

    Examples
    --------
    >>> error_frame(Op.PULL, KeyError("unknown table 'w'"), request_id=4).meta
    {'error': "unknown table 'w'", 'kind': 'KeyError'}
    """
    try:
        op = Op(op)
    except ValueError:
        op = Op.PING
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    return Frame(op, {"error": str(message), "kind": type(exc).__name__},
                 status=Status.ERROR, request_id=request_id)


def arrow_payload(batch: pa.RecordBatch) -> np.ndarray:
    """A record batch as a frame array: its Arrow IPC stream, as uint8 (rows with their optimizer state).

    Examples
    --------
    >>> batch = pa.RecordBatch.from_pydict({"key": [1, 2]})
    >>> [b.num_rows for b in arrow_batches(arrow_payload(batch))]
    [2]
    """
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return np.frombuffer(sink.getvalue(), dtype=np.uint8)


def arrow_batches(payload: np.ndarray) -> list[pa.RecordBatch]:
    """The record batches of an :func:`arrow_payload` array.

    Raises
    ------
    ValueError
        If the payload is not an Arrow IPC stream.
    """
    try:
        return list(pa.ipc.open_stream(pa.py_buffer(payload)))
    except pa.ArrowInvalid as exc:
        raise ValueError(f"payload is not a valid Arrow IPC stream: {exc}") from None
