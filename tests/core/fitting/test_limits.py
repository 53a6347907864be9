"""Rate–distortion limits and weight structure, on synthetic sources whose answers are known."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from helpers import run_cli
from torch import nn

from b2s_bench import Compressed, Context, StoredTensorCode, build_config
from b2s_bench.fitting import limits as rd
from b2s_bench.metrics import Evaluation, NotApplicable
from b2s_bench.plugins import Plugins
from b2s_bench.sources import LoadedModel

pytestmark = pytest.mark.usefixtures("one_thread")


def gaussian(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def smooth(rows: int, cols: int) -> torch.Tensor:
    r = torch.linspace(0, 3, rows, dtype=torch.float64)[:, None]
    c = torch.linspace(0, 2, cols, dtype=torch.float64)[None, :]
    return torch.sin(r) * torch.cos(c) + 0.5 * torch.cos(2 * r + c)


def test_the_gaussian_bound_and_gaps_by_hand():
    assert rd.gaussian_bound(2.0, 0) == 2.0 and rd.gaussian_bound(2.0, 1) == 0.5
    assert rd.gaussian_bound(1.0, 3) == pytest.approx(1 / 64)
    assert rd.gap_db(2.0, 1.0) == pytest.approx(10 * math.log10(2))
    assert rd.gap_db(0.0, 1.0) == -math.inf and rd.gap_db(1.0, 0.0) == math.inf
    assert rd.ECSQ_HIGH_RATE_GAP_DB == pytest.approx(1.5329, abs=1e-4)


def test_water_filling_allocates_bits_to_the_larger_variance():
    assert rd.waterfill_bound([1.0], [100], 300) == pytest.approx(rd.gaussian_bound(1.0, 3))
    # variances 1 and 0.01, 3 bits per sample: both under the water, log2(1/θ) = (12 + log2 100) / 2
    theta = 2 ** (-(12 + math.log2(100)) / 2)
    assert rd.waterfill_bound([1.0, 0.01], [1000, 1000], 6000) == pytest.approx(theta, rel=1e-6)
    # 0.25 bits per sample: the small group gets none (θ > 0.01) and keeps its variance as distortion
    got = rd.waterfill_bound([1.0, 0.01], [1000, 1000], 500)
    assert got == pytest.approx((2**-1 + 0.01) / 2, rel=1e-6)
    assert rd.waterfill_bound([1.0, 4.0], [10, 10], 0) == pytest.approx(2.5)


def test_a_uniform_quantizer_sits_1_53_db_above_the_gaussian_limit_at_high_rate():
    x = gaussian(200_000)
    # by hand: a step of 2^-5 sigma, its index entropy H and its error against D(H)
    q = torch.round(x / 2**-5)
    h = rd.empirical_entropy(q.long())
    mse = float((q * 2**-5 - x).pow(2).mean())
    assert rd.gap_db(mse, rd.gaussian_bound(1.0, h)) == pytest.approx(rd.ECSQ_HIGH_RATE_GAP_DB, abs=0.05)
    for rate, tol in ((6.0, 0.05), (4.0, 0.1)):
        e = rd.ecsq(x, rate)
        assert e.rate == pytest.approx(rate, abs=1e-3)
        assert rd.gap_db(e.mse, rd.gaussian_bound(1.0, rate)) == pytest.approx(rd.ECSQ_HIGH_RATE_GAP_DB, abs=tol)
    assert rd.ecsq(x, 0).mse == pytest.approx(float(x.var(unbiased=False)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("step", [0.7, 0.05, 0.003])
def test_index_entropy_counts_the_rounded_indices(dtype: torch.dtype, step: float) -> None:
    """The counting shortcut (one bin per index from the minimum) against round(x / step) counted by hand."""
    x = torch.distributions.Laplace(0.3, 1.0).sample((50_000,)).to(dtype)
    counts = torch.unique(torch.round(x.double() / step), return_counts=True)[1].double() / x.numel()
    by_hand = float(-(counts * torch.log2(counts)).sum())
    assert rd.index_entropy(x, step) == pytest.approx(by_hand, abs=1e-3)
    assert rd.index_entropy(x, step) == pytest.approx(rd.empirical_entropy(torch.round(x / step).long()), abs=1e-3)


def test_tensor_limits_of_fp32_weights_agree_with_fp64() -> None:
    """The limits read fp32 weights without widening them (half the memory traffic), to 1e-6 of fp64's."""
    w = gaussian(256, 512).float() * 0.02 + 0.001
    decoded = (w / 0.004).round() * 0.004
    single, double = rd.tensor_limits(w, decoded, 4 * w.numel()), rd.tensor_limits(w.double(), decoded.double(), 4 * w.numel())
    for key in ("variance", "mse", "gaussian_bound_mse", "energy"):
        assert getattr(single, key) == pytest.approx(getattr(double, key), rel=1e-6), key
    assert single.ecsq_mse == pytest.approx(double.ecsq_mse, rel=1e-4)
    assert single.gap_db == pytest.approx(double.gap_db, abs=1e-4)


