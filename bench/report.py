"""The MLlib bench's report: Markdown tables, console lines, and its section of ``docs/benchmarks.md``.

The section sits between ``<!-- bench-mllib:begin -->`` and
``<!-- bench-mllib:end -->``; other sections of the file (``bench-ps``'s, and
the prose around them) are left untouched. The whole Markdown text goes
through :func:`bench.logs.portable_paths`, so quoted tracebacks and log paths
are relative to the repository, never this machine's absolute paths.
"""

from __future__ import annotations

import math
import os
import pathlib

from bench import DOC
from bench.analysis import (
    RSS_BASE_D,
    THROUGHPUT_FRACTION,
    cells_expected,
    driver_rss,
    mllib_for,
    speedup,
    target_checks,
    throughput,
)
from bench.logs import portable_paths
from bench.records import MLLIB, NOT_RUN, OK, PS, REF, SKIPPED, Results, RunRecord, params_items

BEGIN, END = "<!-- bench-mllib:begin -->", "<!-- bench-mllib:end -->"
PLOT_NAME = "bench_mllib.png"


def mb(v: float | None) -> str:
    """Megabytes for a table cell; ``—`` for unknown.

    Examples
    --------
    >>> mb(1234.4), mb(None)
    ('1,234 MB', '—')
    """
    return "—" if v is None else f"{v:,.0f} MB"


def nbytes(v: int | None) -> str:
    """A byte count with a binary unit; ``—`` for unknown.

    Examples
    --------
    >>> nbytes(5939), nbytes(3 * 2**30)
    ('5.8 KB', '3.0 GB')
    """
    if v is None:
        return "—"
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if v >= scale:
            return f"{v / scale:.1f} {unit}"
    return f"{v} B"


def fmt(v: float | None, spec: str) -> str:
    """``format(v, spec)``, or ``—`` for ``None`` and NaN."""
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def pct(v: float | None) -> str:
    """A fraction as a percentage with one decimal; ``—`` for unknown."""
    return "—" if v is None else f"{100 * v:.1f}%"


def ratio(a: float | None, b: float | None) -> str:
    """``a / b`` as ``0.31×`` (scientific below 0.01); ``—`` if either is unknown or ``b`` is 0.

    Examples
    --------
    >>> ratio(1, 4), ratio(6000, 2e8), ratio(None, 1)
    ('0.25×', '3.0e-05×', '—')
    """
    if a is None or b is None or b == 0:
        return "—"
    r = a / b
    return f"{r:.2f}×" if r >= 0.01 else f"{r:.1e}×"


def label(r: RunRecord | None) -> str:
    """A run's configuration label, ``—`` for none."""
    return "—" if r is None else r.label()


def format_run(r: RunRecord) -> str:
    """One console line for a run: configuration, then its numbers or its failure."""
    params = ", ".join(f"{k}={v}" for k, v in params_items(r.params))
    head = f"{r.system:>10} {r.master:>23} d=2^{r.d_log2} [{params}]"
    if not r.ok:
        return f"{head}: {r.status} {r.error or ''}"
    extra = f", warm-up {r.warmup_s:.1f} s" if r.warmup_s is not None else ""
    if r.epoch_seconds:
        extra += f", epochs {'/'.join(f'{s:.1f}' for s in r.epoch_seconds)} s"
    return (f"{head}: fit {r.fit_s:.1f} s, AUC {r.auc:.4f}, log-loss {r.log_loss:.4f}, "
            f"driver JVM {mb(r.driver_jvm_peak_mb)}, Python {mb(r.driver_python_peak_mb)}, "
            f"results {nbytes(r.result_bytes)}{extra}")


def warmup_text(rows: int) -> str:
    """The report's sentence on the warm-up fit (or its absence)."""
    if not rows:
        return "No warm-up: each timed fit is the first of a fresh application."
    return (f"*Warm-up*: before the timed fit, the same system fits once, untimed, on the first {rows:,} training "
            f"rows (MLlib maxIter ≤ 5, spark-ps 1 epoch), so the timed fit measures training, not a fresh "
            f"application's start-up: JIT for both, and for spark-ps Spark's Python workers, which MLlib never "
            f"starts; the warm-up's own seconds are in the last table (for spark-ps they include that cold "
            f"start and Delta's first write).")


def coverage_lines(results: Results) -> list[str]:
    """Exactly what ran and what did not, cell by cell."""
    lines = []
    for m, d, system in cells_expected(results):
        c = results.cell(d, m, system)
        if c is None:
            lines.append(f"{system} 2^{d} on `{m}`: **not run** (the harness stopped before it)")
            continue
        counts: dict[str, int] = {}
        for r in results.runs_of(d, m, system, ok_only=False):
            counts[r.status] = counts.get(r.status, 0) + 1
        detail = ", ".join(f"{n} {s}" for s, n in counts.items()) or "no runs"
        note = f"; {c.note}" if c.note else ""
        bold = "**" if c.status != OK else ""
        lines.append(f"{system} 2^{d} on `{m}`: {bold}{c.status}{bold} ({detail}{note})")
    return lines


