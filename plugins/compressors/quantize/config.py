"""The settings of ``quantize`` and the data track they need."""

from __future__ import annotations

import dataclasses
from typing import Literal

from b2s_bench import check

__all__ = ["QuantizeConfig", "data_track", "FLOAT_BITS"]

#: the bit widths stored as floats (fp16, fp32) rather than as integer codes
FLOAT_BITS = (16, 32)


@dataclasses.dataclass(frozen=True)
class QuantizeConfig:
    """Settings of ``quantize``.

    Attributes:
        bits: 2-8 for integer codes; 16 or 32 store fp16 / fp32 (32 reproduces the dense model).
        granularity: one scale per tensor, per output channel, or per group of ``group_size``
            consecutive weights of an output channel.
        group_size: weights per group (granularity "group" only); the last group of a channel is
            padded with zeros, and the padding codes are stored and counted.
        symmetric: symmetric (no zero point) or affine (a b-bit zero point per group).
        range: the symmetric grid's scale. "full" (torchao's ``MappingType.SYMMETRIC``, the default):
            s = max|W| / ((2^b − 1) / 2), q = clamp(round(W · (1/s)), −2^(b−1), 2^(b−1) − 1), zero
            point 0, round half to even: ±max|W| fall on ties, −max|W| on −2^(b−1) (or one above where
            float32 puts W · (1/s) a hair inside), +max|W| clipped half a step to 2^(b−1) − 1. "restricted" (this
            plugin before version 4): s = max|W| / (2^(b−1) − 1), q = round(W / s); round-to-nearest
            then never uses −2^(b−1) (MSE clipping can: the code is stored either way, b bits).
            Affine grids always span all 2^b codes: "restricted" needs ``symmetric: true``.
        clipping: "minmax" (round-to-nearest over the min/max of each group) or "mse" (MSE-optimal
            clipping: a shrink of that range per group).
        scale_bits: stored precision of the scales (16 or 32).
        skip_first / skip_last: keep the first / last conv or linear layer in fp32.
        bias_correction: correct each layer's bias by −(Ŵ − W)·E[x] (DFQ): "bn" estimates E[x]
            data-free from the BatchNorm (+ activation) before the layer (other layers are skipped
            and recorded; on a model without BatchNorm, e.g. a LayerNorm transformer, none is corrected and
            the record's caveat says why);
            "synthetic" / "calibration" measure the shift on synthesized / real inputs.
        absorb_bias: a corrected layer without a bias whose only consumer is a BatchNorm shifts that
            BN's running mean instead (exact, no extra bits); otherwise a bias is added (fp32, counted).
        activation_bits: simulated quantization of each quantized layer's input (None: weights only);
            it does not change the storage.
        activation_calibration: where the activation ranges come from: "synthetic" (ZeroQ-style
            inputs synthesized from the BN statistics) or "calibration" (real calibration inputs).
        activation_range: "minmax" or "mse" (the shrink of the range with the least error).
        adaround: learn the rounding per layer on calibration inputs (AdaRound) instead of rounding
            to nearest; the grid (scales, zero points, clipping) stays the one set above.
        adaround_iterations / adaround_lr / adaround_lambda / adaround_batch: its optimisation.
        calibration_samples: real calibration inputs used (AdaRound, ranges, bias correction).
        synthetic_samples / synthetic_iterations / synthetic_lr: the synthesized inputs.
    """

    bits: int = 8
    granularity: Literal["tensor", "channel", "group"] = "channel"
    group_size: int = 128
    symmetric: bool = True
    range: Literal["full", "restricted"] = "full"
    clipping: Literal["minmax", "mse"] = "minmax"
    scale_bits: int = 32
    skip_first: bool = False
    skip_last: bool = False
    bias_correction: Literal["none", "bn", "synthetic", "calibration"] = "none"
    absorb_bias: bool = True
    activation_bits: int | None = None
    activation_calibration: Literal["synthetic", "calibration"] = "synthetic"
    activation_range: Literal["minmax", "mse"] = "mse"
    adaround: bool = False
    adaround_iterations: int = 500
    adaround_lr: float = 0.01
    adaround_lambda: float = 0.01
    adaround_batch: int = 32
    calibration_samples: int = 256
    synthetic_samples: int = 64
    synthetic_iterations: int = 500
    synthetic_lr: float = 0.5

    def __post_init__(self) -> None:
        check(2 <= self.bits <= 8 or self.bits in FLOAT_BITS, f"bits must be in 2..8, 16 or 32, got {self.bits}", "bits")
        check(self.range in ("full", "restricted"), f"range must be 'full' or 'restricted', got {self.range!r}", "range")
        check(
            self.symmetric or self.range == "full",
            "range 'restricted' applies to symmetric grids only (an affine grid spans all 2^bits codes): "
            "drop range or set symmetric: true",
            "range",
        )
        check(self.group_size >= 1, f"group_size must be >= 1, got {self.group_size}", "group_size")
        check(self.scale_bits in (16, 32), f"scale_bits must be 16 or 32, got {self.scale_bits}", "scale_bits")
        check(
            self.activation_bits is None or 2 <= self.activation_bits <= 16,
            f"activation_bits must be in 2..16 or null, got {self.activation_bits}",
            "activation_bits",
        )
        minimum = {
            "adaround_iterations": 0,
            "synthetic_iterations": 0,
            "adaround_batch": 1,
            "calibration_samples": 1,
            "synthetic_samples": 2,
        }
        for key, least in minimum.items():
            check(getattr(self, key) >= least, f"{key} must be >= {least}, got {getattr(self, key)}", key)
        for key in ("adaround_lr", "synthetic_lr"):
            check(getattr(self, key) > 0, f"{key} must be > 0, got {getattr(self, key)}", key)
        check(self.adaround_lambda >= 0, f"adaround_lambda must be >= 0, got {self.adaround_lambda}", "adaround_lambda")

    @property
    def uses_data(self) -> bool:
        return self.adaround or self.bias_correction != "none" or self.activation_bits is not None


def data_track(config: QuantizeConfig) -> str:
    """The data track the settings need: real inputs > synthesized inputs > weights only."""
    acts = config.activation_calibration if config.activation_bits is not None else None
    if config.adaround or "calibration" in (config.bias_correction, acts):
        return "calibration"
    if "synthetic" in (config.bias_correction, acts):
        return "synthetic"
    return "data-free"