def test_iid_weights_show_no_structure():
    s = rd.weight_structure(gaussian(128, 512))
    assert abs(s["autocorr_rows"]) < 0.02 and abs(s["autocorr_cols"]) < 0.02
    assert s["low_freq_energy"] == pytest.approx(1 / 64, abs=0.005)  # (1/8)² of white noise's energy
    assert s["effective_rank_90"] > 0.6 * 128
    assert s["outlier_share"] == 0 and 1 < s["outlier_ratio_cols"] < 1.5 and 1 < s["outlier_ratio_rows"] < 1.5


def test_outlier_channels_are_measured_per_tensor():
    """An LLM-like weight: 4 of 512 input channels (columns) 20x larger; then one output row 10x larger."""
    w = gaussian(128, 512)
    w[:, [3, 100, 200, 400]] *= 20
    s = rd.weight_structure(w)
    assert 15 < s["outlier_ratio_cols"] < 25 and s["outlier_ratio_rows"] < 3  # every row shares the columns
    assert s["outlier_share"] == pytest.approx(4 / (128 + 512))  # 4 columns above 6x the median column
    w = gaussian(128, 512)
    w[7] *= 10
    s = rd.weight_structure(w)
    assert 8 < s["outlier_ratio_rows"] < 12 and s["outlier_share"] == pytest.approx(1 / (128 + 512))
    assert rd.channel_outliers(rd.as_matrix(torch.zeros(4, 4)))["outlier_share"] == 0  # no median: no outlier


def test_smooth_weights_are_structured_and_a_low_frequency_code_goes_below_the_limit():
    w = smooth(96, 128) + 0.01 * gaussian(96, 128)
    s = rd.weight_structure(w)
    assert s["autocorr_rows"] > 0.95 and s["autocorr_cols"] > 0.95 and s["low_freq_energy"] > 0.95
    # a DCT code: the lowest 8 x 8 coefficients at 16 bits, 0.08 bits per weight
    dr, dc = rd._dct_rows(96, 96), rd._dct_rows(128, 128)
    coef = dr @ w @ dc.T
    kept = torch.zeros_like(coef)
    kept[:8, :8] = coef[:8, :8].half().double()
    decoded = dr.T @ kept @ dc
    limits = rd.tensor_limits(w, decoded, 64 * 16 + 2 * 32)
    assert limits.rate < 0.1 and limits.gap_db < -10  # far below the i.i.d. limit: the code used smoothness
    assert rd.model_limits([w], [limits])["below_limit"] is True


def test_a_low_rank_code_goes_below_the_limit_and_the_structure_shows_why():
    u, v = gaussian(256, 4, seed=1), gaussian(512, 4, seed=2)
    w = u @ v.T + 0.05 * gaussian(256, 512, seed=3)
    assert rd.weight_structure(w)["effective_rank_90"] <= 4
    uu, ss, vv = torch.linalg.svd(w, full_matrices=False)
    decoded = (uu[:, :4] * ss[:4]) @ vv[:4]
    bits = 4 * (256 + 512) * 32  # the factors at fp32
    limits = rd.tensor_limits(w, decoded, bits)
    assert limits.rate == pytest.approx(0.75)
    assert limits.gap_db < -15 and limits.gap_ecsq_db < -15
    # the same rate spent on i.i.d. Gaussian weights cannot go below the limit with a scalar quantizer
    g = gaussian(256, 512, seed=4)
    assert rd.tensor_limits(g, g * 0, bits).gap_db > 0


