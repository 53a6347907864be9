"""Rate–distortion limits of a tensor code, and the structure of a weight tensor (math; one cache).

**The Gaussian limit.** An i.i.d. Gaussian source of variance σ² coded at R bits per sample cannot
reach a mean squared error below D(R) = σ²·2^(−2R) (Shannon). Among all i.i.d. sources of variance σ²
the Gaussian is the hardest to code, so D(R) is an *upper* bound on the lowest distortion any i.i.d.
source of that variance allows: a code may go below it when the weights are not Gaussian, and, much
more so, when they are not i.i.d. (correlated neighbours, low rank, smooth). So a code *below* the
Gaussian limit exploited structure (check :func:`weight_structure`: autocorrelation near 1, a large
low-frequency share, a small effective rank), or met non-Gaussian weights (an i.i.d. Laplacian
source sits up to 0.63 dB below), or its size is miscounted. Trained weights measured here are close
to i.i.d. (neighbour autocorrelations 0.00–0.14), so for them the limit is close to what is
achievable. High rates make the continuous bound meaningless (fp32 weights are themselves 32-bit
values, a raw copy has zero error, and fp16 rounding alone is about −70 dB against a bound of −96 dB
at 16 bits): at :data:`GAP_BITS` bits per weight or more the gap is None and :func:`below_limit`
never flags a code.

**Model level.** Tensors of different variances are treated as independent Gaussian sources; the
bound at the model's total bits is reverse water-filling over them (D_t = min(θ, σ_t²), the rates
R_t = ½·log2(σ_t²/D_t) summing to the total), i.e. the best allocation of the bits among tensors.

**ECSQ.** What a practical coder reaches: a uniform scalar quantizer (mid-tread, reconstruction at
the cell centres, on the mean-removed values) followed by an ideal entropy coder. Its step is chosen
so that the empirical entropy of the indices equals the rate; its MSE is then measured on the
tensor. At high rate on a Gaussian it sits 10·log10(πe/6) ≈ 1.53 dB above D(R)
(:data:`ECSQ_HIGH_RATE_GAP_DB`). At the model level one step is shared by all tensors (a common step
is the optimal allocation at high rate), with the tensors' entropies summing to the total bits. The
empirical entropy saturates at log2 N, so ECSQ values are reported only for N ≥ 4096 and
N ≥ 64·2^R (:func:`ecsq_applies`), else None. The step search is a secant search on the log-step,
each entropy one histogram pass (:func:`index_entropy`): a few passes per tensor at any rate.

Distances are in dB: gap = 10·log10(mse / reference), negative below the reference.

**Structure** (of the 2-D view out × in·k·k, see :func:`weight_structure`): neighbour
autocorrelation along rows and along columns, the low-frequency energy share (2-D orthonormal
DCT-II of the mean-removed matrix: the energy of the lowest ⌈n/8⌉ frequencies per axis over the
total; ≈ 1/64 for white noise, ≈ 1 for a smooth matrix) and the effective rank at 90 % energy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from .belowlimit import GAP_BITS, SOURCE_BITS, below_limit, gap_applies

__all__ = [
    "ECSQ_HIGH_RATE_GAP_DB",
    "ECSQ_MIN_NUMEL",
    "ECSQ_SAMPLES_PER_CELL",
    "GAP_BITS",
    "STRUCTURE_CACHE",
    "LOW_FREQ_FRACTION",
    "SOURCE_BITS",
    "below_limit",
    "gap_applies",
    "ecsq_applies",
    "structure_of",
    "tensor_digest",
    "gaussian_bound",
    "waterfill_bound",
    "gap_db",
    "ecsq",
    "ecsq_shared",
    "empirical_entropy",
    "index_entropy",
    "TensorLimits",
    "tensor_limits",
    "model_limits",
    "weight_structure",
    "neighbour_autocorr",
    "low_frequency_energy",
    "effective_rank",
    "as_matrix",
]

#: dB by which an entropy-coded uniform quantizer sits above D(R) at high rate: 10·log10(πe/6)
ECSQ_HIGH_RATE_GAP_DB = 10 * math.log10(math.pi * math.e / 6)
#: the low-frequency block: the lowest ceil(n · LOW_FREQ_FRACTION) DCT frequencies of each axis
LOW_FREQ_FRACTION = 1 / 8
#: an ECSQ reference needs a tensor of at least this many weights ... (see :func:`ecsq_applies`)
ECSQ_MIN_NUMEL = 4096
#: ... and at least this many weights per quantizer cell: N ≥ 64 · 2^R
ECSQ_SAMPLES_PER_CELL = 64
_BISECTIONS = 40  # at most this many entropy passes in the step search (40 halvings: 2^-40 of the bracket)
_RATE_TOLERANCE = 5e-4  # bits per sample: the step search stops this close to the rate (0.003 dB of MSE)


def gaussian_bound(variance: float, rate: float) -> float:
    """D(R) = σ²·2^(−2R): the distortion limit of an i.i.d. Gaussian source of variance σ² at R bits."""
    return float(variance) * 2.0 ** (-2.0 * max(float(rate), 0.0))


def gap_db(mse: float, reference: float) -> float:
    """10·log10(mse / reference): how many dB a code's error is above (> 0) or below (< 0) a reference."""
    if reference <= 0:
        return math.nan if mse <= 0 else math.inf
    if mse <= 0:
        return -math.inf
    return 10.0 * math.log10(mse / reference)


