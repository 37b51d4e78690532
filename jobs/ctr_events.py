"""CTR events for the streaming job: impressions, and the clicks that follow some of them, as Delta tables.

``make stream-demo`` runs it (through ``jobs/stream_demo.py``) before the
stream job; run it alone from the repository root (``bench`` must be
importable, hence ``PYTHONPATH=.``)::

    PYTHONPATH=. SPARK_PS_DEMO_JOB=jobs/ctr_events.py bash jobs/run_demo.sh --out warehouse/ctr_events

Writes, under ``--out``:

``impressions``
    ``id long, t timestamp, features vector``: one row per impression, its
    ~30 hashed categorical features a sparse vector of size ``2**dim_log2``.
    The rows, and which of them are clicked, are :mod:`bench.ctr_data`'s
    synthetic CTR stream (row ``id`` of seed ``seed``: a sparse logistic
    ground truth, so a model has something to learn).
``clicks``
    ``id long, t timestamp``: one row per clicked impression, ``t`` between
    1 s and ``click_delay - 1`` s after the impression's ``t``.
``manifest.json``
    The counts (impressions, clicks, positives), the event-time layout and
    the join settings that label every impression (``delay``, ``lateness``).

Both tables are written in ``rounds + 1`` appends, one Delta version and one
file each, in event-time order: append ``r`` of the impressions holds the
impressions of round ``r`` (event times ``[r, r + 1) * round_seconds``),
append ``r`` of the clicks the clicks whose *click* time falls in that
window, so the clicks of an impression late in a round arrive with the next
round. A stream that reads one file per trigger (``maxFilesPerTrigger=1``)
therefore sees one round per micro-batch, and a clicked impression often
meets its click a batch later.

Decision: the last append of each table is a *watermark marker*: one
impression (``id = -1``, no features) and one click on no impression
(``id = -2``), both ``click_delay + lateness + round_seconds`` after the last
round. A stream-stream join emits an unclicked impression only once both
streams' event-time watermarks have passed its time + ``delay``; without
the marker the last round's unclicked impressions would wait for events that
never come, and the demo could not count every impression as trained. The
marker impression itself stays in the join's state (its own window never
closes), so the rows a stream can train on are exactly the ``impressions``
of the manifest. A live source needs no marker: time keeps moving.

The rows are made by numpy on the driver (vectorised, :mod:`bench.ctr_data`),
staged as Parquet that carries Spark's schema (so ``features`` reads back as
a ``VectorUDT``, as :mod:`bench.ctr_files` does it) and appended to Delta by
Spark, one Spark job and Delta commit per append. Measured on ``local[2]``
with the host shared (load ~12 on two cores): 6 rounds of 5,000 rows, 14
appends, in 80 s, of which 34 s the first append (a cold JVM) and 1-5 s each
of the others: Delta's commit protocol, not the rows, sets the cost.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import pathlib
import shutil
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.ml.linalg import VectorUDT
from pyspark.sql import SparkSession
from pyspark.sql.types import LongType, StructField, StructType, TimestampType

from bench.ctr_data import CTRSpec, iter_chunks
from bench.ctr_files import SPARK_SCHEMA_KEY
from spark_ps.ml.csrcolumns import VECTOR_ARROW_TYPE

#: Event time of the first impression (UTC): fixed, so that a rerun writes the same events.
EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
#: Id of the watermark marker's impression and of its click (which matches no impression).
MARKER_IMPRESSION, MARKER_CLICK = -1, -2

IMPRESSIONS_SCHEMA = StructType([StructField("id", LongType(), False), StructField("t", TimestampType(), False),
                                 StructField("features", VectorUDT(), False)])
CLICKS_SCHEMA = StructType([StructField("id", LongType(), False), StructField("t", TimestampType(), False)])


@dataclasses.dataclass(frozen=True)
class EventSettings:
    """What :func:`write_events` writes; validated once here.

    Parameters
    ----------
    out : str
        Directory of the two Delta tables and the manifest (appended to if they exist).
    rounds : int
        Rounds of impressions (plus one marker append).
    rows_per_round : int
        Impressions per round.
    dim_log2 : int
        Features are hashed into ``2**dim_log2`` (a Spark vector's size is an int32: at most 31).
    round_seconds : float
        Event time a round spans.
    click_delay : float
        A click comes between 1 s and ``click_delay - 1`` s after its impression (event time).
    lateness : float
        The watermark delay the stream will use; only moves the marker far enough.
    ctr : float
        Expected click rate of the ground truth.
    seed : int
        Row stream of :mod:`bench.ctr_data`; the ground truth is fixed.

    Examples
    --------
    >>> EventSettings(out="x", rounds=0)
    Traceback (most recent call last):
    ...
    ValueError: rounds must be >= 1, got 0
    """

    out: str
    rounds: int = 6
    rows_per_round: int = 5000
    dim_log2: int = 22
    round_seconds: float = 60.0
    click_delay: float = 30.0
    lateness: float = 5.0
    ctr: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("rounds", "rows_per_round"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.dim_log2 <= 31:
            raise ValueError(f"dim_log2 must be in [1, 31] (a Spark vector's size is an int32), got {self.dim_log2}")
        if self.click_delay <= 2 or self.round_seconds <= 0 or self.lateness < 0:
            raise ValueError(f"need click_delay > 2 s, round_seconds > 0, lateness >= 0; got {self.click_delay}, "
                             f"{self.round_seconds}, {self.lateness}")
        if not 0 < self.ctr < 1:
            raise ValueError(f"ctr must be in (0, 1), got {self.ctr}")

    @property
    def dim(self) -> int:
        """The features' vector size."""
        return 2**self.dim_log2


def _timestamps(seconds: np.ndarray) -> pa.Array:
    micros = np.round(seconds * 1e6).astype(np.int64) + int(EPOCH.timestamp() * 1e6)
    return pa.array(micros, pa.timestamp("us", tz="UTC"))


def _vectors(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, dim: int) -> pa.Array:
    """CSR rows as the Arrow struct of Spark's sparse ``VectorUDT``."""
    n = len(indptr) - 1
    offsets = pa.array(indptr.astype(np.int32))
    fields = list(VECTOR_ARROW_TYPE)
    return pa.StructArray.from_arrays(
        [pa.array(np.zeros(n, np.int8)), pa.array(np.full(n, dim, np.int32)),
         pa.ListArray.from_arrays(offsets, pa.array(indices.astype(np.int32)), type=fields[2].type),
         pa.ListArray.from_arrays(offsets, pa.array(values.astype(np.float64)), type=fields[3].type)],
        fields=fields)


def _append(spark: SparkSession, table: pa.Table, schema: StructType, path: str, staging: pathlib.Path) -> None:
    """Append ``table`` to the Delta table at ``path`` as one version of one file."""
    staged = staging / f"{len(list(staging.iterdir()))}.parquet"
    pq.write_table(table.replace_schema_metadata({SPARK_SCHEMA_KEY: schema.json()}), staged)
    spark.read.parquet(str(staged)).coalesce(1).write.format("delta").mode("append").save(path)


def write_events(spark: SparkSession, settings: EventSettings) -> dict:
    """Append the rounds of impressions and clicks to ``settings.out``; return (and write) the manifest.

    Examples
    --------
    >>> import tempfile
    >>> out = tempfile.mkdtemp()
    >>> manifest = write_events(spark, EventSettings(out=out, rounds=1, rows_per_round=100))
    >>> manifest["impressions"], manifest["versions"]
    (100, 2)
    >>> spark.read.format("delta").load(out + "/impressions").where("id >= 0").count()
    100
    >>> spark.read.format("delta").load(out + "/clicks").where("id >= 0").count() == manifest["clicks"]
    True
    """
    s = settings
    out = pathlib.Path(s.out)
    imps_path, clicks_path = str(out / "impressions"), str(out / "clicks")
    rng = np.random.default_rng(s.seed)
    spec = CTRSpec(ctr=s.ctr)
    pending_ids, pending_times = np.zeros(0, np.int64), np.zeros(0)  # clicks of later windows
    clicks = positives = nnz = 0
    staging = pathlib.Path(tempfile.mkdtemp(prefix="ctr_events_"))
    try:
        for r in range(s.rounds):
            start = r * s.rows_per_round
            (chunk,) = iter_chunks(s.rows_per_round, s.dim, s.seed, start_row=start, chunk_rows=s.rows_per_round,
                                   spec=spec)
            ids = np.arange(start, start + s.rows_per_round, dtype=np.int64)
            times = r * s.round_seconds + np.sort(rng.uniform(0.0, s.round_seconds, s.rows_per_round))
            _append(spark, pa.table({"id": ids, "t": _timestamps(times),
                                     "features": _vectors(chunk.indptr, chunk.indices, chunk.values, s.dim)}),
                    IMPRESSIONS_SCHEMA, imps_path, staging)
            clicked = chunk.labels == 1.0
            positives += int(clicked.sum())
            nnz += len(chunk.indices)
            click_times = times[clicked] + rng.uniform(1.0, s.click_delay - 1.0, int(clicked.sum()))
            pending_ids = np.concatenate([pending_ids, ids[clicked]])
            pending_times = np.concatenate([pending_times, click_times])
            due = pending_times < (r + 1) * s.round_seconds  # clicked within this round's window
            order = np.argsort(pending_times[due], kind="stable")
            _append(spark, pa.table({"id": pending_ids[due][order], "t": _timestamps(pending_times[due][order])}),
                    CLICKS_SCHEMA, clicks_path, staging)
            clicks += int(due.sum())
            pending_ids, pending_times = pending_ids[~due], pending_times[~due]
        # The watermark marker, with the clicks still pending (see the module docstring).
        marker = s.rounds * s.round_seconds + s.click_delay + s.lateness + s.round_seconds
        _append(spark, pa.table({"id": np.array([MARKER_IMPRESSION], np.int64), "t": _timestamps(np.array([marker])),
                                 "features": _vectors(np.zeros(2, np.int64), np.zeros(0), np.zeros(0), s.dim)}),
                IMPRESSIONS_SCHEMA, imps_path, staging)
        order = np.argsort(pending_times, kind="stable")
        _append(spark, pa.table({"id": np.append(pending_ids[order], MARKER_CLICK),
                                 "t": _timestamps(np.append(pending_times[order], marker))}),
                CLICKS_SCHEMA, clicks_path, staging)
        clicks += len(pending_ids)
    finally:
        shutil.rmtree(staging)
    manifest = {"impressions": s.rounds * s.rows_per_round, "clicks": clicks, "positives": positives,
                "versions": s.rounds + 1, "nnz_per_row": nnz / (s.rounds * s.rows_per_round),
                "marker": {"impression_id": MARKER_IMPRESSION, "click_id": MARKER_CLICK},
                "join": {"key": "id", "eventTime": "t", "delay": f"{s.click_delay:g} seconds",
                         "lateness": f"{s.lateness:g} seconds"},
                "settings": dataclasses.asdict(s)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    """Command line: parse the options into :class:`EventSettings`, write the events, print the manifest."""
    defaults = EventSettings(out="")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory of impressions/, clicks/ and manifest.json")
    parser.add_argument("--rounds", type=int, default=defaults.rounds)
    parser.add_argument("--rows-per-round", type=int, default=defaults.rows_per_round)
    parser.add_argument("--dim-log2", type=int, default=defaults.dim_log2)
    parser.add_argument("--round-seconds", type=float, default=defaults.round_seconds)
    parser.add_argument("--click-delay", type=float, default=defaults.click_delay)
    parser.add_argument("--lateness", type=float, default=defaults.lateness)
    parser.add_argument("--ctr", type=float, default=defaults.ctr)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args(argv)
    try:
        settings = EventSettings(out=args.out, rounds=args.rounds, rows_per_round=args.rows_per_round,
                                 dim_log2=args.dim_log2, round_seconds=args.round_seconds,
                                 click_delay=args.click_delay, lateness=args.lateness, ctr=args.ctr, seed=args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    spark = SparkSession.builder.appName("spark-ps: CTR events").getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    manifest = write_events(spark, settings)
    print(f"CTR events: {manifest['impressions']} impressions in {settings.rounds} rounds (+1 watermark marker), "
          f"{manifest['clicks']} clicks (CTR {manifest['clicks'] / manifest['impressions']:.3f}), "
          f"{manifest['nnz_per_row']:.1f} features a row, d = 2^{settings.dim_log2} -> {settings.out}", flush=True)
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
