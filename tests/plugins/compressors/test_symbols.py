"""Symbol streams of the built-in codes: every stream a code declares (``Code.symbols()``) is what it
stores and counts (``symbol_problems``), on real compressions of the tiny model."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import b2s_bench as b2s
from b2s_bench.compression.codes import NestedCode
from b2s_bench.compression.contract import check_storage, symbol_problems
from b2s_bench.execution.cell import apply_stage
from b2s_bench.plugins import load_plugins
from b2s_bench.testing import tiny_context, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def compressed(name: str, settings: dict[str, Any]) -> b2s.Compressed:
    spec = load_plugins().compressors.get(name)
    config = b2s.build_config(spec.config, {**spec.quick, **settings}, owner=name)
    return spec.compress(tiny_model(0), config, tiny_context(0))


def streams(code: b2s.Code) -> set[str]:
    """The names of the streams a code declares (a nested code's outer and inner codes, prefixed)."""
    if isinstance(code, NestedCode):
        return {f"outer.{s}" for s in streams(code.outer)} | {f"{n}.{s}" for n, c in code.inner.items() for s in streams(c)}
    return set(code.symbols())


# (compressor, settings, the streams that must be declared somewhere among the codes)
CASES = [
    ("quantize", {"bits": 4}, {"q"}),
    ("quantize", {"bits": 3, "granularity": "group", "group_size": 8, "symmetric": False}, {"q", "zero"}),
    ("quantize", {"bits": 3, "adaround": True, "symmetric": False}, {"q", "zero"}),
    ("prune", {"sparsity": 0.5}, {"mask"}),
    ("prune", {"sparsity": 0.97, "scope": "layer"}, {"cols"}),
    ("hypercompress", {"variant": "released"}, {"idx"}),
    ("hypercompress", {"variant": "canonical"}, {"idx"}),
    ("big2small", {"inr_bits": 4, "outliers": "top", "top_percent": 20.0}, {"q", "outlier_mask"}),
    ("ecsq", {"rate": 3.0}, {"q"}),
    ("ecsq", {"rate": 2.0, "rdo": True}, {"q"}),
]


@pytest.mark.parametrize(("name", "settings", "expected"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_every_declared_stream_is_what_the_code_stores_and_counts(name: str, settings: dict, expected: set[str]) -> None:
    comp = compressed(name, settings)
    declared: set[str] = set()
    for key, code in comp.codes.items():
        assert symbol_problems(key, code) == [], (name, key)
        declared |= streams(code)
        for stream, sym in code.symbols().items():  # each stream decodes back to its values
            unpacked = b2s.unpack_bits(code.tensors()[stream], sym.width, sym.values.numel())
            assert torch.equal(unpacked, sym.values), (name, key, stream)
    assert expected <= declared, f"{name} {settings}: declared {sorted(declared)}, expected at least {sorted(expected)}"
    check_storage(comp.codes)  # symbol_problems is part of it; the rest of the contract holds too


def test_nested_codes_declare_their_inner_streams() -> None:
    # prune then quantize: the kept values are quantized; the mask (outer) and q (inner) are declared
    pruned = compressed("prune", {"sparsity": 0.5})
    quantize = load_plugins().compressors.get("quantize")
    both = apply_stage(pruned, quantize, b2s.build_config(quantize.config, {"bits": 4}), tiny_context(0))
    names: set[str] = set()
    for key, code in both.codes.items():
        assert isinstance(code, NestedCode)
        assert symbol_problems(key, code) == []
        names |= streams(code)
    assert {"outer.mask", "values.q"} <= names


def test_a_mask_packed_as_a_mask_is_a_one_bit_stream() -> None:
    # prune and big2small store masks with pack_mask and declare them as 1-bit streams: the same bytes
    gen = torch.Generator().manual_seed(0)
    for n in (1, 7, 8, 9, 100, 1001):
        mask = torch.rand(n, generator=gen) < 0.3
        assert torch.equal(b2s.pack_mask(mask), b2s.pack_bits(mask.to(torch.int64), 1)), n


def test_a_dense_stored_pruned_tensor_declares_nothing() -> None:
    # at low sparsity a tensor is stored dense (fp32 values, no positions): no integer stream to declare
    comp = compressed("prune", {"sparsity": 0.01})
    dense = [code for code in comp.codes.values() if code.stats()["index"] == "dense"]
    assert dense and all(code.symbols() == {} for code in dense)


SHARE_CASES = [("share", {"bits": 3}, {"idx"}), ("prune", {"sparsity": 0.9, "positions": "relative"}, {"diffs"})]


@pytest.mark.parametrize("coder", ["huffman", "ans"])
@pytest.mark.parametrize(
    ("name", "settings", "expected"), [*CASES, *SHARE_CASES], ids=[f"{c[0]}-{i}" for i, c in enumerate([*CASES, *SHARE_CASES])]
)
def test_every_built_in_code_round_trips_through_the_entropy_stage(
    name: str, settings: dict, expected: set[str], coder: str, tmp_path: Any
) -> None:
    """Each code that declares streams, entropy-coded: the same weights, never more bits, the exact-bits
    contract, and an artifact that loads back to the same weights."""
    if coder == "ans":
        pytest.importorskip("constriction")
    comp = compressed(name, settings)
    entropy = load_plugins().compressors.get("entropy")
    coded = apply_stage(comp, entropy, b2s.build_config(entropy.config, {"coder": coder}), tiny_context(0))
    before, after = comp.state_dict(), coded.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert coded.size().total_bits <= comp.size().total_bits
    check_storage(coded.codes)
    coded.save(str(tmp_path / "art"))
    types = {t.kind: t for s in load_plugins().compressors for t in s.codes}
    loaded = b2s.Compressed.load(str(tmp_path / "art"), b2s.skeleton_of(tiny_model(0)), types)
    assert all(torch.equal(loaded.state_dict()[k], after[k]) for k in after)
