"""The driver's reads of a Delta table's log: its commit files, a few KB each, with no Spark job.

Decision: the newest version of a table, and one commit's ``commitInfo``
(its ``userMetadata``), are read from ``<table>/_delta_log/<version>.json``
through Hadoop's FileSystem (:mod:`spark_ps.spark.hadoop`): a listing and a
small file, a few ms on local disk, where ``DeltaTable.history()`` is a Spark
job (0.2-0.9 s on ``local[2]``, :mod:`spark_ps.ml.modelstore`). Commit
files older than Delta's log retention (30 days by default) are deleted
once a checkpoint covers them; their versions can no longer be time
travelled to either, so a listing of what remains is the truth.
"""

from __future__ import annotations

import json
import os
from typing import Any

from pyspark.sql import SparkSession

from spark_ps.spark import hadoop

__all__ = ["commit_info", "commit_versions", "delta_version"]


def _commit_file(version: int) -> str:
    return f"{version:020d}.json"


def commit_versions(spark: SparkSession, table: str) -> list[int]:
    """The versions of ``table``'s commit files, ascending; none if it is not a Delta table.

    Examples
    --------
    >>> import os, tempfile
    >>> table = os.path.join(tempfile.mkdtemp(), "t")
    >>> commit_versions(spark, table)
    []
    >>> spark.range(1).write.format("delta").save(table); commit_versions(spark, table)
    [0]
    """
    directory = os.path.join(table, "_delta_log")
    if not hadoop.exists(spark, directory):
        return []
    return sorted(int(name[:20]) for name in hadoop.list_names(spark, directory)
                  if len(name) == 25 and name.endswith(".json") and name[:20].isdigit())


def commit_info(spark: SparkSession, table: str, version: int) -> dict[str, Any]:
    """The ``commitInfo`` action of commit ``version`` of ``table`` (empty if the commit has none).

    Examples
    --------
    >>> import os, tempfile
    >>> table = os.path.join(tempfile.mkdtemp(), "t")
    >>> spark.range(1).write.format("delta").option("userMetadata", "hello").save(table)
    >>> commit_info(spark, table, 0)["userMetadata"]
    'hello'
    """
    text = hadoop.read_text(spark, os.path.join(table, "_delta_log"), _commit_file(version))
    for line in text.splitlines():
        info = json.loads(line).get("commitInfo") if line.strip() else None
        if info is not None:
            return info
    return {}


def delta_version(spark: SparkSession, path: str) -> int:
    """The newest version of the Delta table at ``path``: e.g. a training input's, for a model's lineage.

    Read from the listing of its ``_delta_log``: no Spark job. Read the input
    with ``versionAsOf`` that version, so that the version recorded by
    :class:`~spark_ps.ml.versions.Lineage` is the one trained on.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a Delta table.

    Examples
    --------
    >>> import os, tempfile
    >>> table = os.path.join(tempfile.mkdtemp(), "t")
    >>> spark.range(1).write.format("delta").save(table)
    >>> spark.range(2).write.format("delta").mode("append").save(table)
    >>> delta_version(spark, table)
    1
    """
    versions = commit_versions(spark, path)
    if not versions:
        raise FileNotFoundError(f"{path} is not a Delta table (no commit in {path}/_delta_log): no version to "
                                "record as the input's")
    return versions[-1]
