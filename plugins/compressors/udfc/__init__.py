"""UDFC: unified data-free pruning and quantization without fine-tuning, re-implemented from the paper.

Bai, Chen, Shen, Qian, Liu, "Unified Data-Free Compression: Pruning and Quantization without
Fine-Tuning", ICCV 2023 (arXiv 2308.07209). No public code was available when this was written: it
is a clean-room re-implementation from the paper, and where the paper could not be read (only its
abstract and overview), the equations are our derivation from its stated assumption, with every
choice a setting.

The idea: when channels of a layer are pruned, or its weights quantized, what the damaged channel
loses is in part a linear function of a channel that is left; the next layer absorbs it by adding
S × (its weights on the lost channel) to its weights on the kept one, with S in closed form from
the BatchNorm statistics (each channel before the activation taken as N(β, γ²)), minimising the
expected reconstruction error of the next layer's input (:mod:`.compensation`). Only where the
graph is a conv/linear → BatchNorm → activation → one dense conv/linear chain (:mod:`.chains`);
elsewhere layers are quantized only, and ``info`` says why.

Theory form: a pruned-and-quantized network W = s·(q − z) with fewer channels, whose next layer's
weights are the closed form's linear map of the dense ones; R(φ) = the grid's indicator and the
channel count.

Bits: quantized weights N·b + scales (+ zero points) + header (:class:`.codes.UDFCCode`, the
``quantize`` code under its own kind; the header holds the shrunk shape); everything else raw at
fp32 (shrunk BatchNorm rows, a next layer left fp32, a bias the compensation added), with 32 bits
a dimension for each raw tensor's new shape. Data track: data-free (weights and BatchNorm
statistics only).

The package: :mod:`.config`, :mod:`.compensation` (the closed form), :mod:`.chains` (where it
applies), :mod:`.codes`, :mod:`.compressor`, and here its registration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import b2s_bench as b2s
from b2s_bench import CompressorSpec

from .config import UDFCConfig

if TYPE_CHECKING:  # for type checkers; at run time the names below load on first use (torch)
    from .codes import UDFCCode
    from .compressor import compress, prune_plan, target

__all__ = ["SPEC", "UDFCConfig", "UDFCCode", "compress", "prune_plan", "target"]

__getattr__, __dir__ = b2s.lazy_exports(
    __name__,
    globals(),
    {
        "UDFCCode": ".codes",
        "compress": ".compressor",
        "prune_plan": ".compressor",
        "target": ".compressor",
    },
)

SPEC = CompressorSpec(
    name="udfc",
    family="quantization",
    track="data-free",
    config=UDFCConfig,
    compress=b2s.lazy(".compressor:compress", __name__),
    codes=(b2s.lazy(".codes:UDFCCode", __name__, kind="udfc.uniform"),),
    identity={"sparsity": 0.0, "bits": 32},
    version="1",
    description="UDFC (re-implemented from the paper, arXiv 2308.07209): data-free channel pruning and "
    "quantization, the next layer absorbing the loss in closed form from the BatchNorm statistics",
    target=b2s.lazy(".compressor:target", __name__),
    defaults_source="re-implemented from the paper (no public code): UDFC, Bai et al. ICCV 2023, arXiv "
    "2308.07209; W6 as Big2Small's table runs UDFC on ResNet-18 (W6A6), no pruning by default; "
    "the joint-Gaussian model, pairing by least error and bias compensation are ours",
)


@b2s.hookimpl
def b2s_register_compressors(register: Callable[[b2s.CompressorSpec], None]) -> None:
    register(SPEC)
