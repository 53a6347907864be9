"""The Frequency-Aware Loss, per layer, on 2-D blocks of the reshaped (out, in·k·k) weight matrix.

L = MSE + λ_g·GDL + λ_f·FFL, each term averaged so that it is one number per layer (G of them):

* MSE: mean of (Ŷ − Y)² over the block's entries.
* GDL (gradient difference loss), our [D] normalisation: for each axis d of the 2-D block with more
  than one entry, the mean over the block of | ∇_d Ŷ − ∇_d Y | (``gdl="signed"``, the difference of the
  finite differences, i.e. the L1 norm of the residual's finite differences) or of | |∇_d Ŷ| − |∇_d Y| |
  (``gdl="mathieu"``, the form of Mathieu et al. 2015 for images), summed over the two axes. On
  noise-like weight matrices the Mathieu form rewards edges of the right size whatever their sign,
  which costs accuracy, so the signed form is the default.
* FFL (Focal Frequency Loss, Jiang et al., arXiv 2012.12821): with F the orthonormal 2-D DFT of each
  block (so Σ|ΔF|² = Σ|ΔY|², the same scale as the MSE), mean over frequencies of w·|F(Ŷ) − F(Y)|²,
  where the focal weight w = |F(Ŷ) − F(Y)|^α is normalised to [0, 1] by its maximum in each block and
  carries no gradient (as in the reference implementation with ``batch_matrix=False``).

Blocks are (G, B, P, Q): B random P x Q crops of each of the G layers' matrices (or the whole matrix).
All values are in standardised units when preprocessing standardises the tensor.
"""

from __future__ import annotations

import torch

from .config import GDL_FORMS

__all__ = ["crop_losses", "layer_losses", "focal_frequency_loss", "gradient_difference_loss", "GDL_FORMS"]


def gradient_difference_loss(pred: torch.Tensor, target: torch.Tensor, form: str = "signed") -> torch.Tensor:
    """(G, B) per block: the sum over its two axes of mean |∇Ŷ − ∇Y| ("signed") or mean | |∇Ŷ| − |∇Y| |
    ("mathieu")."""
    if form not in GDL_FORMS:
        raise ValueError(f"gdl must be one of {GDL_FORMS}, got {form!r}")
    total = pred.new_zeros(pred.shape[:2])
    for dim in (-2, -1):
        if pred.shape[dim] > 1:
            if form == "signed":
                diff = torch.diff(pred - target, dim=dim)
            else:
                diff = torch.diff(pred, dim=dim).abs() - torch.diff(target, dim=dim).abs()
            total = total + diff.abs().flatten(2).mean(dim=2)
    return total


def focal_frequency_loss(pred: torch.Tensor, target: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """(G, B) focal frequency loss of each of the (G, B, P, Q) blocks."""
    diff = torch.fft.fft2(pred, norm="ortho") - torch.fft.fft2(target, norm="ortho")
    dist = diff.real**2 + diff.imag**2
    with torch.no_grad():
        weight = dist.sqrt() ** alpha
        peak = weight.amax(dim=(-2, -1), keepdim=True)
        safe = torch.where(peak > 0, peak, torch.ones_like(peak))
        weight = torch.where(peak > 0, weight / safe, torch.zeros_like(weight))
        weight = torch.nan_to_num(weight, nan=0.0).clamp(0.0, 1.0)
    return (weight * dist).flatten(2).mean(dim=2)


def crop_losses(
    pred: torch.Tensor,
    target: torch.Tensor,
    lambda_grad: float,
    lambda_freq: float,
    focal_alpha: float = 1.0,
    gdl: str = "signed",
) -> torch.Tensor:
    """The Frequency-Aware Loss of each block: (G, B, P, Q) blocks -> (G, B) losses (a layer's loss is
    their mean over B: blocks are equal in size, so it is also the mean over all their entries)."""
    loss = (pred - target).pow(2).flatten(2).mean(dim=2)
    if lambda_grad:
        loss = loss + lambda_grad * gradient_difference_loss(pred, target, gdl)
    if lambda_freq:
        loss = loss + lambda_freq * focal_frequency_loss(pred, target, focal_alpha)
    return loss


def layer_losses(
    pred: torch.Tensor,
    target: torch.Tensor,
    lambda_grad: float,
    lambda_freq: float,
    focal_alpha: float = 1.0,
    gdl: str = "signed",
) -> torch.Tensor:
    """The Frequency-Aware Loss of each layer: (G, B, P, Q) blocks -> (G,) losses."""
    return crop_losses(pred, target, lambda_grad, lambda_freq, focal_alpha, gdl).mean(dim=1)
