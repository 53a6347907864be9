"""``dsg`` on a model: weights on a per-channel affine grid (rounded to nearest, or AdaRound on DSG's
samples), and DSG's samples for the activation ranges (:func:`calibration_inputs`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from b2s_bench import Code, Compressed, Context, weight_layers
from b2s_bench.calibration import synthesize

from ..quantize import QuantizeConfig, quantize_tensor
from ..quantize.adaround import adaround_model
from .config import DSGConfig

__all__ = ["compress", "calibration_inputs", "weight_config"]


def weight_config(config: DSGConfig) -> QuantizeConfig:
    """The weight grid of ZeroQ and DSG: one affine (min/max) grid per output channel, every conv and
    linear layer quantized (first and last included), and AdaRound's settings when asked."""
    return QuantizeConfig(
        bits=config.bits,
        granularity="channel",
        symmetric=False,
        clipping="minmax",
        scale_bits=config.scale_bits,
        adaround=config.rounding == "adaround",
        adaround_iterations=config.adaround_iterations,
        adaround_lr=config.adaround_lr,
        adaround_lambda=config.adaround_lambda,
        adaround_batch=config.adaround_batch,
    )


def calibration_inputs(model: nn.Module, config: DSGConfig, ctx: Context) -> torch.Tensor:
    """DSG's diverse samples made from the dense ``model`` (CPU), of shape (samples, *input_shape)."""
    return synthesize(model, config.synthesis(), ctx).images


def compress(model: nn.Module, config: DSGConfig, ctx: Context) -> Compressed:
    """Quantize the model's conv and linear weights per channel; with rounding "adaround", learn the
    rounding of each layer on DSG's samples (synthesized from the dense model, seeded by the cell)."""
    grid = weight_config(config)
    state = model.state_dict()
    codes: dict[str, Code] = {key: quantize_tensor(state[key], grid) for key in weight_layers(model)}
    info: dict[str, Any] = {"weight_bits": config.bits, "rounding": config.rounding, "data_track": "synthetic"}
    if config.rounding == "adaround":
        made = synthesize(model, config.synthesis(), ctx)
        info["synthesis"] = made.info()
        info["adaround"] = adaround_model(model, codes, grid, ctx, list(made.images.split(64)))
    return Compressed.from_codes(model, codes, info=info)
