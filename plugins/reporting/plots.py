"""Pareto plots: the primary accuracy metric against stored bits, one panel per model, all families.

Registered by :mod:`b2s_bench_plugins.reporters`.
"""

from __future__ import annotations

import math
from pathlib import Path

from b2s_bench import BITS_PER_MB, ReportContext, pareto_front, primary_metric

MARKERS = "osD^v<>pP*Xh"


def write_pareto(ctx: ReportContext) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    metric = primary_metric(ctx.metrics, ctx.settings.get("primary"))
    if metric is None or ctx.frame.empty:
        return []
    col = f"metric:{metric.name}"
    if col not in ctx.frame:
        return []
    ok = ctx.frame[(ctx.frame["status"] == "ok")].dropna(subset=[col, "total_bits"])
    models = sorted(ok["model"].unique())
    if not models:
        return []
    cols = min(len(models), 2)
    rows = math.ceil(len(models) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.5 * rows), squeeze=False)
    families = sorted(ok["family"].unique())
    for ax, model in zip(axes.flat, models):
        group = ok[ok["model"] == model]
        for i, fam in enumerate(families):
            sub = group[group["family"] == fam]
            if len(sub):
                ax.scatter(sub["total_bits"] / BITS_PER_MB, sub[col], marker=MARKERS[i % len(MARKERS)], label=fam, s=40)
        front = group[pareto_front(group, col, metric.higher_is_better)].sort_values("total_bits")
        ax.step(front["total_bits"] / BITS_PER_MB, front[col], where="post", color="k", lw=0.8, alpha=0.6,
                label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel("stored size [MB] (log)")
        ax.set_ylabel(f"{metric.name} [{metric.unit}]" if metric.unit else metric.name)
        ax.set_title(model)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(models):]:
        ax.axis("off")
    fig.tight_layout()
    path = ctx.out_dir / "pareto.png"
    tmp = ctx.out_dir / ".pareto.png.tmp"
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    tmp.replace(path)
    return [path]
