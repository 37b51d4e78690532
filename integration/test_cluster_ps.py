"""Pull and push through real sidecars beside two executor JVMs (local-cluster[2,1,1024])."""

from __future__ import annotations

import numpy as np
import pytest

from spark_ps import PSContext

KEYS_PER_PARTITION = 5000
PARTITIONS = 4


@pytest.fixture(scope="module")
def ps(cluster_spark):
    with PSContext.get(cluster_spark) as ctx:
        yield ctx


def test_two_shards_beside_two_executors(ps):
    servers = ps.servers
    assert len(servers) == 2
    assert len({s.executor_id for s in servers}) == 2
    assert len({(s.host, s.port) for s in servers}) == 2
    assert all(s.host == "127.0.0.1" for s in servers)


def test_map_partitions_push_pull_reaches_driver(cluster_spark, ps):
    ps.create_table("sums", width=3, optimizer="delta")
    client = ps.client()
    half = KEYS_PER_PARTITION // 2

    # Nested so cloudpickle ships it by value: executors cannot import this test module.
    def partition_pushes(part: int) -> tuple[np.ndarray, np.ndarray]:
        """Deterministic keys (overlapping across partitions, with repeats) and values of one partition."""
        rng = np.random.default_rng(1000 + part)
        keys = rng.integers(-2**62, 2**62, half, dtype=np.int64)
        keys = np.concatenate([keys, keys[:100], np.arange(50, dtype=np.int64)])  # repeats and shared keys
        return keys, rng.normal(size=(len(keys), 3)).astype(np.float32)

    def task(index, _rows):
        keys, values = partition_pushes(index)
        client.push("sums", keys, values)
        pulled = client.pull("sums", keys[:10])  # readable from the task too
        client.close()
        yield index, pulled.shape, int(np.isfinite(pulled).all())

    results = cluster_spark.sparkContext.parallelize(range(PARTITIONS), PARTITIONS) \
        .mapPartitionsWithIndex(task).collect()
    assert sorted(r[0] for r in results) == list(range(PARTITIONS))
    assert all(r[1] == (10, 3) and r[2] for r in results)

    # Independent reference: a dict summing every partition's pushes.
    expected: dict[int, np.ndarray] = {}
    for part in range(PARTITIONS):
        keys, values = partition_pushes(part)
        for k, v in zip(keys.tolist(), values.astype(np.float64)):
            expected[k] = expected.get(k, 0.0) + v
    keys = np.array(sorted(expected), dtype=np.int64)
    with ps.client() as driver_client:
        got = driver_client.pull("sums", keys)
    np.testing.assert_allclose(got, np.array([expected[k] for k in keys.tolist()]), rtol=1e-4, atol=1e-4)
    rows = [d["rows"] for d in ps.describe("sums")]
    assert sum(rows) == len(expected) and min(rows) > 0  # both shards hold part of the table
    ps.drop_table("sums")
