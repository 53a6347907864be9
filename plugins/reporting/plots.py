"""Plots: the primary metric against stored size (Pareto), and the weight error against bits per
weight with the Gaussian rate-distortion limit. One panel per model; methods pooled over seeds.

Every family has one colour and marker in every panel of every run (:func:`family_style`): a fixed
table for the known families, and for others (compositions such as "pruning+quantization", third
party families) a colour and marker picked by a stable hash of the name (SHA-256, not Python's
salted ``hash``). Sizes are on a log axis labelled in plain numbers (0.5, 1, 2, 5 MB).

Registered by :mod:`b2s_bench_plugins.reporting.reporters`.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
from pathlib import Path
from typing import Any

import pandas as pd

from b2s_bench import write_atomic
from b2s_bench.reporting import BITS_PER_MB, ReportContext, pareto_front, short_labels

__all__ = ["FAMILY_STYLES", "family_style", "pareto_png", "weights_png", "figures", "write_pareto"]

#: family -> (colour, marker); the colours are matplotlib's "tab10" by name, so they never shift
FAMILY_STYLES: dict[str, tuple[str, str]] = {
    "dense": ("#000000", "*"),
    "identity": ("#7f7f7f", "x"),
    "quantization": ("#2ca02c", "o"),
    "pruning": ("#ff7f0e", "^"),
    "lowrank": ("#1f77b4", "s"),
    "ergodic": ("#9467bd", "D"),
    "inr": ("#d62728", "P"),
    "distillation": ("#8c564b", "X"),
    "other": ("#bcbd22", "h"),
}
#: for families not in the table: colours and markers none of the fixed families use
_EXTRA_COLOURS = (
    "#17becf",
    "#e377c2",
    "#aec7e8",
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#c49c94",
    "#dbdb8d",
    "#9edae5",
    "#393b79",
    "#637939",
    "#8c6d31",
    "#843c39",
    "#7b4173",
)
_EXTRA_MARKERS = ("v", "<", ">", "p", "H", "d", "8", "1", "2", "3", "4")


def family_style(family: str) -> tuple[str, str]:
    """(colour, marker) of a family: fixed for known ones, from a stable hash for others."""
    if family in FAMILY_STYLES:
        return FAMILY_STYLES[family]
    h = int(hashlib.sha256(family.encode()).hexdigest(), 16)
    return _EXTRA_COLOURS[h % len(_EXTRA_COLOURS)], _EXTRA_MARKERS[(h // len(_EXTRA_COLOURS)) % len(_EXTRA_MARKERS)]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def _plain_log_axis(ax: Any) -> None:
    """A log x axis with ticks at 1, 2, 5 × 10^k labelled as plain numbers (0.5, 1, 2, 5), not 10^0;
    over less than a factor of 5, at every 1..9 × 10^k so at least two ticks show."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lo, hi = ax.get_xlim()
    subs = (1.0, 2.0, 5.0) if hi / max(lo, 1e-300) >= 5 else tuple(float(i) for i in range(1, 10))
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _declutter(ax: Any, texts: list[Any], pad: float = 1.0) -> None:
    """Move labels that would overprint one another: each, in order, takes the nearest slot of its own
    height, below or above where it was drawn (0, 1 down, 1 up, 2 down, ...; never out of the plot's
    box) that is free of the labels already placed; a label that had to move gets a thin leader line
    to its point, so it is never read as another point's. Run after the layout (tight_layout), since
    the boxes depend on it; the offsets are in points."""
    if not texts:
        return
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    to_points = 72.0 / fig.dpi
    frame = ax.get_window_extent(renderer)
    placed: list[Any] = []
    for text in texts:
        x, y = text.get_position()  # the offset from the labelled point, in points
        step = (_text_extent(text, renderer).height + pad) * to_points
        slots = [0] + [k * sign for k in range(1, 2 * len(placed) + 2) for sign in (-1, 1)]
        chosen = 0
        for k in slots:  # each placed label blocks at most two slots
            text.set_position((x, y + k * step))
            box = _text_extent(text, renderer)
            inside = frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(p) for p in placed):
                chosen = k
                break
        else:
            text.set_position((x, y))  # nowhere free: back where it was drawn
        placed.append(_text_extent(text, renderer))
        if chosen and text.arrow_patch is not None:
            text.arrow_patch.set_visible(True)  # a leader line to its point


#: the leader line of a label that had to move (drawn only then)
LEADER = {"arrowstyle": "-", "color": "0.55", "lw": 0.5, "shrinkA": 0, "shrinkB": 3}


