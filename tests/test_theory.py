"""The theory's claims on small tensors: each family's network form reaches its closed form;
pruning equals torch.nn.utils.prune; compositions count their bits exactly."""

from __future__ import annotations

import copy

import pytest
import torch
from b2s_bench_plugins.compressors import prune as prune_plugin
from b2s_bench_plugins.compressors.quantize import QuantizeConfig, quantize_tensor
from torch.nn.utils import prune as torch_prune

from b2s_bench import Compressed, Context
from b2s_bench.pipeline import NestedCode, apply_stage
from b2s_bench.plugins import load_plugins
from b2s_bench.solve import fit_network, relative_error
from b2s_bench.targets import weight_layers
from b2s_bench.testing import tiny_model


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_rounding_layer_reaches_round_to_nearest(bits: int) -> None:
    w = torch.randn(16, 36, generator=torch.Generator().manual_seed(1)) * 0.1
    code = quantize_tensor(w, QuantizeConfig(bits=bits))
    net = code.as_network("random", torch.Generator().manual_seed(0))
    result = fit_network(net, w, steps=1500)
    closed = relative_error(code.decode(), w)
    agree = (net().detach() == code.decode()).float().mean().item()
    assert agree >= 0.98  # the few misses are near-ties at bin midpoints
    assert result.rel_error <= closed * 1.02 + 1e-6


@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_projected_mask_reaches_magnitude_pruning(sparsity: float) -> None:
    w = torch.randn(32, 72, generator=torch.Generator().manual_seed(2))
    code = prune_plugin.compress_tensor("w", w, prune_plugin.PruneConfig(sparsity=sparsity), Context())
    net = code.as_network("random", torch.Generator().manual_seed(0))
    result = fit_network(net, w, steps=1500)
    assert torch.equal(net.mask(), code.mask)
    assert result.rel_error == pytest.approx(relative_error(code.decode(), w), rel=1e-4)


@pytest.mark.parametrize(("scope", "sparsity"), [("global", 0.6), ("layer", 0.3)])
def test_pruning_equals_torch_prune_oracle(scope: str, sparsity: float) -> None:
    model = tiny_model()
    ours = prune_plugin.compress(copy.deepcopy(model), prune_plugin.PruneConfig(sparsity=sparsity, scope=scope),
                                 Context()).state_dict()
    oracle = copy.deepcopy(model)
    layers = list(weight_layers(oracle).values())
    if scope == "global":
        torch_prune.global_unstructured([(m, "weight") for m in layers], torch_prune.L1Unstructured, amount=sparsity)
    else:
        for m in layers:
            torch_prune.l1_unstructured(m, "weight", amount=sparsity)
    for m in layers:
        torch_prune.remove(m, "weight")
    for key, value in oracle.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(ours[key], value), key


def test_identity_settings_reproduce_the_dense_model() -> None:
    plugins = load_plugins()
    model = tiny_model()
    x = torch.randn(4, 1, 28, 28)
    for name in ("quantize", "prune"):
        spec = plugins.compressors.get(name)
        config = spec.config(**spec.identity)
        out = spec.compress(copy.deepcopy(model), config, Context()).module()(x)
        assert torch.equal(out, model(x)), name


def test_pipeline_bits_replace_the_payload_exactly(tmp_path: torch.types.FileLike) -> None:
    plugins = load_plugins()
    model = tiny_model()
    pruned = prune_plugin.compress(copy.deepcopy(model), prune_plugin.PruneConfig(sparsity=0.7), Context())
    spec = plugins.compressors.get("quantize")
    both = apply_stage(pruned, spec, QuantizeConfig(bits=4), Context())
    for key, code in both.codes.items():
        assert isinstance(code, NestedCode)
        outer = pruned.codes[key]
        nnz = outer.values.numel()
        inner = quantize_tensor(outer.values, QuantizeConfig(bits=4))
        assert code.bits().total == outer.bits().total - 32 * nnz + inner.bits().total
        assert torch.equal(code.decode() == 0, outer.decode() == 0)  # the mask is kept
    assert both.size().total_bits < pruned.size().total_bits
    path = str(tmp_path / "artifact")
    both.save(path)
    loaded = Compressed.load(path, both.skeleton, plugins.code_types())
    for key, value in both.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
