"""SQuant's rounding: round to nearest, then flip codes to the other grid point until the summed
rounding errors of kernels and output channels are within half a step (Guo et al., ICLR 2022).

Errors are in steps: e = q − x, where x = W/s + z is the weight in grid units and q its integer code,
so the decoded weight is W + s·e. Round-to-nearest gives |e| ≤ 0.5 (SQuant-E). A flip moves one code
by one grid point against the sign of its error (e → e − 1 for e > 0, e → e + 1 for e < 0): its
error grows to 1 − |e|, and the sum it belongs to moves by one step.

- SQuant-K: a kernel (all k×k weights of one (out, in) pair) whose errors sum to E flips round(|E|)
  of its codes whose error has the sign of E, the largest |e| first (they grow least), so its sum
  ends within 0.5 and every |e| within 1.
- SQuant-C: an output channel whose kernel sums add up to R flips round(|R|) kernels once each, among
  those whose sum has the sign of R. A kernel's one flip is the code whose current error most has
  its sum's sign (for a kernel that overshot in SQuant-K, undoing its last flip; otherwise its next
  candidate), and the kernels whose flip candidate has the largest |e| go first (the authors' code
  orders them so). The channel's sum ends within 0.5; a flipped kernel's sum, r → r − sign(r), within 1.
  Without SQuant-K, SQuant-C flips single codes of the whole channel instead (the paper's E&C ablation).

Flips never leave the grid: a code at the grid's end is no candidate to move past it. Everything
is vectorised over kernels and channels: no Python loop over them (a ``topk`` along one dimension
and scatters, :func:`_top`).

Layout (:func:`kernel_view`): a tensor of dimension ≥ 3 (conv) is (out, in, k·k…); a linear weight
(out, in) is one kernel per row, (out, 1, in) (our choice: the authors' code sees no kernel dimension
there and flips the row at the channel level, the same codes with both levels on, but it leaves a
linear layer at round-to-nearest under SQuant-K alone); a 0-D or 1-D tensor is one channel of one
kernel.

Checked against the authors' code (clevercool/SQuant at 9cc77fc, its PyTorch path, run apart from
this project) on random conv (3×3, 5×5, 1×1, depthwise) and linear weights at 3, 4 and 6 bits, each
channel spanning 0: the same codes for E, E&K, E&C and E&K&C, except E&K on linear layers as above.
"""

from __future__ import annotations

import dataclasses

import torch

from ..quantize.codes import grid_range
from ..quantize.rounding import grouped, quantize_groups
from .codes import SQuantCode
from .config import SQuantConfig

__all__ = [
    "kernel_view",
    "squant_round",
    "grid_of",
    "squant_codes",
    "make_code",
    "squant_tensor",
    "CaseStats",
    "case_stats",
]


