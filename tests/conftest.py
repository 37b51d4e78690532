"""Spark fixtures for the fast tests; the helpers (and the shared-session manager) live in ``sparkkit``.

``local_spark`` is the process's shared ``local[2]`` session (``sparkkit.SHARED``):
started by the first module that asks for it, reused by the next ones, and
stopped once the run leaves ``tests/``, so the local-cluster session of
``integration/`` (or the docstring examples' own) can start. A test that needs
a session of its own uses ``sparkkit.start_ps_session``, which stops the shared
one first; the next ``local_spark`` starts it again.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _pytest.doctest import DoctestItem
from sparkkit import SHARED, shared_local_session, shared_session_users_last

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def ps_checkpoint_dir(tmp_path_factory):
    """Where the shared session's fits write their weights (``spark.ps.checkpointDir``)."""
    return tmp_path_factory.mktemp("ckpt")


@pytest.fixture(scope="module")
def local_spark(request, ps_checkpoint_dir):
    """The shared ``local[2]`` session with spark-ps and Delta; one sidecar, on executor ``driver``.

    Module-scoped only so that module-scoped fixtures can use it: each module
    gets the running shared session (or a new one, if a test stopped it).
    A test that stops it must be the last of its module to use it.
    """
    return shared_local_session(ps_checkpoint_dir, failures=lambda: request.session.testsfailed)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The modules that use ``local_spark`` run last here, so sessions of a test's own come before it starts."""
    shared_session_users_last(items, HERE, "local_spark")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    """Stop the shared local session once the run leaves ``tests/`` (after the module fixtures' teardown).

    Docstring examples next (``make test`` runs ``spark_ps`` right after
    ``tests``) borrow it instead (the root ``conftest.py``): one session start
    and one warm-up fewer.
    """
    try:
        return (yield)
    finally:
        leaving = nextitem is None or (HERE not in nextitem.path.parents and not isinstance(nextitem, DoctestItem))
        if SHARED.kind == "local" and leaving:
            SHARED.release()


def pytest_sessionfinish(session: pytest.Session) -> None:
    SHARED.release()  # e.g. after -x stopped the run early
