"""The settings of ``hqq`` (torch-free: suites load them before any model)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from b2s_bench import check

__all__ = ["HQQConfig"]


@dataclasses.dataclass(frozen=True)
class HQQConfig:
    """Settings of ``hqq`` (Half-Quadratic Quantization, Badri & Shaji 2023).

    The defaults are the authors' (the hqq package 0.2.8: ``hqq_base_quant_config`` and
    ``optimize_weights_proximal_legacy``, its default solver).

    Attributes:
        bits: bits of each weight code (1-8); the grid is affine over each group's min/max, codes 0 .. 2^b − 1.
        group_size: weights per group (hqq's default 64); a row (axis 1) or the flattened tensor
            (axis 0) is padded with zeros to a multiple of it, and the padding codes are stored and counted.
        axis: how groups are formed, as in hqq: 1 (hqq's default): ``group_size`` consecutive weights
            of a row (the input dimension of a linear layer); 0: the flattened tensor read as
            ``group_size`` rows, each column a group (hqq's ``reshape([group_size, -1])``).
        lp_norm: p of the lp error the zero point minimises (hqq: 0.7, p < 1 suits heavy tails).
        beta: the half-quadratic penalty's starting weight (hqq: 1e1).
        kappa: beta's growth per iteration, beta ← kappa·beta (the paper and hqq's settings: 1.01; hqq's
            default solver, ``optimize_weights_proximal_legacy``, reads it but keeps beta fixed: kappa 1
            reproduces that solver's codes bit for bit).
        iterations: the most half-quadratic iterations (hqq: 20).
        early_stop: stop once the mean |W − Ŵ| of an iteration's reconstruction stops falling (hqq's
            default solver does; the zero point that iteration computed is kept, as in hqq).
        round_zero: round the starting zero point to an integer ("auto": hqq's rule, at 4 bits only).
        optimize_scale: before the zero-point iterations, search each group's scale on hqq's grid
            (129 shifts within ±5 % of the mean scale, least mean |W − Ŵ|: hqq's ``scale_gridsearch``,
            off in hqq's defaults).
        scale_bits: stored precision of scales and zero points (16: hqq's fp16 compute dtype, or 32).
        skip_first / skip_last: keep the first / last conv or linear layer in fp32
            (default: the last only, as the authors' code: a transformer's blocks, not its lm_head).
    """

    bits: int = 4
    group_size: int = 64
    axis: Literal[0, 1] = 1
    lp_norm: float = 0.7
    beta: float = 10.0
    kappa: float = 1.01
    iterations: int = 20
    early_stop: bool = True
    round_zero: Literal["auto", "yes", "no"] = "auto"
    optimize_scale: bool = False
    scale_bits: int = 16
    skip_first: bool = False
    skip_last: bool = True  # the authors run the transformer blocks only: the head (lm_head, classifier) stays dense

    def __post_init__(self) -> None:
        check(isinstance(self.bits, int) and 1 <= self.bits <= 8, f"bits must be an integer in 1..8, got {self.bits!r}", "bits")
        check(self.group_size >= 1, f"group_size must be >= 1, got {self.group_size}", "group_size")
        check(self.axis in (0, 1), f"axis must be 0 or 1 (hqq's two layouts), got {self.axis!r}", "axis")
        check(0.1 <= self.lp_norm <= 1.0, f"lp_norm must be in [0.1, 1] (hqq's range), got {self.lp_norm}", "lp_norm")
        check(self.beta > 0, f"beta must be > 0, got {self.beta}", "beta")
        check(self.kappa >= 1, f"kappa must be >= 1 (beta never shrinks), got {self.kappa}", "kappa")
        check(
            self.iterations >= 0,
            f"iterations must be >= 0 (0: the min/max grid, rounded), got {self.iterations}",
            "iterations",
        )
        check(
            self.round_zero in ("auto", "yes", "no"),
            f"round_zero must be 'auto', 'yes' or 'no', got {self.round_zero!r}",
            "round_zero",
        )
        check(self.scale_bits in (16, 32), f"scale_bits must be 16 or 32, got {self.scale_bits}", "scale_bits")

    @property
    def rounds_zero(self) -> bool:
        """Whether the starting zero point is rounded (hqq: at 4 bits)."""
        return self.bits == 4 if self.round_zero == "auto" else self.round_zero == "yes"
