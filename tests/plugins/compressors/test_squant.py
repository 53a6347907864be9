"""squant: the flips bound the summed rounding errors as SQuant's levels promise (kernels within 0.5
with SQuant-K, channels within 0.5 with SQuant-C, kernels then within 1), SQuant-K never leaves a
kernel's summed error above round-to-nearest's, flips follow the rule (by hand, and against the rule
written as loops) and stay on the grid, the bits are exact, and the code works as a later pipeline
stage, under the entropy stage, in a suite and with the suite's activations stage."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from b2s_bench_plugins.compressors.quantize.rounding import quantize_tensor
from b2s_bench_plugins.compressors.squant import (
    SPEC,
    SQuantCode,
    SQuantConfig,
    kernel_view,
    squant_codes,
    squant_round,
    squant_tensor,
)
from helpers import run_cli

import b2s_bench as b2s
from b2s_bench.compression.codes import NestedCode
from b2s_bench.compression.contract import check_storage, symbol_problems
from b2s_bench.execution.cell import apply_stage
from b2s_bench.plugins import load_plugins
from b2s_bench.testing import check_compressor, tiny_context, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

EPS = 1e-4  # float32 sums of a few hundred errors

# conv 3×3, 5×5, depthwise, pointwise, linear, and a 1-D tensor (one kernel)
SHAPES = [(24, 16, 3, 3), (8, 6, 5, 5), (16, 1, 3, 3), (20, 12, 1, 1), (10, 40), (50,)]
GRIDS = [(4, False), (3, True), (2, False)]


def weights(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def errors(w: torch.Tensor, **settings: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, SQuantConfig]:
    """(errors in steps, codes, round-to-nearest codes), all (channels, kernels, weights per kernel)."""
    config = SQuantConfig(**settings)
    x, q, _, _ = squant_codes(w, config)
    lo, hi = (-(2 ** (config.bits - 1)), 2 ** (config.bits - 1) - 1) if config.symmetric else (0, 2**config.bits - 1)
    assert bool((q >= lo).all() and (q <= hi).all()), "a code left the grid"
    assert torch.equal(q, torch.round(q))
    return q - x, q, torch.clamp(torch.round(x), lo, hi), config


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize(("bits", "symmetric"), GRIDS)
def test_kernel_level_bounds_every_kernel_and_never_exceeds_round_to_nearest(shape: tuple, bits: int, symmetric: bool) -> None:
    e, q, rtn, _ = errors(weights(shape), bits=bits, symmetric=symmetric, kernel_level=True, channel_level=False)
    x = q - e
    kernel = e.sum(dim=-1).abs()
    kernel_rtn = (rtn - x).sum(dim=-1).abs()
    assert float(kernel.max()) <= 0.5 + EPS  # SQuant-K: every kernel's summed error within half a step
    assert bool((kernel <= kernel_rtn + EPS).all())  # and never above round-to-nearest's
    assert float(e.abs().max()) <= 1.0 + EPS  # a flipped code's error is 1 - |e| < 1
    assert float(kernel_rtn.max()) > 0.5 or shape[-1] == 1 or len(shape) == 1  # the bound was not free


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize(("bits", "symmetric"), GRIDS)
def test_channel_level_bounds_every_channel_and_relaxes_kernels_to_one_step(shape: tuple, bits: int, symmetric: bool) -> None:
    w = weights(shape, seed=1)
    e, q, _, _ = errors(w, bits=bits, symmetric=symmetric)  # the defaults: E&K&C
    channel = e.sum(dim=(1, 2)).abs()
    kernel = e.sum(dim=-1).abs()
    assert float(channel.max()) <= 0.5 + EPS  # SQuant-C: every output channel within half a step
    assert float(kernel.max()) <= 1.0 + EPS  # a kernel SQuant-C flipped once: |r - sign(r)| = 1 - |r|
    assert float(e.abs().max()) <= 1.0 + EPS
    # only kernels SQuant-C flipped exceed 0.5; it flips round(|channel sum after SQuant-K|) per channel
    e_k, q_k, _, _ = errors(w, bits=bits, symmetric=symmetric, channel_level=False)
    moved = (q != q_k).sum(dim=-1)
    assert int(moved.max()) <= 1  # one flip per kernel
    assert torch.equal(moved.sum(dim=1).float(), torch.round(e_k.sum(dim=(1, 2)).abs()))
    assert bool(((kernel <= 0.5 + EPS) | (moved == 1)).all())


@pytest.mark.parametrize("shape", SHAPES[:3], ids=str)
def test_channel_level_alone_flips_codes_of_the_whole_channel(shape: tuple) -> None:
    # the paper's SQuant-E&C ablation: no kernel level, the channel's sum within 0.5 by single-code flips
    e, _, _, _ = errors(weights(shape, seed=2), kernel_level=False, channel_level=True)
    assert float(e.sum(dim=(1, 2)).abs().max()) <= 0.5 + EPS
    assert float(e.abs().max()) <= 1.0 + EPS


@pytest.mark.parametrize(("bits", "symmetric"), GRIDS)
def test_element_level_alone_is_round_to_nearest_on_quantizes_grid(bits: int, symmetric: bool) -> None:
    # SQuant-E: |e| <= 0.5; the grid is quantize's per-channel min/max grid, so the weights are equal
    w = weights((12, 8, 3, 3), seed=3)
    e, q, rtn, config = errors(w, bits=bits, symmetric=symmetric, kernel_level=False, channel_level=False)
    assert torch.equal(q, rtn) and float(e.abs().max()) <= 0.5 + EPS
    ours = squant_tensor(w, config).decode()
    grid = {"range": "restricted"} if symmetric else {}  # SQuant's symmetric grid is the restricted one
    theirs = quantize_tensor(w, load_plugins().compressors.get("quantize").config(bits=bits, symmetric=symmetric, **grid))
    assert torch.allclose(ours, theirs.decode(), atol=1e-6)
    assert squant_tensor(w, config).bits() == theirs.bits()  # same grid, same storage, same bits


def kernel_only(x: torch.Tensor, qmax: int = 15) -> list:
    """SQuant-E&K's codes of one kernel ``x`` (in grid units, on the grid 0..qmax)."""
    return squant_round(x.reshape(1, 1, -1), 0, qmax, channel_level=False).reshape(-1).tolist()


