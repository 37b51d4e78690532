"""Numbers derived from the MLlib bench's runs: speed-up, throughput, driver RSS, the issue's target checks.

Target checks (the issue's), each MET / MISSED / NOT RUN, per master:
speed-up to MLlib's best AUC >= 5x at 2^18 and >= 10x at 2^22; our AUC at
2^26 and 2^30 within 0.01 of ours at 2^22; driver RSS growth (driver JVM +
driver Python peak, our worst run at ``d`` minus our worst at 2^18) < 150 MB at
2^26 and 2^30; our training throughput per core >= 50% of the numpy FTRL's at
every ``d`` run.

Training throughput per core (spark-ps): ``rows / S / workers`` with ``S`` the
median logged epoch time of our longest run at that ``d`` (the epoch loop
only: no barrier-stage launch, repartition or weight save); the report also
gives ``rows x epochs / fit time / workers`` (everything the fit clock sees).
The numpy FTRL reference: ``rows / train time`` (one pass, key mapping
included, median of ``--ref-repeats``), one core.
"""

from __future__ import annotations

import os
import re
import statistics

from bench.records import (
    MLLIB,
    NOT_RUN,
    OK,
    PS,
    Cell,
    CheckCell,
    PSParams,
    Results,
    RunRecord,
    Speedup,
    TargetCheck,
    Throughput,
)

# The targets.
SPEEDUP_TARGETS = {18: 5.0, 22: 10.0}
AUC_BASE_D, AUC_CHECK_DIMS, AUC_TOLERANCE = 22, (26, 30), 0.01
RSS_BASE_D, RSS_CHECK_DIMS, RSS_GROWTH_MB = 18, (26, 30), 150.0
THROUGHPUT_FRACTION = 0.50
MET, MISSED, NOT_RUN_VERDICT = "MET", "MISSED", "NOT RUN"


def partitions_of(master: str) -> int:
    """Task slots of a master: ``local[N]`` -> N, ``local-cluster[E,C,M]`` -> E*C.

    Examples
    --------
    >>> partitions_of("local[2]"), partitions_of("local-cluster[2,1,2048]")
    (2, 2)
    """
    m = re.fullmatch(r"local\[(\d+|\*)\]", master)
    if m:
        return (os.cpu_count() or 1) if m.group(1) == "*" else int(m.group(1))
    m = re.fullmatch(r"local-cluster\[(\d+),\s*(\d+),\s*(\d+)\]", master)
    if m:
        return int(m.group(1)) * int(m.group(2))
    return 2


def rollup_status(runs: list[RunRecord]) -> str:
    """A cell's status from its runs' statuses: the first of ok, OOM, timeout, error, not run; else skipped.

    Examples
    --------
    >>> rollup_status([])
    'skipped'
    """
    statuses = {r.status for r in runs}
    for s in (OK, "OOM", "timeout", "error", NOT_RUN):
        if s in statuses:
            return s
    return "skipped"


def cells_expected(results: Results) -> list[tuple[str, int, str]]:
    """Every ``(master, d, system)`` the options asked for, in run order."""
    meta = results.meta
    out = []
    for m in meta.masters:
        for d in meta.dims:
            if not meta.skip_mllib and (m == meta.primary or meta.mllib_all_masters):
                out.append((m, d, MLLIB))
            if not meta.skip_ps:
                out.append((m, d, PS))
    return out


def is_complete(results: Results) -> bool:
    """Whether every expected cell ran and no run was cut by the time budget."""
    return all((c := results.cell(d, m, s)) is not None and c.status != NOT_RUN
               for m, d, s in cells_expected(results)) and not any(r.status == NOT_RUN for r in results.runs)


def mllib_for(results: Results, log2d: int, master: str) -> tuple[Cell | None, str]:
    """MLlib's cell to compare ``master``'s spark-ps with: its own master's if run there, else the primary's."""
    own = results.cell(log2d, master, MLLIB)
    if own is not None:
        return own, master
    return results.cell(log2d, results.meta.primary, MLLIB), results.meta.primary


def speedup(results: Results, log2d: int, master: str) -> Speedup:
    """MLlib's time to target over ours (> 1: ours is faster), with why when it cannot be computed.

    Parameters
    ----------
    results : Results
    log2d : int
    master : str
        Master of our run; MLlib's is :func:`mllib_for`'s.

    Returns
    -------
    Speedup
    """
    ours = results.cell(log2d, master, PS)
    ml, ml_master = mllib_for(results, log2d, master)
    if ml is None or ml.target_run is None:
        return Speedup(ml_master, why=f"MLlib {ml.status if ml else 'not run'} at 2^{log2d}")
    if ours is None or ours.status == NOT_RUN:
        return Speedup(ml_master, why="spark-ps not run")
    if ours.target_run is None:
        return Speedup(ml_master, why="spark-ps did not reach the target" if ours.best else f"spark-ps {ours.status}")
    mllib_s, ours_s = ml.target_run.fit_s, ours.target_run.fit_s
    return Speedup(ml_master, ratio=mllib_s / ours_s, mllib_s=mllib_s, ours_s=ours_s)


