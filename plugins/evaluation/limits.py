"""Rate–distortion limits and weight structure, as metrics (the math is in ``b2s_bench.fitting.limits``).

``weight_rd_gap_db``: 10·log10(mse / bound) over the coded tensors together, where mse is the
mean squared error per coded weight and bound the Gaussian limit at the code's counted bits per
coded weight (the coded tensors' bits over their scalars: not the whole-model ``bits_per_weight``),
by reverse water-filling over the tensors' variances. Lower is better: 0 dB is the best an i.i.d.
Gaussian source of those variances allows, > 0 is the distance to it, and < 0 ("below the limit")
has three possible causes: the method exploited structure that an i.i.d. model ignores (see
``details["weight_structure"]``: neighbour autocorrelation, low-frequency share, effective rank),
the weights are not Gaussian (a Laplacian source may sit up to 0.63 dB below), or the size is
miscounted. Not applicable (an empty value) at 16 bits per coded weight or more, where the bound
is far below any real storage and a gap has no meaning (``b2s_bench.fitting.belowlimit.GAP_BITS``).

``weight_ecsq_gap_db``: 10·log10(mse / ecsq), the same against what an entropy-coded uniform scalar
quantizer (one step for all coded tensors) reaches on these very weights at the same total bits;
lower is better, < 0 beats it. Only where every coded tensor is large enough for the reference to
mean something: N ≥ 4096 and N ≥ 64·2^R (``ratedistortion.ecsq_applies``); else not applicable.

Both read ``Evaluation.limits()`` (core), which leaves ``details["rate_distortion"]`` and
``details["weight_structure"]`` in the record; the runner calls it for every cell that replaces
weights unless ``runtime.weight_limits`` is false, so these metrics only put the model's gaps in the
leaderboard's columns.
"""

from __future__ import annotations

from collections.abc import Callable

import b2s_bench as b2s
from b2s_bench import MetricSpec
from b2s_bench.metrics import Evaluation, NotApplicable

__all__ = ["METRICS"]


def rd_gap(ev: Evaluation) -> float:
    from b2s_bench.fitting import limits as rd  # torch: registering the metrics imports none

    model = ev.limits()["model"]
    if model["gap_db"] is None:
        raise NotApplicable(
            f"{model['rate']:.1f} bits per coded weight: no meaningful Gaussian limit at {rd.GAP_BITS} bits or more"
        )
    return float(model["gap_db"])


def ecsq_gap(ev: Evaluation) -> float:
    from b2s_bench.fitting import limits as rd

    model = ev.limits()["model"]
    if model["ecsq_mse"] is None:
        raise NotApplicable(
            f"a coded tensor is too small for an ECSQ reference at {model['rate']:.1f} bits per "
            f"weight (needs N ≥ {rd.ECSQ_MIN_NUMEL} and N ≥ {rd.ECSQ_SAMPLES_PER_CELL}·2^R)"
        )
    return rd.gap_db(model["mse"], model["ecsq_mse"])


METRICS = [
    MetricSpec(
        "weight_rd_gap_db",
        "dB",
        False,
        rd_gap,
        frozenset({"weights"}),
        "10·log10(MSE / Gaussian D(R)) over the coded tensors, R = their bits per coded weight; n/a at "
        "R ≥ 16; < 0: structure used, non-Gaussian weights or a miscounted size",
        kind="weights",
        version="2",
    ),
    MetricSpec(
        "weight_ecsq_gap_db",
        "dB",
        False,
        ecsq_gap,
        frozenset({"weights"}),
        "10·log10(MSE / entropy-coded uniform quantizer's MSE) at the same bits per coded weight; only "
        "where every coded tensor has N ≥ 4096 and N ≥ 64·2^R",
        kind="weights",
        version="2",
    ),
]


@b2s.hookimpl
def b2s_register_metrics(register: Callable[[b2s.MetricSpec], None]) -> None:
    for spec in METRICS:
        register(spec)
