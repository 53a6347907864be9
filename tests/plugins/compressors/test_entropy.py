"""entropy: exact Huffman/ANS round trips, their size bounds, honest bits, and the stage in pipelines."""

from __future__ import annotations

import heapq
import json
import sys
from collections.abc import Callable
from pathlib import Path

import b2s_bench_plugins.compressors.prune as prune
import b2s_bench_plugins.compressors.quantize as quantize
import numpy as np
import pytest
import torch
from b2s_bench_plugins.compressors.entropy import SPEC, EntropyCode, EntropyConfig, encode_stream, huffman
from b2s_bench_plugins.compressors.entropy import ans as ans_coder
from helpers import run_cli

import b2s_bench as b2s
from b2s_bench import Compressed, ConfigError, Context, build_config
from b2s_bench.compression.contract import check_storage, storage_problems
from b2s_bench.execution import load_plugins
from b2s_bench.execution.cell import NestedCode, apply_stage
from b2s_bench.testing import SymbolCode, tiny_context, tiny_model

CODERS = ("huffman", "ans")


def _config(**settings: object) -> EntropyConfig:
    return build_config(EntropyConfig, settings, "entropy")


def _bell_model() -> torch.nn.Module:
    """TinyCNN with bell-shaped weights, as trained weights are (its default init is uniform)."""
    model = tiny_model(0)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in b2s.weight_layers(model).values():
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * layer.weight.std())
    return model


def _quantized(bits: int = 4, model: torch.nn.Module | None = None, value_range: str = "full") -> Compressed:
    config = build_config(quantize.SPEC.config, {"bits": bits, "granularity": "channel", "range": value_range}, "quantize")
    return quantize.SPEC.compress(model if model is not None else _bell_model(), config, Context())


def _streams() -> dict[str, tuple[np.ndarray, int]]:
    rng = np.random.default_rng(0)
    return {
        "random": (rng.integers(0, 256, 5000), 8),
        "skewed": (np.minimum(rng.geometric(0.3, 20000) - 1, 15), 4),
        "two symbols": (rng.choice([3, 9], 777, p=[0.99, 0.01]), 4),
        "one symbol": (np.full(1000, 5), 4),
        "one value": (np.array([2]), 2),
        "empty": (np.zeros(0, dtype=np.int64), 4),
        "wide sparse alphabet": (rng.choice([0, 70000, 1 << 19, (1 << 20) - 1], 3000), 20),
        "long codes": (np.minimum(rng.geometric(0.5, 200000) - 1, 63), 6),  # codes past the decoder's table
    }


