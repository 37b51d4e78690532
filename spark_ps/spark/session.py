"""Configure a ``SparkSession.Builder`` for spark-ps (plugin, jars, Delta).

Modelled on Delta's ``configure_spark_with_delta_pip``: it only sets options on
the builder, so the caller still owns ``.master(...)``, ``.getOrCreate()`` and
everything else. The JVM side is ``spark_ps/jars/spark-ps-plugin.jar`` (built
from ``plugin/`` by ``make plugin``); Delta's JVM jars come from
``spark_ps/jars/`` (``make jars``) or, if absent, from Maven through
``spark.jars.packages``.

Decision: sessions configured here write streaming checkpoints with Spark's
FileSystem-based checkpoint file manager (:func:`checkpoint_manager_setting`),
unless the caller names one. With Spark's default, the FileContext-based
one, Hadoop's local file system forked ``readlink`` and ``chmod`` about 30
times a micro-batch (pip's pyspark has no native Hadoop library; ``strace``
counted them): Structured Streaming's own bookkeeping of a trigger took
124-136 ms against 69-70 ms, and a 50k-row training batch's p50 went from
493 to 444 ms (``local[2]``, 2^22). Both managers write a log file to a
temporary file and rename it into place without overwriting, which is
atomic on local disk and on HDFS; Spark itself falls back to the
FileSystem-based one where FileContext is not available.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PLUGIN_CLASS = "io.sparkps.PSPlugin"
SCALA_BINARY_VERSION = "2.13"
DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"

JARS_DIR = Path(__file__).resolve().parent.parent / "jars"
PLUGIN_JAR_NAME = "spark-ps-plugin.jar"
#: Delta's jars as ``make jars`` names them: no version in the name (pyproject.toml states it, once).
DELTA_JAR_NAMES = ("delta-spark.jar", "delta-storage.jar")


#: Spark's setting for the class that writes a streaming query's offset, commit and source logs.
CHECKPOINT_MANAGER_KEY = "spark.sql.streaming.checkpointFileManagerClass"


@functools.lru_cache(maxsize=1)
def checkpoint_manager_setting() -> tuple[str, str] | None:
    """``(key, class)`` that makes Spark write streaming checkpoints with Hadoop's FileSystem API; None if absent.

    The class's package differs between Spark releases: it is found in the
    installed pyspark's ``spark-sql`` jar.

    Examples
    --------
    >>> key, name = checkpoint_manager_setting()
    >>> key, name.rsplit(".", 1)[1], spark.conf.get(key) == name   # this session was configured here
    ('spark.sql.streaming.checkpointFileManagerClass', 'FileSystemBasedCheckpointFileManager', True)
    >>> spark._jvm.java.lang.Class.forName(name).getSimpleName()
    'FileSystemBasedCheckpointFileManager'
    """
    import zipfile

    import pyspark

    suffix = "/FileSystemBasedCheckpointFileManager.class"
    for jar in sorted((Path(pyspark.__file__).parent / "jars").glob("spark-sql_*.jar")):
        with zipfile.ZipFile(jar) as archive:
            for name in archive.namelist():
                if name.endswith(suffix):
                    return CHECKPOINT_MANAGER_KEY, name[:-len(".class")].replace("/", ".")
    return None


def delta_package() -> str:
    """Maven coordinates of Delta's jar for the installed pyspark and delta-spark (when ``make jars`` did not run).

    Delta builds one jar per Spark minor release (``delta-spark_4.2_2.13`` for
    Spark 4.2); the versions are those of the installed Python packages, so
    nothing here restates pyproject.toml's.

    Examples
    --------
    >>> import pyspark, importlib.metadata
    >>> minor = ".".join(pyspark.__version__.split(".")[:2])
    >>> delta_package() == f"io.delta:delta-spark_{minor}_2.13:{importlib.metadata.version('delta-spark')}"
    True
    """
    import pyspark

    minor = ".".join(pyspark.__version__.split(".")[:2])
    return f"io.delta:delta-spark_{minor}_{SCALA_BINARY_VERSION}:{importlib.metadata.version('delta-spark')}"


def plugin_jar_path() -> Path:
    """Absolute path of the spark-ps plugin jar.

    Raises
    ------
    FileNotFoundError
        If the jar has not been built; ``make plugin`` builds it.

    Examples
    --------
    >>> path = plugin_jar_path()
    >>> path.name, path.is_absolute(), path.is_file()
    ('spark-ps-plugin.jar', True, True)
    """
    path = JARS_DIR / PLUGIN_JAR_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"the spark-ps plugin jar {path} does not exist; build it with `make plugin` "
            "(it is compiled from plugin/src against the installed pyspark's jars)")
    return path


def delta_jar_paths() -> list[Path]:
    """Absolute paths of Delta's JVM jars in ``spark_ps/jars``, or ``[]`` if any is missing.

    An empty list makes :func:`configure_spark_with_ps` fetch Delta with
    ``spark.jars.packages`` instead (``make jars`` avoids that download).

    Examples
    --------
    >>> [p.name for p in delta_jar_paths()]
    ['delta-spark.jar', 'delta-storage.jar']
    """
    paths = [JARS_DIR / name for name in DELTA_JAR_NAMES]
    return paths if all(p.is_file() for p in paths) else []


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def _conf_value(value: Any) -> str:
    if isinstance(value, bool):  # Spark spells booleans in lower case
        return "true" if value else "false"
    return str(value)


def _append_csv(current: str | None, items: Iterable[str]) -> str:
    values = [v.strip() for v in (current or "").split(",") if v.strip()]
    values += [item for item in items if item not in values]
    return ",".join(values)


def configure_spark_with_ps(builder, *, servers_per_executor: int = 1, python: str | None = None,
                            startup_timeout: float = 60, extra_packages: Iterable[str] | None = None,
                            **options: Any):
    """Add the spark-ps plugin, its jar and Delta to a ``SparkSession.Builder``.

    Sets ``spark.plugins`` (appended to any existing value), ``spark.jars``
    (plugin jar and Delta's jars from ``spark_ps/jars``, appended), Delta's SQL
    extension and catalog, ``spark.driver.host=127.0.0.1`` unless already set,
    the streaming checkpoints' file manager unless already set (see the
    module's decision), and the ``spark.ps.*`` options the executor plugin reads.

    Parameters
    ----------
    builder : pyspark.sql.SparkSession.Builder
        Builder to configure; the same object is returned.
    servers_per_executor : int
        Sidecars (shards) per executor, ``spark.ps.serversPerExecutor``; 0 disables them.
    python : str, optional
        Interpreter for the sidecars, ``spark.ps.python``. Defaults to the
        PySpark workers' Python: ``spark.pyspark.python`` on the builder, else
        ``$PYSPARK_PYTHON``, else this interpreter (``sys.executable``). If
        ``$PYSPARK_PYTHON`` is unset, it is set to the workers' Python: a
        driver run as ``python app.py`` reads the variable, not the conf.
    startup_timeout : float
        Seconds an executor waits for each sidecar's handshake, ``spark.ps.startupTimeout``.
    extra_packages : iterable of str, optional
        More Maven coordinates for ``spark.jars.packages``, as in Delta's helper.
    **options
        Further ``spark.ps.*`` settings; snake_case names are camelCased
        (``expected_servers=4`` sets ``spark.ps.expectedServers``).

    Returns
    -------
    pyspark.sql.SparkSession.Builder

    Raises
    ------
    FileNotFoundError
        If the plugin jar is missing (run ``make plugin``).

    Examples
    --------
    The session these examples run in, ``spark``, was built with it (and
    the default of one sidecar per executor):

    >>> spark.conf.get("spark.plugins"), spark.conf.get("spark.ps.serversPerExecutor")
    ('io.sparkps.PSPlugin', '1')

    Only the builder changes until ``getOrCreate()`` (a process runs one
    SparkContext at a time, so this one is not started here):

    >>> from pyspark.sql import SparkSession
    >>> builder = SparkSession.builder.master("local[2]").config("spark.plugins", "com.example.Other")
    >>> options = configure_spark_with_ps(builder, servers_per_executor=2, expected_servers=4)._options
    >>> options["spark.plugins"], options["spark.ps.serversPerExecutor"], options["spark.ps.expectedServers"]
    ('com.example.Other,io.sparkps.PSPlugin', '2', '4')
    >>> configure_spark_with_ps(SparkSession.builder, servers_per_executor=-1)
    Traceback (most recent call last):
    ...
    ValueError: servers_per_executor must be a non-negative int, got -1
    """
    if isinstance(servers_per_executor, bool) or not isinstance(servers_per_executor, int) \
            or servers_per_executor < 0:
        raise ValueError(f"servers_per_executor must be a non-negative int, got {servers_per_executor!r}")
    if not startup_timeout > 0:
        raise ValueError(f"startup_timeout must be positive, got {startup_timeout!r}")
    # Builder keeps its settings in `_options` (pyspark 3.x/4.x); we read it only
    # to append to list-valued settings instead of clobbering the caller's.
    current: dict[str, str] = dict(getattr(builder, "_options", {}))

    plugin_jar = plugin_jar_path()
    delta_jars = delta_jar_paths()
    builder.config("spark.plugins", _append_csv(current.get("spark.plugins"), [PLUGIN_CLASS]))
    builder.config("spark.jars", _append_csv(current.get("spark.jars"),
                                             [str(p) for p in [plugin_jar, *delta_jars]]))
    packages = list(extra_packages or [])
    if not delta_jars:
        packages.insert(0, delta_package())
    if packages:
        builder.config("spark.jars.packages", _append_csv(current.get("spark.jars.packages"), packages))

    builder.config("spark.sql.extensions", _append_csv(current.get("spark.sql.extensions"), [DELTA_EXTENSION]))
    checkpoints = checkpoint_manager_setting()
    if checkpoints is not None and checkpoints[0] not in current:
        builder.config(*checkpoints)
    if "spark.sql.catalog.spark_catalog" not in current:
        builder.config("spark.sql.catalog.spark_catalog", DELTA_CATALOG)
    if "spark.driver.host" not in current:
        builder.config("spark.driver.host", "127.0.0.1")
    if "spark.python.daemon.module" not in current:  # workers forked with our heavy imports done (spark/daemon.py)
        builder.config("spark.python.daemon.module", "spark_ps.spark.daemon")

    if python is None:
        python = current.get("spark.pyspark.python") or os.environ.get("PYSPARK_PYTHON") or sys.executable
    builder.config("spark.ps.python", python)
    if "spark.pyspark.python" not in current and "PYSPARK_PYTHON" not in os.environ:
        # PySpark's workers default to `python3` on the PATH, which need not have
        # pyarrow or spark_ps; the driver's interpreter does, so use it there too.
        builder.config("spark.pyspark.python", python)
    if "PYSPARK_PYTHON" not in os.environ:
        # A driver started as `python app.py` takes its workers' interpreter from this
        # variable only (pyspark's SparkContext reads it, not spark.pyspark.python, which
        # only spark-submit turns into it): without it, workers ran `python3` from the
        # PATH, and a venv's driver got "No module named 'pyarrow'" in every task.
        os.environ["PYSPARK_PYTHON"] = current.get("spark.pyspark.python") or python
    # The directory holding the spark_ps package: sidecars import it from there
    # even where spark-ps is not pip-installed (e.g. a source checkout).
    builder.config("spark.ps.pythonPath", str(Path(__file__).resolve().parent.parent.parent))
    builder.config("spark.ps.serversPerExecutor", str(servers_per_executor))
    # A plain number: the plugin reads it as seconds (fractions allowed).
    builder.config("spark.ps.startupTimeout", _conf_value(startup_timeout))
    for key, value in options.items():
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", key):
            raise ValueError(f"option names must be identifiers, got {key!r}")
        builder.config(f"spark.ps.{_camel(key)}", _conf_value(value))
    return builder
