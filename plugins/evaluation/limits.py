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

Both leave in ``ev.details`` (a contract the report reads; keep the keys):

* ``rate_distortion``: ``{"tensors": {key: {numel, bits, rate, variance, mse, gaussian_bound_mse,
  ecsq_mse, gap_db, gap_ecsq_db}}, "model": {rate, mse, energy, variance_ratio, bound_mse, ecsq_mse,
  gap_db, below_limit}}`` (rate = counted bits / numel, energy = mean W², variance_ratio =
  Σ n_t σ_t² / Σ ‖W_t‖²);
* ``weight_structure``: ``{key: {autocorr_rows, autocorr_cols, low_freq_energy, effective_rank_90}}``
  of the original tensors.

Neither is a default metric: suites that study the limits list them.
"""

from __future__ import annotations

from typing import Any

import b2s_bench as b2s
from b2s_bench import Evaluation, MetricSpec, NotApplicable
from b2s_bench import ratedistortion as rd

__all__ = ["limits", "METRICS"]


def limits(ev: Evaluation) -> dict[str, Any]:
    """Fill ``ev.details["rate_distortion"]`` and ``["weight_structure"]`` once per cell; return the former."""
    if "rate_distortion" in ev.details:
        return ev.details["rate_distortion"]
    pairs = ev.weight_pairs
    if not pairs:
        raise NotApplicable("no tensor was replaced with its shape kept (e.g. distillation or structured pruning)")
    per = {key: rd.tensor_limits(w, wh, ev.compressed.codes[key].bits().total) for key, w, wh in pairs}
    model = rd.model_limits([w for _, w, _ in pairs], list(per.values()))
    ev.details["rate_distortion"] = {"tensors": {k: v.as_dict() for k, v in per.items()}, "model": model}
    ev.details["weight_structure"] = {key: rd.weight_structure(w) for key, w, _ in pairs}
    return ev.details["rate_distortion"]


def rd_gap(ev: Evaluation) -> float:
    return float(limits(ev)["model"]["gap_db"])


def ecsq_gap(ev: Evaluation) -> float:
    model = limits(ev)["model"]
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
