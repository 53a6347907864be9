"""``hqq`` on a model: every conv and linear weight quantized by HQQ's solver, data-free."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from b2s_bench import Code, Compressed, Context, weight_layers

from .config import HQQConfig
from .solver import hqq_tensor

__all__ = ["compress", "compress_tensor"]


def compress(model: nn.Module, config: HQQConfig, ctx: Context) -> Compressed:
    """Quantize the model's conv and linear weights with HQQ (no data)."""
    layers = weight_layers(model, skip_first=config.skip_first, skip_last=config.skip_last)
    state = model.state_dict()
    codes: dict[str, Code] = {key: hqq_tensor(state[key], config) for key in layers}
    info: dict[str, Any] = {"weight_bits": config.bits, "group_size": config.group_size, "axis": config.axis}
    return Compressed.from_codes(model, codes, info=info)


def compress_tensor(name: str, tensor: torch.Tensor, config: HQQConfig, ctx: Context) -> Code:
    """HQQ-quantize one tensor, as a later pipeline stage."""
    return hqq_tensor(tensor, config)
