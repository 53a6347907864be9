"""SparseGPT on one weight matrix (Frantar & Alistarh, ICML 2023, "SparseGPT: Massive Language Models
Can Be Accurately Pruned in One-Shot", Algorithm 1).

Columns are processed left to right in blocks of ``block_size`` (B). When a block is reached, its mask
is chosen (adaptive mask selection, Sec. 3.3): the weights of lowest OBS saliency w²/U_jj² (U_jj² =
[H_F⁻¹]_jj, the inverse Hessian of the columns not yet done: the paper's w²/[H⁻¹]_jj), computed on the
weights as updated by every earlier column, are pruned: exactly round(sparsity · rows · B) of the block
(the authors' code, and llmcompressor's, prune those at or below the int(sparsity · rows · B)-th
smallest: one more, and any ties), or, with N:M, the M − N of lowest saliency in each group of M columns
of each row, chosen when the group is reached. Column by column the pruned weights are set to 0 and the
error (w − ŵ)/[U]_jj, U the upper Cholesky factor of the damped H⁻¹ (as in GPTQ), is spread over the
later columns of the block at once and over the columns after the block once per block (lazy batch
updates). H is damped by ``percdamp`` · mean(diag H); a column no input reaches gets H_jj = 1 and weight
0. Joint quantization (the paper's Sec. 3.5) is not done here.
"""

from __future__ import annotations

import torch

from ..gptq.solver import damped_inverse_factor
from .codes import tail_keep

__all__ = ["sparsegpt_matrix", "nm_keep"]


def nm_keep(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep-mask of the N largest ``scores`` in each group of M consecutive columns of each row (a
    last group of L < M columns keeps round(N·L/M)); ties go to the earlier column."""
    rows, cols = scores.shape
    keep = torch.zeros(rows, cols, dtype=torch.bool, device=scores.device)
    for start in range(0, cols, m):
        group = scores[:, start : start + m]
        k = n if group.shape[1] == m else tail_keep(n, m, group.shape[1])
        if k:
            top = torch.topk(group, k, dim=1, sorted=False).indices
            keep[:, start : start + group.shape[1]].scatter_(1, top, True)
    return keep


@torch.no_grad()
def sparsegpt_matrix(
    w: torch.Tensor,
    h: torch.Tensor,
    sparsity: float = 0.5,
    pattern: tuple[int, int] | None = None,
    block_size: int = 128,
    percdamp: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune ``w`` (rows, cols) under the Hessian ``h``; returns (the pruned, updated weights, keep-mask)."""
    rows, cols = w.shape
    if h.shape != (cols, cols):
        raise ValueError(f"the Hessian is {tuple(h.shape)}, the weight has {cols} columns")
    w = w.detach().clone().float()
    h = h.detach().clone().float().to(w.device)
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    u = damped_inverse_factor(h, percdamp)
    diag = torch.diag(u)
    keep = torch.ones(rows, cols, dtype=torch.bool, device=w.device)
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        u1 = u[i1:i2, i1:i2]
        keep1 = torch.ones_like(w1, dtype=torch.bool)
        if pattern is None:
            saliency = w1**2 / diag[i1:i2][None, :] ** 2
            k = round(sparsity * saliency.numel())
            if k:
                flat = keep1.view(-1)
                flat[torch.topk(saliency.reshape(-1), k, largest=False).indices] = False
        for i in range(i2 - i1):
            if pattern is not None and i % pattern[1] == 0:  # a group starts: its mask from the weights as they are now
                end = min(i + pattern[1], i2 - i1)
                saliency = w1[:, i:end] ** 2 / diag[i1 + i : i1 + end][None, :] ** 2
                keep1[:, i:end] = nm_keep(saliency, *pattern)
            column = w1[:, i]
            pruned = torch.where(keep1[:, i], column, torch.zeros_like(column))
            e = (column - pruned) / u1[i, i]
            w1[:, i:] -= e[:, None] @ u1[i, i:][None, :]
            w1[:, i] = pruned
            err1[:, i] = e
        w[:, i1:i2] = w1
        keep[:, i1:i2] = keep1
        w[:, i2:] -= err1 @ u[i1:i2, i2:]
    w[~keep] = 0.0
    return w, keep
