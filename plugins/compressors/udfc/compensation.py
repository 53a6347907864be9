"""UDFC's closed form: how the next layer absorbs what compressing a layer's channels lost.

Re-implemented from the paper (Bai et al., "Unified Data-Free Compression: Pruning and
Quantization without Fine-Tuning", ICCV 2023, arXiv 2308.07209); no public code was available.
Only the paper's abstract and overview could be read, so the equations below are our derivation
from its stated assumption, and every choice it needed is a setting (:mod:`.config`).

**The chain.** Layer l (weights W, output channel c: filter W_c) feeds a BatchNorm, an elementwise
activation f and layer l+1 (weights V, input channel c: column V_c). Per channel the BatchNorm's
output before f is taken as Gaussian, y_c ~ N(β_c, γ_c²) (its affine parameters; the paper's and
DFQ's assumption), and l+1 reads f(y_c).

**The assumption** (the paper's): what a damaged channel loses is, in part, a linear function of a
channel that is still there. When channel p is pruned, l+1 loses V_p·f(y_p); a kept channel k
carries f(ỹ_k) (ỹ_k: its pre-activation after layer l's own quantization, ỹ_k = y_k when l is
not quantized). Replacing ``V_k ← Σ_c S_ck·V_c`` over c ∈ {k} ∪ {pruned channels paired with k}
and adding ``b ← b + Σ_c V_c·(E f(y_c) − S_ck·E f(ỹ_k))`` to l+1's bias minimises the expected
squared error of l+1's output, E‖Σ_c V_c f(y_c) − V'_k f(ỹ_k) − b‖², exactly when

    S_ck = Cov(f(y_c), f(ỹ_k)) / Var(f(ỹ_k))            (the closed form; the bias term is optional)

(a least-squares regression of each lost input on the one regressor l+1 keeps; the error is
convex in S, whose second derivative is 2·Var(f(ỹ_k))·‖V_c‖² ≥ 0). Pruning alone uses the
pairs (p, k); quantization alone the pair (k, k) with ỹ_k ≠ y_k (the paper's S′); both at once
use both, with the quantized regressor.

**The joint Gaussian (our model, where the paper could not be read).** The moments above need the
joint law of (y_c, ỹ_k). With the BatchNorm statistics fixing each marginal, the correlation of
two pre-activations z_a = W_a·x and z_b = W̃_b·x is that of their filters under an isotropic input,
ρ = cos(W_a, W̃_b); the same model gives a quantized channel's spread, std(ỹ_k) =
|γ_k|·‖W̃_k‖/‖W_k‖, and its mean moves by γ_k·(W̃_k − W_k)·E[x]/σ_k (``mean_shift: bn``, E[x] from
the BatchNorm before layer l where there is one). When a pruned filter is exactly c times a kept
one (ρ = ±1) and f is linear, the regression is exact and the compensated model equals the dense
one (our test); with ReLU it is the best linear fit of f(y_p) on f(y_k).

**Pairing.** Each pruned channel goes to the kept channel that leaves the least error,
``Var f(y_p)·(1 − corr(f(y_p), f(ỹ_k))²)`` (``pairing: error``, our reading of the paper's
choice), or to the most cosine-similar filter (``pairing: cosine``, Neuron Merging's rule).

Expectations of f under the Gaussians are trapezoid sums on ±8 standard deviations
(``quadrature_points`` a dimension; the pairing search over all pruned × kept pairs uses at most
17), exact to rounding for linear f, so any elementwise activation works.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

__all__ = ["Gaussians", "grid", "moments", "cross_covariance", "cosine", "pair_channels", "scales", "norm_ratio"]

Activation = Callable[[torch.Tensor], torch.Tensor]

#: pairwise evaluations per chunk (pairs × points²), to bound memory
_CHUNK = 1 << 22


def _identity(z: torch.Tensor) -> torch.Tensor:
    return z


@dataclasses.dataclass(frozen=True)
class Gaussians:
    """Per-channel Gaussian pre-activations: mean and standard deviation, shape (C,)."""

    mean: torch.Tensor
    std: torch.Tensor


def grid(points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes on ±8 standard deviations and their weights (the normal density, summing to 1): the
    trapezoid rule, exponentially accurate for smooth integrands (a linear activation's moments to
    rounding error) and O(h²) at a kink such as ReLU's (about 1e-3 with 65 points)."""
    t = torch.linspace(-8.0, 8.0, points, dtype=torch.float64)
    w = torch.exp(-0.5 * t**2)
    return t, w / w.sum()


