"""The wrapper the ``hf:`` source builds: a transformers causal LM called on token ids, returning logits."""

from __future__ import annotations

import torch
from torch import nn


class CausalLM(nn.Module):
    """``CausalLM(model)(tokens) -> logits``: tokens N×T int64, logits N×T×vocab (the model's dtype).

    The transformers model stays under ``.model``, so its ``nn.Linear`` projections are what compressors
    find (``model.model.layers.0.self_attn.q_proj.weight``, ...); no key-value cache is kept."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = self.model(input_ids=tokens, use_cache=False).logits
        assert isinstance(logits, torch.Tensor)
        return logits
