"""Helpers shared by the tests (imported as ``helpers``; pytest puts tests/ on sys.path)."""

from __future__ import annotations

import gzip
import random
import string
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from b2s_bench import Context


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an IDX file (gzipped), the format of (Fashion-)MNIST."""
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.tobytes()))


def run_cli(*args: str) -> int:
    from b2s_bench.cli.main import main

    return main(list(args))


def small_vit(seed: int = 0, depth: int = 2, embed_dim: int = 96) -> torch.nn.Module:
    """timm's ViT-Tiny architecture at test size: 32x32 inputs, 8x8 patches, 2 blocks of width 96 (ViT-Tiny:
    12 of 192) with ViT-Tiny's 3 heads, 10 classes (random init)."""
    import timm

    torch.manual_seed(seed)
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=depth, embed_dim=embed_dim, num_classes=10
    ).eval()


def small_swin(seed: int = 0, embed_dim: int = 48) -> torch.nn.Module:
    """timm's Swin-T architecture at test size: 32x32 inputs, 2x2 patches, 4x4 windows, two stages of one
    block (a patch merging between them), 48 channels, 10 classes (random init)."""
    import timm

    torch.manual_seed(seed)
    return timm.create_model(
        "swin_tiny_patch4_window7_224",
        pretrained=False,
        img_size=32,
        patch_size=2,
        window_size=4,
        depths=(1, 1),
        num_heads=(3, 6),
        embed_dim=embed_dim,
        num_classes=10,
    ).eval()


def image_context(build: Callable[[], torch.nn.Module], size: int = 32, classes: int = 10) -> Context:
    """A Context for a 3-channel image model: seeded calibration and training images, and
    ``build_model`` answering with ``build()`` whatever the name (a distillation student)."""
    gen = torch.Generator().manual_seed(0)
    xs = torch.randn(32, 3, size, size, generator=gen)
    ys = torch.randint(0, classes, (32,), generator=gen)
    return Context(
        input_shape=(3, size, size),
        num_classes=classes,
        calibration=lambda n: xs[:n],
        training=lambda: [(xs[i : i + 8], ys[i : i + 8]) for i in range(0, 32, 8)],
        build_model=lambda name: build(),
    )


def fake_pydoc(root: Path, pages: int = 40) -> Path:
    """A ``_sources`` folder of ``pages`` pages in two sub-folders, each 100 to 260 seeded random letters."""
    for i in range(pages):
        page = root / ("library" if i % 2 else "howto") / f"page{i}.rst.txt"
        page.parent.mkdir(parents=True, exist_ok=True)
        words = random.Random(i).choices(string.ascii_lowercase + " ", k=100 + 40 * (i % 5))  # no two pages share text
        page.write_text(f"Page {i}\n=======\n\n" + "".join(words))
    return root
