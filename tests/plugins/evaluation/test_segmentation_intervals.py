"""Intervals of segmentation metrics resample images (or clusters of images), never pixels: the report's
interval, rebuilt from a record, against hand computations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from b2s_bench_plugins.evaluation import segmentation_scores as seg
from fake_records import make_record, write_run

from b2s_bench.reporting.tables import load_frame
from b2s_bench.store import samples


def _frame_ci(tmp_path: Path, per_image: np.ndarray, clusters: np.ndarray | None = None) -> tuple[float, float, float]:
    rec = make_record("quantize(bits=4)", values={"miou": per_image})
    if clusters is not None:
        rec["dataset"]["clusters"] = samples.encode_clusters(clusters)
    frame, _, _ = load_frame(write_run(tmp_path / "run", [rec], metrics=("miou", "bits")))
    row = frame.iloc[0]
    return float(row["metric:miou"]), float(row["ci_lo:miou"]), float(row["ci_hi:miou"])


def _stored(x: np.ndarray) -> np.ndarray:
    """The per-image scores as a record stores them (float16 where that is exact enough)."""
    return samples.decode(samples.encode(x)).astype(np.float64)


def test_two_images_exact_percentiles(tmp_path: Path) -> None:
    # image 1: mIoU (3/5 + 11/13) / 2 (test_segmentation_scores); image 2: perfect. Resampling 2 images,
    # the mean is image 1's with probability 1/4, the midpoint 1/2, image 2's 1/4: the 2.5 % and 97.5 %
    # quantiles are exactly the two images' scores
    truth = torch.tensor([[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.uint8)
    pred = torch.tensor([[0, 0, 0, 0], [0, 1, 1, 1], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.uint8)
    per_image = seg.image_scores(seg.confusion(torch.stack([pred, truth]), torch.stack([truth, truth]), 2))["iou"].numpy()
    a = (3 / 5 + 11 / 13) / 2
    assert per_image.tolist() == pytest.approx([a, 1.0])
    value, lo, hi = _frame_ci(tmp_path, per_image)
    assert value == pytest.approx(100 * (a + 1) / 2)
    assert (lo, hi) == pytest.approx((100 * a, 100.0), rel=1e-3)  # float16 storage: within 5e-4


def _miou_by_hand(pred: np.ndarray, truth: np.ndarray, classes: int) -> float:
    """One image's mIoU, pixel by pixel in plain Python (an implementation independent of the plugin's)."""
    ious = []
    for c in range(classes):
        tp = fp = fn = 0
        for p, t in zip(pred.flatten().tolist(), truth.flatten().tolist(), strict=True):
            if t == 255:
                continue
            tp += p == c and t == c
            fp += p == c and t != c
            fn += p != c and t == c
        if tp + fp + fn:
            ious.append(tp / (tp + fp + fn))
    return sum(ious) / len(ious) if ious else 1.0


def test_interval_is_a_bootstrap_over_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n, size, classes = 300, 12, 3
    truth = rng.integers(0, classes, (n, size, size)).astype(np.uint8)
    truth[:, :3, :3] = 255  # an ignored corner
    flip = rng.random((n, size, size)) < rng.uniform(0.05, 0.6, (n, 1, 1))  # each image its own error rate
    pred = np.where(flip, rng.integers(0, classes, (n, size, size)), truth).astype(np.uint8)
    pred[:, :3, :3] = 0
    per_image = seg.image_scores(seg.confusion(torch.from_numpy(pred), torch.from_numpy(truth), classes))["iou"].numpy()
    by_hand = np.array([_miou_by_hand(pred[i], truth[i], classes) for i in range(n)])
    np.testing.assert_allclose(per_image, by_hand, rtol=1e-12)
    # the report's interval: a percentile bootstrap over the 300 images (one value each, not 43,200
    # pixels), 2000 resamples from numpy's default_rng(0), as by hand here
    x = _stored(by_hand)
    assert len(np.unique(x)) > 256  # many distinct scores: the report draws image indices (no multinomial shortcut)
    means = x[np.random.default_rng(0).integers(0, n, size=(2000, n))].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    value, ci_lo, ci_hi = _frame_ci(tmp_path, per_image)
    assert value == pytest.approx(100 * by_hand.mean())
    assert (ci_lo, ci_hi) == pytest.approx((100 * lo, 100 * hi), rel=1e-9)
    assert ci_hi - ci_lo > 1.0  # images differ a lot: resampling pixels would give a far narrower interval


def test_interval_resamples_clusters_of_images(tmp_path: Path) -> None:
    # two cars of three views each (Carvana's views of one car are not independent): resampling the 2
    # cars, the interval runs exactly from one car's mean score to the other's
    per_image = np.array([0.5, 0.625, 0.75, 0.875, 0.9375, 1.0])
    clusters = np.array([0, 0, 0, 1, 1, 1])
    _, lo, hi = _frame_ci(tmp_path, per_image, clusters)
    assert (lo, hi) == pytest.approx((100 * 0.625, 100 * 0.9375))
