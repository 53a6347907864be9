"""The settings of ``udfc``."""

from __future__ import annotations

import dataclasses
from typing import Literal

from b2s_bench import check, one_of

__all__ = ["UDFCConfig", "PAIRINGS", "CRITERIA"]

#: how a pruned channel finds the kept channel that absorbs it (see :mod:`.compensation`)
PAIRINGS = ("error", "cosine")
#: how the channels to prune are chosen
CRITERIA = ("l2", "l1")


@dataclasses.dataclass(frozen=True)
class UDFCConfig:
    """Settings of ``udfc`` (re-implemented from the paper: Bai et al., ICCV 2023, arXiv 2308.07209).

    By default it quantizes only (W6, the setting Big2Small's table compares UDFC at); ``sparsity``
    above 0 prunes too, ``bits: 32`` prunes only (weights stay fp32), and ``sparsity: 0`` with
    ``bits: 32`` reproduces the dense model. Activation bits come from the suite's
    ``activations:`` stage.

    Attributes:
        sparsity: fraction of the output channels removed from each prunable layer (a conv or
            linear layer followed by a BatchNorm, an elementwise activation and one dense conv or
            linear layer that alone reads it), in [0, 1). Other layers are never pruned (see ``info``).
        scope: "layer" (the same fraction in every prunable layer) or "global" (one ranking of all
            prunable channels by their filter norm divided by their layer's mean filter norm).
        criterion: which channels are pruned: the smallest filter norms, "l2" or "l1".
        bits: weight bits of every conv/linear layer, 2-8 (uniform, per ``granularity``); 32
            leaves the weights fp32 (prune only).
        granularity: one scale per output channel ("channel") or per tensor ("tensor").
        symmetric: symmetric grid (no zero point) or affine (a b-bit zero point per group).
        scale_bits: stored precision of the quantization scales (16 or 32).
        skip_first / skip_last: keep the first / last conv or linear layer fp32 (never pruned).
        pairing: which kept channel absorbs a pruned one: "error" (the one whose compensation
            leaves the least expected reconstruction error of the next layer's input, our reading
            of the paper) or "cosine" (the most cosine-similar filter, as Neuron Merging does).
        bias_compensation: also absorb the mean the compensation leaves, E[f_p] − S·E[f_k], into
            the next layer (its bias, the running mean of the BatchNorm that alone follows it, or
            a new fp32 bias, counted). Without it the closed form is the scale alone.
        mean_shift: the mean of a quantized channel's pre-activation: "bn" estimates the shift
            (W̃ − W)·E[x] from the BatchNorm before the layer (as DFQ does; layers without one use
            0), "none" takes it as unchanged.
        quadrature_points: points per dimension of the trapezoid rule (on ±8 standard
            deviations) for the Gaussian expectations of the activation; the search over all
            pruned × kept pairs uses at most 17. Exact for a linear activation; about 1e-3 at
            ReLU's kink with 65.
    """

    sparsity: float = dataclasses.field(default=0.0, metadata={"range": "[0, 1)"})
    scope: Literal["layer", "global"] = "layer"
    criterion: Literal["l2", "l1"] = "l2"
    bits: int = dataclasses.field(default=6, metadata={"range": "2..8 or 32"})
    granularity: Literal["channel", "tensor"] = "channel"
    symmetric: bool = True
    scale_bits: int = 32
    skip_first: bool = False
    skip_last: bool = False
    pairing: Literal["error", "cosine"] = "error"
    bias_compensation: bool = True
    mean_shift: Literal["bn", "none"] = "bn"
    quadrature_points: int = dataclasses.field(default=65, metadata={"range": "9..1025"})

    def __post_init__(self) -> None:
        check(
            isinstance(self.sparsity, (int, float)) and 0.0 <= self.sparsity < 1.0,
            f"sparsity must be in [0, 1), got {self.sparsity!r}",
            "sparsity",
        )
        one_of(self.scope, ("layer", "global"), "scope")
        one_of(self.criterion, CRITERIA, "criterion")
        check(
            isinstance(self.bits, int) and not isinstance(self.bits, bool) and (2 <= self.bits <= 8 or self.bits == 32),
            f"bits must be an int in 2..8, or 32 (weights left fp32: prune only), got {self.bits!r}",
            "bits",
        )
        one_of(self.granularity, ("channel", "tensor"), "granularity")
        check(self.scale_bits in (16, 32), f"scale_bits must be 16 or 32, got {self.scale_bits!r}", "scale_bits")
        one_of(self.pairing, PAIRINGS, "pairing")
        one_of(self.mean_shift, ("bn", "none"), "mean_shift")
        check(
            isinstance(self.quadrature_points, int) and 9 <= self.quadrature_points <= 1025,
            f"quadrature_points must be an int in 9..1025, got {self.quadrature_points!r}",
            "quadrature_points",
        )

    @property
    def quantizes(self) -> bool:
        return self.bits != 32

    @property
    def track(self) -> str:
        return "data-free"
