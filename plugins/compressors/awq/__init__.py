"""AWQ (Lin et al., MLSys 2024, "AWQ: Activation-aware Weight Quantization for LLM Compression and
Acceleration"): weight-only group quantization that protects the salient input channels (those with
large activations) by scaling them up before rounding.

Per group of layers that read one input: s = mean|x|^α per input channel, α searched on 20 points in
[0, 1) for the least output error of the group after quantization (the paper's search,
:mod:`.search`); W becomes W·diag(s) and the input x·diag(s)⁻¹. The 1/s is folded into the operation
before the layers where the model allows it (:mod:`.fold`: a LayerNorm/RMSNorm's weight and bias before
q, k, v or the MLP's first layers; the previous linear layer for v → o and up → down; each fold checked
to leave the dense model's output unchanged) and otherwise stored in the layer's code as a
per-channel vector (:class:`.codes.AWQCode`, counted in bits) and undone at decode. Then the authors'
``auto_clip`` (on by default) and round-to-nearest on an INT4 g128 affine grid (quantize's UniformCode,
so the bits are exact and entropy stages compose). α = 0 is round-to-nearest exactly.

The pass runs block by block (the core's :func:`b2s_bench.calibration.calibrate_blocks`: mean |x| per
channel from it, a bounded sample of each layer's input for the searches from :mod:`.stats`); later
blocks see the earlier ones scaled and clipped in fp, as in the authors' code.

Ours (documented where made): the group's loss is the summed output error of its layers (the authors' code
measures the whole attention or MLP block's output); convolutions are scaled like linear layers (input
channels) but not clipped; grouped convolutions are rounded to nearest.

The package: :mod:`.config`, :mod:`.stats`, :mod:`.fold`, :mod:`.search`, :mod:`.codes`,
:mod:`.compressor`, and here its registration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import b2s_bench as b2s
from b2s_bench import CompressorSpec

from .config import CLIP_SKIP, AWQConfig

if TYPE_CHECKING:  # for type checkers; at run time the names below load on first use (torch)
    from .codes import AWQCode
    from .compressor import compress
    from .fold import Fold, find_folds
    from .search import activation_scale, rtn, search_clip, search_scale
    from .stats import keep_samples

__all__ = [
    "SPEC",
    "AWQConfig",
    "CLIP_SKIP",
    "AWQCode",
    "Fold",
    "find_folds",
    "keep_samples",
    "activation_scale",
    "rtn",
    "search_scale",
    "search_clip",
    "compress",
]

__getattr__, __dir__ = b2s.lazy_exports(
    __name__,
    globals(),
    {
        "AWQCode": ".codes",
        "compress": ".compressor",
        "Fold": ".fold",
        "find_folds": ".fold",
        "activation_scale": ".search",
        "rtn": ".search",
        "search_clip": ".search",
        "search_scale": ".search",
        "keep_samples": ".stats",
    },
)

SPEC = CompressorSpec(
    name="awq",
    family="quantization",
    track="calibration",
    config=AWQConfig,
    compress=b2s.lazy(".compressor:compress", __name__),
    codes=(
        b2s.lazy("..quantize.codes:UniformCode", __name__, kind="quantize.uniform"),
        b2s.lazy(".codes:AWQCode", __name__, kind="awq.scaled"),
    ),
    identity=None,  # none: its codes are 2-8 bits
    version="2",  # 2: info["reparametrized"] when scales were folded (weight metrics not applicable)
    quick={"calibration_samples": 16, "alpha_grid": 4, "clip_grid": 4, "search_tokens": 256, "clip_tokens": 64},
    description="AWQ (MLSys 2024): activation-aware per-channel scales (mean|x|^α, α searched), folded into "
    "the norm or previous layer or stored, auto-clip, INT4 g128 round-to-nearest",
    defaults_source="the paper: AWQ, Lin et al. MLSys 2024, Sec. 3.2-3.3 (INT4 g128, α grid of 20, 128 "
    "calibration samples); auto_clip, the affine grid and fp16 scales from the authors' code (mit-han-lab/llm-awq, "
    "awq/quantize/auto_scale.py, auto_clip.py)",
)


@b2s.hookimpl
def b2s_register_compressors(register: Callable[[b2s.CompressorSpec], None]) -> None:
    register(SPEC)