def test_a_kernel_flips_its_largest_errors_toward_the_other_grid_point() -> None:
    # errors q - x: [-0.4, -0.3, -0.35, -0.2], sum -1.25: one flip up, of the largest |e| (the first code)
    assert kernel_only(torch.tensor([0.4, 1.3, 2.35, 3.2])) == [1.0, 1.0, 2.0, 3.0]
    # errors [0.4, 0.45, 0.3, 0.42, 0.35], sum +1.92: round(1.92) = 2 flips down, of the two largest
    assert kernel_only(torch.tensor([0.6, 1.55, 2.7, 3.58, 4.65])) == [1.0, 1.0, 3.0, 3.0, 5.0]
    # sum -0.45: within 0.5 already, no flip
    assert kernel_only(torch.tensor([0.3, 1.15, 2.0])) == [0.0, 1.0, 2.0]


def test_flips_never_leave_the_grid() -> None:
    # 2-bit grid 0..3: the first two codes sit at 3 with negative errors (x clipped); only the third may go up
    assert kernel_only(torch.tensor([3.4, 3.45, 0.3]), qmax=3) == [3.0, 3.0, 1.0]
    # at the lower end: no code below 0
    assert kernel_only(torch.tensor([-0.45, -0.4, 2.7]), qmax=3) == [0.0, 0.0, 2.0]


def test_a_channel_flips_the_kernels_whose_candidate_has_the_largest_error() -> None:
    # three kernels of two weights; SQuant-K leaves each (sums -0.35, -0.4, +0.05); the channel's sum
    # -0.7 takes one up flip among the kernels with a negative sum: kernel 1's code with error -0.3
    x = torch.tensor([[[0.2, 0.15], [0.3, 0.1], [1.1, 0.85]]])
    q = squant_round(x, 0, 15)
    assert q.tolist() == [[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]]
    assert abs(float((q - x).sum())) <= 0.5
    # a kernel that overshot in SQuant-K offers to undo its flip: sums +0.6 (one flip: -0.4) and -0.45
    x = torch.tensor([[[0.65, 0.75, 2.0], [0.35, 1.1, 2.0]]])  # errors [0.35, 0.25, 0] and [-0.35, -0.1, 0]
    k = squant_round(x, 0, 15, channel_level=False)
    assert k.tolist() == [[[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]]]  # kernel 0: 0.65 -> 0 (error -0.65)
    # channel sum -0.4 - 0.45 = -0.85: one up flip; kernel 0 undoes its flip (|e| 0.65 beats 0.35)
    assert squant_round(x, 0, 15).tolist() == [[[1.0, 1.0, 2.0], [0.0, 1.0, 2.0]]]


def _flip_unit(x: list[float], q: list[float], qmin: int, qmax: int) -> None:
    """The flip rule on one unit, element by element: round(|E|) codes, largest |e| of E's sign first."""
    e = [qi - xi for qi, xi in zip(q, x)]
    total = sum(e)
    step = -1.0 if total > 0 else 1.0
    candidates = [i for i in range(len(e)) if e[i] * total > 0 and qmin <= q[i] + step <= qmax]
    for i in sorted(candidates, key=lambda i: -abs(e[i]))[: round(abs(total))]:
        q[i] += step


