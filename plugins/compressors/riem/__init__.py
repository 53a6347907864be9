"""RieM (Pei et al., ICML 2024, PMLR 235: "Data-free Neural Representation Compression with
Riemannian Neural Dynamics"): each weight as neuron states and a learned metric network, data-free.

Each chosen conv/linear weight, seen as a matrix out × in·k·k, is represented by a d-dimensional state
per output neuron and per input neuron and a small metric network that maps a pair of states to the
weight between the two neurons (the form of the authors' notebook, :mod:`.metric`). The states and the
metric are fitted to the weight alone (a reconstruction loss, no data), then the states are quantized
to ``bits`` bits (the paper's "W4": ResNet-50 W4A4, Swin-T W4A8 — we read the 4 as the bits of the
stored neuron states, the only tensors the notebook quantizes; the A bits are activations, a suite's
concern). The metric network stays fp32 and is counted so; the notebook counts it at the states' bits
without quantizing it. On a GPU, layers of one matrix shape and d are fitted together in one batched
network (on a CPU one after another: faster there, ``batch_layers``).

What is the paper's / the authors' code's and what is ours:

- the form W_ij = v·Σ_m σ(A_m(p_i + S^{s_m} q_j) + b_m) + c, M = 6 branches of width 14, Adam,
  full-batch MSE (the notebook sums the squares: the same Adam steps), the best of several random
  starts, per-dimension min-max quantization of the states: the authors' code
  (pzqpzq/flat-learning, RieM/ResNet50_to_RieM-8bits.ipynb);
- 4 state bits: the paper's W4;
- the size: the paper's reported ratios at 4 bits, 7.9 (ResNet-50) and 8.0 (Swin-T), whole model, as
  quoted by the Big2Small paper's comparison, give the default target ratio 8;
- ours: d chosen per layer from that target ratio; 2,000 steps at lr 3e-2 on the weights standardised
  per layer (mean and spread folded back into v and c) with a cosine schedule, instead of the
  notebook's 10^6 steps at 5e-5; 1 random start instead of 100; a grid of 2^n levels (the notebook's
  has 2^n + 1); states initialised U[−1, 1) with the output bias centring the start (theirs:
  U[0, 1), ``init: authors``; ours fits far faster); the optional refit of the metric network after
  quantization; the raw fallback.

Theory form: W = g_φ(P, Q), φ = the states and the metric network; R = |φ|, the parameter budget.

The package: :mod:`.config`, :mod:`.metric` (the form, the network, the state grids), :mod:`.codes`,
:mod:`.compressor`, and here its registration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import b2s_bench as b2s
from b2s_bench import CompressorSpec

from .config import DEFAULT_TARGET_RATIO, RiemConfig

if TYPE_CHECKING:  # for type checkers; at run time the names below load on first use (torch)
    from .codes import RiemCode, code_bits, code_meta
    from .compressor import choose_dim, compress, fit_group, matrix_shape, riem_layers
    from .metric import RiemNetwork, dequantize_states, metric_params, quantize_states, weights

__all__ = [
    "SPEC",
    "RiemConfig",
    "RiemCode",
    "RiemNetwork",
    "compress",
    "fit_group",
    "choose_dim",
    "matrix_shape",
    "riem_layers",
    "code_bits",
    "code_meta",
    "metric_params",
    "quantize_states",
    "dequantize_states",
    "weights",
    "DEFAULT_TARGET_RATIO",
]

__getattr__, __dir__ = b2s.lazy_exports(
    __name__,
    globals(),
    {
        "RiemCode": ".codes",
        "code_bits": ".codes",
        "code_meta": ".codes",
        "choose_dim": ".compressor",
        "compress": ".compressor",
        "cost": ".compressor",
        "fit_group": ".compressor",
        "matrix_shape": ".compressor",
        "riem_layers": ".compressor",
        "target": ".compressor",
        "RiemNetwork": ".metric",
        "dequantize_states": ".metric",
        "metric_params": ".metric",
        "quantize_states": ".metric",
        "weights": ".metric",
    },
)

SPEC = CompressorSpec(
    name="riem",
    family="inr",
    track="data-free",
    config=RiemConfig,
    compress=b2s.lazy(".compressor:compress", __name__),
    codes=(b2s.lazy(".codes:RiemCode", __name__, kind="riem.metric"),),
    identity=None,  # none: the states and metric approximate the weights; no setting makes them exact
    version="1",
    description="RieM: each weight as quantized neuron states and a learned metric network, fitted data-free",
    uses_gpu=True,
    quick={"steps": 40},
    cost=b2s.lazy(".compressor:cost", __name__),
    target=b2s.lazy(".compressor:target", __name__),
    defaults_source=(
        "the paper (Pei et al., ICML 2024: 4-bit states as in W4A4/W4A8; ratio about 8, as quoted by Big2Small's "
        "comparison) and the authors' code (pzqpzq/flat-learning, RieM/ResNet50_to_RieM-8bits.ipynb: the form, "
        "6 branches of width 14); ours: d per layer from target_ratio 8, 2,000 steps, lr 3e-2 cosine, 1 random "
        "start, centred U[-1,1) states (theirs: U[0,1), init: authors)"
    ),
)


@b2s.hookimpl
def b2s_register_compressors(register: Callable[[b2s.CompressorSpec], None]) -> None:
    register(SPEC)
