"""Rate–distortion limits and weight structure, as metrics (the math is in ``b2s_bench.ratedistortion``).

``weight_rd_gap_db``: 10·log10(mse / bound) over the compressed tensors together, where mse is the
mean squared error per weight and bound the Gaussian limit at the code's counted bits (reverse
water-filling over the tensors' variances). Lower is better: 0 dB is the best an i.i.d. Gaussian
source of those variances allows, > 0 is the distance to it, and < 0 ("below the limit") means the
method either exploited structure that an i.i.d. model ignores (see ``details["weight_structure"]``:
neighbour autocorrelation, low-frequency share, effective rank) or its size is miscounted.

``weight_ecsq_gap_db``: 10·log10(mse / ecsq), the same against what an entropy-coded uniform scalar
quantizer (one step for all tensors) reaches on these very weights at the same total bits; lower is
better, < 0 beats it.

Both read ``Evaluation.limits()`` (core), which leaves ``details["rate_distortion"]`` and
``details["weight_structure"]`` in the record; the runner calls it for every cell that replaces
weights unless ``runtime.weight_limits`` is false, so these metrics only put the model's gaps in the
leaderboard's columns.
"""

from __future__ import annotations

from typing import Any

import b2s_bench as b2s
from b2s_bench import Evaluation, MetricSpec
from b2s_bench import ratedistortion as rd

__all__ = ["METRICS"]


def rd_gap(ev: Evaluation) -> float:
    return float(ev.limits()["model"]["gap_db"])


def ecsq_gap(ev: Evaluation) -> float:
    model = ev.limits()["model"]
    return rd.gap_db(model["mse"], model["ecsq_mse"])


METRICS = [
    MetricSpec("weight_rd_gap_db", "dB", False, rd_gap, frozenset({"weights"}),
               "10·log10(weight MSE / Gaussian D(R) at the counted bits); < 0: structure used or size miscounted",
               kind="weights"),
    MetricSpec("weight_ecsq_gap_db", "dB", False, ecsq_gap, frozenset({"weights"}),
               "10·log10(weight MSE / entropy-coded uniform quantizer's MSE at the same bits)", kind="weights"),
]


@b2s.hookimpl
def b2s_register_metrics(register: Any) -> None:
    for spec in METRICS:
        register(spec)
