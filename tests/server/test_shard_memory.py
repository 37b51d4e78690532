"""Shard memory under control (issue 11, item 6): a budget refuses growth past ``spark.ps.maxMemory``.

A real sidecar process (``shardkit.Sidecar``) with a 1 MiB budget: a push
that would grow a table past it is refused with an error naming the table,
the bytes and the key, the table is unchanged, and the sidecar serves on.
Before, nothing bounded a table: the push was applied, and a large enough one
got the sidecar killed by the OOM killer, with every table in it.
"""

from __future__ import annotations

import numpy as np
import pytest
from shardkit import SECRET, Sidecar

from spark_ps.client.client import PSClient
from spark_ps.errors import MemoryBudgetError, RemoteMemoryBudgetError
from spark_ps.server.settings import ShardSettings
from spark_ps.server.shard import Shard
from spark_ps.wire.spec import TableSpec


def test_a_push_past_the_budget_is_refused_and_the_sidecar_lives_on():
    sidecar = Sidecar("spark.ps.maxMemory=1m")
    try:
        with PSClient([sidecar.address], SECRET, timeout=30) as client:
            client.create_table("w", width=8, optimizer="sgd", lr=0.1)
            kept = np.arange(1000)
            client.push("w", kept, np.ones((1000, 8), np.float32))
            before, stats = client.pull("w", kept), client.stats()[0]
            assert stats["budget"] == 1 << 20 and 0 < stats["tables"]["w"] == stats["used"] < 1 << 20

            with pytest.raises(RemoteMemoryBudgetError) as refused:  # 100k rows of 8 floats: > 3 MB
                client.push("w", np.arange(100_000), np.ones((100_000, 8), np.float32))
            message = str(refused.value)
            for part in ("table 'w'", "more bytes", "budget of 1048576 bytes", "spark.ps.maxMemory",
                         "nothing changed"):
                assert part in message, message

            assert sidecar.proc.poll() is None, "the sidecar died"
            assert client.describe("w")[0]["rows"] == 1000
            assert np.array_equal(client.pull("w", kept), before)  # the refused push touched no existing row
            assert client.stats()[0]["used"] == stats["used"]
            client.push("w", [5000], np.ones((1, 8), np.float32))  # a push that fits is served as ever
            assert client.describe("w")[0]["rows"] == 1001
    finally:
        assert sidecar.close() == 0


def test_a_table_past_the_budget_is_refused():
    shard = Shard(ShardSettings(max_memory_bytes=600))  # an empty table holds 256 bytes of key index
    shard.create_table(TableSpec("a"))
    shard.create_table(TableSpec("b"))
    with pytest.raises(MemoryBudgetError, match=r"table 'c': a new table needs 256 more bytes, but the shard's "
                                                r"tables hold 512 of its budget of 600 bytes \(spark.ps.maxMemory\)"):
        shard.create_table(TableSpec("c"))
    assert sorted(shard._tables) == ["a", "b"]
    assert shard.create_table(TableSpec("a")) is False  # an existing table costs nothing more


def test_an_import_past_the_budget_changes_nothing():
    import pyarrow as pa

    shard = Shard(ShardSettings(max_memory_bytes=64 << 10))
    shard.create_table(TableSpec("w", width=4))
    table = shard.table("w")
    table.push(np.arange(10), np.ones((10, 4), np.float32))
    used = shard.memory_used()
    rows = pa.array(np.zeros(4000 * 4, np.float32))
    batch = pa.RecordBatch.from_arrays([pa.array(np.arange(4000)), pa.FixedSizeListArray.from_arrays(rows, 4)],
                                       names=["key", "value"])
    with pytest.raises(MemoryBudgetError, match="table 'w'"):
        table.import_batches([batch])
    assert len(table) == 10 and shard.memory_used() == used
    assert table.pull(np.arange(10)).tolist() == [[1.0] * 4] * 10
