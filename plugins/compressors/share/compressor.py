"""``share`` on a model (every targeted conv/linear weight) or on one tensor (a later pipeline stage,
e.g. the kept values of ``prune``, as in Deep Compression, whose shared values :func:`.finetune.refine`
then fine-tunes on the whole model)."""

from __future__ import annotations

import zlib
from typing import Any

import torch
from torch import nn

from b2s_bench import Code, Compressed, Context, weight_layers

from .codes import KeptFloatCode, ShareCode
from .config import ShareConfig, data_track
from .finetune import finetune_codebooks
from .kmeans import assign, kmeans_1d

__all__ = ["share_tensor", "pays_off", "compress", "compress_tensor"]


def _stored(centroids: torch.Tensor, codebook_bits: int) -> torch.Tensor:
    """The centroids as they will be stored (fp16 or fp32), as float32."""
    return centroids.to(torch.float16 if codebook_bits == 16 else torch.float32).float()


def share_tensor(name: str, tensor: torch.Tensor, config: ShareConfig, ctx: Context) -> tuple[ShareCode, dict[str, Any]]:
    """The weight-sharing code of one tensor and the facts of its k-means (iterations, converged)."""
    w = tensor.detach().cpu().reshape(-1).to(torch.float64)
    nbits = config.bits_for(name)
    k = 2**nbits
    zeros = w == 0
    pin_zero = config.keep_zeros and bool(zeros.any()) and not bool(zeros.all())
    fitted = w[~zeros] if pin_zero else w
    # the seed differs per tensor (random init) but not between runs
    generator = ctx.generator(zlib.crc32(name.encode()) % 1_000_003)
    result = kmeans_1d(fitted, k - 1 if pin_zero else k, config.init, config.iterations, config.tolerance, generator)
    centroids = result.centroids
    if pin_zero:
        centroids = torch.sort(torch.cat([centroids, torch.zeros(1, dtype=torch.float64)])).values
    codebook = _stored(centroids, config.codebook_bits)
    # the last assignment step against the values as stored (fp16 rounding may move a boundary)
    indices = assign(w, codebook.to(torch.float64))
    if pin_zero:  # the pinned zero is the only entry exact zeros may use, and they always use it
        zero_index = int(torch.nonzero(codebook == 0)[0])
        indices = torch.where(zeros, torch.tensor(zero_index), indices)
    facts = {"iterations": result.iterations, "converged": result.converged, "zero_pinned": pin_zero}
    code = ShareCode(indices.to(torch.int64), codebook, nbits, config.codebook_bits, tuple(tensor.shape), dict(facts))
    return code, facts


def pays_off(code: ShareCode) -> bool:
    """Whether the shared code is smaller than the tensor's values at fp32 (else they stay fp32)."""
    return code.bits().total < 32 * code.indices.numel()


def compress(model: nn.Module, config: ShareConfig, ctx: Context) -> Compressed:
    """Share the values of every targeted conv/linear weight of ``model`` (k-means per tensor)."""
    layers = weight_layers(model, min_numel=config.min_numel, skip_first=config.skip_first, skip_last=config.skip_last)
    state = model.state_dict()
    codes: dict[str, Code] = {}
    kmeans: dict[str, Any] = {}
    kept_fp32 = []
    for key in layers:
        code, facts = share_tensor(key, state[key], config, ctx)
        if pays_off(code):
            codes[key], kmeans[key] = code, facts
        else:
            kept_fp32.append(key)
    info: dict[str, Any] = {
        "weight_bits": {key: code.nbits for key, code in codes.items() if isinstance(code, ShareCode)},
        "init": config.init,
        "kmeans": kmeans,
        "unconverged": sorted(k for k, f in kmeans.items() if not f["converged"]),
        "data_track": data_track(config),
        "kept_fp32": kept_fp32,  # their codebook and indices would cost at least the fp32 values
    }
    if config.finetune_epochs > 0:
        shared = {k: c for k, c in codes.items() if isinstance(c, ShareCode)}
        trained, info["finetune"] = finetune_codebooks(model, shared, config, ctx)
        for k, code in shared.items():
            code.codebook = trained[k]
        model.cpu()
    return Compressed.from_codes(model, codes, info=info)


def compress_tensor(name: str, tensor: torch.Tensor, config: ShareConfig, ctx: Context) -> Code:
    """Share the values of one tensor (a later pipeline stage: ``prune``'s kept values, a factor, ...).

    k-means only: with ``finetune_epochs > 0`` the pipeline then fine-tunes the shared values of the whole
    model (:func:`.finetune.refine`, the spec's ``refine``)."""
    if tensor.numel() < config.min_numel:
        return KeptFloatCode(tensor.detach().cpu().float().clone())
    code = share_tensor(name, tensor, config, ctx)[0]
    return code if pays_off(code) else KeptFloatCode(tensor.detach().cpu().float().clone())