def _text_extent(text: Any, renderer: Any) -> Any:
    """The box of an annotation's text alone (not its leader line)."""
    from matplotlib.text import Text

    return Text.get_window_extent(text, renderer)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, format="png")
    _pyplot().close(fig)
    return buf.getvalue()


def _grid(n: int, width: float = 6.8, height: float = 4.6) -> tuple[Any, list[Any]]:
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig, axes = _pyplot().subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.axis("off")
    return fig, flat[:n]


def _legend(fig: Any, families: list[str], extra: list[tuple[str, dict[str, Any]]]) -> float:
    """A legend below the panels, in as many columns as the figure's width holds (long family names such as
    "pruning+quantization+entropy" would run off a one-panel figure in one row); returns the share of the
    figure's height it takes, for ``tight_layout(rect=...)``."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="", marker=family_style(f)[1], color=family_style(f)[0], label=f) for f in families]
    handles += [Line2D([], [], label=label, **style) for label, style in extra]
    width_pt = fig.get_figwidth() * 72
    widest = max((len(str(h.get_label())) for h in handles), default=1) * 8 * 0.6 + 30  # an 8-pt character: ~0.6 em
    ncol = max(1, min(len(handles), 6, int(width_pt // widest)))
    rows = math.ceil(len(handles) / ncol)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    return min(0.4, (rows * 14 + 8) / (fig.get_figheight() * 72))


def pareto_png(ctx: ReportContext) -> bytes | None:
    """The primary metric against stored MB per model, with error bars, the front (labelled) and
    the dense model as a reference line; None when there is nothing to plot."""
    metric = ctx.primary()
    table = ctx.methods()
    col = None if metric is None else f"metric:{metric.name}"
    if metric is None or col is None or table.empty or col not in table:
        return None
    ok = table.dropna(subset=[col, "total_bits"])
    models = sorted(ok["model"].unique())
    if not models:
        return None
    fig, axes = _grid(len(models))
    labels = []
    for ax, model in zip(axes, models):
        group = ok[ok["model"] == model]
        labels.append(_pareto_panel(ax, group, metric, col))
        ax.set_title(model, fontsize=10)
    bottom = _legend(
        fig,
        sorted(ok["family"].fillna("other").unique()),
        [("Pareto front", {"color": "k", "lw": 0.8}), ("dense model", {"color": "0.4", "ls": "--", "lw": 1})],
    )
    fig.tight_layout(rect=(0, bottom, 1, 1))
    for ax, texts in zip(axes, labels):
        _declutter(ax, texts)
    return _png(fig)


def _flagged(group: pd.DataFrame) -> pd.Series:
    """Rows whose records carry caveats (a fit stopped on its budget, a failed fit: marked † in the
    tables): not the method's result, so drawn hollow, never on the front and never stretching the axis."""
    if "caveats" not in group:
        return pd.Series(False, index=group.index)
    return group["caveats"].apply(lambda c: bool(c) if isinstance(c, list | tuple) else False)


def _pareto_panel(ax: Any, group: pd.DataFrame, metric: Any, col: str) -> list[Any]:
    """Draw one model's panel; returns the front's labels (for :func:`_declutter` after the layout)."""
    mb = group["total_bits"] / BITS_PER_MB
    flagged = _flagged(group)
    for fam, sub in group.groupby(group["family"].fillna("other"), sort=True):
        colour, marker = family_style(str(fam))
        for hollow, part in sub.groupby(flagged.loc[sub.index], sort=True):
            lo, hi = part[f"ci_lo:{metric.name}"], part[f"ci_hi:{metric.name}"]
            err = [(part[col] - lo).clip(lower=0).fillna(0), (hi - part[col]).clip(lower=0).fillna(0)]
            ax.errorbar(
                part["total_bits"] / BITS_PER_MB,
                part[col],
                yerr=err,
                ls="",
                marker=marker,
                color=colour,
                mfc="none" if hollow else colour,
                ms=6,
                elinewidth=0.8,
                capsize=2,
            )
    _clip_flagged(ax, group, flagged, metric, col)
    group = group[~flagged]
    front = group[pareto_front(group, col, metric.higher_is_better)].sort_values("total_bits")
    ax.step(front["total_bits"] / BITS_PER_MB, front[col], where="post", color="k", lw=0.8, alpha=0.6)
    names = short_labels([str(m) for m in front["method"]], 28)
    texts = [
        ax.annotate(
            names[str(r["method"])],
            (r["total_bits"] / BITS_PER_MB, r[col]),
            fontsize=7,
            xytext=(4, -10 if metric.higher_is_better else 4),
            textcoords="offset points",
            arrowprops=LEADER,
        )
        for _, r in front.iterrows()
    ]
    for text in texts:
        text.arrow_patch.set_visible(False)  # shown by _declutter for a label it moves
    dense = group[group["dense"]]
    if len(dense):
        ax.axhline(float(dense[col].iloc[0]), color="0.4", ls="--", lw=1)
    ax.set_xscale("log")
    lo, hi = float(mb.min()), float(mb.max())
    ax.set_xlim(lo / 1.25, hi * 1.6)  # room for the labels of the front on the right
    _plain_log_axis(ax)
    ax.set_xlabel("stored size [MB] (log scale)")
    ax.set_ylabel(f"{metric.name} [{metric.unit}]" if metric.unit else metric.name)
    ax.grid(True, which="major", alpha=0.3)
    return texts


