"""SmoothQuant's smoothing and its activation quantizers.

Smoothing (the paper's Sec. 4): for the layers that read one norm's output (q, k, v; the MLP's first
layers), s_j = max|X_j|^α / max|W_j|^(1−α) per input channel j (max|W_j| over the output rows of every
layer of the group; both maxima clamped at 1e-5, and s too, as the authors' ``smooth_ln_fcs``); the norm's
weight and bias are divided by s, the layers' weights multiplied by s: (X·diag(s)⁻¹)(diag(s)·W) = XW.
Only norm-fed layers are smoothed (the paper's setting, where the division is free); the folds are
awq's (:mod:`..awq.fold`), each checked to leave the model unchanged.

Activations, symmetric as the paper: static per tensor, X ≈ d·clamp(round(X/d), −2^(b−1), 2^(b−1) − 1)
with d = max|X| / (2^(b−1) − 1), which is the core's affine quantizer over [−2^(b−1)·d, (2^(b−1) − 1)·d];
or dynamic per token, d from each token's max|x|: the core's per-token quantizer
(:func:`b2s_bench.calibration.fake_quantize_per_token`, installed by ``Compressed(token_activations=...)``,
so it is stored in the artifact and rebuilt on load).
"""

from __future__ import annotations

import torch

__all__ = ["smoothing_scale", "static_range", "weight_maxima"]


def weight_maxima(weights: list[torch.Tensor]) -> torch.Tensor:
    """max|W_j| per input channel j over every output row of every weight."""
    per = [w.detach().float().abs().transpose(0, 1).reshape(w.shape[1], -1).amax(dim=1) for w in weights]
    return torch.stack(per).amax(dim=0)


def smoothing_scale(act_max: torch.Tensor, weight_max: torch.Tensor, alpha: float) -> torch.Tensor:
    """s = max|X|^α / max|W|^(1−α), per input channel."""
    return (act_max.float().clamp(min=1e-5).pow(alpha) / weight_max.float().clamp(min=1e-5).pow(1 - alpha)).clamp(min=1e-5)


def static_range(peak: float, bits: int) -> tuple[float, float]:
    """The core's affine range that is the symmetric b-bit grid of step max|X| / (2^(b−1) − 1)."""
    step = max(peak, 1e-8) / (2 ** (bits - 1) - 1)
    return -(2 ** (bits - 1)) * step, (2 ** (bits - 1) - 1) * step
