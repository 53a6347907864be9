"""The Pareto plot's labels: laid out so that none overprints another."""

from __future__ import annotations

from typing import Any

import pandas as pd
from b2s_bench_plugins.reporting.plots import _declutter, _pareto_panel, _pyplot

from b2s_bench.reporting import MetricMeta


def _front(n: int) -> pd.DataFrame:
    """``n`` methods all on the front, close together in size and accuracy (their labels collide)."""
    rows = [
        {
            "method": f"quantize(bits={b}, granularity=group, group_size={g})",
            "family": "quantization",
            "total_bits": 1_000_000 * (1 + 0.02 * i),
            "metric:top1": 70.0 + 0.002 * i,
            "ci_lo:top1": 69.99 + 0.002 * i,
            "ci_hi:top1": 70.01 + 0.002 * i,
            "dense": False,
        }
        for i, (b, g) in enumerate((b, g) for b in (3, 4, 5) for g in (32, 64, 128))
    ][:n]
    # a far point on the front too, so the axis spans much more than the crowded ones
    rows.append(
        {
            "method": "prune(sparsity=0.9)",
            "family": "pruning",
            "total_bits": 200_000,
            "metric:top1": 40.0,
            "ci_lo:top1": 39.0,
            "ci_hi:top1": 41.0,
            "dense": False,
        }
    )
    return pd.DataFrame(rows)


def _boxes(texts: list[Any]) -> list[Any]:
    """The labels' text boxes (their leader lines aside)."""
    from matplotlib.text import Text

    renderer = texts[0].figure.canvas.get_renderer()
    return [Text.get_window_extent(t, renderer) for t in texts]


def _overlaps(boxes: list[Any]) -> int:
    return sum(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def test_pareto_labels_do_not_overprint() -> None:
    metric = MetricMeta("top1", "%", True, "quality")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.8, 4.6))
    texts = _pareto_panel(ax, _front(9), metric, "metric:top1")
    fig.tight_layout()
    assert len(texts) == 10
    assert _overlaps(_boxes(texts)) > 0  # as drawn, the labels of neighbouring points collide
    drawn = [t.get_position() for t in texts]
    _declutter(ax, texts)
    assert _overlaps(_boxes(texts)) == 0
    # a label that moved points back at its point with a leader line; the others have none
    moved = [t.get_position() != p for t, p in zip(texts, drawn, strict=True)]
    assert any(moved) and [t.arrow_patch.get_visible() for t in texts] == moved
    frame = ax.get_window_extent(fig.canvas.get_renderer())
    assert all(frame.y0 <= b.y0 and b.y1 <= frame.y1 for b in _boxes(texts))  # none pushed out of the plot
    # the labels stay unique: the settings that differ (group_size) are kept when a label is cut
    labels = [t.get_text() for t in texts]
    assert len(set(labels)) == 10 and all(len(label) <= 28 for label in labels)
    plt.close(fig)


def test_a_budget_limited_row_is_hollow_off_the_front_and_does_not_stretch_the_axis() -> None:
    """A row with caveats (a fit stopped on its step budget, marked † in the tables) is not the method's
    result: the lm suite's Big2Small at perplexity 42.7 flattened every other method into one line near 4.
    It is drawn hollow, never labelled as the front, and the axis fits the other rows (it shows as an
    arrow at the edge with its value)."""
    metric = MetricMeta("perplexity", "", False, "quality")
    rows = [
        {"method": "dense", "family": "dense", "total_bits": 8e7, "metric:perplexity": 4.04, "dense": True, "caveats": []},
        {
            "method": "quantize(bits=4)",
            "family": "quantization",
            "total_bits": 1.2e7,
            "metric:perplexity": 4.07,
            "dense": False,
            "caveats": [],
        },
        {
            "method": "quantize(bits=3)",
            "family": "quantization",
            "total_bits": 0.9e7,
            "metric:perplexity": 4.20,
            "dense": False,
            "caveats": [],
        },
        {
            "method": "big2small(steps=1000)",
            "family": "inr",
            "total_bits": 0.6e7,
            "metric:perplexity": 42.7,
            "dense": False,
            "caveats": ["2 of 2 INR fit(s) stopped on the step budget"],
        },
    ]
    table = pd.DataFrame(rows)
    for name in ("ci_lo:perplexity", "ci_hi:perplexity"):
        table[name] = table["metric:perplexity"] + (-0.1 if "lo" in name else 0.1)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.8, 4.6))
    texts = _pareto_panel(ax, table, metric, "metric:perplexity")
    labels = [t.get_text() for t in texts]
    assert not any("big2small" in label for label in labels) and any("bits=3" in label for label in labels)
    lo, hi = ax.get_ylim()
    assert 3.8 < lo < 4.04 and 4.2 < hi < 5.0  # fitted to the rows without caveats
    arrows = [t for t in ax.texts if t.get_text().endswith("†")]
    assert [a.get_text() for a in arrows] == ["42.7 †"]
    hollow = [line for line in ax.lines if line.get_markerfacecolor() == "none"]
    assert len(hollow) == 1 and list(hollow[0].get_ydata()) == [42.7]
    plt.close(fig)