def reference(x: torch.Tensor, qmin: int, qmax: int, kernel_level: bool, channel_level: bool) -> torch.Tensor:
    """SQuant written as loops over channels and kernels (python floats), to check the vectorised one."""
    channels, kernels, _ = x.shape
    xs = x.double().tolist()
    q = [[[min(max(float(round(v)), qmin), qmax) for v in kernel] for kernel in channel] for channel in xs]
    for c in range(channels):
        if kernel_level:
            for k in range(kernels):
                _flip_unit(xs[c][k], q[c][k], qmin, qmax)
            if channel_level:
                sums = [sum(qi - xi for qi, xi in zip(q[c][k], xs[c][k])) for k in range(kernels)]
                total = sum(sums)
                step = -1.0 if total > 0 else 1.0
                offers = []
                for k in range(kernels):
                    if sums[k] * total <= 0:
                        continue
                    sign = 1.0 if sums[k] > 0 else -1.0
                    leaning = [
                        ((q[c][k][i] - xs[c][k][i]) * sign, i) for i in range(len(xs[c][k])) if qmin <= q[c][k][i] + step <= qmax
                    ]
                    best = max(leaning, default=(0.0, 0))
                    if best[0] > 0:
                        offers.append((best[0], k, best[1]))
                for _, k, i in sorted(offers, reverse=True)[: round(abs(total))]:
                    q[c][k][i] += step
        elif channel_level:
            flat_x = [v for kernel in xs[c] for v in kernel]
            flat_q = [v for kernel in q[c] for v in kernel]
            _flip_unit(flat_x, flat_q, qmin, qmax)
            q[c] = [flat_q[k * len(xs[c][0]) : (k + 1) * len(xs[c][0])] for k in range(kernels)]
    return torch.tensor(q, dtype=torch.float32)


@pytest.mark.parametrize("shape", [(6, 5, 3, 3), (4, 7, 2, 2), (5, 12), (3, 4, 1, 1)], ids=str)
@pytest.mark.parametrize("levels", [(True, True), (True, False), (False, True), (False, False)], ids=str)
@pytest.mark.parametrize(("bits", "symmetric"), GRIDS)
def test_the_vectorised_flips_equal_the_rule_written_as_loops(shape: tuple, levels: tuple, bits: int, symmetric: bool) -> None:
    w = weights(shape, seed=5)
    config = SQuantConfig(bits=bits, symmetric=symmetric, kernel_level=levels[0], channel_level=levels[1])
    x, q, _, _ = squant_codes(w, config)
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)
    assert torch.equal(q, reference(x, lo, hi, *levels))


def test_empty_and_non_finite_tensors_are_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        squant_tensor(torch.zeros(0, 3), SQuantConfig())
    with pytest.raises(ValueError, match="NaN"):
        squant_tensor(torch.tensor([[1.0, float("nan")]]), SQuantConfig())
    zeros = squant_tensor(torch.zeros(4, 2, 3, 3), SQuantConfig())  # an all-zero channel decodes to zeros
    assert float(zeros.decode().abs().max()) == 0.0


def test_kernel_layout() -> None:
    assert kernel_view((64, 32, 3, 3)) == (64, 32, 9)
    assert kernel_view((64, 1, 5, 5)) == (64, 1, 25)  # depthwise: the kernel is the channel
    assert kernel_view((1000, 1280)) == (1000, 1, 1280)  # linear: a row is one kernel
    assert kernel_view((7,)) == (1, 1, 7) and kernel_view(()) == (1, 1, 1)


@pytest.mark.parametrize(("bits", "symmetric", "scale_bits"), [(4, False, 32), (3, True, 16), (8, False, 16)])
def test_exact_bits_and_restore(bits: int, symmetric: bool, scale_bits: int) -> None:
    w = weights((16, 8, 3, 3), seed=4)
    code = squant_tensor(w, SQuantConfig(bits=bits, symmetric=symmetric, scale_bits=scale_bits))
    size = code.bits()
    assert size.payload == w.numel() * bits
    assert size.scales == 16 * scale_bits + (0 if symmetric else 16 * bits)
    assert size.metadata == b2s.header_bits(code.meta()) > 0
    assert symbol_problems("w", code) == []  # the codes (and zero points) as declared streams
    check_storage({"w": code})
    back = SQuantCode.restore(code.meta(), code.tensors())
    assert type(back) is SQuantCode and torch.equal(back.decode(), code.decode())
    step = code.scale.max()
    assert float((code.decode() - w).abs().max()) <= float(step) * (1.0 + 1e-3)  # |e| <= 1 step


