"""Fault injection (issue 11, item 4): drops, cuts and delays at a rate, on either end, change no result.

Real shard servers on loopback and real clients; the faults are the shards'
(``ShardSettings.faults``, ``spark.ps.faults.*``) and the clients'
(``PSClient(faults=)``, ``spark.ps.client.faults.*``). With resends, every
push is applied exactly once (request ids, ``server/pushlog.py``) and every
clock tick once, whatever was dropped: the table ends as without faults.
"""

from __future__ import annotations

import numpy as np
import pytest
from shardkit import SECRET, shards  # noqa: F401 - the fixture

from spark_ps.client.client import PSClient
from spark_ps.errors import PSConnectionError
from spark_ps.server.settings import ShardSettings
from spark_ps.wire.faults import CLIENT_PREFIX, Fault, FaultSettings

SHARD_FAULTS = FaultSettings(drop_rate=0.05, cut_rate=0.02, delay_rate=0.02, delay_ms=1.0, seed=3)
CLIENT_FAULTS = FaultSettings(drop_rate=0.05, cut_rate=0.02, delay_rate=0.02, delay_ms=1.0, seed=4,
                              prefix=CLIENT_PREFIX)


def test_pushes_and_ticks_apply_once_under_faults_at_both_ends(shards):
    cluster = shards(2, settings=ShardSettings(faults=SHARD_FAULTS))
    rng = np.random.default_rng(0)
    expected = np.zeros(50, np.float32)
    with PSClient(cluster.addresses, SECRET, resends=10, faults=CLIENT_FAULTS, timeout=10) as client:
        client.create_table("w", width=1, optimizer="delta")
        client.clock_create("c", num_workers=1, staleness=0)
        ticks = 0
        for step in range(200):
            keys = rng.choice(50, size=8, replace=False)
            values = rng.integers(1, 4, size=8).astype(np.float32)
            expected[keys] += values
            ticks += 1
            if step % 2:
                client.push("w", keys, values)
                assert client.clock_advance("c", worker=0, timeout=5) == ticks
            else:
                assert client.push_and_advance("w", keys, values, "c", worker=0) == ticks
        pulled = client.pull("w", np.arange(50)).ravel()
        duplicates = sum(s["duplicates"] for s in client.stats())
        drawn = client._faults.counts
    served = [server.faults.counts for server in cluster.servers]
    assert np.array_equal(pulled, expected)  # every push applied exactly once
    assert drawn[Fault.DROP] > 10 and drawn[Fault.CUT] > 2 and drawn[Fault.DELAY] > 2, drawn
    assert all(c[Fault.DROP] > 5 and c[Fault.CUT] > 1 for c in served), served
    assert duplicates > 5  # pushes whose reply was lost were resent, and answered without applying them again


def test_without_resends_a_dropped_request_fails_and_says_so(shards):
    cluster = shards(1)
    every = FaultSettings(drop_rate=1.0, prefix=CLIENT_PREFIX)
    with PSClient(cluster.addresses, SECRET, resends=0, faults=every) as client:
        with pytest.raises(PSConnectionError, match=r"PING failed before sending it, after 1 attempt.*injected fault "
                                                    r"\(drop, spark.ps.client.faults"):
            client.ping()


def test_seeded_faults_repeat(shards):
    def run() -> tuple[list[float], dict]:
        cluster = shards(1, settings=ShardSettings(faults=SHARD_FAULTS))
        with PSClient(cluster.addresses, SECRET, resends=10, faults=CLIENT_FAULTS) as client:
            client.create_table("w", width=1, optimizer="sgd", lr=0.5)
            for step in range(60):
                client.push("w", [step % 7, 7 + step % 3], [1.0, -1.0])
            return client.pull("w", np.arange(10)).ravel().tolist(), dict(client._faults.counts)

    first, second = run(), run()
    assert first == second and sum(first[1].values()) > 0
