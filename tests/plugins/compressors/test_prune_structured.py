"""Structured channel pruning (torch-pruning) shrinks the model; the artifact rebuilds it from the
original architecture and the stored state alone."""

from __future__ import annotations

import copy

import pytest
import torch
from b2s_bench_plugins.compressors.prune import SPEC, PruneConfig, compress

from b2s_bench import Compressed, Context
from b2s_bench.testing import check_compressor, tiny_model

pytest.importorskip("torch_pruning")


def test_channels_shrink_and_count_every_tensor(tmp_path: torch.types.FileLike) -> None:
    model = tiny_model()
    ctx = Context(input_shape=(1, 28, 28), num_classes=10)
    comp = compress(copy.deepcopy(model), PruneConfig(sparsity=0.5, method="channel"), ctx)
    assert comp.codes == {} and comp.info["structured"]
    assert comp.raw["features.0.weight"].shape[0] < 16  # filters were removed
    assert comp.raw["classifier.3.weight"].shape[0] == 10  # the classes are never pruned
    size = comp.size()
    shrunk = [t for k, t in comp.raw.items() if tuple(t.shape) != tuple(model.state_dict()[k].shape)]
    assert shrunk  # their new shapes are stored: 32 bits a dimension
    assert size.total_bits == 32 * sum(t.numel() for t in comp.raw.values()) + 32 * sum(t.dim() for t in shrunk)
    assert size.ratio_model > 3  # about a quarter of the weights are left
    path = str(tmp_path / "a")
    comp.save(path)
    rebuilt = Compressed.load(path, tiny_model(seed=5), {}).module()  # any weights: only the architecture matters
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), comp.module()(x))


def test_structured_contract_and_identity() -> None:
    check_compressor(SPEC, {"method": "channel", "sparsity": 0.5})
    model = tiny_model()
    comp = compress(
        copy.deepcopy(model), PruneConfig(sparsity=0.0, method="channel"), Context(input_shape=(1, 28, 28), num_classes=10)
    )
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(comp.module()(x), model(x))