def waterfill_bound(variances: Sequence[float], counts: Sequence[int], total_bits: float) -> float:
    """Mean distortion of independent Gaussian groups (``counts[t]`` samples of variance ``variances[t]``)
    coded with ``total_bits`` in all, at the best allocation (reverse water-filling)."""
    v = torch.tensor([float(x) for x in variances], dtype=torch.float64)
    n = torch.tensor([float(c) for c in counts], dtype=torch.float64)
    total = float(n.sum())
    if total == 0:
        return math.nan
    positive = v > 0
    if total_bits <= 0 or not bool(positive.any()):
        return float((n * v).sum() / total)

    def bits_at(theta: float) -> float:
        d = torch.clamp(v[positive], max=theta)
        return float((n[positive] * 0.5 * torch.log2(v[positive] / d)).sum())

    lo, hi = math.log(float(v[positive].min())) - 2 * math.log(2) * total_bits / total - 1, math.log(float(v.max()))
    for _ in range(200):  # the bracket spans the whole rate range; 200 halvings reach float precision
        mid = 0.5 * (lo + hi)
        if bits_at(math.exp(mid)) > total_bits:
            lo = mid
        else:
            hi = mid
    theta = math.exp(hi)
    return float((n * torch.clamp(v, max=theta)).sum() / total)


def empirical_entropy(indices: torch.Tensor) -> float:
    """Entropy in bits per symbol of the empirical distribution of integer ``indices``."""
    flat = indices.reshape(-1)
    if flat.numel() == 0:
        return 0.0
    lo, hi = int(flat.min()), int(flat.max())
    if hi - lo < 4 * flat.numel() + 1024:  # a dense histogram is much faster than sorting
        counts = torch.bincount(flat - lo).double()
        counts = counts[counts > 0]
    else:
        counts = torch.unique(flat, return_counts=True)[1].double()
    p = counts / flat.numel()
    return float(-(p * torch.log2(p)).sum())


def _quantize(x: torch.Tensor, step: float) -> torch.Tensor:
    return torch.round(x / step).to(torch.int64)


