"""The streaming bench's report: Markdown tables, the target checks, and its section of ``docs/benchmarks.md``.

The section sits between ``<!-- bench-stream:begin -->`` and
``<!-- bench-stream:end -->`` (:func:`bench.report.write_section`; the
other benches' sections are left alone). All text goes through
:func:`bench.logs.portable_paths`: no absolute path of the machine that ran
it. The definitions behind each figure are in :mod:`bench.stream_records`.
"""

from __future__ import annotations

from bench.logs import portable_paths
from bench.records import MLLIB, OK, PS
from bench.report import fmt, mb, ratio
from bench.stream_records import (
    MEMORY,
    THROUGHPUT,
    StreamResults,
    StreamRun,
    breakdown,
    floor_run,
    latency_quantile,
    mean_auc,
    snapshot_overhead_s,
    steady,
    sustained_rows_per_s,
    train_rows_per_s,
)

BEGIN, END = "<!-- bench-stream:begin -->", "<!-- bench-stream:end -->"
#: The issue's targets.
TARGET_ROWS_PER_S = 100_000
TARGET_P95_S = 2.0
#: Driver memory counts as flat if the largest d's driver peak is within this of the smallest d's.
FLAT_MB = 150.0


def verdict(ok: bool | None) -> str:
    """``MET`` / ``MISSED`` / ``NOT RUN`` for a check's outcome (``None``: no number).

    Examples
    --------
    >>> verdict(True), verdict(False), verdict(None)
    ('MET', 'MISSED', 'NOT RUN')
    """
    return "NOT RUN" if ok is None else ("MET" if ok else "MISSED")


def _ours(results: StreamResults, batch_rows: int) -> StreamRun | None:
    runs = [r for r in results.find(PS, THROUGHPUT, batch_rows) if r.ok]
    return runs[-1] if runs else None


def _mllib(results: StreamResults) -> StreamRun | None:
    """MLlib's successful run (the largest d that worked), else its last attempt."""
    runs = results.find(MLLIB, THROUGHPUT)
    ok = [r for r in runs if r.ok or r.batches]
    return max(ok, key=lambda r: r.d_log2) if ok else (runs[-1] if runs else None)


def memory_growth(results: StreamResults) -> tuple[float | None, list[tuple[int, StreamRun]]]:
    """Largest driver peak minus the smallest d's (MB), and the memory runs by d (successful ones only)."""
    by_d = sorted((r.d_log2, r) for r in results.find(PS, MEMORY) if r.ok and r.driver_mb is not None)
    if len(by_d) < 2:
        return None, by_d
    base = by_d[0][1].driver_mb
    return max(r.driver_mb for _, r in by_d[1:]) - base, by_d


def checks(results: StreamResults) -> list[tuple[str, str, str, str]]:
    """The issue's speed targets: ``(check, threshold, verdict, numbers)`` rows."""
    meta = results.meta
    rows = []
    rates = {b: sustained_rows_per_s(r) for b in meta.batch_rows if (r := _ours(results, b))}
    ok = None if not rates else all(v is not None and v >= TARGET_ROWS_PER_S for v in rates.values())
    rows.append(("sustained training throughput", f"≥ {TARGET_ROWS_PER_S:,} rows/s at every batch size",
                 verdict(ok), ", ".join(f"{b:,}: {fmt(v, ',.0f')}" for b, v in rates.items()) or "—"))
    lat = _ours(results, meta.latency_batch_rows)
    p95 = latency_quantile(lat, 0.95, to_commit=True) if lat else None
    whole = latency_quantile(lat, 0.95) if lat else None
    rows.append(("p95 latency, trigger to committed version", f"≤ {TARGET_P95_S:g} s at "
                 f"{meta.latency_batch_rows:,} rows a batch", verdict(None if p95 is None else p95 <= TARGET_P95_S),
                 f"{fmt(p95, '.2f')} s (whole trigger, in-stream snapshots included: {fmt(whole, '.2f')} s)"))
    growth, by_d = memory_growth(results)
    heap = [r.heap_after_gc_mb for _, r in by_d if r.heap_after_gc_mb is not None]
    heap_text = f"; heap used after GC {min(heap):,.0f}–{max(heap):,.0f} MB" if heap else ""
    rows.append(("driver memory flat in d (JVM + Python peak)", f"growth < {FLAT_MB:.0f} MB from "
                 f"2^{by_d[0][0] if by_d else '?'} to 2^{by_d[-1][0] if by_d else '?'}",
                 verdict(None if growth is None else growth < FLAT_MB),
                 ("—" if growth is None else f"{growth:+,.0f} MB") + heap_text))
    return rows


