"""Exactly-once pushes (issue 11, item 3): the audit's rows against real shard servers and real sockets."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from shardkit import SECRET, Relay, shards  # noqa: F401  (fixture)

from spark_ps.client.client import PSClient


def test_a_refused_tick_applies_nothing(shards):
    """Audit: a push carrying a clock tick that is refused (bad worker, bad timeout) was applied all the same."""
    cluster = shards(1)
    with PSClient(cluster.addresses, SECRET, timeout=5) as client:
        client.create_table("w", optimizer="delta")
        client.clock_create("c", num_workers=2, staleness=0)
        for worker, timeout in ((5, 1.0), (0, -1.0)):
            with pytest.raises(ValueError, match="nothing was applied"):
                client.push_and_advance("w", [1], [[1.0]], "c", worker=worker, timeout=timeout)
        assert client.pull("w", [1]).ravel().tolist() == [0.0]
        assert cluster.servers[0].shard.clock("c").clocks() == (0, 0)


def test_a_tick_that_times_out_stays_applied_once_and_a_retry_only_waits(shards):
    """Audit: a tick that timed out left its push applied; a caller that retried applied the gradient twice."""
    cluster = shards(1)
    with PSClient(cluster.addresses, SECRET, timeout=5) as client:
        client.create_table("w", optimizer="delta")
        client.clock_create("c", num_workers=2, staleness=0)
        with pytest.raises(TimeoutError, match="were applied") as info:
            client.push_and_advance("w", [1], [[1.0]], "c", worker=0, timeout=0.1)  # worker 1 has not ticked
        assert client.pull("w", [1]).ravel().tolist() == [1.0]
        retried: list[int] = []
        retry = threading.Thread(target=lambda: retried.append(client.push_and_advance(
            "w", [1], [[1.0]], "c", worker=0, timeout=10.0, request_id=info.value.request_id)))
        retry.start()
        with PSClient(cluster.addresses, SECRET, timeout=5) as other:
            assert other.clock_advance("c", worker=1, timeout=10.0) == 1
        retry.join(10)
        assert retried == [1]
        assert client.pull("w", [1]).ravel().tolist() == [1.0]  # applied once
        assert cluster.servers[0].shard.clock("c").clocks() == (1, 1)


def test_a_push_across_shards_says_which_applied_and_a_retry_completes_only_the_rest(shards):
    """Audit: with one shard refusing, the error said "nothing was applied" while the other shard's rows changed."""
    cluster = shards(2)
    keys = np.arange(64, dtype=np.int64)
    with PSClient(cluster.addresses, SECRET, timeout=5) as client, \
            PSClient(cluster.addresses[1:], SECRET, timeout=5) as second_only:
        spec = client.create_table("w", optimizer="delta")
        second_only.drop_table("w")  # shard 1 now refuses its part
        with pytest.raises(Exception, match="unknown table") as info:
            client.push("w", keys, np.ones(64, np.float32))
        error = info.value
        assert "nothing was applied" not in str(error)
        assert (getattr(error, "applied", None), getattr(error, "failed", None)) == ([0], [1]), str(error)
        assert "shard 0" in str(error) and "applied its part" in str(error) and "request_id=" in str(error)
        second_only.create_table(spec)
        client.push("w", keys, np.ones(64, np.float32), request_id=error.request_id)
        assert client.pull("w", keys).ravel().tolist() == [1.0] * 64  # once on each shard


def test_a_push_whose_reply_is_lost_is_resent_and_applied_once(shards):
    """A dropped connection after the push was sent used to fail with "it may have been applied"."""
    cluster = shards(1)
    relay = Relay(cluster.addresses[0])
    try:
        with PSClient([relay.address], SECRET, timeout=5) as client:
            client.create_table("w", optimizer="delta")
            relay.drop_reply = True
            client.push("w", [1], [[1.0]])  # applied, reply lost, resent on a new connection: a duplicate
            assert client.pull("w", [1]).ravel().tolist() == [1.0]
    finally:
        relay.close()