def index_entropy(x: torch.Tensor, step: float, bounds: tuple[float, float] | None = None) -> float:
    """:func:`empirical_entropy` of the indices round(x / step), from one histogram pass over ``x``.

    The indices of min(x) and max(x) bound the others (rounding is monotone), so the counts come
    from one bin per index counted from the min: three passes (scale and shift, convert, count)
    instead of five (divide, round, convert, min and max, count). ``bounds``: (min x, max x) when
    the caller has them. Only a value exactly half-way between two levels may land in the other
    bin than ``round`` (half to even) puts it in: no measurable difference on real weights.
    """
    flat = x.reshape(-1)
    n = flat.numel()
    if n == 0:
        return 0.0
    xmin, xmax = bounds if bounds is not None else (float(flat.min()), float(flat.max()))
    lo, hi = round(xmin / step), round(xmax / step)
    if hi - lo >= 4 * n + 1024:  # far more levels than values: counting distinct indices is cheaper
        return empirical_entropy(_quantize(flat, step))
    # bin i holds round(x / step) = lo + i: truncating x / step + 0.5 − lo (never below 0, since
    # lo = round(min x / step)) to int32 and counting is twice as fast as torch.histc on a CPU
    bins = flat.mul(1.0 / step).add_(0.5 - lo).to(torch.int32 if hi - lo < 2**31 - 1 else torch.int64)
    counts = torch.bincount(bins).double()
    del bins
    p = counts[counts > 0] / n
    return float(-(p * torch.log2(p)).sum())


def _ecsq_step(
    xs: Sequence[torch.Tensor],
    weights: Sequence[float],
    rate: float,
    guess: float | None = None,
    stats: Sequence[tuple[float, float, float]] | None = None,
) -> tuple[float, float | None]:
    """The step whose weighted mean index entropy is ``rate`` (the finest step tried if none reaches it),
    and the entropy reached there when the search measured it (else None).

    The entropy falls with the log-step, by 1/ln 2 bits per unit at high rate (H ≈ h(X) − log2 step),
    so a secant search started at the Gaussian high-rate step lands within :data:`_RATE_TOLERANCE`
    bits in a handful of passes over the weights; a step outside the bracket (from 2^−R·σ/64 to
    4·max|x|) is replaced by bisection, so it never does worse than :data:`_BISECTIONS` halvings.
    ``guess``: a better first step than the Gaussian one, where the caller knows it. ``stats``: each
    tensor's (min, max, mean square) where the caller has them (:func:`_range_and_square` otherwise).
    """
    total = sum(weights)
    # each tensor's range and mean square, once: the bracket, the first guess and every pass use them
    stats = [_range_and_square(x) for x in xs] if stats is None else stats
    bounds = [(a, b) for a, b, _ in stats]
    squares = [q for _, _, q in stats]
    peak = max(max(-a, b) for a, b in bounds) or 1.0
    lo = math.log((math.sqrt(max(squares)) or peak) * 2.0 ** (-rate) / 64)
    hi = math.log(4 * peak + 1e-30)

    def excess(u: float) -> float:  # mean index entropy at step e^u, minus the rate
        step = math.exp(u)
        return sum(w * index_entropy(x, step, b) for x, w, b in zip(xs, weights, bounds, strict=True)) / total - rate

    std = math.sqrt(sum(w * q for q, w in zip(squares, weights, strict=True)) / total)
    first = guess if guess is not None and guess > 0 else std * math.sqrt(2 * math.pi * math.e) * 2.0 ** (-rate)
    u = min(max(math.log(first + 1e-300), lo), hi)
    prev: tuple[float, float] | None = None
    seen: dict[float, float] = {}
    for _ in range(_BISECTIONS):
        f = seen[u] = excess(u)
        if abs(f) < _RATE_TOLERANCE:
            return math.exp(u), f + rate
        if f > 0:
            lo = u
        else:
            hi = u
        slope = (f - prev[1]) / (u - prev[0]) if prev is not None and u != prev[0] else -1 / math.log(2)
        prev = (u, f)
        step = u - f / slope if slope < 0 else math.nan
        u = step if lo < step < hi else 0.5 * (lo + hi)
        if hi - lo < 1e-12:
            break
    return math.exp(hi), seen[hi] + rate if hi in seen else None


@dataclasses.dataclass(frozen=True)
class ECSQ:
    step: float
    rate: float  # the empirical index entropy reached, bits per sample
    mse: float


def _range_and_square(x: torch.Tensor) -> tuple[float, float, float]:
    """(min, max, mean square) of a flat tensor, in two passes (an empty one: zeros)."""
    if x.numel() == 0:
        return 0.0, 0.0, 0.0
    lo, hi = torch.aminmax(x)
    return float(lo), float(hi), float(torch.dot(x, x)) / x.numel()


