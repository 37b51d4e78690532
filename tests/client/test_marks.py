"""Marks (``spark_ps.server.shard``): a push's ``mark`` table and an export's ``keys_of``, on real shard servers.

The reference is the test's own bookkeeping of what it pushed: the union of
the pushed keys (numpy), and how many pushes carried each key.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from shardkit import SECRET, shards  # noqa: F401  (fixture)

from spark_ps.client.client import PSClient


def _rows(batches) -> dict[int, list[float]]:
    batches = list(batches)
    if not batches:
        return {}
    table = pa.Table.from_batches(batches)
    return dict(zip(table.column("key").to_pylist(), table.column("value").to_pylist()))


def test_marks_count_each_pushed_key_once_per_push_and_export_the_changed_rows(shards):
    cluster = shards(2)
    rng = np.random.default_rng(5)
    pushes = [np.unique(rng.integers(-2**62, 2**62, 300)) for _ in range(3)]
    pushes.append(pushes[0][::7])  # keys pushed twice
    with PSClient(cluster.addresses, SECRET, timeout=5) as client:
        client.create_table("w", width=2, optimizer="adagrad", lr=0.5)
        client.create_table("changed", width=1, optimizer="delta")
        client.push("w", rng.integers(0, 100, 50), np.ones((50, 2)))  # an unmarked push: not a changed row
        client.clock_create("c", num_workers=1, staleness=0)
        for i, keys in enumerate(pushes):
            grads = rng.normal(size=(len(keys), 2))
            if i % 2:
                client.push_and_advance("w", keys, grads, "c", worker=0, mark="changed")
            else:
                client.push("w", keys, grads, request_id=1000 + i, mark="changed")
                client.push("w", keys, grads, request_id=1000 + i, mark="changed")  # a resend: applied once
        union = np.unique(np.concatenate(pushes))
        counts = {int(k): float(sum(k in set(p.tolist()) for p in pushes)) for k in union}

        marks = _rows(client.export("changed"))
        assert {k: v[0] for k, v in marks.items()} == counts
        exported = list(client.export("w", keys_of="changed"))
        for batch in exported:  # each shard's rows come ascending
            keys = batch.column("key").to_numpy()
            assert np.all(keys[1:] > keys[:-1])
        assert _rows(exported) == _rows(client.export("w", keys=union))
        assert len(_rows(client.export("w"))) > len(union)  # the unmarked push's rows exist, and were left out


def test_a_push_naming_a_bad_mark_table_changes_nothing(shards):
    cluster = shards(1)
    with PSClient(cluster.addresses, SECRET, timeout=5) as client:
        client.create_table("w", optimizer="delta")
        client.create_table("wide", width=2, optimizer="delta")
        with pytest.raises(ValueError, match="mark table 'wide' must be another table of width 1.*nothing"):
            client.push("w", [1, 2], [1.0, 1.0], mark="wide")
        with pytest.raises(KeyError, match="missing"):
            client.push("w", [1, 2], [1.0, 1.0], mark="missing")
        assert client.pull("w", [1, 2]).ravel().tolist() == [0.0, 0.0]
        assert len(_rows(client.export("wide"))) == 0
        with pytest.raises(ValueError, match="keys or keys_of, not both"):
            list(client.export("w", keys=[1], keys_of="wide"))
