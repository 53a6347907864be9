"""Settings of ``big2small``. Every [D] choice of ours (see docs/big2small.md) is a setting here."""

from __future__ import annotations

import dataclasses
from typing import Literal

from b2s_bench import ADDED_SETTING, check

from .inr import FOURIERS, LAYOUTS
from .loss import GDL_FORMS

__all__ = ["Big2SmallConfig", "FLOAT_BITS"]

FLOAT_BITS = (16, 32)


@dataclasses.dataclass(frozen=True)
class Big2SmallConfig:
    """Settings of ``big2small``.

    Attributes:
        min_bytes: compress conv/linear weights whose fp32 size is larger than this many bytes
            (paper [S]: 100 KB = 102,400 bytes = 25,600 values); the rest are stored raw.
        target_ratio: the budget rule [D]: each layer's INR gets the largest width (a multiple of
            ``width_multiple``, at most ``max_width``) whose parameter count is at most N / target_ratio
            for a tensor of N values, i.e. the fp32 INR is ``target_ratio`` times smaller than the
            tensor; quantizing the INR to ``inr_bits`` then divides its size by another 32 / inr_bits.
        width: > 0 gives every layer this width instead (the budget given directly).
        depth, omega0, frequencies, fourier, layout, mod_width, block: the INR (see ``inr.py``);
            ``block`` entries of a row per coordinate (1: one INR evaluation per weight). ω₀ = 10 rather
            than SIREN's 30: with Fourier features up to the Nyquist frequency, 30 fitted EfficientNet-Lite0
            weights worse (a 1152x192 conv, 1000 steps: relative error 0.96 with 30, 0.89 with 10).
        standardize: per-tensor standardisation before the fit (part of the preprocessing).
        outliers: "sigma" (|z| > kappa), "top" (the top_percent largest |z|) or "none".
        lambda_grad, lambda_freq, focal_alpha, gdl: the Frequency-Aware Loss (a λ of 0 switches its
            term off; ``gdl`` picks the form of the gradient-difference term, see ``loss.py``).
        steps: optimizer steps (paper [S]: 10,000 epochs; our CPU default is much lower).
        lr, weight_decay: AdamW, with cosine annealing of the learning rate to 0 over ``steps``.
        patch_rows, patch_cols, patches: each step fits ``patches`` random crops of patch_rows x
            patch_cols entries of every layer's 2-D matrix (0 = the full extent of that axis; the
            paper's full-tensor epochs are patch_rows = patch_cols = 0).
        batched: fit all layers together (stacked INRs, one optimizer step for all) or one layer
            after another (the naive loop; same INRs, steps, data and loss).
        inr_bits: stored precision of the INR parameters: 32 or 16 (float), or 2-8 (symmetric
            round-to-nearest with one fp32 scale per row of each matrix and per bias vector).
        finetune_steps, finetune_lr: quantization-aware fine-tuning after quantizing
            (straight-through rounding), for inr_bits <= 8.
        nan_retries, nan_lr_factor, on_failure: a layer whose fit diverges (a non-finite loss or
            parameter) is refitted from the same start with lr x nan_lr_factor, up to nan_retries
            times; if it still fails it is stored raw ("raw") or the compression fails ("raise").
        precision: "fp32", or "bf16" to evaluate the INRs under autocast (mixed precision: the
            parameters, optimizer and loss stay fp32). ``benchmarks/bench_big2small.py --precision``
            measures its speed and error against fp32.
    """

    min_bytes: int = 102400
    target_ratio: float = 4.0
    width: int = 0
    width_multiple: int = 16
    max_width: int = 512
    depth: int = 3
    omega0: float = 10.0
    frequencies: int = 8
    fourier: Literal["log", "gaussian"] = "log"
    layout: Literal["2d", "nd"] = "2d"
    mod_width: int = 16
    block: int = 1
    standardize: bool = True
    outliers: Literal["none", "sigma", "top"] = "sigma"
    kappa: float = 3.0
    top_percent: float = 0.5
    lambda_grad: float = 1.0
    lambda_freq: float = 1.0
    focal_alpha: float = 1.0
    gdl: Literal["signed", "mathieu"] = "signed"
    steps: int = 300
    lr: float = 1e-3
    weight_decay: float = 0.01
    patch_rows: int = 32
    patch_cols: int = 32
    patches: int = 2
    batched: bool = True
    inr_bits: int = 32
    finetune_steps: int = 0
    finetune_lr: float = 1e-4
    nan_retries: int = 2
    nan_lr_factor: float = 0.1
    on_failure: Literal["raw", "raise"] = "raw"
    precision: Literal["fp32", "bf16"] = dataclasses.field(default="fp32", metadata=ADDED_SETTING)

    def __post_init__(self) -> None:
        check(self.min_bytes >= 0, f"min_bytes must be >= 0, got {self.min_bytes}", "min_bytes")
        check(self.target_ratio > 0, f"target_ratio must be > 0, got {self.target_ratio}", "target_ratio")
        check(self.width >= 0, f"width must be >= 0 (0: chosen from target_ratio), got {self.width}", "width")
        check(self.width_multiple >= 1, f"width_multiple must be >= 1, got {self.width_multiple}",
              "width_multiple")
        check(self.max_width >= self.width_multiple,
              f"max_width must be >= width_multiple ({self.width_multiple}), got {self.max_width}",
              "max_width")
        check(self.depth >= 1, f"depth must be >= 1, got {self.depth}", "depth")
        check(self.omega0 > 0, f"omega0 must be > 0, got {self.omega0}", "omega0")
        check(self.frequencies >= 1, f"frequencies must be >= 1, got {self.frequencies}", "frequencies")
        check(self.fourier in FOURIERS, f"fourier must be one of {list(FOURIERS)}, got {self.fourier!r}",
              "fourier")
        check(self.layout in LAYOUTS, f"layout must be one of {list(LAYOUTS)}, got {self.layout!r}", "layout")
        check(self.mod_width >= 0, f"mod_width must be >= 0, got {self.mod_width}", "mod_width")
        check(self.block >= 1, f"block must be >= 1, got {self.block}", "block")
        check(self.kappa > 0, f"kappa must be > 0, got {self.kappa}", "kappa")
        check(0 < self.top_percent < 100, f"top_percent must be in (0, 100), got {self.top_percent}",
              "top_percent")
        for key in ("lambda_grad", "lambda_freq"):
            check(getattr(self, key) >= 0, f"{key} must be >= 0, got {getattr(self, key)}", key)
        check(self.gdl in GDL_FORMS, f"gdl must be one of {list(GDL_FORMS)}, got {self.gdl!r}", "gdl")
        check(self.focal_alpha > 0, f"focal_alpha must be > 0, got {self.focal_alpha}", "focal_alpha")
        check(self.steps >= 1, f"steps must be >= 1, got {self.steps}", "steps")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}", "lr")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}", "weight_decay")
        check(self.patch_rows >= 0, f"patch_rows must be >= 0 (0: full), got {self.patch_rows}", "patch_rows")
        check(self.patch_cols >= 0, f"patch_cols must be >= 0 (0: full), got {self.patch_cols}", "patch_cols")
        check(self.patches >= 1, f"patches must be >= 1, got {self.patches}", "patches")
        check(2 <= self.inr_bits <= 8 or self.inr_bits in FLOAT_BITS,
              f"inr_bits must be in 2..8, 16 or 32, got {self.inr_bits}", "inr_bits")
        check(self.finetune_steps >= 0, f"finetune_steps must be >= 0, got {self.finetune_steps}",
              "finetune_steps")
        check(self.finetune_lr > 0, f"finetune_lr must be > 0, got {self.finetune_lr}", "finetune_lr")
        check(self.nan_retries >= 0, f"nan_retries must be >= 0, got {self.nan_retries}", "nan_retries")
        check(self.precision in ("fp32", "bf16"), f"precision must be 'fp32' or 'bf16', got {self.precision!r}",
              "precision")
        check(0 < self.nan_lr_factor <= 1, f"nan_lr_factor must be in (0, 1], got {self.nan_lr_factor}",
              "nan_lr_factor")
        check(self.on_failure in ("raw", "raise"),
              f"on_failure must be raw or raise, got {self.on_failure!r}", "on_failure")

    @property
    def min_numel(self) -> int:
        """Smallest number of fp32 values compressed: more than ``min_bytes`` bytes."""
        return self.min_bytes // 4 + 1
