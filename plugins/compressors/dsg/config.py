"""The settings of ``dsg``."""

from __future__ import annotations

import dataclasses
from typing import Literal

from b2s_bench import check
from b2s_bench.calibration import DSG, SynthesisConfig

__all__ = ["DSGConfig", "ROUNDINGS"]

ROUNDINGS = ("nearest", "adaround")


@dataclasses.dataclass(frozen=True)
class DSGConfig:
    """Settings of ``dsg``: per-channel affine weight quantization, and DSG's diverse samples.

    Attributes:
        bits: weight bits, 2-8 (the paper reports W4A4, W6A6 and W8A8; activation bits are the
            suite's ``activations`` stage, calibrated on this method's samples).
        rounding: "nearest" (round to nearest on the per-channel min/max grid: the ZeroQ pipeline
            behind the authors' DSG-PTQ numbers) or "adaround" (AdaRound on the DSG samples: the
            paper's "DSG + AdaRound" post-training setting).
        scale_bits: stored precision of the per-channel scales (16 or 32).
        samples: synthesized images in all.
        batch_size: images optimised together (the authors: 64).
        iterations: Adam steps per batch (the authors: 500).
        lr: Adam's learning rate on the images (cosine decay; the authors' code: 0.9 with plateau decay).
        slack: SDA margin of the BN statistics match (0: every deviation costs, as ZeroQ).
        slack_rule: "relative" (margin = slack × the channel's BN standard deviation) or "absolute".
        emphasis: LSE: the extra weight sample i puts on BN layer (i mod L) (the authors' code: 1; 0: none).
        diversity_weight: weight of the inter-sample correlation penalty (journal version; 0: none).
        adaround_iterations / adaround_lr / adaround_lambda / adaround_batch: AdaRound's optimisation
            (rounding "adaround" only).
    """

    bits: int = 4
    rounding: Literal["nearest", "adaround"] = "nearest"
    scale_bits: int = 32
    samples: int = DSG.samples
    batch_size: int = DSG.batch_size
    iterations: int = DSG.iterations
    lr: float = DSG.lr
    slack: float = DSG.slack
    slack_rule: Literal["relative", "absolute"] = "relative"
    emphasis: float = DSG.emphasis
    diversity_weight: float = DSG.diversity_weight
    adaround_iterations: int = 500
    adaround_lr: float = 0.01
    adaround_lambda: float = 0.01
    adaround_batch: int = 32

    def __post_init__(self) -> None:
        check(2 <= self.bits <= 8, f"bits must be in 2..8, got {self.bits}", "bits")
        check(self.samples >= 2, f"samples must be >= 2 (a batch's statistics), got {self.samples}", "samples")
        check(self.rounding in ROUNDINGS, f"rounding must be one of {ROUNDINGS}, got {self.rounding!r}", "rounding")
        check(self.scale_bits in (16, 32), f"scale_bits must be 16 or 32, got {self.scale_bits}", "scale_bits")
        check(
            self.adaround_iterations >= 0,
            f"adaround_iterations must be >= 0, got {self.adaround_iterations}",
            "adaround_iterations",
        )
        check(self.adaround_batch >= 1, f"adaround_batch must be >= 1, got {self.adaround_batch}", "adaround_batch")
        check(self.adaround_lr > 0, f"adaround_lr must be > 0, got {self.adaround_lr}", "adaround_lr")
        check(self.adaround_lambda >= 0, f"adaround_lambda must be >= 0, got {self.adaround_lambda}", "adaround_lambda")
        self.synthesis()  # the synthesis settings are checked there (samples, batch_size, slack, ...)

    def synthesis(self) -> SynthesisConfig:
        """The synthesizer's settings: the DSG preset with these samples and terms."""
        return dataclasses.replace(
            DSG,
            samples=self.samples,
            batch_size=min(self.batch_size, self.samples),
            iterations=self.iterations,
            lr=self.lr,
            slack=self.slack,
            slack_rule=self.slack_rule,
            emphasis=self.emphasis,
            diversity_weight=self.diversity_weight,
        )
