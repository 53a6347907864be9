"""Settings of ``big2small``. Every [D] choice of ours (see docs/big2small.md) is a setting here."""

from __future__ import annotations

import dataclasses
from typing import Literal

from b2s_bench import ADDED_SETTING, check

#: the settings' choices, here so that the config imports no torch (the modules that use them import them from here)
LAYOUTS = ("2d", "nd")
FOURIERS = ("log", "gaussian")
GDL_FORMS = ("signed", "mathieu")
PERMUTES = ("none", "pca", "greedy")
SAMPLINGS = ("random", "tiles")

__all__ = ["Big2SmallConfig", "FLOAT_BITS", "QAT_AUTO_BITS"]

FLOAT_BITS = (16, 32)
QAT_AUTO_BITS = 6


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
        target_bits: > 0 replaces ``target_ratio``: each layer's INR gets the largest width whose whole
            code (INR at ``inr_bits``, scales, outliers, orders, header: every counted bit) takes at most
            ``target_bits`` bits per weight of the tensor (for comparisons at equal bits).
        width: > 0 gives every layer this width instead (the budget given directly).
        depth, omega0, frequencies, fourier, layout, mod_width, block: the INR (see ``inr.py``);
            ``block`` entries of a row per coordinate (1: one INR evaluation per weight). ω₀ = 10 rather
            than SIREN's 30: with Fourier features up to the Nyquist frequency, 30 fitted EfficientNet-Lite0
            weights worse (a 1152x192 conv, 1000 steps: relative error 0.96 with 30, 0.89 with 10).
        standardize: per-tensor standardisation before the fit (part of the preprocessing).
        outliers: "sigma" (|z| > kappa), "top" (the top_percent largest |z|) or "none".
        lambda_grad, lambda_freq, focal_alpha, gdl: the Frequency-Aware Loss (a λ of 0 switches its
            term off; ``gdl`` picks the form of the gradient-difference term, see ``loss.py``).
        steps: the step budget (paper [S]: 10,000 epochs; our CPU default is much lower).
        lr, weight_decay, warmup_steps: AdamW; the learning rate rises linearly over ``warmup_steps``,
            then follows a cosine to 0 at ``steps``. lr 3e-4 rather than the paper's 1e-3 [S]: measured
            (``tune_big2small.py lr`` and ``grid``, omega0 10) on the Fashion-MNIST CNN's 128 x 3136 layer,
            3e-4 gave 26.57 dB against 25.93 after 4,000 steps (MSE loss) and 25.74 against 25.61 after
            2,000 (full loss); lr 3e-3 and above stuck at the trivial fit (25.0 dB, rel. error 0.92) at
            every budget, warm-up or not, and on EfficientNet-Lite0's three largest layers too. The best
            lr scales as about 3e-3 / omega0 (omega0 3: 3e-3; 5: 1e-3; 10: 3e-4).
        patch_rows, patch_cols, patches, sampling, chunk: what a step fits (see ``sampling.py``):
            ``patches`` crops of patch_rows x patch_cols entries of every layer's 2-D matrix (0 = the
            full extent of that axis), at random positions (``sampling="random"``) or as the tiles of
            a tiling in a fresh order every pass (``"tiles"``); ``patches=0`` takes every tile each
            step (the whole tensor: the paper's full-tensor epochs, with the frequency loss per tile).
            ``chunk`` > 0 evaluates at most that many INR coordinates at once, accumulating gradients
            (memory, e.g. full tensors on a GPU), the step unchanged. Defaults by measurement
            (``tune_big2small.py batch``, 40 s of fitting each on one core): 8 tiles of 32 x 32 per step
            in epochs reached 26.85 dB, 8 random crops 26.61, 2 random crops 26.50, 4 random 64 x 64
            crops 25.96, and the whole tensor per step 25.01 (20 steps): on a CPU minibatches converge
            far faster per second; a GPU evaluates whole tensors in parallel.
        eval_every, eval_points, target_psnr, patience, min_delta_db: the convergence curve and early
            stopping (see ``tracking.py``): every ``eval_every`` steps (0: ``steps / 20``) the weight
            PSNR on a fixed sample of ``eval_points`` entries per layer; a layer stops at
            ``target_psnr`` dB (0: off) or when ``patience`` points (0: off) bring less than
            ``min_delta_db``.
        batched: fit all layers together (stacked INRs, one optimizer step for all) or one layer
            after another (the naive loop; same INRs, steps, data and loss).
        inr_bits: stored precision of the INR parameters: 32 or 16 (float), or 2-8 (symmetric
            round-to-nearest with one fp32 scale per row of each matrix and per bias vector).
        qat: fit with the parameters fake-quantized (straight-through rounding, the stored per-row
            scales) from the first step, so the fit finds an INR that survives rounding: "on", "off", or
            "auto" = on for inr_bits <= QAT_AUTO_BITS. Measured (``tune_big2small.py quant``, 2,000
            steps): 6-bit QAT beat rounding after the fit by +0.17 to +0.83 dB on a smooth layer the INR
            fits to 41 dB (omega0 3, 5, 10) and was even (-0.02 dB) on the Fashion-MNIST CNN's layer;
            8-bit QAT lost -1.04 and -0.26 dB at omega0 3 and 10 (+0.14 at 5), where rounding after the
            fit costs at most 0.05 dB.
        finetune_steps, finetune_lr: quantization-aware fine-tuning after the fit, for inr_bits <= 8.
        permute: reorder rows and columns before the fit so neighbours are alike ("pca", "greedy";
            see ``permute.py``; the orders are stored and counted) or not ("none", the default: measured
            with ``tune_big2small.py permute`` on the Fashion-MNIST CNN, greedy raised the PSNR by
            0.39 dB (pca 0.14) but its tables raised the rate more, so the gap to the Gaussian limit
            grew: +44.31 -> +44.51 dB (fp32 INR), +10.63 -> +10.83 dB (6-bit)).
        deploy_cache: the deployed form decodes each weight once and keeps it (else on every forward).
        small_bits: 0 stores the conv/linear weights that get no INR (below ``min_bytes``, or whose INR
            would not be smaller) as fp32, as the paper does; 2-8 quantizes them per output channel
            (symmetric round-to-nearest, the ``quantize`` plugin's code), so at a given total size the
            bits go to the large layers the INRs code (the ablation's "small layers quantized too").
        nan_retries, nan_lr_factor, on_failure: a layer whose fit diverges (a non-finite loss or
            parameter) is refitted from the same start with lr x nan_lr_factor, up to nan_retries
            times; if it still fails it is stored raw ("raw") or the compression fails ("raise").
        precision: "fp32", or "bf16" to evaluate the INRs under autocast (mixed precision: the
            parameters, optimizer and loss stay fp32). ``benchmarks/bench_big2small.py --precision``
            measures its speed and error against fp32.
    """

    min_bytes: int = 102400
    target_ratio: float = 4.0
    target_bits: float = dataclasses.field(default=0.0, metadata=ADDED_SETTING)
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
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = dataclasses.field(default=0, metadata=ADDED_SETTING)
    patch_rows: int = 32
    patch_cols: int = 32
    patches: int = 8
    sampling: Literal["random", "tiles"] = dataclasses.field(default="tiles", metadata=ADDED_SETTING)
    chunk: int = dataclasses.field(default=0, metadata=ADDED_SETTING)
    eval_every: int = dataclasses.field(default=0, metadata=ADDED_SETTING)
    eval_points: int = dataclasses.field(default=16384, metadata=ADDED_SETTING)
    target_psnr: float = dataclasses.field(default=0.0, metadata=ADDED_SETTING)
    patience: int = dataclasses.field(default=0, metadata=ADDED_SETTING)
    min_delta_db: float = dataclasses.field(default=0.05, metadata=ADDED_SETTING)
    batched: bool = True
    inr_bits: int = 32
    qat: Literal["auto", "on", "off"] = dataclasses.field(default="auto", metadata=ADDED_SETTING)
    finetune_steps: int = 0
    finetune_lr: float = 1e-4
    permute: Literal["none", "pca", "greedy"] = dataclasses.field(default="none", metadata=ADDED_SETTING)
    deploy_cache: bool = dataclasses.field(default=False, metadata=ADDED_SETTING)
    small_bits: int = dataclasses.field(default=0, metadata=ADDED_SETTING)
    nan_retries: int = 2
    nan_lr_factor: float = 0.1
    on_failure: Literal["raw", "raise"] = "raw"
    precision: Literal["fp32", "bf16"] = dataclasses.field(default="fp32", metadata=ADDED_SETTING)

    def __post_init__(self) -> None:
        check(self.min_bytes >= 0, f"min_bytes must be >= 0, got {self.min_bytes}", "min_bytes")
        check(self.target_ratio > 0, f"target_ratio must be > 0, got {self.target_ratio}", "target_ratio")
        check(self.width >= 0, f"width must be >= 0 (0: chosen from target_ratio), got {self.width}", "width")
        check(self.width_multiple >= 1, f"width_multiple must be >= 1, got {self.width_multiple}", "width_multiple")
        check(
            self.max_width >= self.width_multiple,
            f"max_width must be >= width_multiple ({self.width_multiple}), got {self.max_width}",
            "max_width",
        )
        check(self.depth >= 1, f"depth must be >= 1, got {self.depth}", "depth")
        check(self.omega0 > 0, f"omega0 must be > 0, got {self.omega0}", "omega0")
        check(self.frequencies >= 1, f"frequencies must be >= 1, got {self.frequencies}", "frequencies")
        check(self.fourier in FOURIERS, f"fourier must be one of {list(FOURIERS)}, got {self.fourier!r}", "fourier")
        check(self.layout in LAYOUTS, f"layout must be one of {list(LAYOUTS)}, got {self.layout!r}", "layout")
        check(self.mod_width >= 0, f"mod_width must be >= 0, got {self.mod_width}", "mod_width")
        check(self.block >= 1, f"block must be >= 1, got {self.block}", "block")
        check(self.kappa > 0, f"kappa must be > 0, got {self.kappa}", "kappa")
        check(0 < self.top_percent < 100, f"top_percent must be in (0, 100), got {self.top_percent}", "top_percent")
        for key in ("lambda_grad", "lambda_freq"):
            check(getattr(self, key) >= 0, f"{key} must be >= 0, got {getattr(self, key)}", key)
        check(self.gdl in GDL_FORMS, f"gdl must be one of {list(GDL_FORMS)}, got {self.gdl!r}", "gdl")
        check(self.focal_alpha > 0, f"focal_alpha must be > 0, got {self.focal_alpha}", "focal_alpha")
        check(self.steps >= 1, f"steps must be >= 1, got {self.steps}", "steps")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}", "lr")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}", "weight_decay")
        check(self.patch_rows >= 0, f"patch_rows must be >= 0 (0: full), got {self.patch_rows}", "patch_rows")
        check(self.patch_cols >= 0, f"patch_cols must be >= 0 (0: full), got {self.patch_cols}", "patch_cols")
        check(self.patches >= 0, f"patches must be >= 0 (0: every tile), got {self.patches}", "patches")
        check(self.target_bits >= 0, f"target_bits must be >= 0 (0: target_ratio decides), got {self.target_bits}", "target_bits")
        check(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}", "warmup_steps")
        check(self.sampling in SAMPLINGS, f"sampling must be one of {list(SAMPLINGS)}, got {self.sampling!r}", "sampling")
        for key in ("chunk", "eval_every", "patience"):
            check(getattr(self, key) >= 0, f"{key} must be >= 0, got {getattr(self, key)}", key)
        check(self.eval_points >= 1, f"eval_points must be >= 1, got {self.eval_points}", "eval_points")
        check(self.target_psnr >= 0, f"target_psnr must be >= 0 dB (0: off), got {self.target_psnr}", "target_psnr")
        check(self.min_delta_db >= 0, f"min_delta_db must be >= 0, got {self.min_delta_db}", "min_delta_db")
        check(self.qat in ("auto", "on", "off"), f"qat must be auto, on or off, got {self.qat!r}", "qat")
        check(self.permute in PERMUTES, f"permute must be one of {list(PERMUTES)}, got {self.permute!r}", "permute")
        check(
            2 <= self.inr_bits <= 8 or self.inr_bits in FLOAT_BITS,
            f"inr_bits must be in 2..8, 16 or 32, got {self.inr_bits}",
            "inr_bits",
        )
        check(
            self.small_bits == 0 or 2 <= self.small_bits <= 8,
            f"small_bits must be 0 (fp32) or in 2..8, got {self.small_bits}",
            "small_bits",
        )
        check(self.finetune_steps >= 0, f"finetune_steps must be >= 0, got {self.finetune_steps}", "finetune_steps")
        check(self.finetune_lr > 0, f"finetune_lr must be > 0, got {self.finetune_lr}", "finetune_lr")
        check(self.nan_retries >= 0, f"nan_retries must be >= 0, got {self.nan_retries}", "nan_retries")
        check(self.precision in ("fp32", "bf16"), f"precision must be 'fp32' or 'bf16', got {self.precision!r}", "precision")
        check(0 < self.nan_lr_factor <= 1, f"nan_lr_factor must be in (0, 1], got {self.nan_lr_factor}", "nan_lr_factor")
        check(self.on_failure in ("raw", "raise"), f"on_failure must be raw or raise, got {self.on_failure!r}", "on_failure")

    @property
    def quant_aware_bits(self) -> int | None:
        """The bit width the fit fake-quantizes to from the first step (None: it fits in fp32)."""
        on = self.qat == "on" or (self.qat == "auto" and self.inr_bits <= QAT_AUTO_BITS)
        return self.inr_bits if on and self.inr_bits <= 8 else None

    @property
    def min_numel(self) -> int:
        """Smallest number of fp32 values compressed: more than ``min_bytes`` bytes."""
        return self.min_bytes // 4 + 1
