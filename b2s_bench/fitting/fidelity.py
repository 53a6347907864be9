"""How close a rebuilt tensor is to the original: the per-tensor formulas behind the weight metrics.

PSNR convention: 10·log10((max W − min W)² / MSE) per tensor, the peak being the original tensor's
range (the paper does not say which peak it uses; the range is the usual choice for signed data).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["rel_mae", "cosine", "psnr", "tensor_report", "error_sums"]


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


def error_sums(w: torch.Tensor, wh: torch.Tensor) -> dict[str, float]:
    """What the model-level weight metrics pool over tensors, from one pass over a pair.

    Keys: ``numel``; ``sq_err`` = Σ(Ŵ − W)², ``sq_norm`` = ΣW², ``abs_err`` = Σ|Ŵ − W|,
    ``abs_norm`` = Σ|W|; ``cosine``; ``psnr`` (:func:`psnr`); ``nmse`` = MSE / (max W − min W)², the
    range-normalized error behind PSNR (NaN for a constant tensor with an error); ``exact`` (1.0 when
    Ŵ equals W: a tensor stored as it was, whose error is 0 and cosine 1 even when W is 0).
    """
    w, wh = w.detach().double().reshape(-1), wh.detach().double().reshape(-1)
    n = float(w.numel())
    sq_norm, abs_norm = float(w.pow(2).sum()), float(w.abs().sum())
    if torch.equal(w, wh):  # no pass over the difference: most tensors of most cells are raw copies
        return {
            "numel": n,
            "sq_err": 0.0,
            "sq_norm": sq_norm,
            "abs_err": 0.0,
            "abs_norm": abs_norm,
            "cosine": 1.0,
            "psnr": math.inf,
            "nmse": 0.0,
            "exact": 1.0,
        }
    diff = wh - w
    sq_err = float(diff.pow(2).sum())
    peak = float(w.max() - w.min()) if n else 0.0
    mse = sq_err / n if n else 0.0
    return {
        "numel": n,
        "sq_err": sq_err,
        "sq_norm": sq_norm,
        "abs_err": float(diff.abs().sum()),
        "abs_norm": abs_norm,
        "cosine": cosine(w, wh),
        "psnr": psnr(w, wh),
        "nmse": mse / peak**2 if peak > 0 else math.nan,
        "exact": 0.0,
    }
