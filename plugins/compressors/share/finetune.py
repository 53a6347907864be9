"""Trained quantization (Han et al. 2016, Section 3.2): the shared values fine-tuned on the training data.

The indices stay as k-means left them; each shared value moves by the sum of the loss gradients
of every weight that shares it (the gather ``codebook[indices]`` back-propagates exactly that sum),
with plain gradient steps ``c ← c − lr · Σ ∂L/∂w`` as the paper writes them. Our choices (the paper
does not fix them): only the shared values train (biases, BatchNorm and raw tensors stay), the
model runs in eval mode (BatchNorm statistics fixed), the loss is cross-entropy on the training
split's labels, and a pinned zero centroid (``keep_zeros``) stays at 0.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from b2s_bench import Context

from .codes import ShareCode
from .config import ShareConfig

__all__ = ["finetune_codebooks"]


def finetune_codebooks(model: nn.Module, codes: dict[str, ShareCode], config: ShareConfig, ctx: Context) -> dict[str, Any]:
    """Fine-tune the codebooks of ``codes`` (replaced in place by the trained ones) on ``ctx.training``;
    returns the facts for the record (mean loss per epoch, steps)."""
    if ctx.training is None:
        raise ValueError(
            "share with finetune_epochs > 0 needs the training split (the training track), and none was "
            "given; set finetune_epochs: 0 for data-free weight sharing"
        )
    device = ctx.device
    model = model.to(device).eval()
    trainable = {name: p.requires_grad for name, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    indices = {k: c.indices.to(device) for k, c in codes.items()}
    books = {k: nn.Parameter(c.codebook.to(device, torch.float32).clone()) for k, c in codes.items()}
    pinned = {k: bool(c.fit and c.fit.get("zero_pinned")) for k, c in codes.items()}
    fixed = {
        k: (c.codebook == 0 if pinned[k] else torch.zeros_like(c.codebook, dtype=torch.bool)).to(device) for k, c in codes.items()
    }
    optimizer = torch.optim.SGD(list(books.values()), lr=config.finetune_lr)
    losses, steps = [], 0
    for _ in range(config.finetune_epochs):
        total, batches = 0.0, 0
        for batch, (x, y) in enumerate(ctx.training()):
            if config.finetune_batches is not None and batch >= config.finetune_batches:
                break
            weights = {k: books[k][indices[k]].reshape(codes[k].orig_shape) for k in codes}
            out = functional_call(model, weights, (x.to(device),), strict=False)
            loss = nn.functional.cross_entropy(out, y.to(device))
            optimizer.zero_grad()
            loss.backward()
            for k, book in books.items():  # the pinned zero keeps pruned weights exactly zero
                assert book.grad is not None
                book.grad[fixed[k]] = 0.0
            optimizer.step()
            total, batches, steps = total + float(loss.detach()), batches + 1, steps + 1
        losses.append(total / max(batches, 1))
    for name, p in model.named_parameters():
        p.requires_grad_(trainable[name])
    for k, code in codes.items():
        trained = books[k].detach().cpu()
        code.codebook = trained.to(torch.float16 if config.codebook_bits == 16 else torch.float32).float()
    return {"epochs": config.finetune_epochs, "steps": steps, "lr": config.finetune_lr, "epoch_loss": losses}