def throughput(results: Results, log2d: int, master: str) -> Throughput | None:
    """Our training rows/s per core at ``d`` on ``master`` (logged epochs and fit time) and the numpy FTRL's.

    Returns
    -------
    Throughput or None
        ``None`` if no successful run of ours logged epoch times there.
    """
    runs = [r for r in results.runs_of(log2d, master, PS) if r.epoch_seconds]
    if not runs:
        return None
    run = max(runs, key=lambda r: (len(r.epoch_seconds), r.fit_s))
    rows = results.meta.rows
    workers = run.workers or partitions_of(master)
    epoch_s = statistics.median(run.epoch_seconds)
    epochs = run.params.numEpochs if isinstance(run.params, PSParams) else len(run.epoch_seconds)
    per_core_epoch = rows / epoch_s / workers
    per_core_fit = rows * epochs / run.fit_s / workers
    per_d = results.dims.get(log2d)
    ref = per_d.reference if per_d else None
    if ref is None or not ref.rows_per_s:
        return Throughput(run.label(), workers, epoch_s, per_core_epoch, per_core_fit)
    return Throughput(run.label(), workers, epoch_s, per_core_epoch, per_core_fit, ref=ref.rows_per_s,
                      fraction=per_core_epoch / ref.rows_per_s, fraction_fit=per_core_fit / ref.rows_per_s)


def driver_rss(results: Results, log2d: int, master: str, worst: bool = True) -> float | None:
    """Worst (or best) driver JVM + driver Python peak in MB over our successful runs at ``d`` on ``master``."""
    vals = [r.driver_jvm_peak_mb + r.driver_python_peak_mb for r in results.runs_of(log2d, master, PS)
            if r.driver_jvm_peak_mb and r.driver_python_peak_mb]
    return (max(vals) if worst else min(vals)) if vals else None


def _ran(results: Results, log2d: int, master: str) -> bool:
    c = results.cell(log2d, master, PS)
    return c is not None and c.status != NOT_RUN


def _speedup_check(results: Results, log2d: int, want: float) -> TargetCheck:
    cells = {}
    for m in results.meta.masters:
        if log2d not in results.meta.dims or not _ran(results, log2d, m):
            cells[m] = CheckCell(NOT_RUN_VERDICT)
            continue
        s = speedup(results, log2d, m)
        if s.ratio is None:
            verdict = NOT_RUN_VERDICT if "MLlib" in s.why and "not run" in s.why else MISSED
            cells[m] = CheckCell(verdict, s.why)
        else:
            vs = "" if s.mllib_master == m else f" vs MLlib on {s.mllib_master}"
            cells[m] = CheckCell(MET if s.ratio >= want else MISSED,
                                 f"{s.ratio:.2f}× ({s.mllib_s:.1f} s / {s.ours_s:.1f} s{vs})")
    return TargetCheck(f"speed-up to MLlib's best AUC at 2^{log2d} (MLlib time ÷ ours)", f"≥ {want:g}×", cells)


def _auc_check(results: Results, log2d: int) -> TargetCheck:
    cells = {}
    for m in results.meta.masters:
        here, base = results.cell(log2d, m, PS), results.cell(AUC_BASE_D, m, PS)
        if not (here and here.best and base and base.best):
            failed = here is not None and here.status not in (NOT_RUN, OK)
            cells[m] = (CheckCell(MISSED, f"spark-ps {here.status} at 2^{log2d}") if failed
                        else CheckCell(NOT_RUN_VERDICT))
            continue
        delta = here.best.auc - base.best.auc
        cells[m] = CheckCell(MET if abs(delta) <= AUC_TOLERANCE else MISSED,
                             f"{here.best.auc:.4f} vs {base.best.auc:.4f} (Δ {delta:+.4f})")
    return TargetCheck(f"our AUC at 2^{log2d} within {AUC_TOLERANCE:g} of ours at 2^{AUC_BASE_D}",
                       f"≤ {AUC_TOLERANCE:g} either way", cells)


def _rss_check(results: Results, log2d: int) -> TargetCheck:
    cells = {}
    for m in results.meta.masters:
        here, base = driver_rss(results, log2d, m), driver_rss(results, RSS_BASE_D, m)
        if here is None or base is None:
            cells[m] = CheckCell(NOT_RUN_VERDICT)
            continue
        growth = here - base
        cells[m] = CheckCell(MET if growth < RSS_GROWTH_MB else MISSED,
                             f"{growth:+,.0f} MB ({here:,.0f} vs {base:,.0f} MB)")
    return TargetCheck(f"driver RSS growth at 2^{log2d} (JVM + Python peak, vs ours at 2^{RSS_BASE_D})",
                       f"< {RSS_GROWTH_MB:g} MB", cells)


def _throughput_check(results: Results) -> TargetCheck:
    cells = {}
    for m in results.meta.masters:
        vals = [(d, t) for d in sorted(set(results.meta.dims))
                if (t := throughput(results, d, m)) and t.fraction is not None]
        if not vals:
            cells[m] = CheckCell(NOT_RUN_VERDICT)
            continue
        d_min, t_min = min(vals, key=lambda v: v[1].fraction)
        cells[m] = CheckCell(MET if t_min.fraction >= THROUGHPUT_FRACTION else MISSED,
                             f"min {t_min.fraction:.1%} at 2^{d_min} ({t_min.per_core_epoch:,.0f} vs "
                             f"{t_min.ref:,.0f} rows/s)")
    return TargetCheck("training throughput per core vs single-process numpy FTRL (logged epoch time; every d run)",
                       f"≥ {THROUGHPUT_FRACTION:.0%}", cells)


def target_checks(results: Results) -> list[TargetCheck]:
    """The issue's targets, each with a value and MET / MISSED / NOT RUN per master.

    Parameters
    ----------
    results : Results

    Returns
    -------
    list of TargetCheck
        Speed-up at 2^18 and 2^22, AUC at 2^26 and 2^30, driver RSS growth at
        2^26 and 2^30, throughput over every ``d`` run; in that order.
    """
    return ([_speedup_check(results, d, want) for d, want in SPEEDUP_TARGETS.items()]
            + [_auc_check(results, d) for d in AUC_CHECK_DIMS]
            + [_rss_check(results, d) for d in RSS_CHECK_DIMS]
            + [_throughput_check(results)])
