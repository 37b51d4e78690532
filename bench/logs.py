"""Logs of the MLlib bench's runs: error lines, log tails, executor logs, and paths fit for the doc.

A run that fails or times out keeps its error, the tail of its driver log
and (local-cluster) the tails of its executors' logs in its record and in
the report. ``docs/benchmarks.md`` is committed, so the report must not
quote paths of the machine that ran it: :func:`portable_paths` rewrites a
text's absolute paths (tracebacks, log lines, errors) relative to the
repository, or to ``<site-packages>`` / ``<stdlib>`` / ``<tmp>`` / ``~``.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import tempfile

from bench import ROOT

# Top-level directories of this repository: an absolute path into any checkout of it
# (another worktree, a copy under /tmp) is rewritten relative to the checkout.
_PROJECT_DIRS = ("bench", "integration", "spark_ps", "tests", "docs", "jobs", "plugin", "conf", "data")
_PATH_CHARS = r"[^\s\"'`(\[=:,;]"
_SEGMENT = r"[^\s\"'`(\[=:,;/]+"


def error_summary(exc: BaseException) -> str:
    """One line for the report: the exception, plus the innermost ``XxxError: ...`` line of its text.

    A Py4J error's first line is only "An error occurred while calling o184.x";
    the cause (e.g. a Python worker's ``AttributeError``) is further down.

    Examples
    --------
    >>> error_summary(RuntimeError("job aborted\\nTraceback:\\nAttributeError: no attribute 'x'\\n  at y"))
    "RuntimeError: job aborted | AttributeError: no attribute 'x'"
    """
    lines = [ln.strip() for ln in str(exc).strip().splitlines()]
    first = lines[0] if lines else ""
    causes = [ln for ln in lines if re.match(r"^[\w.$]+(Error|Exception): ", ln) and ln != first]
    text = f"{type(exc).__name__}: {first}" + (f" | {causes[-1]}" if causes else "")
    return text[:400]


def spark_work_dir(app_id: str) -> pathlib.Path:
    """``$SPARK_HOME/work/<app-id>``: where local-cluster executors (and their sidecars) log."""
    from pyspark.find_spark_home import _find_spark_home

    return pathlib.Path(_find_spark_home()) / "work" / app_id


def log_tail(text: str, lines: int = 30) -> str:
    """The last ``lines`` lines of a log without JVM stack frames (``at ...``, ``... N more``).

    Examples
    --------
    >>> log_tail("a\\n\\tat x.y(Z.java:1)\\n\\t... 3 more\\nb", 5)
    'a\\nb'
    """
    keep = [ln for ln in text.splitlines()
            if ln.strip() and not re.match(r"^\s+(at |\.\.\. \d+ more)", ln)]
    return "\n".join(keep[-lines:])


def executor_log_tails(app_id: str | None, lines: int = 20) -> str:
    """Tails of each executor's stderr of a local-cluster application, or ``""``."""
    if not app_id:
        return ""
    chunks = []
    for path in sorted(spark_work_dir(app_id).glob("*/stderr")):
        chunks.append(f"==> executor {path.parent.name} stderr <==\n"
                      + log_tail(path.read_text(errors="replace"), lines))
    return "\n".join(chunks)


def collect_executor_logs(app_id: str | None, run_dir: pathlib.Path) -> str:
    """Move a local-cluster application's executor logs into ``run_dir/executors``; return their tails."""
    if not app_id:
        return ""
    src = spark_work_dir(app_id)
    if not src.is_dir():
        return ""
    tails = executor_log_tails(app_id)
    dest = run_dir / "executors"
    dest.mkdir(exist_ok=True)
    for path in src.glob("*/std*"):
        shutil.copy(path, dest / f"{path.parent.name}.{path.name}")
    shutil.rmtree(src, ignore_errors=True)  # ~15 MB of copied jars per application
    return tails


def portable_paths(text: str, root: pathlib.Path = ROOT) -> str:
    """``text`` with this machine's absolute paths made relative or replaced by placeholders.

    In order: anything under a ``site-packages`` directory becomes
    ``<site-packages>/...``, the standard library ``<stdlib>/...``; paths
    into ``root`` or into any other checkout of this repository become
    relative to it (``integration/bench_mllib.py``); the temporary directory
    becomes ``<tmp>``, the home directory ``~``; any other absolute path
    under ``/work``, ``/tmp``, ``/root``, ``/home``, ``/mnt`` or ``/srv``
    keeps only its last component (``<...>/name``).

    Parameters
    ----------
    text : str
    root : pathlib.Path
        The repository root.

    Returns
    -------
    str

    Examples
    --------
    >>> portable_paths('File "/x/.venv/lib/python3.11/site-packages/py4j/a.py", line 2', pathlib.Path("/x"))
    'File "<site-packages>/py4j/a.py", line 2'
    >>> portable_paths('File "/tmp/s3/wtb/integration/bench_mllib.py"', pathlib.Path("/x"))
    'File "integration/bench_mllib.py"'
    >>> portable_paths("log: /x/bench/out/runs/a/child.log; /usr/lib/python3.11/json/x.py", pathlib.Path("/x"))
    'log: bench/out/runs/a/child.log; <stdlib>/json/x.py'
    >>> portable_paths("see /work/other/file.txt and http://127.0.0.1:4040/api", pathlib.Path("/x"))
    'see <...>/file.txt and http://127.0.0.1:4040/api'
    """
    text = re.sub(_PATH_CHARS + r"*/site-packages/", "<site-packages>/", text)
    text = re.sub(_PATH_CHARS + r"*/lib/python3\.\d+/", "<stdlib>/", text)
    text = text.replace(f"{root.as_posix().rstrip('/')}/", "")
    dirs = "|".join(_PROJECT_DIRS)
    text = re.sub(rf"(?<![\w.<>:/~-])/(?:{_SEGMENT}/)+?(?=(?:{dirs})/)", "", text)
    for prefix, name in ((tempfile.gettempdir(), "<tmp>"), (os.path.expanduser("~"), "~")):
        if prefix not in ("", "/"):
            text = re.sub(rf"(?<![\w.<>:/~-]){re.escape(prefix.rstrip('/'))}(?=/)", name, text)
    return re.sub(rf"(?<![\w.<>:/~-])/(?:work|tmp|root|home|mnt|srv)(?:/{_SEGMENT})*/(?={_SEGMENT})", "<...>/", text)
