"""How close a rebuilt tensor is to the original: the per-tensor formulas behind the weight metrics.

PSNR convention: 10·log10((max W − min W)² / MSE) per tensor, the peak being the original tensor's
range (the paper does not say which peak it uses; the range is the usual choice for signed data).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["rel_mae", "cosine", "psnr", "tensor_report"]


def rel_mae(w: torch.Tensor, wh: torch.Tensor) -> float:
    """mean |Ŵ − W| / mean |W|."""
    return float((wh - w).abs().mean() / w.abs().mean().clamp(min=1e-12))


def cosine(w: torch.Tensor, wh: torch.Tensor) -> float:
    return float(F.cosine_similarity(w.reshape(1, -1).double(), wh.reshape(1, -1).double()).item())


def psnr(w: torch.Tensor, wh: torch.Tensor) -> float:
    """In dB; inf for an exact copy, nan for a constant tensor."""
    mse = float(((wh - w).double() ** 2).mean())
    peak = float(w.max() - w.min())
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse) if peak > 0 else math.nan


def tensor_report(w: torch.Tensor, wh: torch.Tensor) -> dict[str, float]:
    """All three, for a compressor's per-layer record."""
    w, wh = w.detach().float().cpu(), wh.detach().float().cpu()
    return {"rel_mae": rel_mae(w, wh), "cosine": cosine(w, wh), "psnr": psnr(w, wh)}