def _centred(x: torch.Tensor) -> torch.Tensor:
    """``x`` flat, mean removed, in fp32: the weights' own precision, and half the memory traffic of
    fp64 on every pass of the step search (a bin edge moves by 1e-7 of a step at most)."""
    flat = x.detach().reshape(-1).float()
    return flat - float(flat.mean(dtype=torch.float64)) if flat.numel() else flat


def _squared_error_sum(c: torch.Tensor, step: float) -> float:
    """Σ (round(c / step) · step − c)², with one temporary."""
    e = torch.div(c, step).round_().mul_(step).sub_(c)
    return float(torch.dot(e, e))


def ecsq(x: torch.Tensor, rate: float, centred: torch.Tensor | None = None) -> ECSQ:
    """The entropy-coded uniform scalar quantizer of ``x`` (mean removed) at ``rate`` bits per sample;
    ``centred``: ``x`` already flat and mean-removed (:func:`_centred`), where the caller has it."""
    centred = _centred(x) if centred is None else centred
    stats = _range_and_square(centred)
    if rate <= 0 or centred.numel() == 0 or max(-stats[0], stats[1]) == 0:
        return ECSQ(math.inf, 0.0, stats[2] if centred.numel() else math.nan)
    step, reached = _ecsq_step([centred], [1.0], rate, stats=[stats])
    reached = index_entropy(centred, step, stats[:2]) if reached is None else reached
    return ECSQ(step, reached, _squared_error_sum(centred, step) / centred.numel())


def ecsq_shared(xs: Sequence[torch.Tensor], total_bits: float, guess: float | None = None) -> float:
    """Mean MSE over all entries of ECSQ with one step shared by the tensors ``xs`` (each mean-removed,
    each entropy-coded on its own), their index entropies summing to ``total_bits``; ``guess``: a
    first step for the search (see :func:`model_limits`)."""
    centred = [_centred(x) for x in xs]
    counts = [float(c.numel()) for c in centred]
    n = sum(counts)
    if n == 0:
        return math.nan
    stats = [_range_and_square(c) for c in centred]
    if total_bits <= 0 or all(max(-a, b) == 0 for a, b, _ in stats):
        return sum(q * c for (_, _, q), c in zip(stats, counts, strict=True)) / n
    step, _ = _ecsq_step(centred, counts, total_bits / n, guess, stats)
    return sum(_squared_error_sum(c, step) for c in centred) / n


def ecsq_applies(numel: int, rate: float) -> bool:
    """Whether an ECSQ reference for ``numel`` samples at ``rate`` bits each means something.

    The empirical index entropy of N samples cannot exceed log2 N and is biased low well before
    that, so an ECSQ "reached" on a small tensor is an artifact of the sample, not of the quantizer.
    The rule: N ≥ :data:`ECSQ_MIN_NUMEL` and N ≥ :data:`ECSQ_SAMPLES_PER_CELL` · 2^R (on average at
    least 64 samples per quantizer cell). It also rules out rates near fp32, where no entropy is
    measurable on any real tensor.
    """
    return numel >= ECSQ_MIN_NUMEL and rate <= math.log2(numel / ECSQ_SAMPLES_PER_CELL)


@dataclasses.dataclass(frozen=True)
class TensorLimits:
    """One coded tensor against the limits (the keys of :meth:`as_dict` are a report contract).

    ``gap_db`` is None at :data:`~b2s_bench.fitting.belowlimit.GAP_BITS` bits per weight or more;
    ``ecsq_mse`` and ``gap_ecsq_db`` are None where :func:`ecsq_applies` says no.
    """

    numel: int
    bits: int
    rate: float  # counted bits / numel
    variance: float  # population variance of the original
    mse: float  # mean squared error of the decoded tensor
    gaussian_bound_mse: float
    ecsq_mse: float | None
    gap_db: float | None  # 10·log10(mse / gaussian_bound_mse)
    gap_ecsq_db: float | None  # 10·log10(mse / ecsq_mse)
    energy: float  # mean of W²
    ecsq_step: float | None = None  # the ECSQ's step (not a report field: it seeds the model's search)

    def as_dict(self) -> dict[str, float | int | None]:
        keys = ("numel", "bits", "rate", "variance", "mse", "gaussian_bound_mse", "ecsq_mse", "gap_db", "gap_ecsq_db")
        return {k: getattr(self, k) for k in keys}


