"""The codes of ``wanda``: sparsegpt's (prune's SparseCode for unstructured masks, :class:`NMCode`
for N:M patterns); the weights are not updated, only masked."""

from __future__ import annotations

from ..sparsegpt.codes import NMCode, SparseCode, pruned_code

__all__ = ["NMCode", "SparseCode", "pruned_code"]
