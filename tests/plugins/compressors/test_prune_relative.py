"""prune's relative positions (Deep Compression's relative indices with filler zeros): exact round trips,
the bits by hand, the contract, prune → quantize → Huffman through the artifact, and the paper's saving."""

from __future__ import annotations

from pathlib import Path

import b2s_bench_plugins.compressors.entropy as entropy
import b2s_bench_plugins.compressors.prune as prune
import b2s_bench_plugins.compressors.quantize as quantize
import pytest
import torch
from b2s_bench_plugins.compressors.prune.codes import relative_indices

import b2s_bench as b2s
from b2s_bench import Compressed, ConfigError, Context, build_config
from b2s_bench.compression.codes import NestedCode
from b2s_bench.compression.contract import check_storage, storage_problems, symbol_problems
from b2s_bench.config import config_identity
from b2s_bench.execution.cell import apply_stage
from b2s_bench.testing import check_compressor, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

SparseCode = prune.SparseCode


def _config(**settings: object) -> prune.PruneConfig:
    return build_config(prune.PruneConfig, settings, "prune")


def _gappy_mask(shape: tuple[int, ...], keep: float, seed: int) -> torch.Tensor:
    """A random mask with long runs of pruned weights (gaps far beyond a few bits' reach)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(shape, generator=g) < keep
    flat = mask.view(-1)
    n = flat.numel()
    for start in torch.randint(0, n, (2,), generator=g).tolist():  # two long holes
        flat[start : start + n // 8] = False
    start = int(torch.randint(0, n // 2, (1,), generator=g))
    flat[start : start + n // 2] = False  # and one longer than 8 bits reach in each tensor here
    return mask


def _filler_positions(code: SparseCode) -> torch.Tensor:
    symbols, kept = relative_indices(code.mask, code.index_bits)
    reach = (1 << code.index_bits) - 1
    positions = torch.where(kept, symbols + 1, reach).cumsum(0) - 1
    return positions[~kept]


# -- round trips ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("index_bits", [1, 3, 5, 8])
@pytest.mark.parametrize("shape", [(64, 3, 3, 3), (40, 300), (777,)])
def test_round_trip_with_long_gaps(shape: tuple[int, ...], index_bits: int) -> None:
    w = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    mask = _gappy_mask(shape, 0.08, seed=index_bits)
    symbols, kept = relative_indices(mask, index_bits)
    values = torch.zeros(symbols.numel())
    values[kept] = w[mask]
    code = SparseCode(values, mask.clone(), "relative", index_bits)
    assert torch.equal(code.decode(), w * mask)
    fillers = _filler_positions(code)
    assert fillers.numel() > 0 and code.stats()["fillers"] == fillers.numel()  # the long holes need fillers
    assert not mask.view(-1)[fillers].any()  # every filler sits on a genuinely pruned weight
    assert (code.values[~kept] == 0).all()  # and stores the value 0
    back = SparseCode.restore(code.meta(), code.tensors())
    assert torch.equal(back.decode(), code.decode()) and torch.equal(back.mask, mask)
    assert torch.equal(back.values, code.values) and back.encoding == "relative"
    check_storage({"w": code})
    assert symbol_problems("w", code) == []


def test_gaps_exactly_at_the_limit() -> None:
    # 3 bits: a symbol reaches 7 positions; symbol 7 is a filler 7 positions on
    mask = torch.zeros(60, dtype=torch.bool)
    kept_at = [6, 13, 21, 35, 50]  # gaps from -1: 7 (at the limit), 7, 8 (one over), 14 (2·7), 15 (2·7 + 1)
    mask[kept_at] = True
    symbols, kept = relative_indices(mask, 3)
    assert symbols.tolist() == [6, 6, 7, 0, 7, 6, 7, 7, 0]
    assert kept.tolist() == [True, True, False, True, False, True, False, False, True]
    w = torch.arange(1.0, 61.0)
    code = prune.sparse_code(w, mask, "relative", 3)
    assert code.encoding == "relative" and code.values.numel() == 9 and code.stats()["fillers"] == 4
    assert _filler_positions(code).tolist() == [20, 28, 42, 49]  # each the last position a symbol reaches, all pruned
    assert torch.equal(code.decode(), w * mask)
    assert torch.equal(SparseCode.restore(code.meta(), code.tensors()).decode(), w * mask)


def test_empty_and_full_masks() -> None:
    w = torch.randn(8, 50, generator=torch.Generator().manual_seed(0))
    empty = prune.sparse_code(w, torch.zeros_like(w, dtype=torch.bool), "relative", 5)
    assert empty.encoding == "relative" and empty.values.numel() == 0 and empty.symbols() == {}
    assert (
        empty.bits().total == b2s.header_bits(empty.meta()) == 2 * 32 + 32 + 64 + 32
    )  # the header only: shape, nnz, name (two words), width
    assert set(empty.tensors()) == {"values"}
    back = SparseCode.restore(empty.meta(), empty.tensors())
    assert torch.equal(back.decode(), torch.zeros_like(w)) and back.kept == 0
    check_storage({"w": empty})

    full_mask = torch.ones_like(w, dtype=torch.bool)
    dense = prune.sparse_code(w, full_mask, "relative", 5)  # 37 bits a weight > 32: stored dense, as today
    assert dense.encoding == "dense" and dense.bits().indices == 0 and torch.equal(dense.decode(), w)
    full = SparseCode(w.reshape(-1).clone(), full_mask, "relative", 5)  # the relative code itself: all gaps 1
    assert full.symbols()["diffs"].values.eq(0).all() and full.stats()["fillers"] == 0
    back = SparseCode.restore(full.meta(), full.tensors())
    assert torch.equal(back.decode(), w) and torch.equal(back.mask, full_mask)
    check_storage({"w": full})


# -- bits ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("index_bits", [2, 5, 8])
def test_bits_equal_a_hand_count(index_bits: int) -> None:
    w = torch.randn(32, 16, 3, 3, generator=torch.Generator().manual_seed(3))
    mask = _gappy_mask(tuple(w.shape), 0.1, seed=7)
    code = prune.sparse_code(w, mask, "relative", index_bits)
    # by hand: walk the kept positions, one filler per full reach of a gap beyond it
    reach, prev, entries = 2**index_bits - 1, -1, 0
    for p in mask.reshape(-1).nonzero().reshape(-1).tolist():
        gap = p - prev
        while gap > reach:
            entries, gap = entries + 1, gap - reach
        entries, prev = entries + 1, p
    kept = int(mask.sum())
    assert code.values.numel() == entries > kept
    header = 4 * 32 + 32 + 64 + 32  # shape (4 dims), nnz, "relative" (two words), index_bits
    assert code.bits().as_dict() == {
        **b2s.SizeBreakdown().as_dict(),
        "payload": 32 * entries,
        "indices": index_bits * entries,
        "metadata": header,
    }
    assert code.regularizer().item() == kept and code.kept == kept
    assert code.tensors()["diffs"].numel() == -(-entries * index_bits // 8)
    assert symbol_problems("w", code) == [] and storage_problems({"w": code}) == []


def test_a_later_stage_cannot_move_a_filler_into_the_weights() -> None:
    mask = torch.zeros(100, dtype=torch.bool)
    mask[[3, 90]] = True
    w = torch.randn(100)
    code = prune.sparse_code(w, mask, "relative", 4)
    assert code.stats()["fillers"] == 5
    # a later stage (k-means, uniform grid) may map the fillers' stored zeros to a nonzero value
    shifted = code.replace_payload({"values": torch.full((code.values.numel(),), 0.25)})
    out = shifted.decode()
    assert (out[mask] == 0.25).all() and (out[~mask] == 0).all()  # only kept positions get values
    with pytest.raises(ValueError, match="kept weights and filler zeros"):
        code.replace_payload({"values": torch.zeros(2)})


def test_the_auto_path_is_unchanged() -> None:
    w = torch.randn(24, 32, generator=torch.Generator().manual_seed(0))
    mask = w.abs() > 0.7
    code = prune.compress_tensor("w", w, _config(sparsity=0.5), Context())
    assert code.positions == "auto" and "encoding" not in code.meta() and set(code.meta()) == {"shape", "nnz"}
    assert code.encoding in ("bitmask", "csr")
    assert prune.sparse_code(w, mask).bits() == SparseCode(w[mask], mask).bits()
    # the added settings stay out of the cell id at their defaults: every prune cell keeps its id
    assert config_identity(_config(sparsity=0.9)) == {
        "sparsity": 0.9,
        "scope": "global",
        "method": "magnitude",
        "skip_first": False,
        "skip_last": False,
    }
    relative = config_identity(_config(sparsity=0.9, positions="relative", layer_index_bits={"features.*": 8}))
    assert relative["positions"] == "relative" and relative["layer_index_bits"] == {"features.*": 8}


# -- settings and the contract ------------------------------------------------------------------------------
def test_layer_index_bits_pick_the_width() -> None:
    config = _config(sparsity=0.9, positions="relative", layer_index_bits={"features.*": 8, "classifier.*": 5}, index_bits=3)
    assert config.index_bits_for("features.4.weight") == 8 and config.index_bits_for("classifier.1.weight/values") == 5
    assert config.index_bits_for("head.weight") == 3
    comp = prune.SPEC.compress(tiny_model(0), config, Context())
    widths = {k: c.index_bits for k, c in comp.codes.items() if isinstance(c, SparseCode) and c.encoding == "relative"}
    assert widths and all(v == (8 if k.startswith("features") else 5) for k, v in widths.items())


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"positions": "relatve"}, "positions"),
        ({"positions": "relative", "index_bits": 0}, "index_bits"),
        ({"positions": "relative", "index_bits": 17}, "index_bits"),
        ({"positions": "relative", "layer_index_bits": {"features.*": 20}}, "layer_index_bits"),
        ({"index_bits": 8}, "index_bits"),  # relative positions only
        ({"layer_index_bits": {"features.*": 8}}, "layer_index_bits"),
        ({"positions": "relative", "method": "channel"}, "positions"),
    ],
)
def test_bad_settings_name_the_key(settings: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        _config(**settings)
    assert err.value.key == key and key in str(err.value)


@pytest.mark.parametrize("settings", [{"positions": "relative"}, {"positions": "relative", "index_bits": 2, "scope": "layer"}])
def test_contract(settings: dict) -> None:
    report = check_compressor(prune.SPEC, {"sparsity": 0.9, **settings})
    assert report.bits > 0


# -- pipelines -----------------------------------------------------------------------------------------------
def test_prune_relative_quantize_huffman_round_trips_through_the_artifact(tmp_path: Path) -> None:
    config = _config(sparsity=0.9, positions="relative", layer_index_bits={"features.*": 8, "classifier.*": 5})
    pruned = prune.SPEC.compress(tiny_model(0), config, Context())
    relative = [k for k, c in pruned.codes.items() if isinstance(c, SparseCode) and c.encoding == "relative"]
    assert relative and any(pruned.codes[k].stats()["fillers"] for k in relative)
    quantized = apply_stage(pruned, quantize.SPEC, build_config(quantize.QuantizeConfig, {"bits": 4}), Context())
    coded = apply_stage(quantized, entropy.SPEC, build_config(entropy.EntropyConfig, {"coder": "huffman"}), Context())
    for k in relative:
        nested = quantized.codes[k]
        assert isinstance(nested, NestedCode)
        outer = nested.outer
        assert isinstance(outer, SparseCode)
        # the fillers are in the payload the quantizer stored: every stored value, one 4-bit code each
        assert nested.inner["values"].bits().payload == 4 * outer.values.numel()
        assert (nested.decode()[~outer.mask] == 0).all()  # pruned weights (fillers' positions too) stay zero
    before, after = quantized.state_dict(), coded.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # Huffman coding is lossless
    assert coded.size().total_bits < quantized.size().total_bits
    assert storage_problems(coded.codes) == []
    coded.save(str(tmp_path / "artifact"))
    kinds = {c.kind: c for c in (*prune.SPEC.codes, *quantize.SPEC.codes, *entropy.SPEC.codes)}
    loaded = Compressed.load(str(tmp_path / "artifact"), coded.skeleton, kinds)
    assert loaded.size().total_bits == coded.size().total_bits
    assert all(torch.equal(after[k], loaded.state_dict()[k]) for k in after)


def test_relative_indices_beat_the_bitmask_and_huffman_shrinks_them() -> None:
    # the paper's fc case: 90 % sparsity, 5-bit relative indices, on a 128 x 3136 random mask
    g = torch.Generator().manual_seed(0)
    w = torch.randn(128, 3136, generator=g)
    mask = torch.rand(128, 3136, generator=g) >= 0.9
    auto = prune.sparse_code(w, mask)
    relative = prune.sparse_code(w, mask, "relative", 5)
    assert auto.encoding == "bitmask" and relative.encoding == "relative"
    fillers = relative.stats()["fillers"]
    assert fillers > 0
    # the fillers' values and indices included, relative positions cost fewer bits than the bitmask
    assert relative.bits().indices + 32 * fillers < auto.bits().indices == 128 * 3136
    assert relative.bits().total < auto.bits().total
    # Huffman coding of the differences (the entropy stage) shrinks them further, model and header counted
    coded = entropy.recode("fc.weight", relative, build_config(entropy.EntropyConfig, {"coder": "huffman"}), Context())
    assert isinstance(coded, entropy.EntropyCode) and set(coded.streams) == {"diffs"}
    assert coded.bits().indices < relative.bits().indices
    assert coded.bits().total < relative.bits().total
    assert torch.equal(coded.decode(), w * mask)


def test_the_deep_compression_suite_stores_positions_as_in_the_paper() -> None:
    import yaml

    suite = yaml.safe_load((Path(__file__).resolve().parents[3] / "suites" / "deep-compression.yaml").read_text())
    pipelines = {e["label"]: e["pipeline"] for e in suite["compressors"] if "pipeline" in e}
    for label in ("deep compression", "deep compression, ANS", "prune + share", "prune + uniform"):
        stage = pipelines[label][0]
        config = _config(**{k: v for k, v in stage.items() if k != "name"})
        assert config.positions == "relative", label
        assert config.index_bits_for("features.4.weight") == 8 and config.index_bits_for("classifier.1.weight") == 5
    # one row keeps prune's default positions, for comparison: otherwise the full pipeline
    default = pipelines["deep compression, bitmask/CSR positions"]
    assert default[0] == {"name": "prune", "sparsity": 0.9} and default[1:] == pipelines["deep compression"][1:]


def test_share_gives_the_fillers_a_zero_centroid_and_huffman_codes_both_streams(tmp_path: Path) -> None:
    import b2s_bench_plugins.compressors.share as share

    w = torch.randn(64, 400, generator=torch.Generator().manual_seed(2))
    code = prune.compress_tensor("fc.weight", w, _config(sparsity=0.9, positions="relative", index_bits=4), Context())
    assert isinstance(code, SparseCode) and code.encoding == "relative" and code.stats()["fillers"] > 0
    pruned = Compressed.from_codes(torch.nn.Linear(400, 64, bias=False), {"weight": code})
    shared = apply_stage(pruned, share.SPEC, build_config(share.ShareConfig, {"bits": 4}), Context())
    nested = shared.codes["weight"]
    assert isinstance(nested, NestedCode)
    inner = nested.inner["values"]
    assert isinstance(inner, share.ShareCode)
    _, kept = relative_indices(code.mask, 4)
    filler_values = inner.decode()[~kept]
    assert (filler_values == 0).all()  # keep_zeros pins a centroid at 0 for the fillers: one index for all of them
    assert torch.equal(nested.decode() == 0, ~code.mask)  # the kept weights are shared (none lands on 0 here)
    coded = apply_stage(shared, entropy.SPEC, build_config(entropy.EntropyConfig, {"coder": "huffman"}), Context())
    wrapped = coded.codes["weight"]
    assert isinstance(wrapped, NestedCode) and isinstance(wrapped.outer, entropy.EntropyCode)
    assert set(wrapped.outer.streams) == {"diffs"}  # prune's relative indices, Huffman-coded
    assert torch.equal(coded.state_dict()["weight"], shared.state_dict()["weight"])
    check_storage(coded.codes)