def kernel_view(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(output channels, kernels per channel, weights per kernel) of a tensor of this shape."""
    dims = [int(s) for s in shape]
    if len(dims) < 2:
        return 1, 1, dims[0] if dims else 1
    if len(dims) == 2:
        return dims[0], 1, dims[1]
    per_kernel = 1
    for s in dims[2:]:
        per_kernel *= s
    return dims[0], dims[1], per_kernel


def _top(priority: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Mark, along the last dimension, the ``count`` entries of highest priority (``count``: one per
    row, with a trailing 1). One ``topk`` of the largest count, not a full sort: counts are small (a
    sum of rounding errors grows like the square root of the number of weights summed). Ties, which
    real weights do not produce, go in ``topk``'s order."""
    most = min(int(count.max()), priority.shape[-1]) if count.numel() else 0
    chosen = torch.zeros(priority.shape, dtype=torch.bool, device=priority.device)
    if most <= 0:
        return chosen
    index = priority.topk(most, dim=-1).indices
    first = torch.arange(most, device=priority.device) < count
    return chosen.scatter_(-1, index, first.expand(index.shape))


def _in_grid(q: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    return (q >= qmin) & (q <= qmax)


def _flip_sums(x: torch.Tensor, q: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """Flip codes of each row (the last dimension) until the row's summed error is within 0.5.

    A row whose errors sum to E flips the round(|E|) codes with the largest error of E's sign (the
    ones that grow least) that stay on the grid; rows flip independently. Returns the new codes.
    """
    e = q - x
    total = e.sum(dim=-1, keepdim=True)
    sign = torch.sign(total)
    step = -sign  # a flip moves the code against the sum's sign
    candidate = (e * sign > 0) & _in_grid(q + step, qmin, qmax)
    priority = torch.where(candidate, e.abs(), -1.0)
    flip = candidate & _top(priority, torch.round(total.abs()))
    return q + flip.to(q.dtype) * step


def _channel_flips(x: torch.Tensor, q: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """SQuant-C after SQuant-K; ``x`` and ``q`` are (channels, kernels, weights per kernel).

    Each kernel offers one flip against the sign of its sum r, on its code whose error most has r's
    sign (and only if that error has it: the code's |e| stays within 1); each channel whose kernel
    sums add up to R takes round(|R|) offers against R's sign, largest |e| first.
    """
    e = q - x
    r = e.sum(dim=-1, keepdim=True)  # (channels, kernels, 1)
    sign = torch.sign(r)
    step = -sign
    leaning = torch.where(_in_grid(q + step, qmin, qmax), e * sign, -1.0)  # > 0: the error has r's sign
    best, where = leaning.max(dim=-1, keepdim=True)  # each kernel's offer and its code
    total = r.sum(dim=1)  # (channels, 1)
    offered = (best > 0) & (sign == torch.sign(total)[:, None])
    priority = torch.where(offered, best, -1.0).squeeze(-1)  # (channels, kernels)
    take = offered & _top(priority, torch.round(total.abs())).unsqueeze(-1)
    return q.scatter_add(-1, where, take.to(q.dtype) * step)


def squant_round(x: torch.Tensor, qmin: int, qmax: int, kernel_level: bool = True, channel_level: bool = True) -> torch.Tensor:
    """SQuant's codes for weights ``x`` in grid units, (channels, kernels, weights per kernel).

    Both levels off is round-to-nearest (SQuant-E); ``kernel_level`` alone is SQuant-E&K,
    ``channel_level`` alone SQuant-E&C (flips over whole channels), both SQuant-E&K&C.
    """
    if x.dim() != 3:
        raise ValueError(f"squant_round takes (channels, kernels, weights per kernel), got shape {tuple(x.shape)}")
    q = torch.clamp(torch.round(x), qmin, qmax)
    if kernel_level:
        if x.shape[-1] > 1:  # a one-weight kernel's sum is its error, within 0.5 already (or clipped: no flip back)
            q = _flip_sums(x, q, qmin, qmax)
        if channel_level and x.shape[1] > 1:  # one kernel a channel (linear, depthwise): done by SQuant-K
            q = _channel_flips(x, q, qmin, qmax)
    elif channel_level:  # SQuant-E&C: the whole channel is the unit
        channels = x.shape[0]
        q = _flip_sums(x.reshape(channels, -1), q.reshape(channels, -1), qmin, qmax).reshape(x.shape)
    return q


def grid_of(w: torch.Tensor, config: SQuantConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, scale, zero): the weights in grid units, (channels, kernels, weights per kernel), and the
    per-channel grid (min/max range, which the affine grid widens to include 0 so that its zero point is
    a b-bit code; the scale already at its stored precision)."""
    rows, _ = grouped(w.detach().cpu(), "channel", 1)
    # the symmetric grid is the restricted one, max|W| / (2^(b-1) - 1), as SQuant's code scales it (quantize's
    # default became torchao's full range; SQuant's results were made on this one)
    _, scale, zero = quantize_groups(rows, config.bits, config.symmetric, "minmax", value_range="restricted")
    if config.scale_bits == 16:
        scale = scale.half().float()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an fp16 underflow decodes to zeros too
    x = rows / scale[:, None] + zero[:, None]
    return x.reshape(kernel_view(tuple(w.shape))), scale, zero


def squant_codes(w: torch.Tensor, config: SQuantConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, q, scale, zero): the weights in grid units and SQuant's codes, both (channels, kernels,
    weights per kernel), and the per-channel grid."""
    if w.numel() == 0:
        raise ValueError(f"squant cannot quantize an empty tensor (shape {tuple(w.shape)})")
    if not bool(torch.isfinite(w).all()):
        raise ValueError(
            f"squant cannot quantize a tensor with NaN or infinite values (shape {tuple(w.shape)}); fix the weights first"
        )
    x, scale, zero = grid_of(w, config)
    qmin, qmax = grid_range(config.bits, config.symmetric)
    return x, squant_round(x, qmin, qmax, config.kernel_level, config.channel_level), scale, zero


def make_code(
    q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, config: SQuantConfig, shape: tuple[int, ...]
) -> SQuantCode:
    """The stored code of :func:`squant_codes`' result for a tensor of this shape (one group per channel)."""
    return SQuantCode(q.reshape(scale.numel(), -1), scale, zero, config.bits, config.symmetric, config.scale_bits, 0, shape)


def squant_tensor(w: torch.Tensor, config: SQuantConfig) -> SQuantCode:
    """Quantize one tensor with SQuant (any shape; see :func:`kernel_view` for its kernels)."""
    _, q, scale, zero = squant_codes(w, config)
    return make_code(q, scale, zero, config, tuple(w.shape))


@dataclasses.dataclass(frozen=True)
class CaseStats:
    """Summed rounding errors of one tensor's codes, in steps: the terms of SQuant's CASE objective."""

    kernels: int
    channels: int
    kernel_ase: float  # Σ over kernels of |Σ e| (absolute sum of error)
    channel_ase: float  # Σ over output channels of |Σ e|
    max_kernel_ase: float
    max_channel_ase: float
    max_error: float  # max |e|


def case_stats(x: torch.Tensor, q: torch.Tensor) -> CaseStats:
    """CASE's terms for codes ``q`` of weights ``x`` (both (channels, kernels, weights per kernel))."""
    e = q - x
    kernels = e.sum(dim=-1).abs()
    channels = e.sum(dim=(1, 2)).abs()
    return CaseStats(
        kernels=kernels.numel(),
        channels=channels.numel(),
        kernel_ase=float(kernels.sum()),
        channel_ase=float(channels.sum()),
        max_kernel_ase=float(kernels.max()),
        max_channel_ase=float(channels.max()),
        max_error=float(e.abs().max()),
    )