def tensor_limits(original: torch.Tensor, decoded: torch.Tensor, bits: int) -> TensorLimits:
    """A code of ``bits`` counted bits that decodes ``original`` to ``decoded``, against the limits."""
    # fp32 unless a side is fp64: reductions accumulate in wider precision either way, and a pass over
    # fp32 moves half the bytes (this runs in every cell, on every coded tensor)
    dtype = torch.promote_types(torch.promote_types(original.dtype, decoded.dtype), torch.float32)
    w = original.detach().reshape(-1).to(dtype)
    n = int(w.numel())
    rate = bits / n if n else math.nan
    mean_value = float(w.mean(dtype=torch.float64)) if n else math.nan
    centred = w - mean_value if n else w
    variance = float(torch.dot(centred, centred)) / n if n else math.nan  # torch.var_mean: 8x slower
    d = decoded.detach().reshape(-1).to(dtype)
    # an exact copy (a raw or identity code) needs no pass over the difference
    if n and not torch.equal(d, w):
        diff = d - w
        mse = float(torch.dot(diff, diff)) / n
        del diff
    else:
        mse = 0.0 if n else math.nan
    bound = gaussian_bound(variance, rate)
    q = ecsq(w, rate, centred) if ecsq_applies(n, rate) else None
    e = q.mse if q is not None else None
    return TensorLimits(
        n,
        int(bits),
        rate,
        variance,
        mse,
        bound,
        e,
        gap_db(mse, bound) if gap_applies(rate) else None,
        gap_db(mse, e) if e is not None else None,
        variance + mean_value**2 if n else math.nan,  # the mean of W², without another pass
        q.step if q is not None else None,
    )


def model_limits(originals: Sequence[torch.Tensor], limits: Sequence[TensorLimits]) -> dict[str, float | bool | None]:
    """The coded tensors together: rate, mse and energy per weight, Σ n_t σ_t² / Σ ‖W_t‖², the
    water-filling Gaussian bound and shared-step ECSQ at the total bits, the gap and :func:`below_limit`.

    The gap is None at :data:`~b2s_bench.fitting.belowlimit.GAP_BITS` bits per weight or more; the shared
    ECSQ is None unless every tensor meets :func:`ecsq_applies` at the model's rate (one small
    tensor's saturated entropy would bias the shared step).
    """
    n = sum(t.numel for t in limits)
    if n == 0:
        return {
            "rate": math.nan,
            "mse": math.nan,
            "energy": math.nan,
            "variance_ratio": math.nan,
            "bound_mse": math.nan,
            "ecsq_mse": None,
            "gap_db": None,
            "below_limit": False,
        }
    bits = sum(t.bits for t in limits)
    rate = bits / n
    mse = sum(t.mse * t.numel for t in limits) / n
    sq = sum(t.energy * t.numel for t in limits)
    bound = waterfill_bound([t.variance for t in limits], [t.numel for t in limits], bits)
    gap = gap_db(mse, bound) if gap_applies(rate) else None
    shared = None
    if all(ecsq_applies(t.numel, rate) for t in limits):
        # at high rate H_t(s) ≈ R_t + log2(s_t / s) for tensor t's own ECSQ step s_t at its rate R_t,
        # so the shared step whose entropies sum to the bits is near the size-weighted geometric mean
        # of the s_t: the search starts there and needs a pass or two, not a handful
        steps = [(t.ecsq_step, t.numel) for t in limits if t.ecsq_step is not None and math.isfinite(t.ecsq_step)]
        guess = math.exp(sum(math.log(s) * c for s, c in steps) / sum(c for _, c in steps)) if steps else None
        shared = ecsq_shared(originals, bits, guess)
    return {
        "rate": rate,
        "mse": mse,
        "energy": sq / n,
        "variance_ratio": sum(t.variance * t.numel for t in limits) / sq if sq > 0 else math.nan,
        "bound_mse": bound,
        "ecsq_mse": shared,
        "gap_db": gap,
        "below_limit": below_limit(gap, rate),
    }


