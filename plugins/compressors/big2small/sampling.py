"""Which entries each fitting step sees, and the fixed sample the convergence curve is measured on.

A layer's target is its (rows, cols) matrix cut into blocks of ``block`` columns (one INR evaluation
per block). A step fits B crops of P rows x Qb blocks of every layer (:func:`crop_shape`); where
they lie is drawn before the fit (:func:`crop_starts`), per layer from its own generator, so batched
and naive fits, and retries, see the same crops. Our [D] choices, all settings:

* ``patch_rows = patch_cols = 0``: the whole matrix is the one crop of every step (full batch);
* ``patches = 0``: every step takes *all* tiles of a tiling of the matrix into P x Qb tiles (the
  last row and column of tiles shifted inward so that every tile is whole; they overlap a little):
  the whole tensor per step, with the frequency loss computed per tile (full batch, the paper's
  "epochs", in tiles that bound memory; ``chunk`` bounds it further);
* ``sampling = "random"``: B crops at uniformly random positions each step (overlaps allowed);
* ``sampling = "tiles"``: the tiles in a fresh random order each epoch, B per step, so every entry
  is seen once per pass (minibatch epochs).
"""

from __future__ import annotations

import math

import torch

from .config import SAMPLINGS

__all__ = ["SAMPLINGS", "crop_shape", "crop_starts", "tile_starts", "eval_coords", "passes"]


def _tile_axis(n: int, size: int) -> torch.Tensor:
    starts = torch.arange(0, max(n - size, 0) + size, size)
    return torch.clamp(starts, max=n - size)[: math.ceil(n / size)]


def tile_starts(rows: int, blocks: int, p: int, qb: int) -> torch.Tensor:
    """(n_tiles, 2) (row, block) starts of the tiling of a rows x blocks grid into p x qb tiles."""
    r, c = _tile_axis(rows, p), _tile_axis(blocks, qb)
    return torch.stack(torch.meshgrid(r, c, indexing="ij"), dim=-1).reshape(-1, 2)


def crop_shape(rows: int, cols: int, block: int, patch_rows: int, patch_cols: int, patches: int) -> tuple[int, int, int]:
    """(P, Qb, B): crops of P rows x Qb blocks, B of them per step (1 when a crop is the whole matrix)."""
    blocks = -(-cols // block)
    p = min(patch_rows or rows, rows)
    qb = min(-(-patch_cols // block) if patch_cols else blocks, blocks)
    if (p, qb) == (rows, blocks):
        return p, qb, 1
    if patches == 0:
        return p, qb, math.ceil(rows / p) * math.ceil(blocks / qb)
    return p, qb, patches


def crop_starts(
    rows: int,
    cols: int,
    block: int,
    patch_rows: int,
    patch_cols: int,
    patches: int,
    sampling: str,
    steps: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """(S, B, 2) int64 (row, block) starts of each step's crops; S = 1 when every step is the same."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    blocks = -(-cols // block)
    p, qb, b = crop_shape(rows, cols, block, patch_rows, patch_cols, patches)
    if b == 1 and (p, qb) == (rows, blocks):
        return torch.zeros(1, 1, 2, dtype=torch.int64)
    tiles = tile_starts(rows, blocks, p, qb)
    if patches == 0:
        return tiles[None]
    if sampling == "random":
        u = torch.rand((steps, b, 2), generator=generator, dtype=torch.float64)
        span = torch.tensor([rows - p + 1, blocks - qb + 1], dtype=torch.float64)
        return torch.minimum((u * span).long(), (span - 1).long())
    epochs = math.ceil(steps * b / len(tiles))
    order = torch.cat([torch.randperm(len(tiles), generator=generator) for _ in range(epochs)])
    return tiles[order[: steps * b]].reshape(steps, b, 2)


def eval_coords(rows: int, cols: int, block: int, points: int, generator: torch.Generator) -> torch.Tensor:
    """Sorted flat block-coordinate indices (row · blocks + block) of a fixed random sample of about
    ``points`` entries (all of them when the matrix is smaller): where the curve's PSNR is measured."""
    n = rows * -(-cols // block)
    k = min(max(points // block, 1), n)
    if k == n:
        return torch.arange(n)
    return torch.randperm(n, generator=generator)[:k].sort().values


def passes(steps: int, rows: int, cols: int, block: int, p: int, qb: int, b: int) -> float:
    """How many times ``steps`` steps of B crops of P x Qb blocks cover the rows x blocks grid."""
    return steps * b * p * qb / (rows * -(-cols // block))
