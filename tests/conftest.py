"""Shared fixtures: a fresh plugin manager, an isolated cache, and small suite files."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_idx

from b2s_bench.plugins import Plugins, load_plugins

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one thread per worker process: several workers each spinning up all cores is far slower
    torch.set_num_threads(1)


@pytest.fixture
def one_thread() -> object:
    """Tiny models and many small steps run fastest on one thread on a shared, busy CPU (threads
    contend for the cores). Modules use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the user's cache, or picks up plugins from the environment.

    Cells run in the test's own process (the inline executor): a worker process costs seconds of
    imports, and tests/core/execution/test_execution.py tests the process executor (the default) on its own.
    """
    monkeypatch.setenv("B2S_BENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("B2S_BENCH_EXECUTOR", "inline")
    for var in ("B2S_BENCH_PLUGINS", "B2S_BENCH_DISABLE", "B2S_IMAGENET", "B2S_IMAGENET_OVERRIDE"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def plugins() -> Plugins:
    return load_plugins()


@pytest.fixture
def write_suite(tmp_path: Path) -> Callable[..., Path]:
    """Write a suite file from YAML text (dedented) and return its path."""

    def write(text: str, name: str = "suite.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    return write


TINY_SUITE = """
suite: tiny
seed: 0
models:
  - name: tiny:cnn
dataset: {name: random, n: 64}
compressors:
  - name: quantize
    grid: {bits: [8, 4]}
  - name: prune
    grid: {sparsity: [0.5]}
metrics: [top1, agreement, kl, bits, ratio, ratio_layers, weight_rel_error]
report: {sort_by: ratio}
"""


@pytest.fixture
def tiny_suite(write_suite: Callable[..., Path]) -> Path:
    return write_suite(TINY_SUITE)


@pytest.fixture
def fake_fmnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny Fashion-MNIST folder (IDX files), made the default root via $B2S_FASHION_MNIST."""
    root = tmp_path / "fmnist"
    root.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 512), ("t10k", 128)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        # class-dependent blobs so a CNN can learn something in a few steps
        images = (rng.random((n, 28, 28)) * 60).astype(np.uint8)
        for i, lab in enumerate(labels):
            images[i, 2 * lab : 2 * lab + 8, 4:24] = 250
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    monkeypatch.setenv("B2S_FASHION_MNIST", str(root))
    return root
