"""In-process shard servers on loopback for the fast tests (import the `shards` fixture)."""

from __future__ import annotations

import os
import threading

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

from spark_ps.server.tcp import ShardServer

SECRET = b"test-secret-0123456789"


class ShardCluster:
    """A few shard servers on 127.0.0.1, each served by a background thread."""

    def __init__(self, n: int, **server_options):
        self.servers = [ShardServer(SECRET, host="127.0.0.1", **server_options) for _ in range(n)]
        self.threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in self.servers]
        for t in self.threads:
            t.start()

    @property
    def addresses(self):
        return [s.address for s in self.servers]

    def close(self):
        for s in self.servers:
            s.shutdown()
        for t in self.threads:
            t.join(timeout=10)
            assert not t.is_alive(), "accept loop did not stop"


@pytest.fixture
def shards():
    """Factory: ``shards(n, **options)`` starts n servers, stopped after the test."""
    made = []

    def make(n=2, **options):
        cluster = ShardCluster(n, **options)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.close()
