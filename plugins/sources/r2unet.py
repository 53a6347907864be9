"""R2U-Net (Alom, Hasan, Yakopcic, Taha, Asari 2018, "Recurrent Residual Convolutional Neural Network
based on U-Net (R2U-Net) for Medical Image Segmentation", arXiv:1802.06955), implemented here (torch).

The paper's unit is the recurrent residual convolutional unit (RRCU, its Fig. 4d): two recurrent
convolutional layers (RCL) in sequence with a residual connection around them. An RCL (the paper's
Eq. 1-2, after Liang and Hu's RCNN) unfolds ``t`` time steps of

    h(0) = ReLU(w_f * x),   h(k) = ReLU(w_f * x + w_r * h(k-1)),   k = 1..t

with a feed-forward kernel ``w_f`` and a recurrent kernel ``w_r`` (3x3); the paper's t = 2 is "one
convolution followed by two recurrent convolutions". Choices the paper leaves open, made here and
kept as settings:

* ``recurrent="separate"`` follows Eq. 1 (``w_f`` and ``w_r`` apart); ``"shared"`` is the variant
  of the widely used public implementation, one kernel applied to ``x + h(k-1)``.
* BatchNorm after every convolution (before the ReLU), each time step its own BatchNorm; the paper
  does not say how it normalises.
* a 1x1 convolution in front of each RRCU maps the input to the unit's width, so the residual
  addition has matching channels (the paper's figure draws the residual without saying how).
* down-sampling by 2x2 max pooling, up-sampling by a 2x2 transposed convolution, skip connections
  by concatenation, as in U-Net; a 1x1 head gives ``classes`` logits per pixel.

The paper's models use widths 16, 32, 64, 128, 256 (``width=16, depth=4``); ``width`` scales them
for small benchmarks. Parameter counts here at that setting and t = 2: 4.20 M with separate kernels,
2.23 M shared; the paper reports 1.037 M for its t = 2 model, which no reading of its widths
reproduces (the 3x3 kernels of the encoder's shared RCLs alone hold 1.57 M): the count is not
matched.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from .zoo_net import UNet

__all__ = ["R2UNet", "RecurrentConv", "RRCU"]


class RecurrentConv(nn.Module):
    """One RCL unfolded over ``t`` steps (see the module docstring)."""

    def __init__(self, channels: int, t: int = 2, recurrent: Literal["separate", "shared"] = "separate"):
        super().__init__()
        if t < 1:
            raise ValueError(f"t (recurrent steps) must be >= 1, got {t}")
        if recurrent not in ("separate", "shared"):
            raise ValueError(f"recurrent must be 'separate' or 'shared', got {recurrent!r}")
        self.t, self.recurrent = t, recurrent
        self.feed = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.rec = nn.Conv2d(channels, channels, 3, padding=1, bias=False) if recurrent == "separate" else None
        self.norms = nn.ModuleList([nn.BatchNorm2d(channels) for _ in range(t + 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        relu = nn.functional.relu
        if self.rec is None:  # shared: h(k) = ReLU(w * (x + h(k-1)))
            h = relu(self.norms[0](self.feed(x)))
            for k in range(1, self.t + 1):
                h = relu(self.norms[k](self.feed(x + h)))
            return h
        f = self.feed(x)  # w_f * x is the same at every step
        h = relu(self.norms[0](f))
        for k in range(1, self.t + 1):
            h = relu(self.norms[k](f + self.rec(h)))
        return h


class RRCU(nn.Module):
    """Recurrent residual convolutional unit: 1x1 to ``cout``, then x + RCL(RCL(x))."""

    def __init__(self, cin: int, cout: int, t: int = 2, recurrent: Literal["separate", "shared"] = "separate"):
        super().__init__()
        self.enter = nn.Conv2d(cin, cout, 1)
        self.body = nn.Sequential(RecurrentConv(cout, t, recurrent), RecurrentConv(cout, t, recurrent))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.enter(x)
        return x + self.body(x)


class R2UNet(UNet):
    """R2U-Net: U-Net with RRCUs in place of its double convolutions (:class:`~.zoo_net.UNet` with
    ``block`` an RRCU). Inputs need H and W divisible by 2^depth."""

    def __init__(
        self,
        width: int = 16,
        depth: int = 4,
        t: int = 2,
        recurrent: Literal["separate", "shared"] = "separate",
        in_channels: int = 3,
        classes: int = 1,
    ):
        super().__init__(width, depth, in_channels, classes, block=lambda cin, cout: RRCU(cin, cout, t, recurrent))
