"""The code of ``share``: a per-tensor codebook of k = 2**bits shared values, and a ``bits``-bit index
per weight (W = C[I]), and its network form (the codebook as parameters, indices fixed).

Bits: N·bits for the indices (``payload``, declared as a symbol stream for entropy coding), k
shared values at ``codebook_bits`` (``codebook``), plus the header ``b2s.header_bits(meta())``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

import b2s_bench as b2s
from b2s_bench import Code, SizeBreakdown, StoredTensorCode, pack_bits, unpack_bits

__all__ = ["ShareCode", "CodebookNetwork", "KeptFloatCode"]


@dataclasses.dataclass
class ShareCode(Code):
    """Indices into a codebook of shared values: W = codebook[indices]."""

    indices: torch.Tensor  # (N,) int64 in [0, 2**nbits)
    codebook: torch.Tensor  # (2**nbits,) float32 (values representable at codebook_bits)
    nbits: int
    codebook_bits: int
    orig_shape: tuple[int, ...]
    #: how k-means went (iterations, converged, zero_pinned), for the record; not stored
    fit: dict[str, Any] | None = dataclasses.field(default=None, compare=False)
    kind = "share.codebook"

    def __post_init__(self) -> None:
        if self.codebook.numel() != 2**self.nbits:
            raise ValueError(f"a {self.nbits}-bit ShareCode needs {2**self.nbits} codebook entries, got {self.codebook.numel()}")
        if self.indices.numel() != math.prod(self.orig_shape):
            raise ValueError(f"{self.indices.numel()} indices for a tensor of shape {self.orig_shape}")

    def decode(self) -> torch.Tensor:
        return self.codebook.float()[self.indices].reshape(self.orig_shape)

    def bits(self) -> SizeBreakdown:
        return SizeBreakdown(
            payload=self.indices.numel() * self.nbits,
            codebook=self.codebook.numel() * self.codebook_bits,
            metadata=b2s.header_bits(self.meta()),
        )

    def regularizer(self) -> torch.Tensor:
        # R(φ) is the indicator that every weight is one of the k shared values: zero for a stored code
        return torch.zeros(())

    def _stored_codebook(self) -> torch.Tensor:
        return self.codebook.to(torch.float16 if self.codebook_bits == 16 else torch.float32).contiguous()

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"indices": pack_bits(self.indices.to(torch.int64), self.nbits), "codebook": self._stored_codebook()}

    def symbols(self) -> dict[str, b2s.Symbols]:
        """The indices, as stored: what an entropy-coding stage may code (Huffman in Deep Compression)."""
        return {"indices": b2s.Symbols(self.indices.to(torch.int64).reshape(-1), self.nbits, "payload")}

    def meta(self) -> dict[str, Any]:
        return {"nbits": self.nbits, "codebook_bits": self.codebook_bits, "shape": list(self.orig_shape)}

    @classmethod
    def restore(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> ShareCode:
        shape = tuple(int(s) for s in meta["shape"])
        indices = unpack_bits(tensors["indices"], meta["nbits"], math.prod(shape))
        return cls(indices, tensors["codebook"].float(), meta["nbits"], meta["codebook_bits"], shape)

    def as_network(self, init: str = "code", generator: torch.Generator | None = None) -> CodebookNetwork:
        return CodebookNetwork(self, init, generator)

    def stats(self) -> dict[str, Any]:
        used = int(torch.unique(self.indices).numel())
        return {"bits": self.nbits, "clusters": self.codebook.numel(), "clusters_used": used, **(self.fit or {})}


class CodebookNetwork(b2s.DecoderNetwork):
    """g(C) = C[I] with the indices I fixed and the codebook C as the parameters.

    The gradient of a shared value is the sum of the gradients of every weight that shares it, as in
    the paper's trained quantization (Han et al. 2016, Section 3.2). Fitted to W, each shared value
    goes to the mean of its weights: Lloyd's update step, so the code is a k-means local search,
    not a closed form (the assignment is not refitted here).
    """

    projection = "never"
    closed_form = False
    solution = "local search"

    def __init__(self, code: ShareCode, init: str, generator: torch.Generator | None):
        super().__init__()
        self.indices = code.indices
        self.shape = code.orig_shape
        start = code.codebook.float().clone()
        if init == "random":
            start = torch.randn(start.shape, generator=generator) * start.std().clamp(min=1e-3)
        self.codebook = nn.Parameter(start)

    def forward(self) -> torch.Tensor:
        return self.codebook[self.indices].reshape(self.shape)


class KeptFloatCode(StoredTensorCode):
    """A tensor ``share`` leaves at fp32 as a later pipeline stage: under ``min_numel``, or where its
    codebook and indices would cost at least the fp32 values (a 256-entry codebook for a few hundred
    kept weights). Counted as payload; its header is empty (meta() is {})."""

    kind = "share.float"
    stored_part = "payload"