# -- structure ----------------------------------------------------------------------------------------
def as_matrix(w: torch.Tensor) -> torch.Tensor:
    """The 2-D view (out, in·k·k) of a weight, fp64 (a vector is one row)."""
    w = w.detach().double()
    return w.reshape(1, -1) if w.dim() <= 1 else w.reshape(w.shape[0], -1)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.numel() < 2:
        return math.nan
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float(a.pow(2).sum()) * float(b.pow(2).sum()))
    return float((a * b).sum()) / den if den > 0 else math.nan


def neighbour_autocorr(m: torch.Tensor) -> tuple[float, float]:
    """(along rows, along columns): the Pearson correlation of horizontally adjacent entries
    (M[i, j], M[i, j+1]) and of vertically adjacent ones (M[i, j], M[i+1, j]); NaN for a 1-wide axis."""
    rows = _pearson(m[:, :-1].reshape(-1), m[:, 1:].reshape(-1)) if m.shape[1] > 1 else math.nan
    cols = _pearson(m[:-1].reshape(-1), m[1:].reshape(-1)) if m.shape[0] > 1 else math.nan
    return rows, cols


def _dct_rows(k: int, n: int) -> torch.Tensor:
    """The first ``k`` rows of the orthonormal DCT-II matrix of size n."""
    f = torch.arange(k, dtype=torch.float64)[:, None]
    x = torch.arange(n, dtype=torch.float64)[None, :]
    basis = torch.cos(math.pi * (x + 0.5) * f / n) * math.sqrt(2.0 / n)
    basis[0] /= math.sqrt(2.0)
    return basis


def low_frequency_energy(m: torch.Tensor, fraction: float = LOW_FREQ_FRACTION) -> float:
    """Share of the mean-removed matrix's energy in its lowest ⌈n·fraction⌉ DCT-II frequencies per axis."""
    centred = m - m.mean()
    total = float(centred.pow(2).sum())
    if total == 0:
        return math.nan
    kr, kc = (max(1, math.ceil(n * fraction)) for n in centred.shape)
    low = _dct_rows(kr, centred.shape[0]) @ centred @ _dct_rows(kc, centred.shape[1]).T  # only the kept block
    return float(low.pow(2).sum()) / total


def effective_rank(m: torch.Tensor, energy: float = 0.9) -> int:
    """The fewest singular values whose squares hold at least ``energy`` of ‖M‖² (M not centred)."""
    # the squared singular values are the eigenvalues of the smaller Gram matrix (M·Mᵀ or Mᵀ·M): a
    # symmetric eigenproblem of min(out, in)² entries, 5–15x faster than an SVD of M on ResNet-50's
    # largest tensors and equal to 1e-14 of the largest; squaring only blurs the tiny values, which
    # never decide where 90 % of the energy is reached
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    s2 = torch.linalg.eigvalsh(gram).clamp(min=0).flip(0)  # descending, as singular values come
    total = float(s2.sum())
    if total == 0:
        return 0
    return int((torch.cumsum(s2, 0) < energy * total * (1 - 1e-12)).sum()) + 1


#: a channel is an outlier when its L2 norm exceeds this many times the median channel norm of its tensor
OUTLIER_FACTOR = 6.0


