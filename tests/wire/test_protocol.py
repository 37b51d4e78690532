"""Frame encoding: round trips, zero-copy views, and a fuzzed parser."""

from __future__ import annotations

import socket
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from spark_ps.errors import ProtocolError
from spark_ps.wire.protocol import (
    DESCRIPTOR,
    HEADER,
    MAGIC,
    VERSION,
    Frame,
    Op,
    Status,
    decode,
    encode,
    parse_body,
    read_frame,
    write_frame,
)

wire_dtypes = st.sampled_from([np.int64, np.float32, np.float64, np.uint8, np.int32])
wire_shapes = st.tuples(st.integers(0, 20)) | st.tuples(st.integers(0, 20), st.integers(1, 9))
wire_arrays = st.tuples(wire_dtypes, wire_shapes).flatmap(lambda ds: hnp.arrays(ds[0], ds[1]))


@given(st.lists(wire_arrays, max_size=4),
       st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=4))
@settings(max_examples=200, deadline=None)
def test_round_trip_preserves_arrays_and_meta(arrays, meta):
    frame = Frame(Op.PUSH, meta, arrays, Status.OK, request_id=7)
    back = decode(encode(frame))
    assert back.op == Op.PUSH and back.meta == meta and back.request_id == 7
    assert len(back.arrays) == len(arrays)
    for a, b in zip(arrays, back.arrays):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_arrays_are_aligned_views_of_one_buffer():
    keys = np.arange(5, dtype=np.int64)
    vals = np.ones((5, 3), dtype=np.float32)
    raw = encode(Frame(Op.PUSH, {"table": "abc"}, [np.arange(3, dtype=np.uint8), keys, vals]))
    back = decode(raw)
    # Padding keeps every array 8-byte aligned so the views are efficient.
    for a in back.arrays:
        assert not a.flags.owndata
        assert a.ctypes.data % 8 == 0
    np.testing.assert_array_equal(back.arrays[2], vals)


def test_big_endian_input_is_normalised():
    a = np.arange(4, dtype=">i8")
    back = decode(encode(Frame(Op.PULL, {}, [a])))
    np.testing.assert_array_equal(back.arrays[0], np.arange(4))


@pytest.mark.parametrize("mutate, message", [
    (lambda raw: b"XXXX" + raw[4:], "bad magic"),
    (lambda raw: raw[:4] + bytes([99]) + raw[5:], "version"),
    (lambda raw: raw[:10], "truncated header"),
    (lambda raw: raw[:-3], "announces"),
])
def test_malformed_frames_raise_protocol_error(mutate, message):
    raw = encode(Frame(Op.PULL, {"table": "w"}, [np.arange(4, dtype=np.int64)]))
    with pytest.raises(ProtocolError, match=message):
        decode(mutate(raw))


def test_oversized_body_is_refused_before_allocation():
    header = HEADER.pack(MAGIC, VERSION, int(Op.PUSH), 0, 1, 0, 0, 1 << 50)
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        decode(header, max_frame_bytes=1 << 20)


def test_descriptor_lying_about_size_is_refused():
    body = DESCRIPTOR.pack(1, 1000, 0) + bytes(16)
    with pytest.raises(ProtocolError, match="past the end"):
        parse_body(body, 1)


def test_unknown_dtype_code_is_refused():
    with pytest.raises(ProtocolError, match="unknown dtype"):
        parse_body(DESCRIPTOR.pack(200, 0, 0), 1)


@given(st.binary(max_size=300))
@settings(max_examples=500, deadline=None)
def test_fuzz_random_bytes_never_crash_the_parser(data):
    try:
        decode(data, max_frame_bytes=1 << 16)
    except ProtocolError:
        pass  # refusing is the expected outcome; anything else is a bug


@given(st.data())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_corrupted_valid_frames(data):
    raw = bytearray(encode(Frame(Op.PUSH, {"table": "w"},
                                 [np.arange(6, dtype=np.int64), np.ones((6, 2), np.float32)])))
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    try:
        frame = decode(bytes(raw[:cut]), max_frame_bytes=1 << 16)
    except ProtocolError:
        return
    # A corruption that still parses must still be self-consistent.
    assert all(isinstance(a, np.ndarray) for a in frame.arrays)


def test_socket_round_trip_with_large_arrays():
    a, b = socket.socketpair()
    try:
        keys = np.arange(300_000, dtype=np.int64)
        vals = np.random.default_rng(0).random((300_000, 9), dtype=np.float32)
        import threading
        t = threading.Thread(target=write_frame, args=(a, Frame(Op.PUSH, {"table": "w"}, [keys, vals])))
        t.start()
        back = read_frame(b)
        t.join()
        np.testing.assert_array_equal(back.arrays[0], keys)
        np.testing.assert_array_equal(back.arrays[1], vals)
    finally:
        a.close()
        b.close()


def test_clean_close_between_frames_is_eof_and_mid_frame_is_protocol_error():
    a, b = socket.socketpair()
    a.close()
    with pytest.raises(EOFError):
        read_frame(b)
    b.close()
    a, b = socket.socketpair()
    a.sendall(encode(Frame(Op.PULL, {}, [np.arange(10, dtype=np.int64)]))[:40])
    a.close()
    with pytest.raises(ProtocolError, match="mid-frame"):
        read_frame(b)
    b.close()


def test_meta_must_be_a_json_object():
    meta = b"[1,2]"
    raw = HEADER.pack(MAGIC, VERSION, int(Op.PING), 0, 0, len(meta), 0, 0) + meta + bytes(3)
    with pytest.raises(ProtocolError, match="JSON object"):
        decode(raw)
    assert struct.calcsize("<4sBBBBIIQ") == HEADER.size == 24