def _ps_text(meta) -> str:
    """How the spark-ps runs were configured, for the intro."""
    ps = meta.ps_params
    if meta.ps_epochs == [0] and not ps.alpha and not ps.batchSize:
        return "one fit of `LogisticRegression()` with its default Params (batch size and passes chosen from the data)"
    return (f"fewest of {meta.ps_epochs} epochs, FTRL α={ps.alpha or 'default'}, β={ps.beta:g}, batch "
            f"{ps.batchSize or 'auto'}, reg 0")


def _intro(results: Results) -> list[str]:
    meta = results.meta
    masters, primary = meta.masters, meta.primary
    state = "complete" if meta.complete else "**partial: see Coverage**"
    return [
        "## spark-ps vs MLlib LogisticRegression (`python -m bench.mllib`)",
        "",
        f"Synthetic CTR data (`bench/ctr_data.py`: {meta.n_fields} hashed Zipf fields, ~30 binary "
        f"non-zeros per row, CTR ≈ {meta.ctr:.2f}), {meta.rows:,} training / {meta.test_rows:,} "
        f"held-out rows; d ∈ {{{', '.join(f'2^{d}' for d in meta.dims)}}}; masters "
        f"{', '.join(f'`{m}`' for m in masters)} (MLlib on `{primary}`"
        f"{' and every other master' if meta.mllib_all_masters else ' only'}); driver memory "
        f"{meta.driver_memory}, {meta.cores} cores (shared with other work), {meta.date}, started "
        f"{meta.started}, **{meta.wall_s / 60:.1f} min wall time in all**, {state}. "
        f"One invocation, one `results.json`.",
        "",
        "*How to read it.* Each configuration runs in its own Python + JVM (timeout "
        f"{meta.timeout:.0f} s each); the training DataFrame is cached (and our shards registered) "
        f"before the fit clock starts. {warmup_text(meta.warmup_rows)} **Target AUC at d = MLlib's best held-out "
        f"AUC at that d** (best of its grid regParam ∈ {meta.reg_params} × standardization ∈ {{F, T}} at "
        f"maxIter={meta.max_iter}, and of a maxIter ladder {sorted(meta.ladder, reverse=True)} on the best "
        f"setting); where MLlib failed, MLlib's best at the largest d where it succeeded (marked †). *Time to "
        f"target*: fit wall time of the cheapest run reaching the target (MLlib: cheapest of its runs at that d; "
        f"spark-ps: {_ps_text(meta)}). *Speed-up* = MLlib's time ÷ ours (spark-ps on a master without MLlib is "
        f"compared with MLlib on `{primary}`). AUC (exact, `numBins=0`) and log-loss are on the held-out rows, "
        f"computed by Spark; for each system the *best* run's. Peak RSS is `VmHWM` of the best run; *task "
        f"results* is the sum of `resultSize` over the fit's stages (what executors sent the driver). *Rows/s "
        f"per core* (spark-ps) = training rows ÷ median logged epoch time (`spark_ps.ml` progress lines: mean "
        f"task time of the epoch) ÷ workers, from our longest run at that d; numpy FTRL: training rows ÷ "
        f"one-pass train time (key mapping included, median of repeats), one core.",
    ]