def _intro(results: StreamResults) -> list[str]:
    m = results.meta
    state = "complete" if m.complete else "**partial: see the failures**"
    smoke = " **Smoke run (tiny sizes): the numbers check the bench works, they measure nothing.**" if m.smoke else ""
    return [
        "## Streaming training (`python -m bench.stream`)",
        "",
        f"Synthetic CTR events (`bench/ctr_data.py`, ~30 binary non-zeros a row, CTR ≈ 0.25), d = 2^{m.d_log2}, "
        f"{m.rows:,} rows per micro-batch size, written beforehand as Parquet files of one micro-batch each and "
        f"streamed with `maxFilesPerTrigger=1` (triggers back to back) through "
        f"`StreamingTrainer(LogisticRegression(...), modelPath, snapshotEvery={m.snapshot_every})` on "
        f"`{m.master}`, driver memory {m.driver_memory}; {m.cores} cores shared with other work; {m.date}, "
        f"started {m.started}, code {m.commit or '?'}, **{m.wall_s / 60:.1f} min wall time in all**, {state}."
        + smoke,
        "",
        "*How to read it.* *Latency* is the query's `triggerExecution` (trigger start to Spark's commit, after our "
        "Delta commit; progressive scoring included); *to commit* runs from the trigger's start to the batch's "
        "Delta commit (`committedAt` in `trainer.metrics()`), when its version exists, and leaves out what the "
        "trigger does after it (an in-stream snapshot, Spark's commit log); *sustained rows/s* = rows of every batch after the first ÷ "
        "the sum of their latencies (the first carries the cold start); *training pass* = the same rows ÷ the "
        "batches' `trainSeconds`. MLlib is timed the same way from its own output operations (scoring, `trainOn`); "
        "it runs in a child process of its own (DStreams, no plugin). *Progressive AUC*: each batch scored by the "
        "model before it learns from the batch; means are over the batches after the first. Peaks are `VmHWM` of "
        "the driver JVM (which also runs local mode's executors) + driver Python, each d in a fresh child.",
    ]


