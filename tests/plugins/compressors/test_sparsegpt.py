"""sparsegpt: exact sparsity per block, exact N:M patterns and their 3-bit pattern indices (bits,
restore, symbols), H = I gives per-block magnitude pruning, the OBS updates lower the output error
below magnitude pruning's and Wanda's on correlated inputs (every seed of 5), and the contract with 2:4."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from b2s_bench_plugins.compressors.prune.codes import SparseCode
from b2s_bench_plugins.compressors.sparsegpt import SPEC, NMCode, SparseGPTConfig, pruned_code, sparsegpt_matrix
from b2s_bench_plugins.compressors.wanda import wanda_keep
from torch import nn

import b2s_bench as b2s
from b2s_bench.compression.contract import symbol_problems
from b2s_bench.execution.cell import apply_stage
from b2s_bench.plugins import load_plugins
from b2s_bench.testing import check_compressor, tiny_context, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def inputs(n: int, d: int, seed: int) -> torch.Tensor:
    """Correlated features (a few factors plus noise) with unequal scales, as LLM activations have."""
    gen = torch.Generator().manual_seed(seed)
    factors = torch.randn(n, d // 4, generator=gen) @ torch.randn(d // 4, d, generator=gen)
    x = factors + 0.1 * torch.randn(n, d, generator=gen)
    return x * torch.exp(torch.randn(d, generator=gen))


def hessian(x: torch.Tensor) -> torch.Tensor:
    return 2 * x.t() @ x / x.shape[0]


def output_error(w: torch.Tensor, wq: torch.Tensor, x: torch.Tensor) -> float:
    return float(((x @ (w - wq).t()) ** 2).sum())


def row_magnitude(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    k = round(sparsity * w.shape[1])
    keep = torch.ones_like(w, dtype=torch.bool)
    keep.scatter_(1, torch.topk(w.abs(), k, dim=1, largest=False).indices, False)
    return keep


def test_unstructured_masks_prune_exactly_the_sparsity_of_every_block() -> None:
    x = inputs(256, 96, 0)
    w = torch.randn(10, 96, generator=torch.Generator().manual_seed(0))
    pruned, keep = sparsegpt_matrix(w, hessian(x), 0.5, None, block_size=32)
    for start in range(0, 96, 32):
        assert int((~keep[:, start : start + 32]).sum()) == round(0.5 * 10 * 32)
    assert torch.equal(pruned == 0, ~keep)


def test_n_m_patterns_are_exact() -> None:
    x = inputs(256, 64, 1)
    w = torch.randn(12, 64, generator=torch.Generator().manual_seed(1))
    pruned, keep = sparsegpt_matrix(w, hessian(x), pattern=(2, 4), block_size=16)
    assert bool((keep.reshape(12, 16, 4).sum(-1) == 2).all())
    assert torch.equal(pruned != 0, keep)


def test_with_identity_hessian_it_is_magnitude_pruning_per_block() -> None:
    w = torch.randn(8, 64, generator=torch.Generator().manual_seed(2))
    pruned, keep = sparsegpt_matrix(w, torch.eye(64), 0.5, None, block_size=64)
    flat = w.abs().reshape(-1)
    expect = torch.ones(8 * 64, dtype=torch.bool)
    expect[torch.topk(flat, 256, largest=False).indices] = False
    assert torch.equal(keep.reshape(-1), expect) and torch.equal(pruned, w * keep)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("pattern", [None, (2, 4)])
def test_sparsegpt_error_is_below_wandas_below_magnitudes(seed: int, pattern: tuple[int, int] | None) -> None:
    x = inputs(512, 64, seed)
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(50 + seed))
    pruned, _ = sparsegpt_matrix(w, hessian(x), 0.5, pattern, block_size=32)
    wanda = w * wanda_keep(w, x.norm(dim=0), 0.5, pattern)
    magnitude = w * wanda_keep(w, None, 0.5, pattern)
    errors = [output_error(w, p, x) for p in (pruned, wanda, magnitude)]
    assert errors[0] < errors[1] < errors[2], errors


def test_n_m_code_stores_a_pattern_index_per_group_and_restores() -> None:
    for shape in [(6, 16), (6, 10), (4, 3, 3, 3)]:
        w = torch.randn(shape, generator=torch.Generator().manual_seed(3))
        rows, cols = shape[0], math.prod(shape[1:])
        keep = wanda_keep(w.reshape(rows, cols), None, pattern=(2, 4)).reshape(shape)
        code = pruned_code(w, keep, (2, 4))
        assert isinstance(code, NMCode)
        tail = cols % 4
        tail_bits = {0: 0, 1: 0, 2: 1, 3: 2}[
            tail
        ]  # a tail of 1 keeps round(0.5) = 0; of 2 keeps 1 (C(2,1)); of 3 keeps 2 (C(3,2))
        bits = code.bits()
        assert bits.payload == 32 * int(keep.sum()) and bits.indices == rows * (cols // 4 * 3 + tail_bits)
        assert bits.metadata == b2s.header_bits(code.meta())
        again = NMCode.restore(code.meta(), code.tensors())
        assert torch.equal(again.decode(), code.decode()) and torch.equal(again.mask, keep)
        assert symbol_problems("w", code) == []
    with pytest.raises(ValueError, match="exactly 2"):
        NMCode(torch.zeros(3), torch.tensor([[True, True, True, False]]), 2, 4)


def test_compress_prunes_the_model_needs_calibration_and_passes_the_contract_with_2_4() -> None:
    model = tiny_model(0)
    comp = SPEC.compress(model, SparseGPTConfig(calibration_samples=32), tiny_context(0))
    assert all(isinstance(c, SparseCode) for c in comp.codes.values())
    target = SPEC.target(SparseGPTConfig(), comp, model)  # type: ignore[misc]
    assert target is not None and abs(target.achieved - 0.5) < 0.01
    report = check_compressor(SPEC, {"structure": "2:4"})
    assert report.bits > 0
    nm = SPEC.compress(model, SparseGPTConfig(structure="2:4", calibration_samples=16), tiny_context(0))
    assert isinstance(nm.codes["classifier.1.weight"], NMCode)
    with pytest.raises(ValueError, match="calibration inputs"):
        SPEC.compress(model, SparseGPTConfig(), tiny_context(0, with_data=False))


def test_a_grouped_conv_is_pruned_by_magnitude_and_named() -> None:
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 2, 1))
    x = torch.randn(8, 4, 8, 8)
    comp = SPEC.compress(model, SparseGPTConfig(calibration_samples=8), b2s.Context(calibration=lambda n: x[:n]))
    assert "grouped" in comp.info["without_hessian"]["0"]


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"structure": "2-4"}, "structure"),
        ({"structure": "4:2"}, "structure"),
        ({"structure": "2:4", "sparsity": 0.7}, "sparsity"),
        ({"structure": "2:4", "block_size": 10}, "block_size"),
        ({"sparsity": 1.0}, "sparsity"),
    ],
)
def test_bad_settings_name_their_key(settings: dict[str, object], key: str) -> None:
    with pytest.raises(b2s.ConfigError, match=key):
        b2s.build_config(SparseGPTConfig, settings, owner="sparsegpt")


def test_n_m_codes_compose_with_the_entropy_stage(tmp_path: Path) -> None:
    plugins = load_plugins()
    entropy = plugins.compressors.get("entropy")
    comp = SPEC.compress(tiny_model(0), SparseGPTConfig(structure="2:4", calibration_samples=16), tiny_context(0))
    coded = apply_stage(comp, entropy, b2s.build_config(entropy.config, {}), tiny_context(0))
    before, after = comp.state_dict(), coded.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert coded.size().total_bits <= comp.size().total_bits
    coded.save(str(tmp_path / "art"))
    types = {t.kind: t for s in plugins.compressors for t in s.codes}
    loaded = b2s.Compressed.load(str(tmp_path / "art"), b2s.skeleton_of(tiny_model(0)), types)
    assert all(torch.equal(loaded.state_dict()[k], after[k]) for k in after)
