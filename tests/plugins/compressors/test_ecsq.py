"""ecsq: the step bisection meets the rate, beats min-max quantization at equal entropy, sits within
2 dB of the Gaussian D(R), RDO lowers the Lagrangian, the code keeps the exact-bits contract, and with
the entropy stage after it the stored size is the rate."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from b2s_bench_plugins.compressors.ecsq import (
    DEFAULT_LAMBDA_SCALE,
    SPEC,
    ECSQCode,
    ECSQConfig,
    rdo_indices,
    search_step,
)
from helpers import run_cli

import b2s_bench as b2s
from b2s_bench.compression.contract import check_storage, symbol_problems
from b2s_bench.execution.cell import apply_stage
from b2s_bench.fitting.limits import empirical_entropy, gap_db, gaussian_bound
from b2s_bench.testing import check_compressor, tiny_context, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

N_RTN = 1 << 20  # "large": the empirical entropy of 2^20 samples is within 0.001 bit of the true one here
N_RDO = 1 << 18  # RDO rounding costs about ten times a rounding pass per step tried


def gaussian(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed))


def config(**settings: Any) -> ECSQConfig:
    return b2s.build_config(ECSQConfig, settings, owner="ecsq")


def mse(w: torch.Tensor, step: float, q: torch.Tensor) -> float:
    return float((w.double() - step * q.double()).pow(2).mean())


def minmax(w: torch.Tensor, bits: int) -> tuple[float, float]:
    """(MSE, index entropy) of plain per-tensor min-max uniform quantization with 2^bits levels."""
    lo, hi = float(w.min()), float(w.max())
    step = (hi - lo) / (2**bits - 1)
    q = torch.round((w.double() - lo) / step)
    return float((w.double() - (lo + step * q)).pow(2).mean()), empirical_entropy(q.to(torch.int64))


# -- the step search -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [2.0, 3.0, 4.0])
def test_the_bisection_meets_the_rate(rate: float) -> None:
    w = gaussian(N_RTN)
    found = search_step(w, config(rate=rate))
    # the rate (entropy + model per weight) lands at or just below the asked one
    assert rate - 1e-3 <= found.rate <= rate
    # measured independently: the entropy of the stored indices, plus a model that is tiny here
    assert found.entropy == pytest.approx(empirical_entropy(found.q), abs=1e-9)
    assert 0 < found.model_bits / N_RTN < 1e-3
    # and a finer step would exceed it (it is the finest step meeting the rate, to fp32 resolution)
    finer = search_step(w, config(rate=rate + 0.05))
    assert finer.step < found.step and finer.rate > rate


@pytest.mark.parametrize("rate", [2.0, 3.0, 4.0])
def test_the_bisection_meets_the_rate_with_rdo(rate: float) -> None:
    found = search_step(gaussian(N_RDO), config(rate=rate, rdo=True))
    assert rate - 1e-3 <= found.rate <= rate


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_lower_mse_than_minmax_quantization_at_equal_entropy(bits: int) -> None:
    w = gaussian(N_RTN)
    mm_mse, mm_entropy = minmax(w, bits)
    # ECSQ given the entropy min-max quantization reaches with 2^bits levels (its model at 1-bit counts,
    # so that the entropy alone is what is matched)
    found = search_step(w, config(rate=mm_entropy, model_count_bits=1))
    assert found.entropy <= mm_entropy
    ecsq_mse = mse(w, found.step, found.q)
    assert ecsq_mse < mm_mse, (bits, ecsq_mse, mm_mse)
    # at the min-max code's own storage (bits per weight), entropy-coded ECSQ is far better still
    at_bits = search_step(w, config(rate=float(bits)))
    assert mse(w, at_bits.step, at_bits.q) < 0.3 * mm_mse


@pytest.mark.parametrize("rate", [2.0, 3.0, 4.0])
@pytest.mark.parametrize("rdo", [False, True])
def test_within_2_db_of_the_gaussian_rate_distortion_bound(rate: float, rdo: bool) -> None:
    w = gaussian(N_RDO if rdo else N_RTN)
    found = search_step(w, config(rate=rate, rdo=rdo))
    variance = float(w.double().var(unbiased=False))
    bound = gaussian_bound(variance, found.entropy)  # the rate counted is the entropy of the indices
    gap = gap_db(mse(w, found.step, found.q), bound)
    # the high-rate theory: 10·log10(πe/6) = 1.53 dB; never below the bound
    assert 0.0 < gap < 2.0, (rate, rdo, gap)


@pytest.mark.parametrize("rate", [2.0, 3.0, 4.0])
def test_rdo_rounding_has_lower_mse_at_the_same_rate(rate: float) -> None:
    w = gaussian(N_RDO)
    plain = search_step(w, config(rate=rate))
    rdo = search_step(w, config(rate=rate, rdo=True))
    assert rdo.entropy <= plain.entropy + 2e-3
    assert mse(w, rdo.step, rdo.q) < mse(w, plain.step, plain.q)


# -- RDO rounding ---------------------------------------------------------------------------------------------
def lagrangian(w: torch.Tensor, q: torch.Tensor, step: float, lam: float) -> float:
    """J = Σ (w − Δq)² + λ·N·H(q), computed here (the entropy by the core's limits module)."""
    return float((w.double() - step * q.double()).pow(2).sum()) + lam * q.numel() * empirical_entropy(q)


def brute_force_rdo(w: torch.Tensor, q0: torch.Tensor, step: float, lam: float, iterations: int) -> torch.Tensor:
    """The same alternation, per weight: the cheapest of round-to-nearest and its neighbours under the
    current histogram (unused indices cost infinitely many bits)."""
    lo, hi = int(q0.min()), int(q0.max())
    current = q0.clone()
    for _ in range(iterations):
        counts = torch.bincount(current - lo, minlength=hi - lo + 1).double()
        bits = torch.where(counts > 0, -torch.log2(counts / current.numel()), torch.full_like(counts, math.inf))
        cands = torch.stack([q0, (q0 - 1).clamp(lo, hi), (q0 + 1).clamp(lo, hi)])
        cost = (w[None] - step * cands.double()).pow(2) + lam * bits[cands - lo]
        chosen = cands.gather(0, cost.argmin(0, keepdim=True))[0]
        if torch.equal(chosen, current):
            break
        current = chosen
    return current


@pytest.mark.parametrize("step", [0.25, 0.6, 1.2])
@pytest.mark.parametrize("scale", [DEFAULT_LAMBDA_SCALE, 1.0])
def test_rdo_lowers_the_lagrangian_cost(step: float, scale: float) -> None:
    w = gaussian(N_RDO, seed=3).double()
    lam = scale * step * step
    rtn = torch.round(w / step).to(torch.int64)
    rdo = rdo_indices(w, rtn, step, lam, 6)
    before, after = lagrangian(w, rtn, step, lam), lagrangian(w, rdo, step, lam)
    assert after < before, (step, scale, before, after)
    # it trades distortion for rate: fewer bits, more error than round-to-nearest (its minimiser)
    assert empirical_entropy(rdo) < empirical_entropy(rtn)
    assert mse(w, step, rdo) > mse(w, step, rtn)
    # each alternation lowers J: one more iteration is never worse
    more = rdo_indices(w, rtn, step, lam, 7)
    assert lagrangian(w, more, step, lam) <= after + 1e-9 * abs(after)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rdo_thresholds_equal_the_per_weight_choice(seed: int) -> None:
    # the fast threshold rule gives the indices the direct per-weight argmin gives (Laplacian and
    # Gaussian samples, sizes with sparse tails)
    gen = torch.Generator().manual_seed(seed)
    n = (301, 5000, 40000)[seed]
    w = torch.randn(n, generator=gen).double() * (1 + seed)
    if seed == 1:
        w = torch.sign(w) * w.abs().pow(2)  # heavier tails
    for step, scale in ((0.5, DEFAULT_LAMBDA_SCALE), (1.3, 1.0), (0.2, 5.0)):
        rtn = torch.round(w / step).to(torch.int64)
        fast = rdo_indices(w, rtn, step, scale * step * step, 6)
        assert torch.equal(fast, brute_force_rdo(w, rtn, step, scale * step * step, 6)), (seed, step, scale)


def test_rdo_without_a_rate_term_is_round_to_nearest() -> None:
    w = gaussian(1000).double()
    rtn = torch.round(w / 0.3).to(torch.int64)
    assert torch.equal(rdo_indices(w, rtn, 0.3, 0.0, 4), rtn)
    assert torch.equal(rdo_indices(w, rtn, 0.3, 0.1, 0), rtn)  # no alternation: nothing moves


# -- the code and the contract --------------------------------------------------------------------------------
@pytest.mark.parametrize("settings", [{"rate": 3.0}, {"rate": 2.0, "rdo": True}, {"rate": 4.0, "skip_first": True}])
def test_contract(settings: dict) -> None:
    report = check_compressor(SPEC, settings)  # identity (rate 64), exact bits, save/load, symbols
    assert report.identity_max_error is not None and report.identity_max_error <= 1e-5
    assert report.coverage is not None and report.coverage > 0.9


def test_the_code_counts_every_bit_at_the_fixed_width_and_declares_its_indices() -> None:
    comp = SPEC.compress(tiny_model(0), config(rate=3.0), tiny_context(0))
    assert set(comp.codes) == set(b2s.weight_layers(tiny_model(0)))
    check_storage(comp.codes)
    for key, code in comp.codes.items():
        assert isinstance(code, ECSQCode)
        assert symbol_problems(key, code) == []
        q = code.q.reshape(-1)
        width = max(1, math.ceil(math.log2(int(q.max() - q.min()) + 1)))
        n = q.numel()
        assert code.width == width and code.offset == -int(q.min())
        header = 32 * (len(code.shape) + 2)  # the shape, the width and the offset, 32 bits each
        assert code.bits() == b2s.SizeBreakdown(payload=n * width, scales=32, metadata=header)
        ((name, sym),) = code.symbols().items()
        assert name == "q" and sym.part == "payload" and sym.width == width
        assert int(sym.values.min()) == 0 and torch.equal(sym.values, q + code.offset)
        # decode is Δ·q exactly, and restore rebuilds the same code from what it stores
        assert torch.equal(code.decode(), (code.step * q.double()).float().reshape(code.shape))
        back = ECSQCode.restore(code.meta(), code.tensors())
        assert torch.equal(back.q, code.q) and back.step == code.step and back.shape == code.shape
        assert code.regularizer().item() == pytest.approx(n * empirical_entropy(q))


def test_the_target_compares_the_rate_reached_with_the_rate_asked() -> None:
    model = tiny_model(0)
    cfg = config(rate=3.0)
    comp = SPEC.compress(model, cfg, tiny_context(0))
    target = SPEC.target(cfg, comp, model)
    assert target is not None and target.met
    assert target.asked == pytest.approx(32 / 3)
    assert 32 / target.achieved == pytest.approx(comp.info["rate_reached"]) and comp.info["rate_reached"] <= 3.0
    # a layer whose probability model alone costs more per weight than the rate cannot meet it: its
    # coarsest step would zero it, so it stays fp32 (named in the info; a cell that codes nothing is
    # not a row: the runner's coverage check records it as not applicable)
    tiny = config(rate=0.05)
    raw = SPEC.compress(model, tiny, tiny_context(0))
    assert list(raw.codes) == ["classifier.1.weight"]  # 32,768 weights: all at index 0 meet 0.05 bits
    assert sorted(raw.info["left_raw"]) == sorted(set(b2s.weight_layers(model)) - {"classifier.1.weight"})
    assert comp.info["left_raw"] == []


def test_as_a_later_stage_on_pruned_values() -> None:
    prune = b2s.execution.load_plugins().compressors.get("prune")
    pruned = prune.compress(tiny_model(0), b2s.build_config(prune.config, {"sparsity": 0.5}), tiny_context(0))
    both = apply_stage(pruned, SPEC, config(rate=3.0), tiny_context(0))
    check_storage(both.codes)
    for key, code in both.codes.items():
        assert symbol_problems(key, code) == []
        assert isinstance(code.inner["values"], ECSQCode)  # type: ignore[attr-defined]


@pytest.mark.parametrize("rate", [2.0, 3.0, 4.0])
def test_with_the_entropy_stage_after_it_the_stored_size_is_the_rate(rate: float) -> None:
    # ecsq then entropy: every bit counted (indices coded, model, step, both headers) per weight
    entropy = b2s.execution.load_plugins().compressors.get("entropy")
    model = torch.nn.Sequential(torch.nn.Linear(512, 512, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(gaussian(512 * 512, seed=5).reshape(512, 512))
    comp = SPEC.compress(model, config(rate=rate), tiny_context(0))
    n, fixed = 512 * 512, comp.size().total_bits
    q = comp.codes["0.weight"].q  # type: ignore[attr-defined]
    p_max = float(torch.bincount((q - q.min()).reshape(-1)).max()) / n
    for coder in ("ans", "huffman"):
        coded = apply_stage(comp, entropy, b2s.build_config(entropy.config, {"coder": coder}), tiny_context(0))
        check_storage(coded.codes)
        assert torch.equal(coded.state_dict()["0.weight"], comp.state_dict()["0.weight"])
        per_weight = coded.codes["0.weight"].bits().total / n
        assert per_weight < fixed / n
        if coder == "ans":  # within 1 % of the rate the bisection met
            assert abs(per_weight - rate) <= 0.01 * rate, (coder, per_weight)
        else:  # Gallager's bound on Huffman's redundancy: at most p_max + 0.086 bits above the entropy
            assert rate - 0.01 <= per_weight <= comp.info["rate_reached"] + p_max + 0.086, (coder, per_weight)


def test_a_pipeline_cell_with_the_entropy_stage_records_and_reloads(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    suite = write_suite("""
        suite: ecsq
        models: [tiny:cnn]
        dataset: {name: random, n: 16}
        compressors:
          - {name: ecsq, settings: {rate: 3}}
          - pipeline: [{name: ecsq, rate: 3}, {name: entropy, coder: ans}]
        metrics: [bits, agreement]
        """)
    out = tmp_path / "run"
    assert run_cli("run", str(suite), "--out", str(out), "--quiet") == 0
    records = {len(r["compressor"]["pipeline"]): r for r in map(json.loads, map(Path.read_text, (out / "cells").glob("*.json")))}
    alone, coded = records[1], records[2]
    assert alone["status"] == coded["status"] == "ok"
    assert alone["details"]["target"]["met"] and alone["details"]["target"]["asked"] == pytest.approx(32 / 3)
    assert coded["size"]["total_bits"] < alone["size"]["total_bits"]  # the indices coded near their entropy
    assert coded["metrics"]["agreement"]["value"] == alone["metrics"]["agreement"]["value"]
    loaded = b2s.Compressed.load(
        str(out / "artifacts" / coded["cell_id"]), tiny_model(0), b2s.execution.load_plugins().code_types()
    )
    assert loaded.size().total_bits == coded["size"]["total_bits"]
    reference = SPEC.compress(tiny_model(0), config(rate=3.0), tiny_context(0)).state_dict()
    for key, value in reference.items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def test_edge_tensors() -> None:
    zeros = search_step(torch.zeros(10, 3), config(rate=2.0))
    assert int(zeros.q.abs().max()) == 0
    assert ECSQCode(zeros.q, zeros.step, (10, 3)).decode().abs().max() == 0
    with pytest.raises(ValueError, match="NaN"):
        search_step(torch.tensor([1.0, float("nan")]), config(rate=2.0))
    # the identity rate reaches the finest step: errors far below fp32 resolution of the weights
    w = gaussian(4096)
    finest = search_step(w, config(rate=64.0))
    assert float((ECSQCode(finest.q, finest.step, (4096,)).decode() - w).abs().max()) < 1e-7 * float(w.abs().max())


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("rate", 0.0),
        ("rate", 65.0),
        ("rdo_iterations", 0),
        ("rdo_lambda_scale", -1.0),
        ("model_count_bits", 0),
        ("min_numel", -1),
    ],
)
def test_bad_settings_name_the_key(key: str, value: Any) -> None:
    with pytest.raises(b2s.ConfigError) as err:
        config(**{key: value})
    assert key in str(err.value)
