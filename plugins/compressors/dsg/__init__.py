"""DSG (Zhang, Qin et al., "Diversifying Sample Generation for Accurate Data-Free Quantization",
CVPR 2021; journal version "Diverse Sample Generation", Qin et al. 2021): data-free post-training
quantization whose calibration samples are synthesized from the BatchNorm statistics *diversely*.

The samples come from :data:`b2s_bench.calibration.DSG` (slack alignment, layer emphasis, an
inter-sample diversity term; see :mod:`b2s_bench.calibration.synthesis`) and reach the pipeline two
ways: ``calibration_inputs`` hands them to a suite's ``activations`` stage (``ranges: synthetic``),
which calibrates this row's activation ranges on them, as the authors' DSG-PTQ does (the ZeroQ
pipeline: weights rounded on a per-channel min/max grid, activation ranges from the samples); and
``rounding: adaround`` learns each layer's rounding on them (the paper's DSG + AdaRound setting).
With ``rounding: nearest`` and no activation stage the weights are those of ``quantize`` with
per-channel affine min/max settings: what DSG changes is the data, and that data is used by the
activation stage (or by AdaRound).

Bits: as ``quantize``'s affine per-channel codes (N·b, a scale and a b-bit zero point per channel,
the header); the samples are not stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import b2s_bench as b2s
from b2s_bench import CompressorSpec

from .config import DSGConfig

if TYPE_CHECKING:  # for type checkers; at run time the names below load on first use (torch)
    from .compressor import calibration_inputs, compress, weight_config

__all__ = ["SPEC", "DSGConfig", "compress", "calibration_inputs", "weight_config"]

__getattr__, __dir__ = b2s.lazy_exports(
    __name__,
    globals(),
    {
        "UniformCode": "..quantize.codes",
        "calibration_inputs": ".compressor",
        "compress": ".compressor",
        "weight_config": ".compressor",
    },
)

SPEC = CompressorSpec(
    name="dsg",
    family="quantization",
    track="synthetic",
    config=DSGConfig,
    compress=b2s.lazy(".compressor:compress", __name__),
    codes=(b2s.lazy("..quantize.codes:UniformCode", __name__, kind="quantize.uniform"),),
    identity=None,  # 2-8 bits only: DSG quantizes
    version="1",
    quick={"samples": 4, "batch_size": 4, "iterations": 3, "adaround_iterations": 5},
    description="DSG: per-channel affine weight quantization (RTN or AdaRound) calibrated on diverse "
    "BN-statistics samples (slack alignment, layer emphasis, inter-sample diversity)",
    defaults_source="the authors' code (htqin/DSG, post_training_quantization/distill_data.py and uniform_test.py: "
    "per-sample statistics, layer emphasis doubling sample i's term of layer i, batch 64 as its README, 500 steps, "
    "per-channel min/max weights); ours: the slack of 0.1 BN std (its per-layer margin files are not shipped), "
    "the diversity term's form and weight, Adam's cosine schedule at ZeroQ's lr 0.5",
    calibration_inputs=b2s.lazy(".compressor:calibration_inputs", __name__),
)


@b2s.hookimpl
def b2s_register_compressors(register: Callable[[b2s.CompressorSpec], None]) -> None:
    register(SPEC)
