"""The settings of BN-statistics synthesis and its presets (torch-free: plugin configs hold them, and
suites are checked against those before any model loads). :mod:`.synthesis` does the synthesis."""

from __future__ import annotations

import dataclasses

from ..config import check

__all__ = ["SynthesisConfig", "ZEROQ", "DEEPINVERSION", "DSG", "BN_FORMS", "SLACK_RULES"]

BN_FORMS = ("zeroq", "deepinversion", "dsg")
SLACK_RULES = ("relative", "absolute")


@dataclasses.dataclass(frozen=True)
class SynthesisConfig:
    """Settings of the synthesizer.

    Attributes:
        samples: number of inputs made in all.
        batch_size: inputs optimised together (BN statistics are batch statistics).
        iterations: Adam steps per batch.
        lr: Adam's learning rate on the inputs (decayed to 0 by a cosine schedule).
        bn_weight: weight of the BN-statistics loss.
        first_bn_multiplier: extra weight of the first BN layer's term (DeepInversion: 10).
        ce_weight: weight of the cross-entropy toward random target labels (0: none).
        tv_weight / l2_weight: weights of the total-variation and ℓ2 priors on the inputs.
        jitter: largest random circular shift per step, as a fraction of the image side (0: none).
        flip: random horizontal flips per step.
        bn_form: "zeroq", "deepinversion" or "dsg", the form of the BN-statistics loss (module docstring).
        slack: DSG's SDA margin (bn_form "dsg"; 0: every deviation costs, as ZeroQ's code).
        slack_rule: "relative" (margin = slack × the channel's BN standard deviation) or "absolute"
            (margin = slack), for the means and the standard deviations alike.
        emphasis: DSG's LSE: the extra weight sample i puts on BN layer (i mod L) (bn_form "dsg";
            the authors' doubling, I + 1, is emphasis 1; 0: none).
        diversity_weight: weight of the inter-sample correlation penalty (0: none).
    """

    samples: int = 64
    batch_size: int = 64
    iterations: int = 500
    lr: float = 0.25
    bn_weight: float = 1.0
    first_bn_multiplier: float = 1.0
    ce_weight: float = 0.0
    tv_weight: float = 0.0
    l2_weight: float = 0.0
    jitter: float = 0.0
    flip: bool = False
    bn_form: str = "deepinversion"
    slack: float = 0.0
    slack_rule: str = "relative"
    emphasis: float = 0.0
    diversity_weight: float = 0.0

    def __post_init__(self) -> None:
        check(
            self.bn_form in BN_FORMS,
            f"bn_form must be one of {BN_FORMS}, got {self.bn_form!r}",
            "bn_form",
        )
        check(
            self.slack_rule in SLACK_RULES,
            f"slack_rule must be one of {SLACK_RULES}, got {self.slack_rule!r}",
            "slack_rule",
        )
        for key in ("slack", "emphasis"):
            check(getattr(self, key) >= 0, f"{key} must be >= 0, got {getattr(self, key)}", key)
            check(
                getattr(self, key) == 0 or self.bn_form == "dsg",
                f"{key} is DSG's (per-sample statistics): set bn_form: dsg, or {key}: 0",
                key,
            )
        check(self.samples >= 1, f"samples must be >= 1, got {self.samples}", "samples")
        check(
            self.batch_size >= 2,
            f"batch_size must be >= 2 (batch statistics), got {self.batch_size}",
            "batch_size",
        )
        check(self.iterations >= 0, f"iterations must be >= 0, got {self.iterations}", "iterations")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}", "lr")
        for key in ("bn_weight", "first_bn_multiplier", "ce_weight", "tv_weight", "l2_weight", "diversity_weight"):
            check(getattr(self, key) >= 0, f"{key} must be >= 0, got {getattr(self, key)}", key)
        check(0.0 <= self.jitter < 1.0, f"jitter must be in [0, 1), got {self.jitter}", "jitter")


#: ZeroQ's distilled data: its BN-statistics loss alone, Adam at ZeroQ's learning rate of 0.5.
ZEROQ = SynthesisConfig(lr=0.5, bn_form="zeroq")
#: DeepInversion-style: BN loss with a first-layer multiplier, CE toward labels, priors, jitter and flips
#: (the weights of the official ImageNet settings: r_feature 0.05, first BN x10, TV 1e-4, ℓ2 1e-5, 30/224 px).
DEEPINVERSION = SynthesisConfig(
    lr=0.2,
    bn_weight=0.05,
    first_bn_multiplier=10.0,
    ce_weight=1.0,
    tv_weight=1e-4,
    l2_weight=1e-5,
    jitter=30 / 224,
    flip=True,
)

#: DSG's diverse samples: per-sample statistics with slack (SDA) and layer emphasis (LSE), and the
#: journal version's inter-sample diversity term; Adam at ZeroQ's rate (the authors' code: 0.9 with
#: plateau decay), 500 steps, a batch of 64 (the authors' README). The slack of 0.1 BN standard
#: deviations and the diversity weight are ours (the paper's margins need real data; module docstring).
DSG = SynthesisConfig(
    lr=0.5,
    bn_form="dsg",
    slack=0.1,
    slack_rule="relative",
    emphasis=1.0,
    diversity_weight=1.0,
)
