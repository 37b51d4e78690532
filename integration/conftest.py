"""Spark fixtures for the integration tests; the helpers live in ``clusterkit`` (and ``sparkkit``).

Import helpers with ``from clusterkit import ...``, not from ``conftest``: the
fast tests have a ``conftest`` module too, and which one ``import conftest``
finds depends on collection order.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from clusterkit import shared_cluster_session, start_cluster_session, stop_cluster_session
from sparkkit import SHARED, shared_session_users_last

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def cluster_spark(request):
    """The shared ``local-cluster[2,1,1024]`` session (``sparkkit.SHARED``), its 2 sidecars registered.

    Started by the first module that asks for it, reused by the next ones, and
    stopped once the run leaves ``integration/``; the executors' logs are kept
    if a test failed while it ran. Module-scoped only so that module-scoped
    fixtures can use it. Tests must leave it as they found it: two live
    executors, no tables of theirs left on the shards.
    """
    return shared_cluster_session(failures=lambda: request.session.testsfailed)


@pytest.fixture(scope="module")
def own_cluster_spark(request):
    """A ``local-cluster[2,1,1024]`` application of the module's own, for destructive tests; stopped after it.

    Stops the shared session first (it restarts at the next ``cluster_spark``).
    The executors' logs are kept if a test of the module failed.
    """
    failed_before = request.session.testsfailed
    spark = start_cluster_session(f"spark-ps-{request.module.__name__}")
    app_id = spark.sparkContext.applicationId
    try:
        yield spark
    finally:
        stop_cluster_session(spark, app_id, keep_logs=request.session.testsfailed > failed_before)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The modules that use ``cluster_spark`` run last here, so sessions of a test's own come before it starts."""
    shared_session_users_last(items, HERE, "cluster_spark")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    """Stop the shared cluster session once the run leaves ``integration/`` (after the module fixtures' teardown)."""
    try:
        return (yield)
    finally:
        if SHARED.kind == "cluster" and (nextitem is None or HERE not in nextitem.path.parents):
            SHARED.release()


def pytest_sessionfinish(session: pytest.Session) -> None:
    SHARED.release()  # e.g. after -x stopped the run early
