"""The settings of ``awq`` (torch-free: suites load them before any model)."""

from __future__ import annotations

import dataclasses

from b2s_bench import check

__all__ = ["AWQConfig", "CLIP_SKIP"]

#: layers whose weights the authors' code never clips (auto_clip.py: the q·k product is hard to clip for)
CLIP_SKIP = ("q_", "k_", "query", "key", "Wqkv")


@dataclasses.dataclass(frozen=True)
class AWQConfig:
    """Settings of ``awq`` (Lin et al., MLSys 2024).

    Attributes:
        bits: bits of each weight code (2-8); INT4 is the paper's setting.
        group_size: weights per group along the input dimension (the paper's g128).
        symmetric: a symmetric grid; false (the authors' code, ``zero_point=True``): affine with a
            b-bit zero point per group.
        scale_bits: stored precision of the grid scales and of a stored per-channel AWQ scale (16: fp16,
            as the authors' kernels; or 32).
        alpha_grid: α is searched on the points i / alpha_grid, i = 0 .. alpha_grid − 1 (the paper: 20 points
            in [0, 1)).
        alpha: a fixed α instead of the search (null: search). α = 0 gives scales of 1: round-to-nearest.
        fold: fold each scale into the operation before the layer where the model allows it (a norm's
            weight and bias, or the previous linear layer's output rows; every fold is checked on a
            calibration batch to leave the dense model's output unchanged); false stores every scale in
            its layer's code.
        auto_clip: after scaling, search each group's clipping range on the layer's output error (the
            authors' ``auto_clip``, on by default in their code).
        clip_grid / clip_max_shrink: the clipping search tries max|w|·(1 − i / clip_grid) for
            i < clip_max_shrink·clip_grid (the authors: 20 and 0.5).
        clip_tokens: calibration tokens (input rows) the clipping error is measured on (the authors: 512).
        clip_skip: layers whose name contains one of these are not clipped (the authors' list: queries and
            keys).
        search_tokens: the most input rows (for a convolution: whole inputs holding as many positions)
            kept per layer for the scale search; the per-channel mean |x| uses every calibration token.
        calibration_samples: calibration inputs (the paper: 128 samples).
        batch_size: calibration inputs per forward pass.
    """

    bits: int = 4
    group_size: int = 128
    symmetric: bool = False
    scale_bits: int = 16
    alpha_grid: int = 20
    alpha: float | None = None
    fold: bool = True
    auto_clip: bool = True
    clip_grid: int = 20
    clip_max_shrink: float = 0.5
    clip_tokens: int = 512
    clip_skip: tuple[str, ...] = CLIP_SKIP
    search_tokens: int = 4096
    calibration_samples: int = 128
    batch_size: int = 16

    def __post_init__(self) -> None:
        check(isinstance(self.bits, int) and 2 <= self.bits <= 8, f"bits must be an integer in 2..8, got {self.bits!r}", "bits")
        check(self.group_size >= 1, f"group_size must be >= 1, got {self.group_size}", "group_size")
        check(self.scale_bits in (16, 32), f"scale_bits must be 16 or 32, got {self.scale_bits}", "scale_bits")
        check(self.alpha_grid >= 1, f"alpha_grid must be >= 1 (points of the α search), got {self.alpha_grid}", "alpha_grid")
        check(
            self.alpha is None or 0.0 <= self.alpha <= 1.0,
            f"alpha must be in [0, 1] or null (search it), got {self.alpha}",
            "alpha",
        )
        check(self.clip_grid >= 1, f"clip_grid must be >= 1, got {self.clip_grid}", "clip_grid")
        check(
            0.0 <= self.clip_max_shrink < 1.0,
            f"clip_max_shrink must be in [0, 1), got {self.clip_max_shrink}",
            "clip_max_shrink",
        )
        for key in ("clip_tokens", "search_tokens", "calibration_samples", "batch_size"):
            check(getattr(self, key) >= 1, f"{key} must be >= 1, got {getattr(self, key)}", key)
        check(
            isinstance(self.clip_skip, (tuple, list)) and all(isinstance(s, str) for s in self.clip_skip),
            f"clip_skip must be a list of name fragments, got {self.clip_skip!r}",
            "clip_skip",
        )
