"""Calibration without (or with) data: inputs synthesized from BatchNorm statistics, what the BatchNorm
statistics say about a layer's input, and activation ranges (public face).

- :mod:`~b2s_bench.calibration.synthesis`: :func:`synthesize` (ZeroQ's distilled data, DeepInversion-style
  priors, DSG's slack and diversity terms) with :class:`SynthesisConfig`, :data:`ZEROQ`,
  :data:`DEEPINVERSION`, :data:`DSG`, :func:`bn_loss`, :func:`bn_layers`, :func:`slack_term`,
  :func:`sample_similarity`;
- :mod:`~b2s_bench.calibration.graph`: the Gaussian model of a BN-fed layer's input
  (:func:`bn_input_models`, :func:`bn_input_means`), :func:`bn_successors`, the bias-correction shifts
  (:func:`analytic_shift`, :func:`measured_shifts`), and capturing inputs (:func:`layer_inputs`,
  :func:`run_hooked`);
- :mod:`~b2s_bench.calibration.ranges`: activation ranges on data or from BN statistics, and
  :func:`fake_quantize` (the core's activation quantizer), :func:`fake_quantize_per_token` (its dynamic
  per-token one);
- :mod:`~b2s_bench.calibration.layerwise`: block-by-block calibration (:func:`find_blocks`,
  :func:`calibrate_blocks`, optionally in GPTQ's true-sequential order by :func:`input_groups`,
  :class:`LayerStats`: Hessians 2·XᵀX/n with convolutions through im2col, per-channel mean/max |x|,
  column norms) and :func:`plan_peak_memory`: what GPTQ, SparseGPT, Wanda,
  AWQ and SmoothQuant run on;
- :mod:`~b2s_bench.calibration.stage`: the activations stage of a suite (:func:`apply_activations`,
  :class:`ActivationSettings`): W/A quantization for any weight compressor.

Plugins share these rather than copy them; the ``activations`` stage of a suite uses them too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_face

_EXPORTS = {
    **{
        name: "synthesis"
        for name in (
            "synthesize",
            "Synthesized",
            "bn_loss",
            "bn_layers",
            "slack_term",
            "sample_similarity",
        )
    },
    **{
        name: "graph"
        for name in (
            "bn_input_models",
            "BNInput",
            "bn_input_means",
            "bn_successors",
            "analytic_shift",
            "measured_shifts",
            "layer_inputs",
            "run_hooked",
        )
    },
    **{name: "synthesis_settings" for name in ("SynthesisConfig", "ZEROQ", "DEEPINVERSION", "DSG")},
    **{name: "ranges" for name in ("activation_ranges", "bn_activation_ranges", "fake_quantize", "fake_quantize_per_token")},
    **{name: "settings" for name in ("ActivationSettings", "RANGE_SOURCES", "RANGE_RULES")},
    "apply_activations": "stage",
    **{
        name: "layerwise"
        for name in (
            "Block",
            "BlockStep",
            "LayerStats",
            "LayerwiseReport",
            "MemoryPlan",
            "STATISTICS",
            "find_blocks",
            "input_groups",
            "capture_inputs",
            "chain_problem",
            "calibrate_blocks",
            "compress_layerwise",
            "im2col_rows",
            "plan_peak_memory",
            "stats_reason",
        )
    },
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_face(__name__, globals(), _EXPORTS)

if TYPE_CHECKING:
    from .graph import (
        BNInput,
        analytic_shift,
        bn_input_means,
        bn_input_models,
        bn_successors,
        layer_inputs,
        measured_shifts,
        run_hooked,
    )
    from .layerwise import (
        STATISTICS,
        Block,
        BlockStep,
        LayerStats,
        LayerwiseReport,
        MemoryPlan,
        calibrate_blocks,
        capture_inputs,
        chain_problem,
        compress_layerwise,
        find_blocks,
        im2col_rows,
        input_groups,
        plan_peak_memory,
        stats_reason,
    )
    from .ranges import activation_ranges, bn_activation_ranges, fake_quantize, fake_quantize_per_token
    from .settings import RANGE_RULES, RANGE_SOURCES, ActivationSettings
    from .stage import apply_activations
    from .synthesis import (
        DEEPINVERSION,
        DSG,
        ZEROQ,
        SynthesisConfig,
        Synthesized,
        bn_layers,
        bn_loss,
        sample_similarity,
        slack_term,
        synthesize,
    )
