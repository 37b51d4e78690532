"""The MLlib bench's plot: time to MLlib's best AUC, and the best AUC, against ``d``."""

from __future__ import annotations

import pathlib

from bench.records import MLLIB, PS, REF, Results

_FAILED = ("OOM", "timeout", "error", "unsupported")


def plot(results: Results, path: pathlib.Path) -> None:
    """Time to target and AUC vs d: MLlib, spark-ps per master, the numpy reference; failures marked.

    Parameters
    ----------
    results : Results
    path : pathlib.Path
        PNG file to write (its directory is created).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta = results.meta
    fig, (ax_t, ax_a) = plt.subplots(1, 2, figsize=(12, 4.4))
    series = []
    ps_colors = ["tab:blue", "tab:green", "tab:purple", "tab:cyan"]
    for i, m in enumerate(meta.masters):
        if meta.mllib_all_masters or m == meta.primary:
            series.append((MLLIB, m, "tab:red", "o", "-" if i == 0 else "--"))
        series.append((PS, m, ps_colors[i % len(ps_colors)], "s", "-" if i == 0 else "--"))
    dims = sorted(results.dims)
    times = [c.target_run.fit_s for d in dims for m in meta.masters for s in (MLLIB, PS)
             if (c := results.cell(d, m, s)) and c.target_run]
    top = max(times + [1.0]) * 2
    for system, m, color, marker, ls in series:
        label = f"{system} {m}"
        pts_t, pts_a = [], []
        for d in dims:
            c = results.cell(d, m, system)
            if c is None:
                continue
            if c.target_run:
                pts_t.append((d, c.target_run.fit_s))
            if c.best:
                pts_a.append((d, c.best.auc))
            failed = c.status in _FAILED
            if failed or (c.best and not c.target_run):
                ax_t.plot(d, top, color=color, marker="x" if failed else "v", markersize=9, linestyle="none")
                ax_t.annotate(f"{system}: {c.status if failed else 'not reached'}", (d, top),
                              textcoords="offset points", xytext=(4, -12 - 10 * (system == PS)),
                              color=color, fontsize=7)
        if pts_t:
            ax_t.plot(*zip(*pts_t), color=color, marker=marker, linestyle=ls, label=label)
        if pts_a:
            ax_a.plot(*zip(*pts_a), color=color, marker=marker, linestyle=ls, label=label)
    ref = [(d, results.dims[d].reference) for d in dims if results.dims[d].reference]
    if ref:
        ax_a.plot([d for d, _ in ref], [r.auc for _, r in ref], color="tab:gray", marker="^", label=REF)
        ax_t.plot([d for d, _ in ref], [r.fit_s for _, r in ref], color="tab:gray", marker="^",
                  label=f"{REF} (1 pass, any AUC)")
    tg = [(d, results.dims[d].target_auc) for d in dims if results.dims[d].target_auc is not None]
    if tg:
        ax_a.plot(*zip(*tg), color="black", linestyle=":", label="target (MLlib best)")
    ax_t.set_yscale("log")
    ax_t.set_ylabel("seconds to reach target AUC")
    ax_t.set_title("time to MLlib's best AUC (x = failed, v = not reached)")
    ax_a.set_ylabel("held-out AUC (best run)")
    ax_a.set_title("accuracy")
    for ax in (ax_t, ax_a):
        ax.set_xlabel("log2(d)")
        ax.set_xticks(dims or [18])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{meta.rows:,} train rows, {meta.cores} cores, {', '.join(meta.masters)}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
