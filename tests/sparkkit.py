"""Helpers for the fast tests: local-mode Spark sessions with spark-ps and Delta.

Importing this module sets the environment the JVM reads when it starts
(loopback only, PySpark workers on this interpreter), so ``conftest.py``
imports it before any session exists. Import helpers from here, not from
``conftest`` (``integration/`` has a ``conftest`` module too).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

# Small shuffles: the tests move a handful of rows on a 2-core machine.
TEST_CONF = {
    "spark.driver.host": "127.0.0.1",
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.databricks.delta.snapshotPartitions": "2",
}


def start_ps_session(master: str, app_name: str, conf: dict[str, str] | None = None, **ps_options):
    """A new SparkSession with the spark-ps plugin and Delta.

    ``conf`` adds Spark settings; ``ps_options`` go to ``configure_spark_with_ps``
    (``servers_per_executor``, ``python``, ``startup_timeout``, ...). Refuses to
    run while another SparkContext is alive, since ``getOrCreate()`` would
    return that one instead.

    Examples
    --------
    >>> spark = start_ps_session("local[2]", "doc")                # doctest: +SKIP
    >>> spark.sparkContext.master                                  # doctest: +SKIP
    'local[2]'
    """
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    from spark_ps.spark.session import configure_spark_with_ps

    active = SparkContext._active_spark_context
    if active is not None:
        raise RuntimeError(f"a SparkContext ({active.master}, app {active.appName!r}) is still running; "
                           "Spark fixtures must stop their session when their module ends")
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in {**TEST_CONF, **(conf or {})}.items():
        builder = builder.config(key, value)
    return configure_spark_with_ps(builder, **ps_options).getOrCreate()
