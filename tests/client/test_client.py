"""Client against real shard servers on loopback: routing, order, errors, security."""

from __future__ import annotations

import pickle
import socket
import threading

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shardkit import SECRET, ShardCluster, shards  # noqa: F401  (fixture)

from spark_ps.client.client import PSClient
from spark_ps.errors import AuthenticationError, ProtocolError, PSConnectionError, RemoteError
from spark_ps.wire.auth import authenticate_to_server
from spark_ps.wire.protocol import HEADER, MAGIC, VERSION, Frame, Op, Status, encode, read_frame, write_frame


def send_then_half_close(sock, data: bytes) -> None:
    """Send ``data`` and close our side; the shard may already have hung up on garbage."""
    try:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # a refusal by closing is an allowed outcome


def reference_sums(keys, values):
    ref: dict[int, np.ndarray] = {}
    for k, v in zip(keys.tolist(), values):
        ref[k] = ref.get(k, 0.0) + v.astype(np.float64)
    return ref


@pytest.mark.parametrize("num_shards, width", [(1, 1), (3, 1), (3, 9)])
def test_push_pull_matches_dict_reference(shards, num_shards, width):
    cluster = shards(num_shards)
    rng = np.random.default_rng(num_shards * 10 + width)
    with PSClient(cluster.addresses, SECRET, max_request_keys=97) as client:
        client.create_table("w", width=width, optimizer="delta")
        ref: dict[int, np.ndarray] = {}
        for _ in range(5):
            # Hashed ids across the whole int64 range, with repeats and any order.
            keys = rng.choice(rng.integers(-2**63, 2**63 - 1, 400, dtype=np.int64), 600)
            vals = rng.normal(size=(600, width)).astype(np.float32)
            client.push("w", keys, vals)
            for k, v in reference_sums(keys, vals).items():
                ref[k] = ref.get(k, 0.0) + v
        asked = rng.permutation(np.array(list(ref), dtype=np.int64))
        got = client.pull("w", np.concatenate([asked, asked[:5], [12345]]))
        expected = np.array([ref[k] for k in asked.tolist()])
        np.testing.assert_allclose(got[: len(asked)], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(got[len(asked): len(asked) + 5], got[:5])
        np.testing.assert_array_equal(got[-1], np.zeros(width))  # never pushed
        rows = sum(d["rows"] for d in client.describe("w"))
        assert rows == len(ref)
        if num_shards > 1:  # hash routing spreads keys over every shard
            assert all(d["rows"] > 0 for d in client.describe("w"))


def test_pull_of_empty_and_sorted_keys(shards):
    cluster = shards(2)
    with PSClient(cluster.addresses, SECRET) as client:
        client.create_table("e", width=3)
        assert client.pull("e", np.array([], dtype=np.int64)).shape == (0, 3)
        assert client.pull("e", []).shape == (0, 3)
        client.push("e", [1, 2], np.ones((2, 3)))
        np.testing.assert_array_equal(client.pull("e", [1, 2, 3]).sum(axis=1), [3, 3, 0])


def test_client_is_picklable_and_reconnects_in_the_copy(shards):
    cluster = shards(2)
    client = PSClient(cluster.addresses, SECRET)
    client.create_table("p", width=1)
    client.push("p", [7], [[2.0]])
    copy = pickle.loads(pickle.dumps(client))
    assert copy.pull("p", [7])[0, 0] == 2.0
    assert b"test-secret" not in repr(copy).encode()
    client.close()
    copy.close()


def test_bad_input_errors_name_the_problem(shards):
    cluster = shards(2)
    with PSClient(cluster.addresses, SECRET) as client:
        client.create_table("w", width=2)
        with pytest.raises(KeyError, match="unknown table 'nope'"):
            client.pull("nope", [1])
        with pytest.raises(ValueError, match="width"):
            client.push("w", [1, 2], np.ones((2, 3), np.float32))
        with pytest.raises(TypeError, match="dtype float64"):
            client.pull("w", np.array([1.5, 2.0]))
        with pytest.raises(ValueError, match="shape"):
            client.push("w", [1, 2, 3], np.ones((2, 2)))
        with pytest.raises(ValueError, match="non-finite"):
            client.push("w", [1, 2], np.array([[0, 1], [np.nan, 0]]))
        with pytest.raises(ValueError, match="different spec"):
            client.create_table("w", width=5)
        client.create_table("w", width=2)  # identical spec: idempotent
        assert sum(d["rows"] for d in client.describe("w")) == 0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_shard_rejects_non_finite_push_and_keeps_table(shards, bad):
    """Bypass the client's own check: the shard must refuse on its own."""
    cluster = shards(1)
    with PSClient(cluster.addresses, SECRET) as client:
        client.create_table("w", width=1, optimizer="sgd", hyper={"lr": 1.0})
        client.push("w", [1, 2], [[1.0], [1.0]])
        before = client.pull("w", [1, 2, 3]).copy()
        conn = client._conns[0]
        vals = np.array([[0.5], [bad], [0.5]], dtype=np.float32)
        with pytest.raises(ValueError, match="(?i)non-finite|nan|inf"):
            conn.request(Frame(Op.PUSH, {"table": "w"}, [np.array([1, 2, 3]), vals]), idempotent=False)
        np.testing.assert_array_equal(client.pull("w", [1, 2, 3]), before)


def test_wire_keys_must_be_sorted_unique_int64(shards):
    cluster = shards(1)
    with PSClient(cluster.addresses, SECRET) as client:
        client.create_table("w")
        conn = client._conns[0]
        with pytest.raises(ValueError, match="sorted and unique"):
            conn.request(Frame(Op.PULL, {"table": "w"}, [np.array([3, 1], dtype=np.int64)]), idempotent=True)
        with pytest.raises(TypeError, match="int64"):
            conn.request(Frame(Op.PULL, {"table": "w"}, [np.array([1, 3], dtype=np.int32)]), idempotent=True)


def _assert_serves_a_good_client(cluster) -> None:
    """The server survived what came before: a client with the secret creates, pulls and gets its row."""
    with PSClient(cluster.addresses, SECRET) as good:
        good.create_table("w")
        assert good.pull("w", [1]).shape == (1, 1)


def test_wrong_secret_is_refused_and_server_survives(shards):
    cluster = shards(1)
    with pytest.raises(AuthenticationError, match="authentication failed"):
        PSClient(cluster.addresses, b"not-the-secret").pull("w", [1])
    # A raw peer that skips the handshake gets nothing served either.
    with socket.create_connection(cluster.addresses[0], timeout=5) as raw:
        challenge = read_frame(raw)
        assert challenge.op == Op.CHALLENGE
        write_frame(raw, Frame(Op.PULL, {"table": "w"}, [np.array([1])]))
        refusal = read_frame(raw)
        assert refusal.status == Status.ERROR and "authentication" in refusal.meta["error"]
    _assert_serves_a_good_client(cluster)


def test_request_size_is_capped(shards):
    """A shard refusing frames over 4 kB still serves 10k keys: the client chunks."""
    cluster = shards(2, max_frame_bytes=4096)
    keys = np.arange(10_000, dtype=np.int64)
    with PSClient(cluster.addresses, SECRET, max_request_keys=128) as client:
        client.create_table("w")
        client.push("w", keys, np.ones(10_000, np.float32))
        assert client.pull("w", keys).sum() == 10_000
    with PSClient(cluster.addresses, SECRET, max_request_keys=100_000) as greedy:
        with pytest.raises(RemoteError, match="exceeds the limit of 4096"):
            greedy.push("w", keys, np.ones(10_000, np.float32))


def test_reconnects_once_after_a_dropped_connection(shards):
    cluster = shards(1)
    with PSClient(cluster.addresses, SECRET) as client:
        client.create_table("w")
        client.push("w", [1], [[1.0]])
        server = cluster.servers[0]
        for conn in server._snapshot_connections():  # the shard drops every connection
            conn.shutdown(socket.SHUT_RDWR)
        client.push("w", [1], [[1.0]])  # detected before sending, so applied exactly once
        assert client.pull("w", [1])[0, 0] == 2.0
        server.shutdown()
        with pytest.raises(PSConnectionError, match=r"127\.0\.0\.1:\d+.*2 attempt"):
            client.pull("w", [1])


@given(st.binary(min_size=1, max_size=200))
@settings(max_examples=60, deadline=None)
def test_fuzz_garbage_after_auth_never_crashes_or_corrupts(data):
    cluster = ShardCluster(1, max_frame_bytes=1 << 16)
    try:
        with PSClient(cluster.addresses, SECRET) as client:
            client.create_table("w")
            client.push("w", [1, 2], [[1.0], [2.0]])
            with socket.create_connection(cluster.addresses[0], timeout=5) as raw:
                authenticate_to_server(raw, SECRET)
                send_then_half_close(raw, data)
                try:
                    while read_frame(raw).status == Status.OK:
                        pass
                except (EOFError, ProtocolError, ConnectionError):
                    pass  # the shard may close on garbage; that is allowed
            np.testing.assert_array_equal(client.pull("w", [1, 2]).ravel(), [1.0, 2.0])
    finally:
        cluster.close()


def test_truncated_and_oversized_frames_get_error_or_close(shards):
    cluster = shards(1, max_frame_bytes=1024)
    with PSClient(cluster.addresses, SECRET) as client:
        client.create_table("w")
        client.push("w", [5], [[3.0]])
        for payload in (encode(Frame(Op.PUSH, {"table": "w"}, [np.arange(500, dtype=np.int64),
                                                               np.ones((500, 1), np.float32)])),
                        encode(Frame(Op.PUSH, {"table": "w"}, [np.array([5]), np.ones((1, 1), np.float32)]))[:-4]):
            with socket.create_connection(cluster.addresses[0], timeout=5) as raw:
                authenticate_to_server(raw, SECRET)
                send_then_half_close(raw, payload)
                try:
                    reply = read_frame(raw)
                    assert reply.status == Status.ERROR
                except (EOFError, ConnectionError):
                    pass
        assert client.pull("w", [5])[0, 0] == 3.0


def test_export_import_moves_tables_between_layouts(shards):
    src, dst = shards(2), shards(3)
    rng = np.random.default_rng(3)
    keys = rng.integers(0, 2**40, 5000, dtype=np.int64)
    with PSClient(src.addresses, SECRET) as a, PSClient(dst.addresses, SECRET) as b:
        for c in (a, b):
            c.create_table("m", width=4, optimizer="adagrad", hyper={"lr": 0.1})
        a.push("m", keys, rng.normal(size=(5000, 4)))
        batches = list(a.export("m", max_rows=700))
        assert all(isinstance(x, pa.RecordBatch) for x in batches)
        assert sum(x.num_rows for x in batches) == len(np.unique(keys))
        assert b.import_batches("m", batches) == len(np.unique(keys))
        np.testing.assert_array_equal(a.pull("m", keys), b.pull("m", keys))
        # Optimizer state came along: one more identical push keeps them equal.
        g = rng.normal(size=(5000, 4))
        a.push("m", keys, g)
        b.push("m", keys, g)
        np.testing.assert_allclose(a.pull("m", keys), b.pull("m", keys), rtol=1e-6)


@pytest.mark.parametrize("staleness", [0, 2])
def test_clock_over_the_wire_bounds_staleness(shards, staleness):
    """When a worker is let into iteration c, no unfinished worker is below c - staleness."""
    cluster = shards(2)
    n_workers, iters = 3, 8
    violations: list[tuple[int, int, tuple[int, ...]]] = []
    admin = PSClient(cluster.addresses, SECRET)
    admin.clock_create("c", n_workers, staleness=staleness)
    table = cluster.servers[0].shard.clock("c")  # the shard hosting the clock: read its state directly

    def worker(w):
        with PSClient(cluster.addresses, SECRET) as c:
            for _ in range(iters):
                clock = c.clock_advance("c", w, timeout=30)
                snapshot = table.clocks()
                if min(snapshot) < clock - staleness:
                    violations.append((w, clock, snapshot))
            c.clock_finish("c", w)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(n_workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    admin.close()
    assert table.clocks() == (iters,) * n_workers
    assert not violations


@pytest.mark.parametrize("num_shards", [1, 2])
def test_push_and_advance_applies_the_push_everywhere_then_ticks(shards, num_shards):
    cluster = shards(num_shards)
    clock = cluster.servers[0].shard  # clocks live on the first shard
    keys = np.arange(-50, 50, dtype=np.int64) * 7919  # spread over every shard
    with PSClient(cluster.addresses, SECRET) as c:
        c.create_table("w", width=2, optimizer="delta")
        c.clock_create("c", num_workers=2, staleness=3)
        values = np.ones((keys.size, 2), np.float32)
        assert c.push_and_advance("w", keys, values, "c", worker=1, timeout=10) == 1
        assert clock.clock("c").clocks() == (0, 1)
        np.testing.assert_array_equal(c.pull("w", keys), values)
        # A push no shard holds a key of still ticks; an empty one too.
        assert c.push_and_advance("w", keys[:0], values[:0], "c", worker=1, timeout=10) == 2
        # A push the shards reject (wrong width) ticks nothing.
        with pytest.raises(RemoteError, match="shape"):
            c.push_and_advance("w", keys[:3], np.ones((3, 1), np.float32), "c", worker=1, timeout=10)
        assert clock.clock("c").clocks() == (0, 2)


def test_a_malformed_tick_rejects_the_push_before_applying_it(shards):
    cluster = shards(1)
    with PSClient(cluster.addresses, SECRET) as c:
        c.create_table("w", width=1, optimizer="delta")
        conn = c._conns[0]
        c.clock_create("c", num_workers=1, staleness=0)
        bad = [("c", "JSON object"), ({"worker": 0}, "clock"), ({"clock": "nope", "worker": 0}, "unknown clock"),
               ({"clock": "c", "worker": "0"}, "integer worker")]
        for advance, message in bad:
            with pytest.raises(RemoteError, match=message):
                conn.request(Frame(Op.PUSH, {"table": "w", "advance": advance},
                                   [np.array([1], np.int64), np.ones((1, 1), np.float32)]), idempotent=False)
        assert c.pull("w", [1]).tolist() == [[0.0]]  # checked before the push: nothing was applied


def test_a_non_ascii_mac_is_refused_with_a_reply_and_the_server_survives(shards):
    cluster = shards(1)
    with socket.create_connection(cluster.addresses[0], timeout=5) as raw:
        assert read_frame(raw).op == Op.CHALLENGE
        write_frame(raw, Frame(Op.AUTH, {"nonce": "0" * 64, "protection": 1, "mac": "é" * 64}))
        refusal = read_frame(raw)
        assert refusal.status == Status.ERROR and "authentication failed" in refusal.meta["error"]
    _assert_serves_a_good_client(cluster)


def test_deeply_nested_json_before_login_gets_a_reply_and_the_server_survives(shards):
    cluster = shards(1)
    nested = b'{"mac": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    padded = nested + bytes(-len(nested) % 8)
    # A hand-made AUTH frame: the header (no arrays, no body) and the nested meta block, padded to 8 bytes.
    frame = HEADER.pack(MAGIC, VERSION, int(Op.AUTH), int(Status.OK), 0, len(nested), 0, 0) + padded
    with socket.create_connection(cluster.addresses[0], timeout=5) as raw:
        assert read_frame(raw).op == Op.CHALLENGE
        raw.sendall(frame)
        refusal = read_frame(raw)
        assert refusal.status == Status.ERROR and "nested too deeply" in refusal.meta["error"]
    _assert_serves_a_good_client(cluster)
