"""Outlier-Aware Preprocessing: standardise a tensor, set its extreme values aside, store them exactly.

Our [D] rule: z = (w − μ)/σ over the whole tensor (population σ; ``standardize=False`` still finds
outliers this way but fits the INR to the raw values, with μ = 0, σ = 1 stored). The outliers are
the entries with |z| > κ (``rule="sigma"``) or the ⌈p·N/100⌉ largest |z| (``rule="top"``). The INR
is fitted to the "clipped remainder": each outlier's target is replaced by the threshold with its
sign, i.e. the magnitude of the most extreme kept entry. At decode time the stored values are
written back.

Bits: each outlier value at 32 bits (stored exactly as fp32) under ``outliers``, and the positions,
under ``indices``, as the cheaper of ⌈log2 N⌉ bits per position or an N-bit mask.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from b2s_bench import ceil_log2, pack_bits, pack_mask, unpack_bits, unpack_mask

__all__ = ["Preprocessed", "preprocess", "position_bits", "pack_positions", "unpack_positions", "VALUE_BITS"]

VALUE_BITS = 32
RULES = ("none", "sigma", "top")


@dataclasses.dataclass
class Preprocessed:
    mean: float  # fp32-exact
    std: float  # fp32-exact, > 0
    target: torch.Tensor  # (rows, cols) standardised, outliers clipped
    positions: torch.Tensor  # (n,) int64 flat positions, ascending
    values: torch.Tensor  # (n,) fp32 original values
    threshold: float  # |z| of the clip (inf when there are no outliers)


def preprocess(w: torch.Tensor, standardize: bool, rule: str, kappa: float, top_percent: float) -> Preprocessed:
    """Standardise ``w`` (flattened to (out, rest)) and set its outliers aside."""
    if rule not in RULES:
        raise ValueError(f"outlier rule must be one of {RULES}, got {rule!r}")
    w = w.detach().float().cpu()
    rows = w.shape[0] if w.dim() >= 1 else 1
    flat = w.reshape(-1)
    std = float(flat.std(unbiased=False)) if flat.numel() > 1 else 0.0
    mean_t = flat.mean()
    std_t = torch.tensor(std if std > 0 else 1.0, dtype=torch.float32)
    z = (flat - mean_t) / std_t
    az = z.abs()
    if rule == "sigma":
        out_mask = az > kappa
    elif rule == "top":
        k = min(math.ceil(top_percent / 100.0 * flat.numel()), flat.numel())
        out_mask = torch.zeros_like(flat, dtype=torch.bool)
        if k:
            out_mask[torch.topk(az, k, sorted=False).indices] = True
    else:
        out_mask = torch.zeros_like(flat, dtype=torch.bool)
    positions = out_mask.nonzero()[:, 0]
    threshold = math.inf
    target = z if standardize else flat
    if positions.numel():
        kept = az[~out_mask]
        threshold = float(kept.max()) if kept.numel() else 0.0
        clipped = torch.sign(z) * threshold
        target = torch.where(out_mask, clipped if standardize else mean_t + std_t * clipped, target)
    if not standardize:  # the INR fits the raw values; nothing to store for the (identity) standardisation
        mean_t, std_t = torch.tensor(0.0), torch.tensor(1.0)
    return Preprocessed(
        float(mean_t), float(std_t), target.reshape(rows, -1).contiguous(), positions, flat[positions].clone(), threshold
    )


def position_bits(n: int, numel: int) -> tuple[int, str]:
    """(bits, encoding) of ``n`` outlier positions among ``numel``: indices or a bitmask, the cheaper."""
    if n == 0:
        return 0, "none"
    idx = n * max(ceil_log2(numel), 1)
    return (idx, "index") if idx <= numel else (numel, "mask")


def pack_positions(positions: torch.Tensor, numel: int) -> dict[str, torch.Tensor]:
    _, encoding = position_bits(int(positions.numel()), numel)
    if encoding == "index":
        return {"outlier_pos": pack_bits(positions, max(ceil_log2(numel), 1))}
    if encoding == "mask":
        mask = torch.zeros(numel, dtype=torch.bool)
        mask[positions] = True
        return {"outlier_mask": pack_mask(mask)}
    return {}


def unpack_positions(tensors: dict[str, torch.Tensor], n: int, numel: int) -> torch.Tensor:
    if "outlier_pos" in tensors:
        return unpack_bits(tensors["outlier_pos"], max(ceil_log2(numel), 1), n)
    if "outlier_mask" in tensors:
        return unpack_mask(tensors["outlier_mask"], (numel,)).nonzero()[:, 0]
    return torch.zeros(0, dtype=torch.int64)
