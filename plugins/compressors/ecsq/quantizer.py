"""Entropy-constrained scalar quantization of one tensor: the step found by bisection, optional RDO rounding.

The quantizer is uniform and mid-tread: index q = round(w/Δ), reconstruction Δ·q (zero is a level).
The rate of a tensor is what an entropy coder of its indices would need per weight:

    R(Δ) = H(q) + M(q) / N

with H the empirical (order-0) entropy of the indices in bits and M the estimated bits of the
probability model the coder stores with the stream (:func:`model_bits`). R falls as Δ grows (about
one bit per doubling at high rate), so Δ is bisected (on log Δ, over fp32 values of Δ, which is what
the code stores) for the finest step whose rate is at most the asked one.

**The probability model estimate** (:func:`model_bits`), as the ``entropy`` stage stores a coded
stream: its header (:data:`MODEL_HEADER_BITS`: the stream's six header fields, coder, count, width,
layout, field bits and used symbols, 256 bits, and the wrapper's kind name, 96 bits), then the
cheaper of a dense table of one ``count_bits``-bit field for every value of the ``width``-bit
alphabet (2^width · c bits) and a sparse table naming each of the K used indices (``width`` bits)
with its field: 352 + min(2^width · c, K·(width + c)). With c = 12 this is what its ANS coder stores
at its default precision; its Huffman code-length fields take about 4-5 bits, so the estimate errs
on the side of more bits (and Huffman codes themselves sit up to a fraction of a bit a symbol above
the entropy: ANS is the coder this rate describes).

**RDO rounding** (:func:`rdo_indices`): the encoder rule of Chou, Lookabaugh and Gray's ECVQ design
(and of RDO quantization in video coders), with the levels kept at Δ·q (the code stores only Δ, so
the centroid update of their Lloyd iteration is left out): for a fixed Δ, each weight takes the
index minimising the Lagrangian (w − Δq)² + λ·(−log2 p(q)) among round(w/Δ) and its two neighbours
(our choice of window: two levels away costs at least 2Δ² more distortion, which λ = c·Δ² repays
only for a saving of more than 2/c bits, 17 at the default c), alternated with p = the histogram of
the chosen indices. Each half-step minimises
J(q, p) = Σ (w − Δq)² + λ·Σ −log2 p(q) over one argument, so J never increases; with p the empirical
histogram, J = N·(D + λ·H). λ is tied to Δ as λ = c·Δ² (c = ``rdo_lambda_scale``, by default
ln 2 / 6: at high rate D ≈ Δ²/12 and dD/dR = −2·ln 2·D, so the slope −dD/dR is (ln 2 / 6)·Δ²). The
model's bits are not in the Lagrangian (they are per tensor, not per weight); they are in the rate.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from b2s_bench import ceil_log2

from .config import ECSQConfig

__all__ = [
    "MAX_INDEX",
    "MODEL_HEADER_BITS",
    "Quantized",
    "index_range",
    "Histogram",
    "stream_entropy",
    "model_bits",
    "rate_of",
    "rdo_indices",
    "lagrangian",
    "quantize_at",
    "search_step",
]

#: the finest step is max|w| / MAX_INDEX, so |q| <= 2^30: the offset fits a 32-bit header field and
#: the width is at most 32 bits
MAX_INDEX = 2**30
#: the per-stream overhead of the coded stream besides its table: the entropy stage's stream header
#: (coder and layout as two 32-bit words each, count, width, field bits, used: 256 bits) and the wrapper's
#: kind name ("ecsq.uniform": 96 bits)
MODEL_HEADER_BITS = 352
_MAX_BISECTIONS = 64  # more than enough: the bracket starts within a factor 2 and stops at fp32 resolution


def _fp32(x: float) -> float:
    """``x`` rounded to the nearest fp32 value (the step is stored as fp32)."""
    return float(np.float32(x))


def index_range(q: torch.Tensor) -> tuple[int, int]:
    """(offset, width): the stored values are q + offset in [0, 2**width), with width the smallest that
    holds the span of q (at least 1)."""
    if q.numel() == 0:
        return 0, 1
    lo, hi = int(q.min()), int(q.max())
    return -lo, max(1, ceil_log2(hi - lo + 1))


def stream_entropy(counts: torch.Tensor) -> float:
    """Empirical entropy in bits per symbol of a histogram."""
    total = float(counts.sum())
    if total == 0:
        return 0.0
    p = counts[counts > 0] / total
    return max(0.0, float(-(p * torch.log2(p)).sum()))  # one symbol: 0, not -0


class Histogram:
    """The counts of the indices used (``used``), and the span [min q, max q] they lie in.

    Counted in a dense table where the span is small (the usual case), else by sorting (a fine step
    spreads N weights over up to 2^31 indices: a dense table would not fit in memory).
    """

    def __init__(self, q: torch.Tensor):
        flat = q.reshape(-1)
        n = int(flat.numel())
        self.lo = int(flat.min()) if n else 0
        self.span = int(flat.max()) - self.lo + 1 if n else 0
        if self.span <= 4 * n + 1024:
            table = torch.bincount(flat - self.lo, minlength=self.span) if n else torch.zeros(0, dtype=torch.int64)
            self.used = table[table > 0].double()
        else:
            self.used = torch.unique(flat, return_counts=True)[1].double()

    @property
    def entropy(self) -> float:
        """Empirical entropy in bits per symbol."""
        return stream_entropy(self.used)


def model_bits(used: int, width: int, count_bits: int) -> int:
    """Estimated stored bits of the probability model of a stream of ``used`` distinct ``width``-bit
    indices (see the module docstring): 352 + min(2^width · c, K·(width + c))."""
    return MODEL_HEADER_BITS + min(2**width * count_bits, used * (width + count_bits))


def rate_of(q: torch.Tensor, count_bits: int) -> tuple[float, int]:
    """(entropy in bits per weight, estimated model bits) of the indices ``q``."""
    hist = Histogram(q)
    width = max(1, ceil_log2(hist.span))  # index_range(q)'s, from the histogram's span
    return hist.entropy, model_bits(int(hist.used.numel()), width, count_bits)


@dataclasses.dataclass(frozen=True)
class Quantized:
    """One tensor quantized: the indices (flat int64), the step (an fp32 value) and its rate terms."""

    q: torch.Tensor
    step: float
    entropy: float  # bits per weight (order-0 empirical entropy of q)
    model_bits: int  # the estimated probability model

    @property
    def numel(self) -> int:
        return int(self.q.numel())

    @property
    def rate(self) -> float:
        """Bits per weight an entropy coder would need: H + M / N."""
        return self.entropy + self.model_bits / max(self.numel, 1)


def rdo_indices(
    w: torch.Tensor, q: torch.Tensor, step: float, lam: float, iterations: int, ordered: torch.Tensor | None = None
) -> torch.Tensor:
    """Entropy-constrained rounding (see the module docstring): from the round-to-nearest indices ``q`` of
    ``w`` (flat, float64) at ``step``, each weight's index among q − 1, q, q + 1 minimising
    (w − Δq)² + λ·(−log2 p(q)), alternated with p = the histogram, at most ``iterations`` times.

    The choice is a threshold rule per round-to-nearest index r: with b the bits of each index under
    p, a weight of group r moves up iff w ≥ max(U_r, V_r) and down iff w < min(D_r, V_r), where
    U_r = Δ(r + ½) − λ(b_r − b_{r+1})/(2Δ) (r+1 against r), D_r = Δ(r − ½) + λ(b_r − b_{r−1})/(2Δ)
    (r−1 against r) and V_r = Δr − λ(b_{r−1} − b_{r+1})/(4Δ) (r+1 against r−1). On the weights sorted
    once (``ordered``: ``w`` sorted, if the caller has it), each alternation then counts the moves of
    every group with two binary searches, not a pass over the weights; the indices are assigned once
    at the end, by the same comparisons, so the histograms are exactly those of the indices. An
    index no weight uses costs "infinitely" many bits (``big``: more than any distortion it could
    save), so it is never chosen and p stays a histogram of the chosen indices.
    """
    n = q.numel()
    if lam <= 0 or n == 0 or iterations < 1:
        return q  # without a rate term (or an alternation) round-to-nearest is the minimiser
    ws = ordered if ordered is not None else torch.sort(w).values
    rs = torch.round(ws / step).to(torch.int64)  # the round-to-nearest indices, sorted with the weights
    levels, sizes = torch.unique_consecutive(rs, return_counts=True)  # the groups r, in order
    ends = sizes.cumsum(0)
    starts = ends - sizes
    up_next = torch.cat([levels[1:] == levels[:-1] + 1, torch.tensor([False])])  # r + 1 is a group too
    down_prev = torch.cat([torch.tensor([False]), levels[:-1] == levels[1:] - 1])  # r − 1 is a group too
    big = 4 * step * step / lam + math.log2(n) + 64  # bits of an unused index: never worth choosing
    r = levels.double()
    counts = sizes.double()
    up_at = down_at = torch.zeros_like(r)
    for _ in range(iterations):
        bits = torch.where(counts > 0, -torch.log2(counts.clamp(min=1) / n), torch.full_like(counts, big))
        b_up = torch.where(up_next, torch.cat([bits[1:], bits[:1]]), torch.full_like(bits, big))
        b_down = torch.where(down_prev, torch.cat([bits[-1:], bits[:-1]]), torch.full_like(bits, big))
        u = step * (r + 0.5) - lam * (bits - b_up) / (2 * step)
        d = step * (r - 0.5) + lam * (bits - b_down) / (2 * step)
        v = step * r - lam * (b_down - b_up) / (4 * step)
        up_at, down_at = torch.maximum(u, v), torch.minimum(d, v)  # up iff w >= up_at; down iff w < down_at
        first_up = torch.searchsorted(ws, up_at).clamp(min=starts, max=ends)
        first_kept = torch.searchsorted(ws, down_at).clamp(min=starts, max=ends)
        ups = torch.where(up_next, ends - first_up, torch.zeros_like(ends)).double()
        downs = torch.where(down_prev, first_kept - starts, torch.zeros_like(starts)).double()
        new = sizes.double() - ups - downs
        new[1:] += torch.where(up_next[:-1], ups[:-1], torch.zeros_like(ups[:-1]))
        new[:-1] += torch.where(down_prev[1:], downs[1:], torch.zeros_like(downs[1:]))
        if torch.equal(new, counts):
            break
        counts = new
    # the indices from the last thresholds (whose counts are ``counts``, the histogram of the result)
    group = torch.searchsorted(levels, q)
    up = (w >= up_at[group]) & up_next[group]
    down = (w < down_at[group]) & down_prev[group]
    return q + up.to(torch.int64) - down.to(torch.int64)


def lagrangian(w: torch.Tensor, q: torch.Tensor, step: float, lam: float) -> float:
    """J = Σ (w − Δq)² + λ·N·H(q): the cost RDO rounding lowers (``w`` flat, float64)."""
    distortion = float((w - step * q.double()).pow(2).sum())
    return distortion + lam * q.numel() * Histogram(q).entropy


def quantize_at(w: torch.Tensor, step: float, config: ECSQConfig, ordered: torch.Tensor | None = None) -> Quantized:
    """The indices of ``w`` (flat, float64) at ``step``: rounded to nearest, then RDO-refined if set
    (``ordered``: ``w`` sorted, if the caller has it)."""
    q = torch.round(w / step).to(torch.int64)
    if config.rdo:
        q = rdo_indices(w, q, step, config.rdo_lambda_scale * step * step, config.rdo_iterations, ordered)
    entropy, model = rate_of(q, config.model_count_bits)
    return Quantized(q, step, entropy, model)


def search_step(w: torch.Tensor, config: ECSQConfig, guess: float | None = None) -> Quantized:
    """The finest fp32 step Δ whose rate (H + M/N, see the module docstring) is at most ``config.rate``.

    The bracket: the finest step allowed (max|w| / :data:`MAX_INDEX`) and 2·max|w| (every index 0);
    the first guess is the Gaussian high-rate step σ·√(2πe)·2^−R, widened by factors of 2 into a
    bracket, then bisected on log Δ until the rate is within ``rate_tolerance`` below the asked one
    or the bracket holds no other fp32 value. Where even the coarsest step's rate exceeds the asked one
    (a tiny tensor, whose model alone costs more), the coarsest step is returned; the target says so.

    With ``rdo`` the search starts at the round-to-nearest step (found first, cheaply): RDO rounding
    starts from round-to-nearest and lowers J = D + λ·H, and D cannot fall below round-to-nearest's,
    so H (and the model: no index is added) cannot rise, and that step meets the rate with RDO too.
    ``guess``: a first step, instead of the Gaussian one.
    """
    if config.rdo and guess is None:
        guess = search_step(w, dataclasses.replace(config, rdo=False)).step
    flat = w.detach().reshape(-1).double().cpu()
    peak = float(flat.abs().max()) if flat.numel() else 0.0
    if peak == 0.0 or not math.isfinite(peak):
        if not math.isfinite(peak):
            raise ValueError("ecsq: the tensor holds a NaN or an infinity; it cannot be quantized")
        return quantize_at(flat, 1.0, config)  # all zeros: every index is 0 at any step
    target = float(config.rate)
    ordered = torch.sort(flat).values if config.rdo else None  # once for every step RDO rounds at
    rates: dict[float, float] = {}  # step -> rate (the indices of only the finest feasible step are kept)
    kept: list[Quantized] = []

    def rate(step: float) -> float:
        if step not in rates:
            found = quantize_at(flat, step, config, ordered)
            rates[step] = found.rate
            if found.rate <= target and (not kept or step < kept[0].step):
                kept[:] = [found]
        return rates[step]

    lo, hi = _fp32(peak / MAX_INDEX), _fp32(2.0 * peak)
    if guess is None:
        sigma = math.sqrt(float(flat.pow(2).mean()))
        guess = sigma * math.sqrt(2 * math.pi * math.e) * 2.0 ** (-target)
    guess = min(max(_fp32(guess), lo), hi)
    if rate(guess) <= target:
        hi, step = guess, _fp32(guess / 2)
        while step > lo and rate(step) <= target:
            hi, step = step, _fp32(step / 2)
        if step <= lo and rate(lo) <= target:  # down to the finest step allowed, and it meets the rate
            return kept[0]
        lo = max(lo, step)
    else:
        lo, step = guess, _fp32(guess * 2)
        while step < hi and rate(step) > target:
            lo, step = step, _fp32(step * 2)
        hi = min(hi, step)
    for _ in range(_MAX_BISECTIONS):
        if hi in rates and target - config.rate_tolerance <= rates[hi] <= target:
            break
        mid = _fp32(math.sqrt(lo * hi))
        if not lo < mid < hi:
            break
        if rate(mid) <= target:
            hi = mid
        else:
            lo = mid
    return kept[0] if kept and kept[0].step == hi else quantize_at(flat, hi, config, ordered)
