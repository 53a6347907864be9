"""The settings of ``smoothquant`` (torch-free: suites load them before any model)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from b2s_bench import check

__all__ = ["SmoothQuantConfig"]


@dataclasses.dataclass(frozen=True)
class SmoothQuantConfig:
    """Settings of ``smoothquant`` (Xiao et al., ICML 2023): W8A8 after migrating activation outliers
    into the weights.

    Attributes:
        alpha: migration strength α in s_j = max|X_j|^α / max|W_j|^(1−α) (0.5: the paper's default, its
            value for OPT and BLOOM; GLM-130B 0.75 in the paper; the authors' scripts use 0.85 for
            Llama and Llama-2, 0.8 for Mistral, 0.6 for Falcon).
        smooth: migrate at all (false: naive W8A8, the paper's baseline).
        weight_bits: bits of each weight (per output channel or per tensor, symmetric).
        weight_granularity: "channel" (the authors' fake-quant code's default) or "tensor" (the paper's
            O1-O3 levels).
        activation_bits: bits of every quantized layer input (symmetric).
        activation_mode: "static" (O3: one scale per layer input, max|X| / (2^(b−1) − 1) measured on the
            calibration inputs, applied by the core's activation quantizer and counted as its ranges) or
            "dynamic" (O1 as in the authors' code: per token, from each token's max|x| at run time; the core's
            per-token quantizer: no scales stored, the quantized layers and their bits are, counted as a
            header of 32 bits a layer, so a reloaded artifact quantizes its inputs as evaluated).
        scale_bits: stored precision of the weight scales (16: the paper's fp16 models, or 32).
        calibration_samples: calibration inputs the activation maxima are measured on (the paper: 512).
        batch_size: calibration inputs per forward pass.
    """

    alpha: float = 0.5
    smooth: bool = True
    weight_bits: int = 8
    weight_granularity: Literal["channel", "tensor"] = "channel"
    activation_bits: int = 8
    activation_mode: Literal["static", "dynamic"] = "static"
    scale_bits: int = 16
    calibration_samples: int = 512
    batch_size: int = 16

    def __post_init__(self) -> None:
        check(0.0 <= self.alpha <= 1.0, f"alpha must be in [0, 1], got {self.alpha}", "alpha")
        for key in ("weight_bits", "activation_bits"):
            value = getattr(self, key)
            check(isinstance(value, int) and 2 <= value <= 8, f"{key} must be an integer in 2..8, got {value!r}", key)
        check(
            self.weight_granularity in ("channel", "tensor"),
            f"weight_granularity must be 'channel' or 'tensor', got {self.weight_granularity!r}",
            "weight_granularity",
        )
        check(
            self.activation_mode in ("static", "dynamic"),
            f"activation_mode must be 'static' (per tensor) or 'dynamic' (per token), got {self.activation_mode!r}",
            "activation_mode",
        )
        check(self.scale_bits in (16, 32), f"scale_bits must be 16 or 32, got {self.scale_bits}", "scale_bits")
        for key in ("calibration_samples", "batch_size"):
            check(getattr(self, key) >= 1, f"{key} must be >= 1, got {getattr(self, key)}", key)
