"""Where the wall time of ``LogisticRegression().fit(df)`` goes, phase by phase (``local[2]`` by default).

Mirrors one spark-ps run of :mod:`bench.mllib` (synthetic CTR data from
:mod:`bench.ctr_data`, VectorUDT Parquet, training DataFrame cached and shards
registered before the clock starts; FTRL alpha 0.2, beta 1, batch 4096,
reg 0) and times the driver-side calls a fit makes by wrapping them for the
duration of the fit: each phase is reported with the phases nested inside it
(a call tree, inclusive seconds). The training stage's own breakdown (Arrow
to CSR, epochs) comes from the per-epoch seconds the tasks report.

The data is written once under ``bench/out/profile_fit/`` and reused.

Examples
--------
::

    SPARK_LOCAL_IP=127.0.0.1 .venv/bin/python -m bench.profile_fit --epochs 2 --repeats 2
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import logging
import os
import pathlib
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator

from bench import OUT as BENCH_OUT
from bench import ROOT
from bench.ctr_files import write_dataset

OUT = BENCH_OUT / "profile_fit"
sys.path.insert(0, str(ROOT / "tests"))  # the session helper of the fast tests


@dataclasses.dataclass
class _Node:
    """One phase of the call tree: inclusive seconds, calls, and the phases nested inside it."""

    seconds: float = 0.0
    calls: int = 0
    children: dict[str, _Node] = dataclasses.field(default_factory=dict)


class CallTree:
    """Inclusive wall time of wrapped calls made on the main thread, nested by call stack.

    Calls from other threads (the progress poller, Spark's py4j callbacks) are
    not recorded: they overlap the main thread's time instead of adding to it.
    """

    def __init__(self):
        self.root = _Node()
        self._stack = [self.root]

    @contextlib.contextmanager
    def phase(self, label: str) -> Iterator[None]:
        """Time the body as phase ``label``, nested in the phase open around it (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        node = self._stack[-1].children.setdefault(label, _Node())
        self._stack.append(node)
        start = time.perf_counter()
        try:
            yield
        finally:
            node.seconds += time.perf_counter() - start
            node.calls += 1
            self._stack.pop()

    def lines(self, node: _Node | None = None, depth: int = 0) -> list[str]:
        """The tree as indented lines, slowest phase first, with each phase's own (self) time."""
        node = node or self.root
        out = []
        for label, child in sorted(node.children.items(), key=lambda kv: -kv[1].seconds):
            inner = sum(c.seconds for c in child.children.values())
            rest = f"   (self {child.seconds - inner:6.2f} s)" if child.children else ""
            out.append(f"{'  ' * depth}{label:<{48 - 2 * depth}} {child.seconds:7.2f} s  x{child.calls}{rest}")
            out.extend(self.lines(child, depth + 1))
        return out


@contextlib.contextmanager
def wrapped(tree: CallTree, targets: list[tuple[object, str, str]]) -> Iterator[None]:
    """Replace ``owner.attr`` by a timed wrapper labelled ``label`` for every target; restore on exit."""
    saved = []
    for owner, attr, label in targets:
        raw = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
        func = raw.__func__ if isinstance(raw, (classmethod, staticmethod)) else raw

        def make(f: Callable, name: str) -> Callable:
            @functools.wraps(f)
            def timed(*args, **kwargs):
                with tree.phase(name):
                    return f(*args, **kwargs)
            return timed

        replacement = make(func, label)
        if isinstance(raw, classmethod):
            replacement = classmethod(replacement)
        setattr(owner, attr, replacement)
        saved.append((owner, attr, raw))
    try:
        yield
    finally:
        for owner, attr, raw in reversed(saved):
            setattr(owner, attr, raw)


def fit_targets() -> list[tuple[object, str, str]]:
    """The driver-side calls of a fit worth timing."""
    from pyspark.rdd import RDD
    from pyspark.sql.classic.dataframe import DataFrame  # the class sessions really return (Spark 4)
    from pyspark.sql.readwriter import DataFrameWriter

    import spark_ps.ml.base as base
    import spark_ps.ml.fitting as fitting
    import spark_ps.ml.weights as weights
    from spark_ps.client.client import PSClient
    from spark_ps.client.clocks import ClockOps
    from spark_ps.spark.context import PSContext

    targets = [
        (DataFrame, "count", "DataFrame.count"),
        (DataFrame, "collect", "DataFrame.collect (Spark job)"),
        (DataFrame, "first", "DataFrame.first (Spark job)"),
        (DataFrame, "repartition", "DataFrame.repartition"),
        (DataFrame, "mapInArrow", "DataFrame.mapInArrow (plan)"),
        (RDD, "getNumPartitions", "RDD.getNumPartitions"),
        (DataFrameWriter, "save", "DataFrameWriter.save (Delta write)"),
        (PSContext, "get", "PSContext.get"),
        (PSContext, "create_table", "PSContext.create_table"),
        (PSContext, "drop_table", "PSContext.drop_table"),
        (PSClient, "pull", "PSClient.pull (driver)"),
        (ClockOps, "clock_create", "PSClient.clock_create"),  # PSClient's clock requests live on its mixin
        (ClockOps, "clock_drop", "PSClient.clock_drop"),
        (base._PSEstimator, "_fit", "_PSEstimator._fit"),
        (fitting, "task_slots", "task_slots"),  # fitting imported it by name
        (fitting._ProgressPrinter, "__exit__", "_ProgressPrinter.__exit__"),
        (weights, "save_table", "weights.save_table"),
    ]
    for name in ("fit_on_ps", "prepare_fit", "launch_training", "finish_fit"):
        if hasattr(fitting, name):  # whichever driver phases the current fitting module has
            targets.append((fitting, name, f"fitting.{name}"))
    # fitting imported fit_on_ps by name into base: wrap that reference too.
    if hasattr(base, "fit_on_ps"):
        targets.append((base, "fit_on_ps", "fitting.fit_on_ps"))
    return targets


@dataclasses.dataclass
class FitProfile:
    """One profiled fit: wall seconds, the wait for its Delta export, its progress lines, and optionally AUC."""

    repeat: int
    fit_s: float
    export_wait_s: float
    nnz: int
    epoch_lines: list[str]
    passes: int = 0
    batch_size: int | None = None
    floor_s: float | None = None
    eval_s: float | None = None
    auc: float | None = None
    #: Where the cached training rows were when the fit started (:func:`cached_mb`): memory and disk, MB.
    cached_memory_mb: float | None = None
    cached_disk_mb: float | None = None


def cached_mb(spark) -> tuple[float, float]:
    """MB of cached RDD blocks in memory and on disk over the application (its ``getRDDStorageInfo``).

    Examples
    --------
    >>> frame = spark.range(1000).cache(); _ = frame.count()
    >>> memory, disk = cached_mb(spark); memory > 0 and disk == 0
    True
    >>> _ = frame.unpersist(blocking=True)
    """
    infos = spark.sparkContext._jsc.sc().getRDDStorageInfo()
    return (sum(i.memSize() for i in infos) / 2**20, sum(i.diskSize() for i in infos) / 2**20)


class EpochLines(logging.Handler):
    """Keeps the estimator's progress lines (logger ``spark_ps.ml``)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the line."""
        self.lines.append(record.getMessage())


def floor_seconds(lines: list[str]) -> float | None:
    """A fit's floor from its progress lines: converting its partitions (Arrow to CSR) plus its epochs.

    Issue 12's floor is one Spark->Arrow conversion of the partitions plus the
    epochs' compute; the tasks log the first (with batch planning, which is
    small) and every epoch's mean task time (its line may end with an ETA).
    None when a line is missing.

    >>> floor_seconds(["x epoch 1/3: loss 0.5, 100 rows/s (0.40 s)",
    ...                "x epoch 2/3: loss 0.4, 100 rows/s (0.25 s), ETA 0.3 s at most",
    ...                "x: trained 9 rows in 3.0 s (Arrow to CSR and batch planning 1.10 s), exporting t to p"])
    1.75
    """
    epochs = [float(m.group(1)) for line in lines if (m := re.search(r" epoch \d+/\d+: [^(]*\(([\d.]+) s\)", line))]
    load = [float(m.group(1)) for line in lines if (m := re.search(r"Arrow to CSR and batch planning ([\d.]+) s", line))]
    return round(load[0] + sum(epochs), 6) if epochs and load else None


def prepare_data(rows: int, test_rows: int, log2d: int, files: int) -> dict[str, str]:
    """Train/test VectorUDT Parquet (the bench's layout), written once and reused."""
    root = OUT / "data" / f"d{log2d}_n{rows}_t{test_rows}_f{files}"
    paths = {}
    for split, n, start in (("train", rows, 0), ("test", test_rows, rows)):
        if not (root / split / "meta.json").exists():
            write_dataset(root / split, n, 2**log2d, 0, start_row=start, formats=("vector",), n_files=files)
        paths[split] = str(root / split / "vector")
    return paths


def main() -> None:
    """Command line: fit ``--repeats`` times in one session (``--master``) and print each fit's call tree."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--test-rows", type=int, default=100_000)
    parser.add_argument("--dim-log2", type=int, default=18)
    parser.add_argument("--files", type=int, default=2, help="Parquet files per split (the bench uses 2)")
    parser.add_argument("--master", default="local[2]",
                        help="e.g. local-cluster[2,1,2048] (each executor gets its worker's whole memory)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--alpha", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=2, help="fits in one session (the first warms up)")
    parser.add_argument("--sync-mode", default=None, help="syncMode Param (default: the estimator's)")
    parser.add_argument("--defaults", action="store_true",
                        help="LogisticRegression() with its default Params (ignores --epochs, --batch-size, --alpha)")
    parser.add_argument("--evaluate", action="store_true", help="also time held-out AUC (serving-table load)")
    parser.add_argument("--json", default=None, help="write the numbers to this file")
    args = parser.parse_args()
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"

    from sparkkit import start_ps_session

    from spark_ps.ml.classification import LogisticRegression
    from spark_ps.spark.context import PSContext

    paths = prepare_data(args.rows, args.test_rows, args.dim_log2, args.files)
    conf = {}
    if args.master.startswith("local-cluster["):
        conf["spark.executor.memory"] = f"{args.master.rstrip(']').split(',')[-1]}m"
    spark = start_ps_session(args.master, "profile-fit", conf={
        **conf, "spark.driver.memory": "4g", "spark.pyspark.python": sys.executable,
        "spark.sql.warehouse.dir": str(OUT / "warehouse"), "spark.ui.showConsoleProgress": "false"})
    spark.sparkContext.setLogLevel("ERROR")
    progress = EpochLines()
    ps_log = logging.getLogger("spark_ps.ml")
    ps_log.setLevel(logging.INFO)
    ps_log.addHandler(progress)
    records: list[FitProfile] = []
    try:
        PSContext.get(spark)  # session start-up, not the fit (as in the bench)
        train = spark.read.parquet(paths["train"]).cache()
        n = train.count()
        memory_mb, disk_mb = cached_mb(spark)
        print(f"train: {n:,} rows in {train.rdd.getNumPartitions()} partitions, d=2^{args.dim_log2}; cached "
              f"{memory_mb:,.0f} MB in memory, {disk_mb:,.0f} MB on disk")
        params = {"featuresCol": "features", "labelCol": "label", "regParam": 0.0, "maxIter": args.epochs,
                  "numEpochs": args.epochs, "alpha": args.alpha, "beta": 1.0, "batchSize": args.batch_size}
        if args.defaults:
            params = {"featuresCol": "features", "labelCol": "label"}
        if args.sync_mode:
            params["syncMode"] = args.sync_mode
        for repeat in range(args.repeats):
            tree = CallTree()
            progress.lines.clear()
            with wrapped(tree, fit_targets()):
                start = time.perf_counter()
                model = LogisticRegression(**params).fit(train)
                fit_s = time.perf_counter() - start
            # A fit may leave its Delta export running; numNonZeros waits for it.
            start = time.perf_counter()
            nnz = model.numNonZeros
            export_wait_s = time.perf_counter() - start
            summary = model.summary  # the fit's history; its metrics (Spark jobs) are not read here
            record = FitProfile(repeat, fit_s, export_wait_s, nnz, list(progress.lines), summary.totalIterations,
                                summary.batchSize, floor_seconds(progress.lines), cached_memory_mb=memory_mb,
                                cached_disk_mb=disk_mb)
            print(f"\n=== fit {repeat + 1}/{args.repeats}: {fit_s:.2f} s wall; then {export_wait_s:.2f} s until "
                  f"the {nnz:,} weight rows were in Delta")
            floor = record.floor_s
            if floor:
                print(f"floor (Arrow to CSR + the epochs' mean task times) {floor:.2f} s: the fit took "
                      f"{fit_s / floor:.2f}x its floor (issue 12's target: at most 2x)")
            print("\n".join(tree.lines()))
            print("\n".join(f"  log: {line}" for line in progress.lines))
            if args.evaluate:
                from pyspark.ml.evaluation import BinaryClassificationEvaluator

                start = time.perf_counter()
                auc = BinaryClassificationEvaluator(numBins=0).evaluate(
                    model.transform(spark.read.parquet(paths["test"])))
                record.eval_s, record.auc = time.perf_counter() - start, auc
                print(f"held-out AUC {auc:.4f} in {record.eval_s:.2f} s (serving-table load included)")
            records.append(record)
    finally:
        spark.stop()
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps([dataclasses.asdict(r) for r in records], indent=2) + "\n")


if __name__ == "__main__":
    main()