def test_compress_tensor_as_a_later_stage_after_prune_and_under_entropy(tmp_path: Path) -> None:
    plugins = load_plugins()
    prune, squant, entropy = (plugins.compressors.get(n) for n in ("prune", "squant", "entropy"))
    pruned = prune.compress(tiny_model(0), b2s.build_config(prune.config, {"sparsity": 0.8}), tiny_context(0))
    both = apply_stage(pruned, squant, b2s.build_config(squant.config, {"bits": 4}), tiny_context(0))
    nested = [c for c in both.codes.values() if isinstance(c, NestedCode)]
    assert nested and all(isinstance(c.inner["values"], SQuantCode) for c in nested)
    for code in nested:  # the kept values, one kernel: their summed error within half a step
        values = code.outer.payload()["values"]
        inner = code.inner["values"]
        assert abs(float(((inner.decode() - values) / inner.scale).sum())) <= 0.5 + EPS
    assert both.size().total_bits < pruned.size().total_bits
    check_storage(both.codes)
    coded = apply_stage(both, entropy, b2s.build_config(entropy.config, {}), tiny_context(0))
    before, after = both.state_dict(), coded.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert coded.size().total_bits <= both.size().total_bits
    coded.save(str(tmp_path / "art"))
    types = {t.kind: t for s in plugins.compressors for t in s.codes}
    loaded = b2s.Compressed.load(str(tmp_path / "art"), b2s.skeleton_of(tiny_model(0)), types)
    assert all(torch.equal(loaded.state_dict()[k], after[k]) for k in after)


def test_compress_records_case_and_passes_the_contract() -> None:
    report = check_compressor(SPEC)
    assert report.bits > 0
    check_compressor(SPEC, {"symmetric": True, "scale_bits": 16, "kernel_level": False, "bits": 3})
    comp = SPEC.compress(tiny_model(0), SQuantConfig(), tiny_context(0))
    case = comp.info["case"]
    assert comp.info["squant"] == "E&K&C" and case["squant"]["max_channel_ase"] <= 0.5 + EPS
    assert case["squant"]["mean_kernel_ase"] < case["round_to_nearest"]["mean_kernel_ase"]
    assert 0 < case["squant"]["flipped_share"] < 0.5 and case["round_to_nearest"]["max_error"] <= 0.5 + EPS
    # SQuant minimises CASE, not the weight error: its network form is no reference for the solver check
    net = next(iter(comp.codes.values())).as_network()
    assert net is not None and net.closed_form is False


@pytest.mark.parametrize(
    ("settings", "key"),
    [({"bits": 9}, "bits"), ({"bits": 16}, "bits"), ({"scale_bits": 8}, "scale_bits"), ({"kernel_level": 2}, "kernel_level")],
)
def test_bad_settings_name_the_key(settings: dict, key: str) -> None:
    with pytest.raises(b2s.ConfigError) as err:
        b2s.build_config(SQuantConfig, settings, owner="squant")
    assert key in str(err.value)


def test_a_suite_runs_squant_alone_in_ablation_after_prune_and_at_w4a4(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    suite = write_suite("""
        suite: squant
        models: [tiny:cnn]
        dataset: {name: random, n: 16}
        compressors:
          - {name: squant}
          - {name: squant, settings: {kernel_level: false, channel_level: false}}
          - pipeline: [{name: prune, sparsity: 0.5}, {name: squant, bits: 6}]
          - {name: squant, bits: 4, activations: {bits: 4, samples: 8, synthetic_iterations: 2}}
        metrics: [bits, agreement]
        """)
    out = tmp_path / "run"
    assert run_cli("run", str(suite), "--out", str(out), "--quiet") == 0
    records = {r["label"]: r for r in (json.loads(p.read_text()) for p in (out / "cells").glob("*.json"))}
    assert all(r["status"] == "ok" for r in records.values()), {k: r["error"] for k, r in records.items()}
    assert len(records) == 5, sorted(records)  # the dense reference too
    full = records["squant"]
    rtn = records["squant(kernel_level=False, channel_level=False)"]
    assert full["details"]["case"]["squant"]["max_channel_ase"] <= 0.5 + EPS
    assert rtn["details"]["case"]["squant"] == rtn["details"]["case"]["round_to_nearest"]  # SQuant-E: no flip
    # half the weights kept, at 6 bits, and their bitmask: about (0.5·6 + 1)/32 of the dense layers' bits
    assert records["prune(sparsity=0.5) > squant(bits=6)"]["size"]["total_bits"] < records["dense"]["size"]["total_bits"] / 4
    w4a4 = records["squant(bits=4) W4A4"]
    assert w4a4["details"]["activations"]["bits"] == 4  # the suite's activations stage ran on SQuant's weights
    loaded = b2s.Compressed.load(
        str(out / "artifacts" / full["cell_id"]), tiny_model(0), b2s.execution.load_plugins().code_types()
    )
    assert loaded.size().total_bits == full["size"]["total_bits"]
    reference = SPEC.compress(tiny_model(0), SQuantConfig(), tiny_context(0)).state_dict()
    assert all(torch.equal(value, loaded.state_dict()[key]) for key, value in reference.items())