def _throughput(results: StreamResults) -> list[str]:
    lines = ["", "### Throughput and latency by micro-batch size (spark-ps)", "",
             "| rows / batch | batches | sustained rows/s | training pass rows/s | p50 latency | p95 latency | "
             "max latency | p50 / p95 to commit | median scoring / training / rest of a batch | "
             "mean progressive AUC | status |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for b in results.meta.batch_rows:
        for r in results.find(PS, THROUGHPUT, b):
            lat = [x.latency_s for x in steady(r)]
            parts = breakdown(r)
            split = " / ".join(f"{v:.2f}" for v in parts) + " s" if parts else "—"
            lines.append(f"| {b:,} | {len(r.batches)} | {fmt(sustained_rows_per_s(r), ',.0f')} | "
                         f"{fmt(train_rows_per_s(r), ',.0f')} | {fmt(latency_quantile(r, 0.5), '.2f')} s | "
                         f"{fmt(latency_quantile(r, 0.95), '.2f')} s | {fmt(max(lat) if lat else None, '.2f')} s | "
                         f"{fmt(latency_quantile(r, 0.5, True), '.2f')} / {fmt(latency_quantile(r, 0.95, True), '.2f')} s"
                         f" | {split} | {fmt(mean_auc(r), '.4f')} | {_status(r)} |")
    return lines + ["", "*Rest*: the batch's latency less its scoring and training pass (the quarantine check, "
                    "the changed rows' Delta commit, an in-stream snapshot, Spark's planning and logs)."]


def _floor(results: StreamResults) -> list[str]:
    """The floor of each batch size (:func:`bench.stream_child.run_floor`) beside our stream of the same files."""
    runs = [r for b in results.meta.batch_rows for r in results.find(PS, THROUGHPUT, b) if r.floor_batches]
    if not runs:
        return []
    lines = ["", "### The floor: Structured Streaming and one barrier stage that receives each batch", "",
             "| rows / batch | floor sustained rows/s | floor p50 latency | spark-ps p50 latency | spark-ps above the "
             f"floor (p50) | a batch's time at {TARGET_ROWS_PER_S:,} rows/s |", "|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        floor = floor_run(r)
        floor_p50 = latency_quantile(floor, 0.5)
        ours_p50 = latency_quantile(r, 0.5)
        above = ours_p50 - floor_p50 if ours_p50 is not None and floor_p50 is not None else None
        lines.append(f"| {r.batch_rows:,} | {fmt(sustained_rows_per_s(floor), ',.0f')} | "
                     f"{fmt(floor_p50, '.2f')} s | {fmt(ours_p50, '.2f')} s | {fmt(above, '.2f')} s | "
                     f"{r.batch_rows / TARGET_ROWS_PER_S:.2f} s |")
    return lines + ["", "*Floor*: the same files, same session, one trigger each, into a `foreachBatch` whose only "
                    "work is one barrier `mapInArrow` stage whose tasks receive the batch's rows as our training "
                    "tasks do (`spark_ps.streaming.stageinput`: each reads its share of the batch's Parquet files) "
                    "and count them: offset and commit logs, planning, the stage's launch, reading the rows. "
                    "Everything above it is ours: scoring, training, the changed rows' export and the Delta commit."]


def _costs(results: StreamResults) -> list[str]:
    r = _ours(results, results.meta.latency_batch_rows)
    if r is None:
        return []
    over = snapshot_overhead_s(r)
    restart = r.restart_batch
    return ["", f"### Snapshot and restart ({r.batch_rows:,} rows a batch)", "",
            f"* `trainer.stop()` (query stop + full snapshot of the newest version, {len(r.batches)} batches in "
            f"the model): **{fmt(r.stop_s, '.2f')} s**; in-stream snapshots (every {results.meta.snapshot_every} "
            f"commits) add {fmt(over, '+.2f')} s to their batch's median latency.",
            f"* Restart to first committed batch (new trainer + query, same model path and checkpoint, same "
            f"session: shards rebuilt from snapshot + log, then the batch scored, trained and committed): "
            f"**{fmt(r.restart_s, '.2f')} s** for {r.restart_rows or 0:,} rows (that batch's trigger: "
            f"{fmt(restart and restart.latency_s, '.2f')} s); a restarted driver adds its session start-up, "
            f"{fmt(r.session_s, '.1f')} s here (JVM, plugin, shards registered)."]


def _versus(results: StreamResults) -> list[str]:
    meta = results.meta
    ours = _ours(results, meta.latency_batch_rows)
    ml = _mllib(results)
    ref = results.reference
    lines = ["", "### Ratios", ""]
    if ml is not None and ml.d_log2 != meta.d_log2:
        lines.append(f"MLlib ran at d = 2^{ml.d_log2}, the largest d of {meta.mllib_dims} that worked (ours at "
                     f"2^{meta.d_log2}); every attempt is listed under *Runs*.")
        lines.append("")
    lines += ["| comparison | spark-ps | other | ratio (spark-ps ÷ other) |", "|---|---:|---:|---:|"]
    o_rate = sustained_rows_per_s(ours) if ours else None
    if ml is not None:
        lines.append(f"| sustained rows/s vs MLlib ({meta.latency_batch_rows:,} rows a batch) | "
                     f"{fmt(o_rate, ',.0f')} | {fmt(sustained_rows_per_s(ml), ',.0f')} | "
                     f"{ratio(o_rate, sustained_rows_per_s(ml))} |")
        lines.append(f"| training-pass rows/s vs MLlib | {fmt(ours and train_rows_per_s(ours), ',.0f')} | "
                     f"{fmt(train_rows_per_s(ml), ',.0f')} | {ratio(ours and train_rows_per_s(ours), train_rows_per_s(ml))} |")
        oa, ma = (mean_auc(ours) if ours else None), mean_auc(ml)
        diff = "—" if oa is None or ma is None else f"{oa - ma:+.4f} (difference)"
        lines.append(f"| mean progressive AUC vs MLlib | {fmt(oa, '.4f')} | {fmt(ma, '.4f')} | {diff} |")
    if ref is not None:
        per_core = o_rate / ours.workers if o_rate and ours and ours.workers else None
        lines.append(f"| rows/s per core vs numpy FTRL (1 process, {ref.train_rows or 0:,} rows, 1 core) | "
                     f"{fmt(per_core, ',.0f')} | {fmt(ref.rows_per_s, ',.0f')} | {ratio(per_core, ref.rows_per_s)} |")
        lines.append("")
        lines.append(f"Per core: our sustained rows/s ÷ {ours.workers if ours else '?'} (local mode's task slots; the "
                     f"sidecar and the driver share those cores). numpy FTRL: one pass, key mapping included, "
                     f"median of repeats; held-out AUC {fmt(ref.auc, '.4f')} on the next rows of the same stream.")
    if ml is not None:
        lines += _auc_table(ours, ml)
    return lines


def _auc_table(ours: StreamRun | None, ml: StreamRun) -> list[str]:
    mine = {b.batch_id: b for b in ours.batches} if ours else {}
    lines = ["", "<details><summary>Progressive AUC per batch, spark-ps vs MLlib (same files, same order)</summary>",
             "", "| batch | spark-ps AUC | MLlib AUC | spark-ps latency | MLlib latency |", "|---:|---:|---:|---:|---:|"]
    for b in ml.batches:
        o = mine.get(b.batch_id)
        lines.append(f"| {b.batch_id} | {fmt(o and o.auc, '.4f')} | {fmt(b.auc, '.4f')} | "
                     f"{fmt(o and o.latency_s, '.2f')} s | {fmt(b.latency_s, '.2f')} s |")
    return lines + ["", "</details>"]


def _memory(results: StreamResults) -> list[str]:
    growth, by_d = memory_growth(results)
    runs = sorted(results.find(PS, MEMORY), key=lambda r: r.d_log2)
    if not runs:
        return []
    lines = ["", f"### Driver memory by d (spark-ps, {results.meta.mem_batches} batches of "
             f"{runs[0].batch_rows:,} rows, each d in a fresh child)", "",
             "| d | driver JVM peak | driver Python peak | JVM + Python | growth vs smallest d | heap used after GC | "
             "sustained rows/s | status |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    base = by_d[0][1].driver_mb if by_d else None
    for r in runs:
        g = None if base is None or r.driver_mb is None else r.driver_mb - base
        lines.append(f"| 2^{r.d_log2} | {mb(r.driver_jvm_peak_mb)} | {mb(r.driver_python_peak_mb)} | {mb(r.driver_mb)} | "
                     f"{fmt(g, '+,.0f')} MB | {mb(r.heap_after_gc_mb)} | {fmt(sustained_rows_per_s(r), ',.0f')} | "
                     f"{_status(r)} |")
    return lines


def _status(r: StreamRun) -> str:
    return r.status if r.status == OK else f"**{r.status}**: {(r.error or '')[:200]}"


def _runs(results: StreamResults) -> list[str]:
    lines = ["", "<details><summary>Runs</summary>", "",
             "| system | purpose | d | rows / batch | batches | settings | session start s | status | log |",
             "|---|---|---|---:|---:|---|---:|---|---|"]
    for r in results.runs:
        lines.append(f"| {r.system} | {r.purpose} | 2^{r.d_log2} | {r.batch_rows:,} | {len(r.batches)} | "
                     f"{r.settings or '—'} | {fmt(r.session_s, '.1f')} | {_status(r)} | `{r.log or '—'}` |")
    for r in results.runs:
        if not r.ok and r.log_tail:
            lines += ["", f"{r.system} {r.purpose} 2^{r.d_log2} ({r.batch_rows:,} rows a batch), end of its log:",
                      "", "```", r.log_tail[-3000:], "```"]
    return lines + ["", "</details>"]


def markdown(results: StreamResults) -> str:
    """The report section (without its markers), machine paths made portable.

    Parameters
    ----------
    results : StreamResults

    Returns
    -------
    str
    """
    lines = _intro(results) + ["", "### Target checks", "", "| check | target | verdict | numbers |",
                               "|---|---|---|---|"]
    lines += [f"| {c} | {t} | **{v}** | {n} |" for c, t, v, n in checks(results)]
    lines += _throughput(results) + _floor(results) + _costs(results) + _versus(results) + _memory(results) + _runs(results)
    if results.notes:
        lines += [""] + [f"* {n}" for n in results.notes]
    return portable_paths("\n".join(lines))


def checks_text(results: StreamResults) -> str:
    """The target checks as console lines."""
    return "\n".join(f"{v:>8}  {c} [{t}]: {n}" for c, t, v, n in checks(results))
