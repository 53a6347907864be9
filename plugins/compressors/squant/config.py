"""The settings of ``squant``."""

from __future__ import annotations

import dataclasses

from b2s_bench import check

__all__ = ["SQuantConfig"]


@dataclasses.dataclass(frozen=True)
class SQuantConfig:
    """Settings of ``squant`` (weights only: activations are the suite's ``activations:`` stage).

    The defaults are the paper's headline setting (Guo et al., ICLR 2022: 4-bit weights, the setting its
    abstract reports; SQuant-E, -K and -C together; it also reports 6 and 8 bits) and the authors'
    README and code for the grid (per output channel, affine, the min/max range only), fp32 scales and every conv and linear
    layer quantized.

    Attributes:
        bits: weight bits, 2-8 (the paper reports 4, 6 and 8; 4 is its headline).
        kernel_level: SQuant-K: flip elements of each kernel (the k×k weights of one (out, in) pair;
            a linear layer's row) until the kernel's summed rounding error is within 0.5 step.
        channel_level: SQuant-C: flip one element in each of the kernels chosen per output channel
            until the channel's summed rounding error is within 0.5 step (kernel sums then stay
            within 1 step). Without ``kernel_level`` it flips elements of the whole channel instead,
            as the paper's SQuant-E&C ablation. Both off: round to nearest (SQuant-E).
        symmetric: symmetric grid (no zero point, signed codes) instead of the paper's affine one
            (min/max range, a b-bit zero point per channel).
        scale_bits: stored precision of the per-channel scales (16 or 32); the flips are decided on
            the stored scale, so the bounds hold for the weights that decode.
        skip_first / skip_last: keep the first / last conv or linear layer in fp32 (the paper
            quantizes every layer's weights).
    """

    bits: int = 4
    kernel_level: bool = True
    channel_level: bool = True
    symmetric: bool = False
    scale_bits: int = 32
    skip_first: bool = False
    skip_last: bool = False

    def __post_init__(self) -> None:
        check(
            isinstance(self.bits, int) and 2 <= self.bits <= 8,
            f"bits must be an integer in 2..8, got {self.bits!r} (for fp16/fp32 weights use quantize with bits 16 or 32)",
            "bits",
        )
        check(self.scale_bits in (16, 32), f"scale_bits must be 16 or 32, got {self.scale_bits!r}", "scale_bits")
        for key in ("kernel_level", "channel_level", "symmetric", "skip_first", "skip_last"):
            value = getattr(self, key)
            check(isinstance(value, bool), f"{key} must be true or false, got {value!r}", key)

    @property
    def levels(self) -> str:
        """The paper's name of the variant: "E", "E&K", "E&C" or "E&K&C"."""
        return "&".join(["E", *(["K"] if self.kernel_level else []), *(["C"] if self.channel_level else [])])
