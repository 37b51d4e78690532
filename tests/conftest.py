"""Shared Spark fixtures for the fast tests; the helpers live in ``sparkkit``.

``local_spark`` is module-scoped on purpose: a Python process runs one
SparkContext at a time, and a session that outlived its module would be
silently reused by the next ``getOrCreate()`` (e.g. by the local-cluster
fixture in ``integration/``), whatever master that one asked for.
"""

from __future__ import annotations

import pytest

from sparkkit import start_ps_session


@pytest.fixture(scope="module")
def local_spark():
    """A ``local[2]`` session with spark-ps and Delta; one sidecar, on executor ``driver``."""
    spark = start_ps_session("local[2]", "spark-ps-tests")
    try:
        yield spark
    finally:
        spark.stop()
