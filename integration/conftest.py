"""Shared fixtures for the integration tests; the helpers live in ``clusterkit``.

Import helpers with ``from clusterkit import ...``, not from ``conftest``: the
fast tests have a ``conftest`` module too, and which one ``import conftest``
finds depends on collection order.
"""

from __future__ import annotations

import pytest

from clusterkit import start_cluster_session, stop_cluster_session


@pytest.fixture(scope="module")
def cluster_spark(request):
    """A ``local-cluster[2,1,1024]`` session whose 2 sidecars are registered; stopped after the module.

    Module-scoped: one session per test module, since a process runs one
    SparkContext at a time and the next module may need a fresh one. The
    executors' logs are kept if a test of the module failed.
    """
    failed_before = request.session.testsfailed
    spark = start_cluster_session(f"spark-ps-{request.module.__name__}")
    app_id = spark.sparkContext.applicationId
    try:
        yield spark
    finally:
        stop_cluster_session(spark, app_id, keep_logs=request.session.testsfailed > failed_before)