def _apply(f: Activation | None, z: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():  # a copy: an in-place activation (ReLU(inplace=True)) must not change the grid
        return (f or _identity)(z.double().clone()).double()


def moments(f: Activation | None, g: Gaussians, points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """E[f(y)] and Var[f(y)] per channel, y ~ N(mean, std²)."""
    t, w = grid(points)
    y = g.mean.double()[:, None] + g.std.double().abs()[:, None] * t[None, :]
    fy = _apply(f, y)
    mean = fy @ w
    second = (fy * fy) @ w
    return mean, (second - mean**2).clamp(min=0.0)


def _joint(f: Activation | None, a: Gaussians, b: Gaussians, rho: torch.Tensor, points: int) -> torch.Tensor:
    """E[f(y_a)·f(y_b)] elementwise (``a``'s, ``b``'s and ``rho``'s tensors broadcast together),
    with y_a = mean_a + std_a·u and y_b = mean_b + std_b·(ρ·u + sqrt(1 − ρ²)·v), u and v independent."""
    t, w = grid(points)
    ww = w[:, None] * w[None, :]
    shape = torch.broadcast_shapes(a.mean.shape, b.mean.shape, rho.shape)
    flat = [x.double().expand(shape).reshape(-1) for x in (a.mean, a.std.abs(), b.mean, b.std.abs(), rho.clamp(-1.0, 1.0))]
    out = torch.empty(flat[0].numel(), dtype=torch.float64)
    step = max(1, _CHUNK // (points * points))
    for s in range(0, out.numel(), step):
        ma, sa, mb, sb, r = (x[s : s + step, None] for x in flat)
        ya = ma + sa * t
        orth = torch.sqrt((1.0 - r**2).clamp(min=0.0))
        yb = (mb + sb * r * t)[:, :, None] + (sb * orth)[:, :, None] * t[None, None, :]
        out[s : s + step] = torch.einsum("ni,nij,ij->n", _apply(f, ya), _apply(f, yb), ww)
    return out.reshape(shape)


def cross_covariance(f: Activation | None, a: Gaussians, b: Gaussians, rho: torch.Tensor, points: int) -> torch.Tensor:
    """Cov(f(y_a), f(y_b)) for every channel a of ``a`` (rows) and b of ``b`` (columns), with
    corr(y_a, y_b) = ``rho`` (A, B): (A, B)."""
    mean_a, _ = moments(f, a, points)
    mean_b, _ = moments(f, b, points)
    rows = Gaussians(a.mean[:, None], a.std[:, None])
    cols = Gaussians(b.mean[None, :], b.std[None, :])
    return _joint(f, rows, cols, rho, points) - mean_a[:, None] * mean_b[None, :]


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every row of ``a`` (A, d) with every row of ``b`` (B, d): (A, B)."""
    a, b = a.double(), b.double()
    na = a.norm(dim=1, keepdim=True).clamp(min=1e-30)
    nb = b.norm(dim=1, keepdim=True).clamp(min=1e-30)
    return (a / na) @ (b / nb).T


def pair_channels(
    f: Activation | None,
    pruned: Gaussians,
    kept: Gaussians,
    rho: torch.Tensor,
    pairing: str,
    points: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each pruned channel (row of ``rho``), the kept channel that absorbs it and the error left.

    Returns (index into the kept channels (P,), expected error Var f(y_p)·(1 − corr²) (P,)).
    """
    cov = cross_covariance(f, pruned, kept, rho, points)
    _, var_p = moments(f, pruned, points)
    _, var_k = moments(f, kept, points)
    denom = (var_p[:, None] * var_k[None, :]).clamp(min=1e-30)
    corr2 = (cov**2 / denom).clamp(max=1.0)
    error = var_p[:, None] * (1.0 - corr2)
    choice = rho.abs().argmax(dim=1) if pairing == "cosine" else error.argmin(dim=1)
    return choice, error.gather(1, choice[:, None])[:, 0]


def scales(
    f: Activation | None, lost: Gaussians, regressor: Gaussians, rho: torch.Tensor, points: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The closed form for matched pairs (lost channel i, its regressor i), all (N,): S_i =
    Cov(f(y_lost), f(y_regressor)) / Var f(y_regressor) (0 for a regressor that never varies, a dead
    channel), and the mean the regression leaves, E f(y_lost) − S_i·E f(y_regressor)."""
    mean_l, _ = moments(f, lost, points)
    mean_r, var_r = moments(f, regressor, points)
    cov = _joint(f, lost, regressor, rho, points) - mean_l * mean_r
    s = torch.where(var_r > 1e-20, cov / var_r.clamp(min=1e-20), torch.zeros_like(cov))
    return s, mean_l - s * mean_r


def norm_ratio(w_new: torch.Tensor, w_old: torch.Tensor) -> torch.Tensor:
    """‖W̃_c‖/‖W_c‖ per row (1 where the filter is zero)."""
    old = w_old.double().norm(dim=1)
    return torch.where(old > 0, w_new.double().norm(dim=1) / old.clamp(min=1e-30), torch.ones_like(old))
