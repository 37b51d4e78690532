"""The driver's reads of a Delta table's log: its commit files, a few KB each, with no Spark job.

Decision: the newest version of a table, and one commit's ``commitInfo``
(its ``userMetadata``), are read from ``<table>/_delta_log/<version>.json``
through Hadoop's FileSystem (:mod:`spark_ps.spark.hadoop`): a listing and a
small file, a few ms on local disk, where ``DeltaTable.history()`` is a Spark
job (0.2-0.9 s on ``local[2]``, :mod:`spark_ps.ml.modelstore`). Commit
files older than Delta's log retention (30 days by default) are deleted
once a checkpoint covers them; their versions can no longer be time
travelled to either, so a listing of what remains is the truth.

Decision: :func:`read_version` reads a version's rows as Parquet, straight
from the files that Delta's checksum of the version (``<version>.crc``, which
Delta 4 writes after every commit) lists, with the schema it records. To
plan a scan, Delta's own reader rebuilds the version's state first; on
``local[2]`` that took 6 Spark jobs and 0.9-1.2 s for a model's 3-row weights
table, and it ran in every ``load`` → ``transform``, and again in every
``save`` (to read the rows it copies). Read as Parquet, no job runs before
the scan. Only plain tables qualify: reader protocol 1 (no deletion vectors,
no column mapping), no partition columns, file paths relative to the table;
anything else, or a version whose checksum is missing or does not list its
files, goes through Delta's reader.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import unquote

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from spark_ps.spark import hadoop

__all__ = ["checksum", "commit_info", "commit_versions", "delta_version", "log_dir", "log_file", "read_version"]

#: Characters that Spark's file reader would take as a glob pattern in a path.
_GLOB_CHARACTERS = frozenset("*?[]{}\\")


def log_file(version: int, kind: str = "json") -> str:
    """The name of version ``version``'s file in a table's ``_delta_log``: its commit (``json``) or checksum (``crc``).

    Examples
    --------
    >>> log_file(3), log_file(0, "crc")
    ('00000000000000000003.json', '00000000000000000000.crc')
    """
    return f"{version:020d}.{kind}"


def log_dir(table: str) -> str:
    """The ``_delta_log`` directory of ``table``.

    Examples
    --------
    >>> log_dir("/data/t")
    '/data/t/_delta_log'
    """
    return os.path.join(table, "_delta_log")


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
    directory = log_dir(table)
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
    text = hadoop.read_text(spark, log_dir(table), log_file(version))
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
    return _newest_version(spark, path, "no version to record as the input's")


def _newest_version(spark: SparkSession, table: str, consequence: str) -> int:
    """The newest commit of ``table``; FileNotFoundError naming it and ``consequence`` if it has none."""
    versions = commit_versions(spark, table)
    if not versions:
        raise FileNotFoundError(f"{table} is not a Delta table (no commit in {table}/_delta_log): {consequence}")
    return versions[-1]


def checksum(spark: SparkSession, table: str, version: int) -> dict[str, Any] | None:
    """The checksum (``<version>.crc``) written after commit ``version`` of ``table``; None if there is none.

    Examples
    --------
    >>> import os, tempfile
    >>> table = os.path.join(tempfile.mkdtemp(), "t")
    >>> spark.range(3).write.format("delta").save(table)
    >>> checksum(spark, table, 0)["numFiles"] > 0, checksum(spark, table, 1)
    (True, None)
    """
    directory, name = log_dir(table), log_file(version, "crc")
    if not hadoop.exists(spark, os.path.join(directory, name)):
        return None  # written after the commit: a writer that died in between, or checksums turned off
    return json.loads(hadoop.read_text(spark, directory, name))


def _plain_files(table: str, checksum: dict[str, Any] | None) -> tuple[StructType, list[str]] | None:
    """The schema and data files of a version whose checksum proves it a plain Parquet table; None otherwise."""
    if checksum is None or any(c in _GLOB_CHARACTERS for c in table):
        return None
    metadata, protocol, files = checksum.get("metadata"), checksum.get("protocol"), checksum.get("allFiles")
    if not metadata or not protocol or files is None or len(files) != checksum.get("numFiles"):
        return None  # Delta lists the files in the checksum of small tables only
    mapping = (metadata.get("configuration") or {}).get("delta.columnMapping.mode", "none")
    if protocol.get("minReaderVersion") != 1 or metadata.get("partitionColumns") or mapping != "none":
        return None
    paths = [unquote(f["path"]) for f in files]
    if any(f.get("deletionVector") for f in files) or any("://" in p or p.startswith("/") for p in paths):
        return None
    schema = StructType.fromJson(json.loads(metadata["schemaString"]))
    return schema, [f"{table.rstrip('/')}/{p}" for p in paths]


def read_version(spark: SparkSession, table: str, version: int | None = None) -> DataFrame:
    """The rows of ``version`` of the Delta table ``table`` (its newest by default), with no Spark job to plan.

    Read as Parquet from the files the version's checksum lists when the
    table is plain (the module docstring says when); otherwise through Delta
    (``versionAsOf``), which gives the same rows.

    Parameters
    ----------
    spark : SparkSession
    table : str
        Path of the Delta table.
    version : int, optional
        The version to read; the newest by default.

    Raises
    ------
    FileNotFoundError
        If ``table`` is not a Delta table.

    Examples
    --------
    >>> import os, tempfile
    >>> table = os.path.join(tempfile.mkdtemp(), "t")
    >>> spark.range(3).write.format("delta").save(table)
    >>> spark.range(5, 7).write.format("delta").mode("append").save(table)
    >>> sorted(r.id for r in read_version(spark, table, 0).collect()), read_version(spark, table).count()
    ([0, 1, 2], 5)
    """
    if version is None:
        version = _newest_version(spark, table, "no rows to read")
    plain = _plain_files(table, checksum(spark, table, version))
    if plain is None:
        return spark.read.format("delta").option("versionAsOf", version).load(table)
    schema, paths = plain
    if not paths:
        return spark.createDataFrame([], schema)
    return spark.read.schema(schema).parquet(*paths)
