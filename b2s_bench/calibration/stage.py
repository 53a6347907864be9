"""The activations stage: W/A quantization for any weight compressor, with one rule for a whole table.

A suite's ``activations:`` (top level: every compressor entry; on an entry: fields that override it,
or ``null`` for none) quantizes the input of every conv/linear layer of the compressed model to
``bits`` at evaluation (simulated: a fake quantizer before each layer, affine over a per-tensor range),
whatever compressed the weights. The paper's tables say "W6A6"; the cell's label carries "A6"
after its weight settings.

Which inputs stay at higher precision is a setting, defaulting to SQuant's evaluation rules (Guo et
al., ICLR 2022, also ZeroQ's and DSG's): the first layer's input (the image) stays unquantized
(``first_input_bits: null``) and the last layer's input is quantized to 8 bits (``last_input_bits: 8``).

Where the ranges come from (``ranges``):

- ``bn`` (data-free, SQuant's source): each layer fed by BatchNorm (+ one activation) gets its range
  from draws of the BN's Gaussian model of its input, f(z), z ~ N(β, γ²); the others (a residual sum,
  the image, LayerNorm models) fall back to ``fallback``: ``synthetic`` ranges, or ``skip`` (left
  at full precision; recorded either way);
- ``synthetic``: measured on inputs synthesized from the dense model: the method's own
  (``CompressorSpec.calibration_inputs`` of the pipeline's first stage: DSG's samples) or ZeroQ's
  distilled data (``samples`` inputs, ``synthetic_iterations`` Adam steps);
- ``calibration``: measured on ``samples`` real calibration inputs (the calibration track).

The range of the values seen is their min/max, or the shrink of it with the least fake-quantization
error (``rule: mse``). Ranges are measured on the compressed model (its weights decoded), in its
layers' order. Storage: each range is 64 bits of metadata, each layer at other bits 8 more
(:class:`~b2s_bench.compression.compressed.Compressed`); the weights' storage is unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..compression.compressed import Compressed
from ..compression.compressor import Context, weight_layers
from ..compression.coverage import INEFFECTIVE, NotApplicableError, add_caveat
from .ranges import activation_ranges, bn_activation_ranges
from .settings import ActivationSettings
from .synthesis import ZEROQ, bn_layers, synthesize

__all__ = ["apply_activations"]


def apply_activations(
    compressed: Compressed,
    dense: nn.Module,
    settings: ActivationSettings,
    ctx: Context,
    own_inputs: Callable[[], torch.Tensor] | None = None,
) -> Compressed:
    """``compressed`` with its layers' inputs quantized by ``settings``; ``info["activations"]`` says how.

    Args:
        dense: the dense model (synthetic inputs are made from it).
        own_inputs: the method's own synthetic inputs (DSG's), used by ``ranges: synthetic``.

    Raises:
        ValueError: when ``compressed`` already quantizes activations (a compressor's own setting):
            one of the two must go.
    """
    if compressed.activations or compressed.token_activations:
        raise ValueError(
            "this compressor already quantizes activations (its own activation setting); with the suite's "
            "`activations:` stage, leave the compressor's activation setting unset"
        )
    model = compressed.module(fresh=True).to(ctx.device)
    names = [key.rpartition(".")[0] for key in weight_layers(model)]
    wanted = settings.layer_bits(names)
    quantized = {n: b for n, b in wanted.items() if b is not None}
    gen = ctx.generator(911)
    ranges: dict[str, tuple[float, float]] = {}
    fallback: dict[str, str] = {}
    source = settings.ranges
    inputs: torch.Tensor | None = None
    facts: dict[str, Any] = {"bits": settings.bits, "ranges": source, "rule": settings.rule}

    def measure_on(batch_inputs: torch.Tensor, layers: dict[str, int]) -> None:
        batches = list(batch_inputs.split(32))
        for bits in sorted(set(layers.values())):
            group = [n for n, b in layers.items() if b == bits]
            ranges.update(activation_ranges(model, group, batches, ctx.device, bits, settings.rule, gen))

    def made_inputs() -> torch.Tensor:
        nonlocal inputs
        if inputs is None:
            if source == "calibration":
                if ctx.calibration is None:
                    raise ValueError("activations with `ranges: calibration` need real calibration inputs, and none were given")
                inputs = ctx.calibration(settings.samples)
                facts["inputs"] = {"kind": "calibration", "samples": int(inputs.shape[0])}
            elif own_inputs is not None:
                inputs = own_inputs()
                facts["inputs"] = {"kind": "the method's own synthetic inputs", "samples": int(inputs.shape[0])}
            else:
                config = dataclasses.replace(
                    ZEROQ,
                    samples=settings.samples,
                    batch_size=min(settings.samples, ZEROQ.batch_size),
                    iterations=settings.synthetic_iterations,
                )
                if not bn_layers(dense):
                    raise NotApplicableError(
                        f"activations with ranges: {source} need BatchNorm statistics"
                        f"{' (for the layers without a BatchNorm before them)' if source == 'bn' else ''}, and this "
                        "model has none (LayerNorm); use `ranges: calibration`, or `fallback: skip` to leave those "
                        "inputs at full precision"
                    )
                made = synthesize(dense, config, ctx, offset=913)
                inputs = made.images
                facts["inputs"] = {"kind": "ZeroQ's synthetic inputs", **made.info()}
        return inputs

    if source == "bn":
        for bits in sorted(set(quantized.values())):
            group = [n for n, b in quantized.items() if b == bits]
            found, skipped = bn_activation_ranges(model, group, bits, settings.rule, gen)
            ranges.update(found)
            fallback.update(skipped)
        if fallback and settings.fallback == "synthetic":
            measure_on(made_inputs(), {n: quantized[n] for n in fallback})
    else:
        measure_on(made_inputs(), quantized)
    missing = sorted(set(quantized) - set(ranges))  # never reached in a forward pass (or skipped)
    full = sorted(n for n, b in wanted.items() if b is None) + missing
    layer_bits = {n: quantized[n] for n in ranges if quantized[n] != settings.bits}
    facts.update(
        {
            "quantized_inputs": len(ranges),
            "full_precision": full,
            "other_bits": layer_bits,
            "from_bn": len(ranges) - len(fallback) if source == "bn" else 0,
        }
    )
    if source == "bn" and fallback:
        facts["fallback"] = {"to": settings.fallback, "layers": dict(sorted(fallback.items()))}
    out = compressed.with_activations(ranges, settings.bits, layer_bits)
    out.info["activations"] = facts
    if not ranges:
        add_caveat(out.info, INEFFECTIVE, "activations: no layer input was quantized (every one kept at full precision)")
    return out