def channel_outliers(m: torch.Tensor, factor: float = OUTLIER_FACTOR) -> dict[str, float]:
    """Outlier channels of a 2-D weight (out × in): large language models' weights have a few input
    channels (columns) and output channels (rows) with far larger norms than the rest, which a per-row
    or per-tensor quantization scale pays for everywhere (the case for AWQ, SmoothQuant, GPTQ's groups).

    Returns ``outlier_ratio_cols`` / ``outlier_ratio_rows``: the largest column / row L2 norm over the
    median one (about 1.3 to 2 for an i.i.d. Gaussian matrix of a few hundred channels); and
    ``outlier_share``: the share of all channels, rows and columns together, whose norm exceeds
    ``factor`` × the median of its kind (0 for i.i.d. weights). A ratio is NaN when the median norm is 0."""
    out: dict[str, float] = {}
    counts = 0
    for name, norms in (("cols", m.norm(dim=0)), ("rows", m.norm(dim=1))):
        median = float(norms.median())
        out[f"outlier_ratio_{name}"] = float(norms.max()) / median if median > 0 else math.nan
        counts += int((norms > factor * median).sum()) if median > 0 else 0
    out["outlier_share"] = counts / (m.shape[0] + m.shape[1])
    return out


def weight_structure(w: torch.Tensor) -> dict[str, float | int]:
    """What a code could exploit beyond an i.i.d. model, and outlier channels that a fixed grid pays
    for (a report contract: keep the keys)."""
    m = as_matrix(w)
    rows, cols = neighbour_autocorr(m)
    return {
        "autocorr_rows": rows,
        "autocorr_cols": cols,
        "low_freq_energy": low_frequency_energy(m),
        "effective_rank_90": effective_rank(m, 0.9),
        **channel_outliers(m),
    }


#: weight_structure by tensor digest: it describes an ORIGINAL tensor, the same in every cell of a
#: model, and costs more than the rest of a cell's limits; bounded so that a long run over many
#: models does not grow without end (an entry is a few numbers).
_STRUCTURE: dict[str, dict[str, float | int]] = {}
_STRUCTURE_MAX = 100_000


def tensor_digest(w: torch.Tensor) -> str:
    """A digest of a tensor's dtype, shape and bytes: equal digests, equal tensors (BLAKE2b, 128 bits)."""
    t = w.detach().cpu().contiguous()
    h = hashlib.blake2b(f"{t.dtype}{tuple(t.shape)}".encode(), digest_size=16)
    h.update(t.reshape(-1).view(torch.uint8).numpy().data if t.numel() else b"")
    return h.hexdigest()


#: the on-disk cache's folder name: bump it when :func:`weight_structure` changes what it computes
STRUCTURE_CACHE = "weight-structure-v2"


def structure_of(
    w: torch.Tensor, digest: str | None = None, folder: str | os.PathLike[str] | None = None
) -> dict[str, float | int]:
    """:func:`weight_structure` of ``w``, computed once per distinct tensor in this process and, with
    ``folder`` (a cache folder), once across processes: a worker that runs one cell (Slurm) reads
    what an earlier one computed. The file is ``folder/<digest>.json``; a file that cannot be read
    is recomputed and rewritten (the cache holds nothing that cannot be rebuilt)."""
    key = digest or tensor_digest(w)
    if key not in _STRUCTURE:
        path = Path(folder) / f"{key}.json" if folder is not None else None
        value = _read_structure(path) if path is not None else None
        if value is None:
            value = weight_structure(w)
            if path is not None:
                _write_structure(path, value)
        if len(_STRUCTURE) >= _STRUCTURE_MAX:
            _STRUCTURE.pop(next(iter(_STRUCTURE)))  # the oldest: dicts keep insertion order
        _STRUCTURE[key] = value
    return dict(_STRUCTURE[key])


def _read_structure(path: Path) -> dict[str, float | int] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    keys = {
        "autocorr_rows",
        "autocorr_cols",
        "low_freq_energy",
        "effective_rank_90",
        "outlier_ratio_cols",
        "outlier_ratio_rows",
        "outlier_share",
    }
    if not isinstance(value, dict) or set(value) != keys or not all(isinstance(v, (int, float)) for v in value.values()):
        return None
    return value


def _write_structure(path: Path, value: dict[str, float | int]) -> None:
    from ..store.records import write_atomic  # atomic: parallel workers may write the same tensor's file

    try:
        write_atomic(path, json.dumps(value))
    except OSError:
        pass  # a read-only or full cache only costs the recomputation next time