@pytest.mark.parametrize("coder", CODERS)
@pytest.mark.parametrize("kind", list(_streams()))
def test_every_stream_decodes_exactly(coder: str, kind: str) -> None:
    values, width = _streams()[kind]
    stream = encode_stream(values, width, coder, 24, 12)
    assert np.array_equal(stream.decode(), values)
    assert stream.used == np.unique(values).size and stream.count == values.size
    assert stream.model.numel() == -(-stream.model_bits // 8)  # the model is packed to its exact bits
    if np.unique(values).size <= 1:  # nothing to code: the decoder repeats the one symbol
        assert stream.data_bits == 0
    if kind == "wide sparse alphabet":
        assert stream.layout == "sparse" and stream.model_bits == 4 * (20 + stream.field_bits)
    if kind == "long codes" and coder == "huffman":
        assert int(stream.table()[1].max()) > huffman.TABLE_BITS
    if kind == "skewed":
        assert stream.layout == "dense" and stream.model_bits == 16 * stream.field_bits


def _huffman_cost(counts: list[int]) -> int:
    """Reference: the total code length of an unrestricted Huffman code (sum of merge weights)."""
    heap = list(counts)
    heapq.heapify(heap)
    total = 0
    while len(heap) > 1:
        a, b = heapq.heappop(heap), heapq.heappop(heap)
        total += a + b
        heapq.heappush(heap, a + b)
    return total


def test_package_merge_is_optimal_and_respects_the_limit() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        counts = rng.integers(1, 1000, rng.integers(2, 60)) ** 2
        lengths = huffman.code_lengths(counts, 24)
        assert int((lengths * counts).sum()) == _huffman_cost(counts.tolist())  # limit not binding: Huffman's cost
        assert (2.0 ** -lengths.astype(float)).sum() <= 1.0
    fib = np.array([1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377])  # Huffman depth 13
    free = huffman.code_lengths(fib, 24)
    assert free.max() == 13
    for limit in (4, 6, 9):
        limited = huffman.code_lengths(fib, limit)
        assert limited.max() <= limit and (2.0 ** -limited.astype(float)).sum() <= 1.0
        assert (limited * fib).sum() >= (free * fib).sum()
    # the optimum under a limit of 4 for 14 symbols: brute force over the Kraft-feasible length multisets
    assert (huffman.code_lengths(fib, 4) * fib).sum() == _best_limited(fib, 4)
    with pytest.raises(ValueError, match="max_code_length"):
        huffman.code_lengths(np.ones(17, dtype=np.int64), 4)


def _best_limited(counts: np.ndarray, limit: int) -> int:
    """The least cost of lengths <= limit with Kraft sum <= 1: the largest counts get the shortest codes."""
    ordered = np.sort(counts)[::-1]
    best = None

    def walk(i: int, prev: int, kraft: float, cost: int) -> None:
        nonlocal best
        if kraft > 1.0 or (best is not None and cost >= best):
            return
        if i == ordered.size:
            best = cost
            return
        for length in range(prev, limit + 1):
            walk(i + 1, length, kraft + 2.0**-length, cost + length * int(ordered[i]))

    walk(0, 1, 0.0, 0)
    assert best is not None
    return best


def _gaussian_4bit(n: int = 1_000_000) -> np.ndarray:
    w = np.random.default_rng(2).standard_normal(n)
    scale = np.abs(w).max() / 7
    return (np.clip(np.round(w / scale), -8, 7) + 8).astype(np.int64)


def test_coded_sizes_on_a_million_gaussian_symbols() -> None:
    values = _gaussian_4bit()
    _, counts = np.unique(values, return_counts=True)
    p = counts / values.size
    entropy = float(-(p * np.log2(p)).sum()) * values.size
    coded = {c: encode_stream(values, 4, c, 24, 12) for c in CODERS}
    for stream in coded.values():
        assert np.array_equal(stream.decode(), values)
    # ANS: within 1 % of the empirical entropy plus the stored model
    ans = coded["ans"]
    assert ans.data_bits <= 1.01 * (entropy + ans.model_bits)
    # Huffman: Gallager's bound for an optimal prefix code, L <= H + p_max + 0.086 bits a symbol
    # (p_max < 0.5), plus the padding of the last byte
    huff = coded["huffman"]
    assert entropy <= huff.data_bits <= entropy + (p.max() + 0.0861) * values.size + 7
    print(
        f"\n1M 4-bit Gaussian symbols: entropy {entropy / values.size:.4f} b/sym; huffman {huff.data_bits / values.size:.4f} "
        f"(+{huff.model_bits} model bits); ans {ans.data_bits / values.size:.4f} (+{ans.model_bits} model bits)"
    )


def test_a_corrupt_huffman_stream_is_an_error() -> None:
    values = np.minimum(np.random.default_rng(3).geometric(0.4, 500) - 1, 7)
    stream = encode_stream(values, 3, "huffman", 24, 12)
    symbols, lengths = stream.table()
    index = np.searchsorted(symbols, values)
    with pytest.raises(ValueError, match="corrupt"):
        huffman.decode(stream.data.numpy()[: stream.data.numel() // 2], lengths, values.size)
    assert np.array_equal(huffman.decode(stream.data.numpy(), lengths, values.size), index)


def _chain(length_at: np.ndarray, nbits: int) -> np.ndarray:
    """Reference: the chain 0 -> 0 + length_at[0] -> ... before the end, one step at a time."""
    out, p = [], 0
    while p < nbits:
        out.append(p)
        p += int(length_at[p])
    return np.array(out)


@pytest.mark.parametrize("kind", ["variable", "fixed", "three lengths", "two lengths"])
def test_the_lane_decoder_follows_the_true_chain_through_restarts_and_its_fallback(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(7)
    nbits = 20000
    steps = {
        "variable": rng.integers(1, 9, nbits),  # random jumps: lanes fall onto the true chain soon
        "fixed": np.full(nbits, 5),  # a fixed-length code: a lane started off a multiple of 5 never does
        "three lengths": rng.choice([3, 4, 5], nbits, p=[0.1, 0.8, 0.1]),  # slowly: several restart rounds
        "two lengths": rng.choice([4, 8], nbits, p=[0.9, 0.1]),  # never, off a multiple of 4
    }[kind]
    top = int(steps.max())
    length_at = np.r_[steps, np.zeros(top)].astype(np.uint8)
    expected = _chain(length_at, nbits)
    runs: list[int] = []  # lanes of each lockstep run: the first run, then one a restart round
    fallbacks: list[int] = []
    run_lanes, doubling = huffman._run_lanes, huffman._doubling_starts
    monkeypatch.setattr(huffman, "_run_lanes", lambda a, s, b, r: runs.append(s.size) or run_lanes(a, s, b, r))
    monkeypatch.setattr(huffman, "_doubling_starts", lambda a, n, c: fallbacks.append(c) or doubling(a, n, c))

    def starts(step: int, segment: int | None, rounds: int) -> np.ndarray:
        runs.clear()
        fallbacks.clear()
        return huffman._lane_starts(length_at, nbits, expected.size, step, top, segment, rounds)

    for segment in (None, 64, 257, 1000):
        for rounds in (0, 2, 1000):
            assert np.array_equal(starts(1, segment, rounds), expected), (segment, rounds)
    if kind == "three lengths":
        starts(1, None, 1000)
        assert len(runs) > 3 and fallbacks == []  # restarted lanes resynchronise, round after round
        starts(1, None, 2)
        assert len(runs) == 3 and fallbacks == [expected.size]  # out of rounds: the fallback (also exact)
    if kind == "fixed":
        starts(1, 257, 1000)  # lanes off the codes at 4 of 5 boundaries: most disagree, the fallback at once
        assert len(runs) == 1 and fallbacks == [expected.size]
        starts(5, 257, 0)  # with the gcd of the lengths as the step every lane starts on a code
        assert len(runs) == 1 and fallbacks == []
    assert np.array_equal(huffman._doubling_starts(length_at, nbits, expected.size), expected)
    with pytest.raises(ValueError, match="corrupt"):
        huffman._lane_starts(length_at, nbits, expected.size + 1, 1, top)


def test_a_large_skewed_stream_round_trips_and_its_bytes_are_the_canonical_codes() -> None:
    rng = np.random.default_rng(11)
    values = np.minimum(rng.zipf(1.3, 2_000_000), 1000) - 1  # a long tail: the 14-bit limit binds
    stream = encode_stream(values, 10, "huffman", 14, 12)
    assert np.array_equal(stream.decode(), values)
    symbols, lengths = stream.table()
    assert int(lengths.max()) == 14 > huffman.TABLE_BITS and huffman.code_lengths(np.bincount(values)[symbols], 24).max() > 14
    index = np.searchsorted(symbols, values)
    assert stream.data_bits == 8 * -(-int(lengths[index].sum()) // 8)
    # the bytes, bit by bit: each symbol's canonical code, MSB first (the first 20,000 symbols)
    codes = huffman.canonical_codes(lengths)
    expected = "".join(format(int(codes[i]), f"0{int(lengths[i])}b") for i in index[:20000])
    assert "".join(map(str, np.unpackbits(stream.data.numpy())[: len(expected)])) == expected


def test_huffman_bytes_are_the_canonical_codes_msb_first_on_random_streams() -> None:
    rng = np.random.default_rng(13)
    for _ in range(60):  # every word boundary, spill and last byte of short streams, bit by bit
        k = int(rng.integers(2, 200))
        counts = rng.integers(1, 50, k) ** int(rng.integers(1, 4))
        limit = int(rng.integers(max(1, (k - 1).bit_length()), 25))
        lengths = huffman.code_lengths(counts, limit)
        index = rng.integers(0, k, int(rng.integers(1, 3000)))
        data, total = huffman.encode(index, lengths)
        codes = huffman.canonical_codes(lengths)
        expected = "".join(format(int(codes[i]), f"0{int(lengths[i])}b") for i in index)
        bits = np.unpackbits(data)
        assert total == len(expected) and data.size == -(-total // 8) and not bits[total:].any()
        assert "".join(map(str, bits[:total])) == expected
        assert np.array_equal(huffman.decode(data, lengths, index.size), index)


def test_huffman_edge_cases_round_trip() -> None:
    rng = np.random.default_rng(12)
    assert huffman.decode(np.zeros(0, dtype=np.uint8), np.array([1, 2, 2]), 0).size == 0  # empty stream
    assert huffman.encode(np.zeros(0, dtype=np.int64), np.array([1, 2, 2]))[1] == 0
    one = huffman.encode(np.zeros(1000, dtype=np.int64), np.array([1]))  # one symbol: no bits
    assert one[1] == 0 and np.array_equal(huffman.decode(one[0], np.array([1]), 1000), np.zeros(1000))
    fib = [1, 1]
    while len(fib) < 25:
        fib.append(fib[-1] + fib[-2])
    cases = {
        "max-length codes": np.array(fib),  # Huffman depth 24: codes of MAX_LENGTH bits
        "fixed length 5": np.full(32, 50),
        "limit binding: all 4 bits": np.arange(1, 17) ** 3,
        "three symbols, shorter than a lane's margin": np.array([1, 1, 1]),
    }
    for name, counts in cases.items():
        limit = 4 if name.startswith("limit") else huffman.MAX_LENGTH
        lengths = huffman.code_lengths(counts, limit)
        index = rng.permutation(np.repeat(np.arange(counts.size), counts))
        data, total = huffman.encode(index, lengths)
        assert data.size == -(-total // 8) and total == int((lengths * counts).sum()), name
        assert np.array_equal(huffman.decode(data, lengths, index.size), index), name
        values = rng.permutation(10 * counts.size)[: counts.size]  # the symbols' values, looked up in the tables
        assert np.array_equal(huffman.decode(data, lengths, index.size, values), values[index]), name
    assert huffman.code_lengths(np.array(fib), 24).max() == huffman.MAX_LENGTH
    assert set(huffman.code_lengths(np.full(32, 50), 24).tolist()) == {5}
    with pytest.raises(ValueError, match="non-negative value per code length"):
        huffman.decode(np.zeros(1, dtype=np.uint8), np.array([1, 1]), 1, np.array([0, -1]))
    # an incomplete code (0, 10): the pattern 11 is no code
    with pytest.raises(ValueError, match="no code"):
        huffman.decode(np.array([0xFF], dtype=np.uint8), np.array([1, 2]), 1)


def test_settings_errors_name_the_key() -> None:
    for settings, key in (
        ({"coder": "zstd"}, "coder"),
        ({"max_code_length": 30}, "max_code_length"),
        ({"ans_precision": 1}, "ans_precision"),
    ):
        with pytest.raises(ConfigError, match=key):
            _config(**settings)


def test_as_a_first_stage_it_is_not_applicable_and_says_how_to_write_the_pipeline() -> None:
    with pytest.raises(b2s.NotApplicableError, match=r"later pipeline stage.*pipeline: \[\{name: quantize"):
        SPEC.compress(tiny_model(0), _config(), tiny_context())


def test_ans_without_constriction_is_a_missing_prerequisite(
    monkeypatch: pytest.MonkeyPatch, write_suite: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, config = _quantized().codes["features.4.weight"], _config(coder="ans")
    monkeypatch.setitem(sys.modules, "constriction", None)  # import constriction now raises ImportError
    advice = r'pip install "b2s-bench\[entropy\]"'
    with pytest.raises(b2s.MissingPrerequisite, match=advice):
        SPEC.recode("features.4.weight", code, config, Context())
    with pytest.raises(b2s.MissingPrerequisite, match=advice):  # the settings already say so
        _config(coder="ans")
    assert isinstance(SPEC.recode("features.4.weight", code, _config(coder="huffman"), Context()), EntropyCode)
    suite = write_suite("""
        suite: e
        models: [tiny:cnn]
        dataset: {name: random, n: 16}
        compressors:
          - pipeline: [{name: quantize, bits: 4}, {name: entropy, coder: ans}]
        metrics: [bits]
        """)
    assert run_cli("validate", str(suite)) == 3  # before anything runs: exit 3, a missing prerequisite
    assert 'pip install "b2s-bench[entropy]"' in capsys.readouterr().err
    assert ans_coder.quantized_counts(np.array([1, 1000, 10**6]), 12).tolist() == [1, 4, 4095]


@pytest.mark.parametrize("coder", CODERS)
def test_coded_codes_count_exact_bits_and_decode_the_same(coder: str) -> None:
    before = _quantized(4)
    codes = {k: SPEC.recode(k, c, _config(coder=coder), Context()) for k, c in before.codes.items()}
    # the two smallest layers (144 and 640 weights) save less than their models and headers cost: they stay
    small = {"features.0.weight", "classifier.3.weight"}
    assert {k for k, c in codes.items() if not isinstance(c, EntropyCode)} == small
    assert all(codes[k] is before.codes[k] for k in small)
    check_storage(codes)  # serialized bytes within the counted bits, header rule, no symbols left
    for key, code in codes.items():
        if not isinstance(code, EntropyCode):
            continue
        inner, stream = code.inner.bits(), code.streams["q"]
        expected = inner.as_dict()
        expected["payload"] += stream.data_bits - stream.count * stream.width
        expected["codebook"] += stream.model_bits
        expected["metadata"] = b2s.header_bits(code.meta())
        assert code.bits().as_dict() == expected
        assert code.bits().metadata > inner.metadata  # the inner header is inside this one, counted once
        assert code.symbols() == {}
        assert torch.equal(code.decode(), before.codes[key].decode())
        facts = code.stats()["entropy"]["q"]
        assert facts["coded_bits_per_symbol"] < 4 and facts["entropy_bits_per_symbol"] <= facts["coded_bits_per_symbol"] + 0.05
        assert code.stats()["bits"] == 4  # the inner code's facts are kept


def test_a_stream_that_would_grow_stays_fixed_width() -> None:
    q = torch.randint(0, 16, (4096,), generator=torch.Generator().manual_seed(0))  # uniform: 4 bits of entropy
    code = SymbolCode(q, torch.ones(1), 4, (64, 64))
    assert SPEC.recode("w", code, _config(), Context()) is code
    forced = SPEC.recode("w", code, _config(keep_if_larger=False), Context())
    assert isinstance(forced, EntropyCode) and forced.bits().total >= code.bits().total
    empty = SymbolCode(torch.zeros(0, dtype=torch.int64), torch.ones(1), 4, (0, 3))
    assert SPEC.recode("e", empty, _config(keep_if_larger=False), Context()) is empty  # nothing to code


@pytest.mark.parametrize("coder", CODERS)
def test_quantize_then_entropy_has_fewer_bits_and_the_same_weights(coder: str) -> None:
    before = _quantized(4)
    after = apply_stage(before, SPEC, _config(coder=coder), Context())
    assert after.size().total_bits < before.size().total_bits
    assert after.size().breakdown.payload < before.size().breakdown.payload
    for key, value in before.state_dict().items():
        assert torch.equal(value, after.state_dict()[key])
    assert after.info["stages"][-1]["compressor"] == "entropy" and after.info["stages"][-1]["tensors"] == 2


@pytest.mark.parametrize("coder", CODERS)
def test_prune_then_quantize_then_entropy_round_trips(coder: str, tmp_path: Path) -> None:
    pruned = prune.SPEC.compress(_bell_model(), build_config(prune.SPEC.config, {"sparsity": 0.7}, "prune"), Context())
    qconfig = build_config(quantize.SPEC.config, {"bits": 4}, "quantize")
    nested = apply_stage(pruned, quantize.SPEC, qconfig, Context())
    coded = apply_stage(nested, SPEC, _config(coder=coder), Context())
    assert all(isinstance(c, NestedCode) for c in coded.codes.values())
    assert any(isinstance(i, EntropyCode) for c in coded.codes.values() for i in c.inner.values())  # type: ignore[attr-defined]
    assert storage_problems(coded.codes) == []
    assert coded.size().total_bits < nested.size().total_bits
    coded.save(str(tmp_path / "a"))
    loaded = Compressed.load(str(tmp_path / "a"), coded.skeleton, load_plugins().code_types())
    assert loaded.size().total_bits == coded.size().total_bits
    for key, value in nested.state_dict().items():
        assert torch.equal(value, coded.state_dict()[key]) and torch.equal(value, loaded.state_dict()[key])


def test_pipeline_cells_store_and_reload_the_coded_artifact(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    suite = write_suite("""
        suite: entropy
        models: [tiny:cnn]
        dataset: {name: random, n: 16}
        compressors:
          - {name: quantize, settings: {bits: 4, granularity: channel, range: restricted}}
          - pipeline: [{name: quantize, bits: 4, granularity: channel, range: restricted}, {name: entropy, coder: huffman}]
          - pipeline: [{name: quantize, bits: 4, granularity: channel, range: restricted}, {name: entropy, coder: ans}]
        metrics: [bits, agreement]
        """)
    # the restricted grid: the tiny CNN's weights are uniform (its init), and on the full grid all 16 codes
    # are about as frequent, so the entropy stage rightly leaves them as they are; here one code is unused
    out = tmp_path / "run"
    assert run_cli("run", str(suite), "--out", str(out), "--quiet") == 0
    records = [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))]
    by_stages = {tuple(s["name"] for s in r["compressor"]["pipeline"]): r for r in records}
    alone = by_stages[("quantize",)]
    coded = [r for r in records if len(r["compressor"]["pipeline"]) == 2]
    assert len(coded) == 2 and all(r["status"] == "ok" for r in [alone, *coded])
    reference = _quantized(4, tiny_model(0), "restricted").state_dict()
    types = load_plugins().code_types()
    for rec in coded:
        assert rec["family"] == "quantization+entropy"
        assert rec["size"]["total_bits"] < alone["size"]["total_bits"]
        assert rec["metrics"]["agreement"]["value"] == alone["metrics"]["agreement"]["value"]
        loaded = Compressed.load(str(out / "artifacts" / rec["cell_id"]), tiny_model(0), types)
        assert loaded.size().total_bits == rec["size"]["total_bits"]
        assert any(isinstance(c, EntropyCode) for c in loaded.codes.values())
        for key, value in reference.items():
            assert torch.equal(value, loaded.state_dict()[key]), key


class ScaledSymbols(SymbolCode):
    """A symbol code whose fp32 scale is a payload a later stage may store (to test an entropy-coded outer code)."""

    kind = "test.scaled_symbols"
    payload_part = "scales"

    def payload(self) -> dict[str, torch.Tensor]:
        return {"scale": self.scale}


def test_an_entropy_coded_code_can_be_the_outer_code_of_a_nested_one(tmp_path: Path) -> None:
    model = _bell_model()
    state = model.state_dict()
    first = Compressed.from_codes(model, {k: ScaledSymbols.of(state[k]) for k in b2s.weight_layers(model)})
    halves = apply_stage(first, quantize.SPEC, build_config(quantize.SPEC.config, {"bits": 16}, "quantize"), Context())
    coded = apply_stage(halves, SPEC, _config(), Context())
    outers = [c.outer for c in coded.codes.values() if isinstance(c, NestedCode)]
    big = {k for k, c in coded.codes.items() if isinstance(c, NestedCode) and isinstance(c.outer, EntropyCode)}
    assert len(outers) == 4 and big == {"features.4.weight", "classifier.1.weight"}  # the two small layers stay
    assert all(o.payload_part == "scales" and set(o.payload()) == {"scale"} for o in outers)
    assert storage_problems(coded.codes) == []
    assert coded.size().total_bits < halves.size().total_bits
    coded.save(str(tmp_path / "a"))
    loaded = Compressed.load(
        str(tmp_path / "a"), coded.skeleton, {**load_plugins().code_types(), ScaledSymbols.kind: ScaledSymbols}
    )
    assert loaded.size().total_bits == coded.size().total_bits
    assert storage_problems(loaded.codes) == []
    for key, value in halves.state_dict().items():
        assert torch.equal(value, coded.state_dict()[key]) and torch.equal(value, loaded.state_dict()[key])
