"""The docstring examples as tests, and the ``spark`` session they may use.

pytest collects the examples of every module under ``spark_ps/``, ``jobs/``
and ``bench/``, and of the integration tests' helper modules (not their test
modules or ``conftest``), for whichever of those directories it is given,
with or without ``--doctest-modules``; the option flags are set once, in
``pyproject.toml``. This is the one place that says which examples run:
passing ``--doctest-modules`` for ``tests`` or ``integration`` as well would
import their two ``conftest`` modules as doctest modules, which clash.

An example that uses the name ``spark`` gets a SparkSession with the spark-ps
plugin, created only for the examples that need one. A Python process runs one
SparkContext at a time and the tests' fixtures refuse to start a session while
another one is alive, so:

* if a session is already running (one the tests' fixtures manage), the
  examples borrow it and never stop it;
* otherwise the first such example starts one, the following examples share
  it, and it is stopped before the first item that is not a docstring example
  (and at the end of the run), so no test ever sees it.
"""

from __future__ import annotations

import ast
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from _pytest.doctest import DoctestItem, DoctestModule

# tests/ is on pytest's pythonpath (pyproject.toml)
from sparkkit import TEST_CONF, new_session, stop_session

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

ROOT = Path(__file__).resolve().parent
#: Where docstring examples are tests: the package, the spark-submit jobs, the benchmarks, the integration helpers.
EXAMPLE_DIRS = tuple(ROOT / name for name in ("spark_ps", "jobs", "bench", "integration"))

#: Settings of the examples' own session: the tests' (small shuffles on a 2-core machine, no UI), no progress bars.
DOCTEST_SPARK_CONF = {**TEST_CONF, "spark.ui.showConsoleProgress": "false"}


def _has_examples(file_path: Path) -> bool:
    """Whether pytest runs the docstring examples of ``file_path``: a module of :data:`EXAMPLE_DIRS`, no test."""
    path = file_path.resolve()
    return (path.suffix == ".py" and path.name not in ("__main__.py", "conftest.py")
            and not path.name.startswith("test_") and any(d in path.parents for d in EXAMPLE_DIRS))


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    """Collect the examples of the modules :func:`_has_examples` names, even without ``--doctest-modules``."""
    if parent.config.option.doctestmodules:
        return None  # pytest's own doctest plugin collects them (and everything else given)
    if _has_examples(file_path):
        return DoctestModule.from_parent(parent, path=file_path)
    return None


def _uses_spark(item: pytest.Item) -> bool:
    """Whether a docstring example of ``item`` reads the name ``spark``."""
    for example in item.dtest.examples:
        try:
            tree = ast.parse(example.source)
        except SyntaxError:
            if "spark" in example.source:
                return True
            continue
        if any(isinstance(node, ast.Name) and node.id == "spark" for node in ast.walk(tree)):
            return True
    return False


class _DoctestSpark:
    """The examples' session: borrowed if one is running, else started here and stopped by :meth:`release`."""

    def __init__(self) -> None:
        self.session = None
        self.owned = False
        self.warehouse: str | None = None

    def get(self):
        from pyspark import SparkContext
        from pyspark.sql import SparkSession

        active = SparkContext._active_spark_context
        if self.session is not None and active is not None and active is self.session.sparkContext:
            return self.session
        self.release()  # ours was stopped under us, or never started
        if active is not None:
            session = SparkSession.builder.getOrCreate()  # the running context's session: borrowed
            plugins = session.sparkContext.getConf().get("spark.plugins", "") or ""
            if "io.sparkps.PSPlugin" not in plugins:
                raise RuntimeError(f"a SparkContext without the spark-ps plugin ({active.master}, app "
                                   f"{active.appName!r}) is running; the docstring examples need the plugin")
            self.session = session
            return session
        self.warehouse = tempfile.mkdtemp(prefix="spark-ps-doctest-")
        # sparkkit's session builder, as every test session: the same jars whichever session starts the JVM.
        self.session = new_session("local[2]", "spark-ps-doctests",
                                   {**DOCTEST_SPARK_CONF, "spark.sql.warehouse.dir": self.warehouse})
        self.owned = True
        return self.session

    def release(self) -> None:
        """Stop the session if it was started here; forget a borrowed one."""
        session, owned, warehouse = self.session, self.owned, self.warehouse
        self.session, self.owned, self.warehouse = None, False, None
        if session is not None and owned:
            stop_session(session)
        if warehouse is not None:
            shutil.rmtree(warehouse, ignore_errors=True)


_DOCTEST_SPARK = pytest.StashKey[_DoctestSpark]()


@pytest.fixture(autouse=True)
def _spark_for_doctests(request: pytest.FixtureRequest):
    """Put ``spark`` in the namespace of the docstring examples that use it (and only of those)."""
    item = request.node
    if not isinstance(item, DoctestItem):
        return
    namespace = request.getfixturevalue("doctest_namespace")
    if _uses_spark(item):
        namespace["spark"] = request.config.stash.setdefault(_DOCTEST_SPARK, _DoctestSpark()).get()
    else:
        namespace.pop("spark", None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    """Stop the examples' own session before an item that is not a docstring example runs."""
    try:
        return (yield)
    finally:
        holder = item.config.stash.get(_DOCTEST_SPARK, None)
        if holder is not None and not isinstance(nextitem, DoctestItem):
            holder.release()


def pytest_sessionfinish(session: pytest.Session) -> None:
    holder = session.config.stash.get(_DOCTEST_SPARK, None)
    if holder is not None:
        holder.release()
