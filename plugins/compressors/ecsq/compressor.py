"""The compressor: each targeted conv/linear weight quantized on its own at the asked entropy rate."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from b2s_bench import Code, Compressed, Context, Target, weight_layers

from .codes import ECSQCode
from .config import ECSQConfig
from .quantizer import rate_of, search_step

__all__ = ["compress", "compress_tensor", "target", "rate_reached", "TARGET_TOLERANCE"]

#: the target is met when the rate reached is at most ``rate`` / (1 − 0.02): the bisection lands at or
#: below the asked rate (within ``rate_tolerance``), so only tensors too small to pay for their
#: probability model at that rate (their coarsest step still costs more) can push it over
TARGET_TOLERANCE = 0.02


def rate_reached(codes: Iterable[Code], count_bits: int) -> dict[str, float]:
    """Over the ECSQ codes among ``codes``: weights, the mean empirical entropy of the indices (bits per
    weight), the estimated model bits in all, the rate (entropy plus model, per weight) and the
    fixed-width bits per weight as stored without an entropy stage."""
    numel = model = stored = 0
    entropy_bits = 0.0
    for code in codes:
        if isinstance(code, ECSQCode):
            entropy, bits = rate_of(code.q, count_bits)
            n = code.q.numel()
            numel += n
            entropy_bits += entropy * n
            model += bits
            stored += code.bits().payload
    per = max(numel, 1)
    return {
        "weights": float(numel),
        "entropy": entropy_bits / per,
        "model_bits": float(model),
        "rate": (entropy_bits + model) / per,
        "fixed_width_bits": stored / per,
    }


def compress(model: nn.Module, config: ECSQConfig, ctx: Context) -> Compressed:
    """Quantize the model's conv and linear weights, each at the step whose entropy rate is ``rate``."""
    layers = weight_layers(model, min_numel=config.min_numel, skip_first=config.skip_first, skip_last=config.skip_last)
    state = model.state_dict()
    progress = ctx.progress(len(layers), "ecsq")
    codes: dict[str, Code] = {}
    infeasible: list[str] = []
    for key in layers:
        code = compress_tensor(key, state[key], config, ctx)
        progress.update()
        entropy, model_bits = rate_of(code.q, config.model_count_bits)
        if entropy + model_bits / max(code.q.numel(), 1) > config.rate / (1 - TARGET_TOLERANCE):
            # no step meets the rate: the probability model alone costs more (a tensor of a few weights,
            # such as a 1x1 head); its coarsest step would zero it, so it stays as it is (fp32)
            infeasible.append(key)
            continue
        codes[key] = code
    progress.close()
    reached = rate_reached(codes.values(), config.model_count_bits)
    info: dict[str, Any] = {
        "rate_asked": float(config.rate),
        "rate_reached": reached["rate"],
        "entropy_bits_per_weight": reached["entropy"],
        "model_bits": reached["model_bits"],
        "fixed_width_bits_per_weight": reached["fixed_width_bits"],
        "rdo": config.rdo,
        "left_raw": infeasible,  # tensors too small to meet the rate with their probability model
    }
    return Compressed.from_codes(model, codes, info=info)


def compress_tensor(name: str, tensor: torch.Tensor, config: ECSQConfig, ctx: Context) -> ECSQCode:
    """One tensor at the asked rate (also as a later pipeline stage, e.g. on pruned values)."""
    found = search_step(tensor, config)
    return ECSQCode(found.q, found.step, tuple(tensor.shape))


def target(config: ECSQConfig, compressed: Compressed, model: nn.Module) -> Target | None:
    """The asked rate against the rate reached (empirical entropy of the indices plus the estimated
    model, bits per coded weight), as the ratio to fp32 after entropy coding, 32 / rate (a Target is an
    "at least" quantity); tolerance :data:`TARGET_TOLERANCE`. None when no weight was coded."""
    reached = rate_reached(compressed.codes.values(), config.model_count_bits)
    if not reached["weights"]:
        return None
    achieved = 32.0 / reached["rate"]  # > 0: every stream's model costs at least its 32-bit header
    return Target(
        "ratio to fp32 after entropy coding (32 / bits per weight)", 32.0 / config.rate, achieved, TARGET_TOLERANCE, "x"
    )
