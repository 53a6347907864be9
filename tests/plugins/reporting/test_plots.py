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