def _main_table(results: Results) -> list[str]:
    lines = ["", "| d | master | system | best config | time to target | speed-up | AUC | log-loss | target AUC | "
             "driver JVM peak | driver Python peak | task results to driver | train rows/s per core | status |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for d in sorted(results.dims):
        per_d = results.dims[d]
        target = per_d.target_auc
        tgt = fmt(target, ".4f") + ("†" if "fallback" in (per_d.target_source or "") else "")
        for m in results.meta.masters:
            for system in (MLLIB, PS):
                c = results.cell(d, m, system)
                if c is None:
                    continue
                b, h = c.best, c.target_run
                if h is not None:
                    ttt = f"{h.fit_s:.1f} s ({h.label().split(',')[0]})"
                else:
                    ttt = "—" if b is None else ("not reached" if target is not None else "no target")
                s = speedup(results, d, m) if system == PS else None
                sp = f"{s.ratio:.2f}×" if s is not None and s.ratio is not None else "—"
                tp = throughput(results, d, m) if system == PS else None
                jvm = mb(b.driver_jvm_peak_mb if b else None)
                if b is None and c.oom_run and c.oom_run.driver_jvm_peak_mb:
                    jvm = f"{mb(c.oom_run.driver_jvm_peak_mb)} at OOM"
                status = c.status + (f": {c.note}" if c.note else "")
                if b is None and c.oom_run:
                    status += f" ({(c.oom_run.error or '')[:120]})"
                lines.append(
                    f"| 2^{d} | {m} | {system} | {label(b)} | {ttt} | {sp} | {fmt(b and b.auc, '.4f')} | "
                    f"{fmt(b and b.log_loss, '.4f')} | {tgt} | {jvm} | {mb(b.driver_python_peak_mb if b else None)} | "
                    f"{nbytes(b.result_bytes if b else None)} | {fmt(tp and tp.per_core_epoch, ',.0f')} | {status} |")
        ref = per_d.reference
        if ref:
            reached = "—" if target is None else f"{ref.fit_s:.2f} s" if ref.auc >= target else "not reached"
            lines.append(f"| 2^{d} | 1 process | {REF} | 1 pass | {reached} | — | {ref.auc:.4f} | "
                         f"{ref.log_loss:.4f} | {tgt} | — | — | — | {ref.rows_per_s:,.0f} | ok |")
    sources = [f"2^{d}: {results.dims[d].target_source or '—'}" for d in sorted(results.dims)]
    return lines + ["", "Targets: " + "; ".join(sources) + "."]


def _checks_table(results: Results) -> list[str]:
    masters = results.meta.masters
    lines = ["", "### Target checks", "", "| check | target | " + " | ".join(f"`{m}`" for m in masters) + " |",
             "|---|---|" + "---|" * len(masters)]
    for row in target_checks(results):
        cells = [f"**{row.cells[m].verdict}** {row.cells[m].text}".strip() for m in masters]
        lines.append(f"| {row.check} | {row.threshold} | " + " | ".join(cells) + " |")
    return lines


def _ratios_table(results: Results) -> list[str]:
    lines = ["", "### Ratios spark-ps / MLlib (best configs; < 1 means spark-ps is smaller or faster)", "",
             "| d | master | MLlib on | fit time | fit CPU time | time to target | driver JVM peak | "
             "driver Python peak | task results to driver | AUC difference |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for d in sorted(results.dims):
        for m in results.meta.masters:
            p = results.cell(d, m, PS)
            if p is None:
                continue
            ml, ml_m = mllib_for(results, d, m)
            pb, mlb = p.best, ml.best if ml else None
            if pb is None or mlb is None:
                why = f"spark-ps {p.status}" if pb is None else f"MLlib {ml.status if ml else 'not run'}"
                lines.append(f"| 2^{d} | {m} | {ml_m} | {why} | | | | | | |")
                continue
            ph, mh = p.target_run, ml.target_run
            lines.append(
                f"| 2^{d} | {m} | {ml_m} | {ratio(pb.fit_s, mlb.fit_s)} | {ratio(pb.fit_cpu_s, mlb.fit_cpu_s)} | "
                f"{ratio(ph and ph.fit_s, mh and mh.fit_s)} | {ratio(pb.driver_jvm_peak_mb, mlb.driver_jvm_peak_mb)} | "
                f"{ratio(pb.driver_python_peak_mb, mlb.driver_python_peak_mb)} | "
                f"{ratio(pb.result_bytes, mlb.result_bytes)} | {pb.auc - mlb.auc:+.4f} |")
    return lines


def _throughput_table(results: Results) -> list[str]:
    lines = ["", "### Training throughput (spark-ps vs single-process numpy FTRL)", "",
             "| d | master | our run | workers | median epoch s | rows/s per core (epochs) | "
             "rows/s per core (fit time) | numpy FTRL rows/s (1 core) | ours ÷ numpy (epochs) | "
             f"ours ÷ numpy (fit time) | ≥ {THROUGHPUT_FRACTION:.0%} |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for d in sorted(results.dims):
        for m in results.meta.masters:
            t = throughput(results, d, m)
            if t is None:
                continue
            verdict = "—" if t.fraction is None else ("PASS" if t.fraction >= THROUGHPUT_FRACTION else "FAIL")
            lines.append(f"| 2^{d} | {m} | {t.run} | {t.workers} | {t.epoch_s:.2f} | {t.per_core_epoch:,.0f} | "
                         f"{t.per_core_fit:,.0f} | {fmt(t.ref, ',.0f')} | {pct(t.fraction)} | "
                         f"{pct(t.fraction_fit)} | {verdict} |")
    return lines


def _memory_table(results: Results) -> list[str]:
    dims = sorted(results.dims)
    lines = ["", "### Driver memory of spark-ps (driver JVM + driver Python peak: worst of our runs at each d, "
             "growth vs 2^18 in brackets, and the range over the runs: the JVM's heap sizing makes it noisy)", "",
             "| master | " + " | ".join(f"2^{d}" for d in dims) + " |", "|---|" + "---:|" * len(dims)]
    for m in results.meta.masters:
        base = driver_rss(results, RSS_BASE_D, m)
        cells = []
        for d in dims:
            v = driver_rss(results, d, m)
            growth = "" if v is None or base is None or d == RSS_BASE_D else f" ({v - base:+,.0f})"
            lo = driver_rss(results, d, m, worst=False)
            spread = f"; runs {lo:,.0f}–{v:,.0f}" if v is not None and lo is not None and lo != v else ""
            cells.append(f"{mb(v)}{growth}{spread}")
        lines.append(f"| `{m}` JVM + Python | " + " | ".join(cells) + " |")
    return lines


def _failures(results: Results) -> list[str]:
    failed = [r for r in results.runs if r.status not in (OK, SKIPPED, NOT_RUN)]
    if not failed:
        return []
    lines = ["", "### Failures", ""]
    for r in failed:
        lines += [f"<details><summary>{r.system} 2^{r.d_log2} on {r.master} [{label(r)}]: {r.status}: "
                  f"{(r.error or '')[:200]}</summary>", "", "```", (r.log_tail or "(no driver log)")[-4000:]]
        if r.executor_log_tail:
            lines += ["", r.executor_log_tail[-4000:]]
        lines += ["```", "", f"Full log: `{r.log or '—'}`", "</details>", ""]
    return lines


def _every_run(results: Results) -> list[str]:
    lines = ["", "<details><summary>Every run</summary>", "",
             "| d | master | system | config | status | warm-up s (untimed) | fit s | fit CPU s | load avg | "
             "iterations / epoch s | AUC | log-loss | driver JVM peak | driver Python peak | "
             "executor-side peak (sum) | task results | fit stages |",
             "|---|---|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results.runs:
        it = "—" if r.iterations is None else r.iterations
        if r.epoch_seconds:
            it = "/".join(f"{s:.1f}" for s in r.epoch_seconds) + " s"
        lines.append(
            f"| 2^{r.d_log2} | {r.master} | {r.system} | {label(r)} | {r.status} | {fmt(r.warmup_s, '.1f')} | "
            f"{fmt(r.fit_s, '.1f')} | {fmt(r.fit_cpu_s, '.1f')} | {fmt(r.load_avg_before, '.1f')} | {it} | "
            f"{fmt(r.auc, '.4f')} | {fmt(r.log_loss, '.4f')} | {mb(r.driver_jvm_peak_mb)} | "
            f"{mb(r.driver_python_peak_mb)} | {mb(r.executor_side_peak_mb)} | {nbytes(r.result_bytes)} | "
            f"{'—' if r.fit_stages is None else r.fit_stages} |")
    return lines + ["", "</details>"]


def markdown(results: Results) -> str:
    """The report section: setup, main table, target checks, ratios, throughput, memory, coverage, failures, runs.

    Parameters
    ----------
    results : Results

    Returns
    -------
    str
        Markdown without the section markers; machine paths made portable.
    """
    lines = (_intro(results) + _main_table(results) + _checks_table(results) + _ratios_table(results)
             + _throughput_table(results) + _memory_table(results)
             + ["", "### Coverage", ""] + [f"* {ln}" for ln in coverage_lines(results)]
             + _failures(results) + _every_run(results))
    if results.notes:
        lines += [""] + [f"* {n}" for n in results.notes]
    lines += ["", f"![time to target and AUC vs d]({PLOT_NAME})"]
    return portable_paths("\n".join(lines))


def checks_text(results: Results) -> str:
    """The target checks as plain lines for the console."""
    return "\n".join(f"{c.verdict:>8}  {row.check} [{row.threshold}] on {m}: {c.text}"
                     for row in target_checks(results) for m, c in row.cells.items())


def write_section(begin: str, end: str, text: str, doc: pathlib.Path = DOC, new_doc: str = "# Benchmarks\n") -> None:
    """Replace (or append) only the ``begin`` ... ``end`` block of ``doc``, atomically.

    Parameters
    ----------
    begin, end : str
        The section's marker lines.
    text : str
        The section's content (without the markers).
    doc : pathlib.Path
        The Markdown file (created with ``new_doc`` if missing).
    new_doc : str
        Text of a new file, before the appended section.
    """
    block = f"{begin}\n{text}\n{end}"
    # Read as late as possible: another bench writes its own section of the same file.
    current = doc.read_text() if doc.exists() else new_doc
    if begin in current and end in current:
        new = current[: current.index(begin)] + block + current[current.index(end) + len(end):]
    else:
        new = current.rstrip() + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    tmp = doc.with_suffix(".md.tmp")
    tmp.write_text(new)
    os.replace(tmp, doc)