# -- the metric plugin ------------------------------------------------------------------------------------
class Two(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(256, 128, bias=False)
        self.b = nn.Linear(128, 64, bias=False)


def weight_eval(codes: dict) -> Evaluation:
    torch.manual_seed(0)
    model = Two()
    with torch.no_grad():
        model.a.weight.copy_(torch.randn(128, 256))
        model.b.weight.copy_(0.1 * torch.randn(64, 128))
    dense = LoadedModel(model, (256,), 64, "hand-made")
    compressed = Compressed.from_codes(Two(), codes(model))
    return Evaluation(model, dense, compressed, None, torch.device("cpu"), 1, lambda: (torch.empty(0), None), {"compress": 0.0})


def test_the_limits_metric_fills_the_report_contract(plugins: Plugins):
    from b2s_bench_plugins.compressors import quantize

    def rtn4(model: nn.Module) -> dict:
        config = build_config(quantize.SPEC.config, {"bits": 4, "granularity": "channel"})
        return dict(quantize.SPEC.compress(model, config, Context()).codes)

    ev = weight_eval(rtn4)
    gap = plugins.metrics.get("weight_rd_gap_db").compute(ev)
    ecsq_gap = plugins.metrics.get("weight_ecsq_gap_db").compute(ev)
    detail = ev.details["rate_distortion"]
    assert set(detail) == {"tensors", "model"}
    assert set(detail["tensors"]) == {"a.weight", "b.weight"}
    assert set(detail["tensors"]["a.weight"]) == {
        "numel",
        "bits",
        "rate",
        "variance",
        "mse",
        "gaussian_bound_mse",
        "ecsq_mse",
        "gap_db",
        "gap_ecsq_db",
    }
    assert set(detail["model"]) == {"rate", "mse", "energy", "variance_ratio", "bound_mse", "ecsq_mse", "gap_db", "below_limit"}
    assert set(ev.details["weight_structure"]["a.weight"]) == {
        "autocorr_rows",
        "autocorr_cols",
        "low_freq_energy",
        "effective_rank_90",
        "outlier_ratio_cols",
        "outlier_ratio_rows",
        "outlier_share",
    }
    a = detail["tensors"]["a.weight"]
    assert a["rate"] == pytest.approx(ev.compressed.codes["a.weight"].bits().total / (128 * 256))
    assert 4 < a["rate"] < 4.5  # 4-bit codes and one scale per row
    # fixed-rate round-to-nearest on Gaussian weights: above both the limit and an entropy-coded quantizer
    assert gap == detail["model"]["gap_db"] > rd.ECSQ_HIGH_RATE_GAP_DB and ecsq_gap > 1.0
    assert detail["model"]["below_limit"] is False
    assert detail["model"]["variance_ratio"] == pytest.approx(1.0, abs=0.02)  # zero-mean weights
    # an exact copy has no error: -inf dB, below any limit
    exact = weight_eval(lambda m: {"a.weight": StoredTensorCode(m.a.weight.detach().clone())})
    # an exact fp32 copy: 32 bits per weight, where a gap to the continuous bound means nothing
    with pytest.raises(NotApplicable, match="16 bits or more"):
        plugins.metrics.get("weight_rd_gap_db").compute(exact)
    assert exact.details["rate_distortion"]["model"]["gap_db"] is None
    assert exact.details["rate_distortion"]["model"]["below_limit"] is False
    assert rd.below_limit(-math.inf, 32.0) is False and rd.below_limit(-0.1, 15.9) is True
    assert rd.below_limit(-0.1, 16.0) is False and rd.below_limit(None, 4.0) is False
    assert rd.below_limit(math.nan, 4.0) is False and rd.below_limit(0.0, 4.0) is False
    with pytest.raises(NotApplicable):
        plugins.metrics.get("weight_rd_gap_db").compute(weight_eval(lambda m: {}))


@pytest.mark.parametrize("weight_limits", [True, False])
def test_every_record_that_replaces_weights_gets_its_limits_without_listing_the_metrics(
    write_suite: Callable[..., Path], tmp_path: Path, weight_limits: bool
) -> None:
    suite = write_suite(f"""
        suite: limits
        models: [{{name: tiny:cnn}}]
        dataset: {{name: random, n: 16}}
        compressors:
          - {{name: quantize, bits: 4}}
          - {{name: prune, sparsity: 0.5}}
        metrics: [agreement, bits, ratio]
        runtime: {{save_artifacts: false, weight_limits: {str(weight_limits).lower()}}}
        """)
    out = tmp_path / "run"
    assert run_cli("run", str(suite), "--out", str(out), "--quiet", "--no-progress", "--executor", "inline") == 0
    recs = {r["label"]: r for r in (json.loads(p.read_text()) for p in (out / "cells").glob("*.json"))}
    assert set(recs) == {"dense", "quantize(bits=4)", "prune(sparsity=0.5)"}
    assert "rate_distortion" not in recs["dense"]["details"]  # nothing replaced, nothing to measure
    for label in ("quantize(bits=4)", "prune(sparsity=0.5)"):
        details = recs[label]["details"]
        if not weight_limits:
            assert "rate_distortion" not in details and "weight_structure" not in details
            assert "limits" not in recs[label]["timings"]
            continue
        timings = recs[label]["timings"]
        assert 0 < timings["limits"] < timings["total"]  # what the limits cost, for bench_first_command
        assert 0 < timings["checks"] < timings["evaluate"] <= timings["total"]  # and the runner's checks of the result
        tensors = details["rate_distortion"]["tensors"]
        assert tensors and set(tensors) == set(details["weight_structure"])
        model = details["rate_distortion"]["model"]
        assert model["rate"] == pytest.approx(
            sum(t["bits"] for t in tensors.values()) / sum(t["numel"] for t in tensors.values())
        )
        # 4-bit codes have a gap; 50 % pruning stores fp32 values and a mask, over 16 bits: none
        if model["rate"] < rd.GAP_BITS:
            assert math.isfinite(model["gap_db"])
        else:
            assert model["gap_db"] is None
        assert model["below_limit"] is False
        assert "weight_rd_gap_db" not in recs[label]["metrics"]  # a detail, not a column nobody asked for


# -- when the limits mean something ----------------------------------------------------------------------
@pytest.mark.parametrize("bits_per_weight", [16.0, 20.0, 32.0])
def test_the_gap_is_none_at_16_bits_per_weight_or_more(bits_per_weight: float) -> None:
    w = gaussian(64, 128)  # an fp32 INR or a 16-bit code: a tiny error, a bound of −96 dB or less
    decoded = w + 1e-6 * gaussian(64, 128, seed=1)
    limits = rd.tensor_limits(w, decoded, int(bits_per_weight * w.numel()))
    assert limits.gap_db is None and limits.mse > 0
    model = rd.model_limits([w], [limits])
    assert model["gap_db"] is None and model["below_limit"] is False
    below = rd.tensor_limits(w, decoded, int(15.5 * w.numel()))  # under 16 bits the gap is reported
    assert below.gap_db is not None and below.gap_db < 0


def test_the_ecsq_reference_is_left_out_on_small_tensors() -> None:
    # the rule: N ≥ 4096 and N ≥ 64·2^R
    assert rd.ecsq_applies(4096, 4.0) and not rd.ecsq_applies(4095, 1.0)
    assert rd.ecsq_applies(16384, 8.0) and not rd.ecsq_applies(16383, 8.0) and not rd.ecsq_applies(10**9, 32.0)
    small = gaussian(32, 9)  # N = 288, a 3x3 convolution of 32 filters: 2^4 is not much smaller than N
    t = rd.tensor_limits(small, small.half().double(), 4 * small.numel())
    assert t.ecsq_mse is None and t.gap_ecsq_db is None and t.gap_db is not None
    large = gaussian(64, 128)
    big = rd.tensor_limits(large, large.half().double(), 4 * large.numel())
    assert big.ecsq_mse is not None and big.gap_ecsq_db is not None
    # the model's shared-step reference needs every coded tensor to qualify
    assert rd.model_limits([large, small], [big, t])["ecsq_mse"] is None
    assert rd.model_limits([large], [big])["ecsq_mse"] is not None


def test_the_below_limit_note_names_the_three_causes() -> None:
    from b2s_bench.reporting.summary import BELOW_LIMIT_LINE
    from b2s_bench.reporting.theory import RATE_DISTORTION, SECTION_NOTES

    for text in (SECTION_NOTES[RATE_DISTORTION], BELOW_LIMIT_LINE):
        assert "structure" in text and "not Gaussian" in text and "miscounted" in text, text


def _count(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    calls = [0]
    original = getattr(rd, name)

    def counted(*args: object, **kwargs: object) -> object:
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(rd, name, counted)
    return calls


def _stored(bits: int) -> Callable[[nn.Module], dict]:
    """Codes of a and b rounded as ``bits``-bit floats would be, counted at ``bits`` bits per weight."""
    from b2s_bench_plugins.compressors import quantize

    def codes(model: nn.Module) -> dict:
        if bits == 32:
            return {k: StoredTensorCode(p.detach().clone()) for k, p in model.named_parameters()}
        config = build_config(quantize.SPEC.config, {"bits": bits, "granularity": "channel"})
        return dict(quantize.SPEC.compress(model, config, Context()).codes)

    return codes


def test_the_limits_do_no_more_work_at_32_bits_than_at_8(monkeypatch: pytest.MonkeyPatch) -> None:
    passes = _count(monkeypatch, "index_entropy")  # one pass over a tensor per call: the ECSQ search's work
    work = {}
    for bits in (8, 32):
        passes[0] = 0
        rd._STRUCTURE.clear()  # the structure is cached per tensor; here both settings compute it
        weight_eval(_stored(bits)).limits()
        work[bits] = passes[0]
    assert work[32] <= work[8]
    assert work[32] == 0  # at 32 bits no tensor is large enough for ECSQ: N ≥ 64·2^32 never holds
    assert 0 < work[8] <= 3 * 12  # the secant search: a few passes per tensor and for the model, not 40


def test_a_dense_tensors_structure_is_computed_once_per_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("B2S_BENCH_CACHE", str(tmp_path / "cache"))  # an empty cache: nothing on disk yet
    calls = _count(monkeypatch, "weight_structure")
    rd._STRUCTURE.clear()
    first = weight_eval(_stored(4))
    first.limits()
    assert calls[0] == 2  # a.weight and b.weight
    for bits in (8, 32):  # more cells of the same model: the originals, so their structure, are the same
        ev = weight_eval(_stored(bits))
        ev.limits()
        assert ev.details["weight_structure"] == first.details["weight_structure"]
    assert calls[0] == 2
    other = torch.randn(128, 256, generator=torch.Generator().manual_seed(9))
    rd.structure_of(other)  # another tensor is computed
    assert calls[0] == 3


def test_the_secant_step_search_reaches_the_rate_in_few_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    passes = _count(monkeypatch, "index_entropy")
    torch.manual_seed(0)
    x = torch.distributions.Laplace(0.0, 1.0).sample((100_000,)).double()
    for rate in (1.0, 3.0, 6.0):
        passes[0] = 0
        e = rd.ecsq(x, rate)
        assert e.rate == pytest.approx(rate, abs=1e-3)
        assert passes[0] <= 12, (rate, passes[0])


def test_a_pipeline_record_keeps_each_stages_details_under_the_stage(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    suite = write_suite("""
        suite: stages
        models: [{name: tiny:cnn}]
        dataset: {name: random, n: 8}
        compressors:
          - pipeline: [{name: lowrank, rank: 2}, {name: quantize, bits: 4}]
        metrics: [bits, weight_rel_mae]
        runtime: {save_artifacts: false}
        """)
    out = tmp_path / "run"
    assert run_cli("run", str(suite), "--out", str(out), "--quiet", "--no-progress", "--executor", "inline") == 0
    (rec,) = (r for r in (json.loads(p.read_text()) for p in (out / "cells").glob("*.json")) if r["label"] != "dense")
    first, second = rec["details"]["stages"]
    assert first["compressor"] == "lowrank" and "ranks" in first and "ranks" not in rec["details"]
    assert second["compressor"] == "quantize" and second["tensors"] > 0
    after = second["against_previous"]
    assert set(after["tensors"]) <= set(first["ranks"]) and len(after["tensors"]) == second["tensors"]
    assert 0 < after["rel_mae"] < 1 and 0 < after["cosine"] <= 1  # 4-bit rounding of the factors moved the weights
    # the final weights' error (the metric) differs from what the second stage alone changed
    assert rec["metrics"]["weight_rel_mae"]["value"] > 0


def test_the_cells_of_a_run_share_each_tensors_structure(
    write_suite: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("B2S_BENCH_CACHE", str(tmp_path / "cache"))
    calls = _count(monkeypatch, "weight_structure")
    rd._STRUCTURE.clear()
    suite = write_suite("""
        suite: shared
        models: [{name: tiny:cnn}]
        dataset: {name: random, n: 8}
        compressors:
          - {name: quantize, grid: {bits: [8, 4, 32]}}
        metrics: [bits]
        runtime: {save_artifacts: false}
        """)
    out = tmp_path / "run"
    assert run_cli("run", str(suite), "--out", str(out), "--quiet", "--no-progress", "--executor", "inline") == 0
    recs = [json.loads(p.read_text()) for p in (out / "cells").glob("*.json")]
    coded = [set(r["details"]["weight_structure"]) for r in recs if "weight_structure" in r["details"]]
    assert len(coded) == 3 and coded[0] == coded[1] == coded[2]
    assert calls[0] == len(coded[0])  # three cells, each original tensor's structure computed once


def test_the_structure_cache_on_disk_serves_another_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = _count(monkeypatch, "weight_structure")
    w = gaussian(48, 80).float()
    rd._STRUCTURE.clear()
    first = rd.structure_of(w, folder=tmp_path)
    (path,) = tmp_path.glob("*.json")
    assert path.name == f"{rd.tensor_digest(w)}.json" and calls[0] == 1
    rd._STRUCTURE.clear()  # a new process: only the disk remembers
    assert rd.structure_of(w.clone(), folder=tmp_path) == first and calls[0] == 1
    path.write_text("{not json")  # a damaged file is recomputed and rewritten
    rd._STRUCTURE.clear()
    assert rd.structure_of(w, folder=tmp_path) == first and calls[0] == 2
    assert json.loads(path.read_text()) == first


def test_a_later_stage_keeps_the_first_stages_caveats_at_the_top_too() -> None:
    from b2s_bench_plugins.compressors import lowrank, quantize

    from b2s_bench.execution.cell import apply_stage

    model = Two()
    first = lowrank.SPEC.compress(model, build_config(lowrank.SPEC.config, {"rank": 2}), Context())
    first.info["caveats"] = [{"kind": "unconverged", "layer": "a.weight"}]  # as a fit that ran out of budget says
    out = apply_stage(first, quantize.SPEC, build_config(quantize.SPEC.config, {"bits": 4}), Context())
    assert out.info["stages"][0]["caveats"] == out.info["caveats"] == first.info["caveats"]
    assert out.info["stages"][0]["ranks"] == first.info["ranks"] and "ranks" not in out.info
    assert out.info["stages"][1]["compressor"] == "quantize" and out.info["stages"][1]["tensors"] == 2