def _clip_flagged(ax: Any, group: pd.DataFrame, flagged: pd.Series, metric: Any, col: str) -> None:
    """Fit the y-axis to the rows without caveats (and their intervals); a flagged row beyond it is shown
    at the edge by an arrow and its value, so one budget-limited fit cannot flatten every other point."""
    if not flagged.any() or flagged.all():
        return
    kept = group[~flagged]
    lows = pd.concat([kept[col], kept.get(f"ci_lo:{metric.name}", kept[col])]).dropna()
    highs = pd.concat([kept[col], kept.get(f"ci_hi:{metric.name}", kept[col])]).dropna()
    if lows.empty:
        return
    lo, hi = float(lows.min()), float(highs.max())
    pad = 0.08 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 0.05
    lo, hi = lo - pad, hi + pad
    outside = group[flagged & ((group[col] > hi) | (group[col] < lo))]
    if outside.empty:
        return
    ax.set_ylim(lo, hi)
    for _, r in outside.iterrows():
        above = float(r[col]) > hi
        ax.annotate(
            f"{float(r[col]):.3g} †",
            xy=(float(r["total_bits"]) / BITS_PER_MB, hi if above else lo),
            xytext=(0, -14 if above else 14),
            textcoords="offset points",
            ha="center",
            va="center",
            fontsize=7,
            color=family_style(str(r["family"] or "other"))[0],
            arrowprops={"arrowstyle": "->", "color": "0.4", "lw": 0.8},
        )


def _weight_points(table: pd.DataFrame) -> pd.DataFrame:
    """(bits per weight of the compressed layers, relative weight MSE in dB) per method: from
    the records' rate-distortion data, else from weight_rel_error and the layers' ratio."""
    rows = []
    for _, r in table[~table["dense"]].iterrows():
        if isinstance(r.get("rd_rate"), float) and math.isfinite(r["rd_rate"]) and r["rd_rel_mse"] > 0:
            rows.append((r, r["rd_rate"], 10 * math.log10(r["rd_rel_mse"])))
            continue
        err, ratio = r.get("metric:weight_rel_error", math.nan), r.get("ratio_layers", math.nan)
        if isinstance(err, float) and err > 0 and isinstance(ratio, float) and ratio > 0:
            rows.append((r, 32.0 / ratio, 20 * math.log10(err)))
    return pd.DataFrame(
        [
            {
                "model": r["model"],
                "method": r["method"],
                "family": r["family"] or "other",
                "rate": x,
                "db": y,
                "below": bool(r.get("rd_below")),
                "variance_ratio": r.get("rd_variance_ratio", math.nan),
            }
            for r, x, y in rows
        ]
    )


