"""Upper bounds on table width, clock workers and reply size, over real sockets (issue 11, item 2).

Audit row: a table of width 2^20 made a 128-byte request get a 32 MiB reply,
and a clock of 10^7 workers cost +121 MB; nothing bounded either.
"""

from __future__ import annotations

import numpy as np
import pytest
from shardkit import SECRET, Sidecar, shards  # noqa: F401  (fixture)

from spark_ps.client.client import PSClient
from spark_ps.errors import RemoteValueError
from spark_ps.server.settings import ShardSettings


def test_default_bounds_refuse_the_audit_width_and_clock(shards):
    cluster = shards(1)
    with PSClient(cluster.addresses, SECRET, timeout=10) as client:
        with pytest.raises(RemoteValueError, match=r"width 1048576 is over this shard's limit of 65536 "
                                                   r"\(spark.ps.maxTableWidth\); table not created"):
            client.create_table("wide", width=1 << 20, optimizer="delta")
        with pytest.raises(RemoteValueError, match=r"10000000 workers is over this shard's limit of 65536 "
                                                   r"\(spark.ps.maxClockWorkers\); clock not created"):
            client.clock_create("c", num_workers=10**7, staleness=0)
        assert client.list_tables() == []
        client.create_table("w", width=1 << 16, optimizer="delta")  # at the limit: allowed
        client.clock_create("c", num_workers=1 << 16, staleness=0)


def test_a_pull_whose_reply_is_over_the_limit_is_refused_before_it_is_computed(shards):
    cluster = shards(1, settings=ShardSettings(max_reply_bytes=1 << 20))
    with PSClient(cluster.addresses, SECRET, timeout=10) as client:
        client.create_table("w", width=1024, optimizer="delta")  # 4 KiB a row: 256 rows fill 1 MiB
        assert client.pull("w", np.arange(256)).shape == (256, 1024)
        with pytest.raises(RemoteValueError, match=r"pull of 257 keys from table 'w' \(width 1024\) would make a "
                                                   r"reply of 1052672 bytes, over the limit of 1048576 "
                                                   r"\(spark.ps.maxReplyBytes\); pull fewer keys per request"):
            client.pull("w", np.arange(257))
        assert client.ping() == [1]  # the connection and the shard go on


def test_exports_are_cut_into_replies_under_the_limit(shards):
    cluster = shards(1, settings=ShardSettings(max_reply_bytes=1 << 20))
    with PSClient(cluster.addresses, SECRET, timeout=10) as client:
        client.create_table("w", width=1024, optimizer="adam")
        keys = np.arange(1000)
        client.push("w", keys, np.ones((1000, 1024), np.float32))
        batches = list(client.export("w"))  # asks for 65,536 rows a batch; the shard sends at most 63
        assert sum(b.num_rows for b in batches) == 1000
        assert max(b.num_rows for b in batches) == (1 << 20) // (8 + 16 * 1024)


def test_limits_reach_a_real_sidecar_as_confs():
    sidecar = Sidecar("spark.ps.maxTableWidth=8", "spark.ps.python=ignored")
    try:
        with PSClient([sidecar.address], SECRET, timeout=10) as client:
            with pytest.raises(RemoteValueError, match=r"width 9 is over this shard's limit of 8"):
                client.create_table("w", width=9, optimizer="delta")
    finally:
        assert sidecar.close() == 0


def test_a_bad_limit_stops_the_sidecar_before_it_is_ready():
    with pytest.raises(AssertionError, match="exit code 2") as failure:
        Sidecar("spark.ps.idleTimeout=soon")
    assert "spark.ps.idleTimeout='soon' is not a duration" in str(failure.value)


def test_a_reply_the_shard_cannot_cut_under_the_limit_becomes_an_error_reply(shards):
    cluster = shards(1, settings=ShardSettings(max_reply_bytes=1024))
    with PSClient(cluster.addresses, SECRET, timeout=10) as client:
        client.create_table("w", width=1024, optimizer="delta")
        client.push("w", [5], np.ones((1, 1024), np.float32))  # one row of 4 KiB: no batch of it fits 1 KiB
        with pytest.raises(RemoteValueError, match=r"the reply to EXPORT would be \d+ bytes, over the limit of 1024 "
                                                   r"\(spark.ps.maxReplyBytes\); nothing was sent"):
            list(client.export("w"))
        assert client.ping() == [1]