def weights_png(ctx: ReportContext) -> bytes | None:
    """Relative weight MSE [dB] against bits per weight, per model, with the Gaussian limit
    D(R) = σ²/E · 2^(−2R) where the records carry it; results below it ringed in red."""
    table = ctx.methods()
    points = _weight_points(table) if not table.empty else pd.DataFrame()
    if points.empty:
        return None
    models = sorted(points["model"].unique())
    fig, axes = _grid(len(models))
    for ax, model in zip(axes, models):
        group = points[points["model"] == model]
        for fam, sub in group.groupby("family", sort=True):
            colour, marker = family_style(str(fam))
            ax.scatter(sub["rate"], sub["db"], marker=marker, color=colour, s=36, zorder=3)
        bad = group[group["below"]]
        ax.scatter(bad["rate"], bad["db"], s=150, facecolors="none", edgecolors="#d00000", lw=1.6, zorder=4)
        names = short_labels([str(m) for m in bad["method"]], 22)
        for _, r in bad.iterrows():
            ax.annotate(
                "⚠ " + names[str(r["method"])],
                (r["rate"], r["db"]),
                color="#d00000",
                fontsize=7,
                xytext=(5, 5),
                textcoords="offset points",
            )
        ratios = group["variance_ratio"].dropna()
        if len(ratios):
            rmax = max(float(group["rate"].max()) * 1.1, 1.0)
            xs = [rmax * i / 100 for i in range(101)]
            vr = float(ratios.median())
            ax.plot(xs, [10 * math.log10(vr) - 20 * math.log10(2) * x for x in xs], color="#d00000", lw=1)
        ax.set_xlabel("stored bits per weight, compressed layers")
        ax.set_ylabel("relative weight MSE [dB]")
        ax.set_title(model, fontsize=10)
        ax.grid(True, alpha=0.3)
    extra = [("Gaussian limit σ²/E·2^(−2R)", {"color": "#d00000", "lw": 1})] if points["variance_ratio"].notna().any() else []
    bottom = _legend(fig, sorted(points["family"].unique()), extra)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    return _png(fig)


def _curve_points(curve: Any) -> tuple[list[float], list[float]] | None:
    """(steps, PSNR dB) of a record's ``details.curve``, or None when it has fewer than two points."""
    if not isinstance(curve, dict):
        return None
    steps, psnr = curve.get("step") or [], curve.get("psnr") or []
    pts = [
        (float(s), float(p))
        for s, p in zip(steps, psnr, strict=False)
        if isinstance(s, (int, float)) and isinstance(p, (int, float)) and math.isfinite(p)
    ]
    return ([s for s, _ in pts], [p for _, p in pts]) if len(pts) >= 2 else None


def convergence_png(ctx: ReportContext) -> bytes | None:
    """Weight PSNR against fitting step for every cell whose record keeps a convergence curve
    (``details.curve`` with ``step`` and ``psnr`` lists, e.g. Big2Small's), one panel per model."""
    frame = ctx.frame
    if frame.empty or "curve" not in frame:
        return None
    rows = [
        (r["model"], str(r["method"]), pts)
        for _, r in frame.iterrows()
        if r.get("status") == "ok" and (pts := _curve_points(r["curve"])) is not None
    ]
    if not rows:
        return None
    models = sorted({m for m, _, _ in rows})
    fig, axes = _grid(len(models))
    methods = sorted({m for _, m, _ in rows})
    names = short_labels(methods, 40)
    palette = _pyplot().get_cmap("tab20")
    color = {m: palette(i % 20) for i, m in enumerate(methods)}  # a setting's fit seeds share one colour
    for ax, model in zip(axes, models):
        for _, method, (steps, psnr) in sorted(r for r in rows if r[0] == model):
            ax.plot(steps, psnr, lw=1.0, color=color[method])
        ax.set_xlabel("fitting step")
        ax.set_ylabel("weight PSNR [dB] (mean over fitted layers)")
        ax.set_title(model, fontsize=10)
        ax.grid(True, alpha=0.3)
    # one legend entry per setting, below the panels (a legend inside a panel hid the curves of a 36-cell run)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=color[m], lw=1.5, label=names[m]) for m in methods]
    widest = max(len(str(h.get_label())) for h in handles) * 7 * 0.6 + 30
    ncol = max(1, min(len(handles), int(fig.get_figwidth() * 72 // widest)))
    rows_needed = math.ceil(len(handles) / ncol)
    legend_inches = rows_needed * 12 / 72 + 0.2
    fig.set_figheight(fig.get_figheight() + legend_inches)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, legend_inches / fig.get_figheight(), 1, 1))
    return _png(fig)


def _write_bytes(path: Path, data: bytes) -> None:
    """Atomic, like every other report file, with the umask's mode; a full disk names the folder."""
    write_atomic(path, data)


def figures(ctx: ReportContext) -> dict[str, bytes]:
    """The report's PNGs by file name (drawn once per report: the HTML page embeds the same ones)."""
    out = {}
    for name, make in (("pareto.png", pareto_png), ("weights.png", weights_png), ("convergence.png", convergence_png)):
        data = ctx.cached(name, functools.partial(make, ctx))
        if data is not None:
            out[name] = data
    return out


def write_pareto(ctx: ReportContext) -> list[Path]:
    """pareto.png; weights.png where weight errors are recorded; convergence.png where fits keep curves."""
    written = []
    for name, data in figures(ctx).items():
        path = ctx.out_dir / name
        _write_bytes(path, data)
        written.append(path)
    return written
