"""Tests of the Big2Small compressor plugin (fast: each a few seconds on a CPU)."""

from __future__ import annotations

import math
import tempfile

import pytest
import torch
from b2s_bench_plugins.compressors import quantize
from b2s_bench_plugins.compressors.big2small import SPEC, INRCode
from b2s_bench_plugins.compressors.big2small.codes import code_bits, header_ints
from b2s_bench_plugins.compressors.big2small.compressor import choose_width, make_arch
from b2s_bench_plugins.compressors.big2small.inr import param_count
from b2s_bench_plugins.compressors.big2small.loss import focal_frequency_loss, gradient_difference_loss
from b2s_bench_plugins.compressors.big2small.outliers import pack_positions, position_bits, preprocess, unpack_positions
from torch import nn

from b2s_bench import Compressed, ConfigError, Context, build_config
from b2s_bench.execution.cell import apply_stage
from b2s_bench.fitting.solve import fit_network, relative_error
from b2s_bench.testing import check_compressor, tiny_context, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def config(**settings):
    return build_config(SPEC.config, {"min_bytes": 0, **settings}, owner="big2small")


def linear_model(out_features: int, in_features: int, weight: torch.Tensor | None = None, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(in_features, out_features, bias=False))
    if weight is not None:
        with torch.no_grad():
            model[0].weight.copy_(weight)
    return model


def smooth_matrix(rows: int, cols: int) -> torch.Tensor:
    r = torch.linspace(0, 3, rows)[:, None]
    c = torch.linspace(0, 2, cols)[None, :]
    return 0.05 * (torch.sin(r) * torch.cos(c) + 0.5 * torch.cos(2 * r + c))


def roundtrip(comp: Compressed) -> Compressed:
    with tempfile.TemporaryDirectory() as tmp:
        comp.save(f"{tmp}/a")
        return Compressed.load(f"{tmp}/a", comp.skeleton, {INRCode.kind: INRCode, **{c.kind: c for c in quantize.SPEC.codes}})


# -- size accounting ------------------------------------------------------------------------------------
def test_exact_bits_of_a_hand_computed_case():
    gen = torch.Generator().manual_seed(0)
    w = torch.rand(40, 30, generator=gen) * 2 - 1
    w.view(-1)[[5, 700, 1199]] = 100.0  # three outliers at |z| ~ 20; all other |z| < 0.3
    model = linear_model(40, 30, w)
    cfg = config(width=16, depth=2, mod_width=4, frequencies=2, inr_bits=8, outliers="sigma", kappa=3.0, steps=2)
    comp = SPEC.compress(model, cfg, Context())
    code = comp.codes["0.weight"]
    # INR: features 2 axes x (1 + 2·2) = 10; synthesis 16·10+16 + 16·16+16 + 16+1 = 465;
    # modulation 4·10+4 + (2·16·2)·4 + 64 = 364 -> 829 parameters at 8 bits
    assert code.n_params == 829
    # one fp32 scale per matrix row (16 + 16 + 1 + 4 + 64) and per bias vector (5); mean, std, omega0
    expected = {
        "inr": 829 * 8,
        "scales": 106 * 32 + 3 * 32,
        "outliers": 3 * 32,
        "indices": 3 * 11,  # 3 positions of ceil(log2 1200) = 11 bits < a 1200-bit mask
        "metadata": (1 + 2 + 13) * 32,
    }  # the header in meta(): ndim, shape, 13 fields
    assert header_ints((40, 30)) == 16 and len(code.meta()["header"]) == 16
    got = code.bits().as_dict()
    assert {k: got[k] for k in expected} == expected
    assert comp.size().total_bits == sum(expected.values()) == 10761
    in_tensors = sum(expected.values()) - expected["metadata"]
    assert sum(t.numel() * t.element_size() for t in code.tensors().values()) <= math.ceil(in_tensors / 8) + 1
    with tempfile.TemporaryDirectory() as tmp:
        comp.save(f"{tmp}/a")
        from pathlib import Path

        stored = (Path(tmp) / "a" / "tensors.safetensors").stat().st_size
    assert in_tensors / 8 <= stored <= in_tensors / 8 + 1024  # + the safetensors header


def test_float_inr_bits_and_payload():
    model = linear_model(64, 128)
    for bits in (32, 16):
        comp = SPEC.compress(model, config(width=16, mod_width=4, frequencies=4, steps=2, inr_bits=bits), Context())
        code = comp.codes["0.weight"]
        b = code.bits()
        assert b.inr == bits * code.n_params and b.scales == 3 * 32  # only mean, std, omega0
        assert bool(code.payload()) == (bits == 32)


def test_position_bits_pick_the_cheaper_encoding():
    assert position_bits(0, 1000) == (0, "none")
    assert position_bits(3, 1200) == (33, "index")
    assert position_bits(200, 1024) == (1024, "mask")  # 200 x 10 bits > a 1024-bit mask
    for n in (3, 200):
        pos = torch.randperm(1024, generator=torch.Generator().manual_seed(n))[:n].sort().values
        packed = pack_positions(pos, 1024)
        assert torch.equal(unpack_positions(packed, n, 1024), pos)
        assert sum(t.numel() for t in packed.values()) == math.ceil(position_bits(n, 1024)[0] / 8)


# -- outliers -------------------------------------------------------------------------------------------
def test_outliers_come_back_exactly():
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(48, 64, generator=gen) * 0.02
    w.view(-1)[torch.randperm(w.numel(), generator=gen)[:20]] *= 40  # heavy tails
    for rule, settings in (("sigma", {"kappa": 3.0}), ("top", {"top_percent": 1.0})):
        pre = preprocess(w, True, rule, settings.get("kappa", 3.0), settings.get("top_percent", 1.0))
        assert pre.positions.numel() > 0 and torch.equal(pre.values, w.view(-1)[pre.positions])
        assert float(pre.target.abs().max()) <= pre.threshold + 1e-6  # the INR sees the clipped remainder
        comp = SPEC.compress(
            linear_model(48, 64, w), config(width=16, mod_width=4, frequencies=4, steps=3, outliers=rule, **settings), Context()
        )
        code = comp.codes["0.weight"]
        assert code.n_outliers == pre.positions.numel()
        for c in (code, roundtrip(comp).codes["0.weight"]):
            decoded = c.decode().view(-1)
            assert torch.equal(decoded[pre.positions], w.view(-1)[pre.positions])
    none = SPEC.compress(
        linear_model(48, 64, w), config(width=16, mod_width=4, frequencies=4, steps=3, outliers="none"), Context()
    )
    assert none.codes["0.weight"].n_outliers == 0 and none.codes["0.weight"].bits().outliers == 0


# -- the loss -------------------------------------------------------------------------------------------
def test_loss_terms_vanish_at_the_target_and_the_loss_decreases():
    x = torch.randn(3, 2, 8, 8)
    assert torch.allclose(gradient_difference_loss(x, x), torch.zeros(3, 2))  # one value per block
    assert torch.allclose(focal_frequency_loss(x, x), torch.zeros(3, 2))
    assert (focal_frequency_loss(x + 0.1 * torch.randn_like(x), x) > 0).all()
    model = linear_model(64, 96, smooth_matrix(64, 96))
    comp = SPEC.compress(
        model,
        config(width=24, mod_width=4, frequencies=4, steps=150, patch_rows=0, patch_cols=0, lr=3e-3, outliers="none"),
        Context(),
    )
    layer = comp.info["inr_layers"]["0.weight"]
    assert layer["final_loss"] < 0.5 * layer["first_loss"]
    assert relative_error(comp.codes["0.weight"].decode(), model[0].weight) < 0.5


@pytest.mark.parametrize("layout, block", [("nd", 1), ("2d", 9)])
def test_conv_layouts_and_blocks_fit_a_smooth_kernel(layout, block):
    o, i, u, v = torch.meshgrid(*(torch.linspace(0, 1, n) for n in (48, 16, 3, 3)), indexing="ij")
    w = 0.05 * torch.sin(3 * o + 2 * i) * torch.cos(u - v)
    model = nn.Sequential(nn.Conv2d(16, 48, 3, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(w)
    comp = SPEC.compress(
        model,
        config(
            width=16,
            mod_width=4,
            frequencies=4,
            steps=150,
            patch_rows=0,
            patch_cols=0,
            lr=3e-3,
            outliers="none",
            layout=layout,
            block=block,
        ),
        Context(),
    )
    code = comp.codes["0.weight"]
    assert code.arch.coord_dims == (4 if layout == "nd" else 2) and code.arch.block == block
    assert relative_error(code.decode(), w) < 0.5
    assert torch.equal(roundtrip(comp).codes["0.weight"].decode(), code.decode())


# -- divergence -----------------------------------------------------------------------------------------
def test_a_diverged_fit_is_retried_at_a_lower_lr_and_reported():
    model = linear_model(64, 128)
    small = {"width": 16, "mod_width": 4, "frequencies": 4, "steps": 10}
    comp = SPEC.compress(model, config(lr=1e20, nan_lr_factor=1e-22, nan_retries=1, **small), Context())
    assert comp.info["nan_retries"] == {"0.weight": [1e20, pytest.approx(1e-2)]}
    assert comp.info["inr_layers"]["0.weight"]["retries"] == 1 and "0.weight" in comp.codes
    assert torch.isfinite(comp.codes["0.weight"].decode()).all()

    failed = SPEC.compress(model, config(lr=1e20, nan_lr_factor=1.0, nan_retries=1, **small), Context())
    assert failed.info["fit_failed"] == ["0.weight"] and "0.weight" in failed.info["raw_layers"]
    assert "0.weight" not in failed.codes and torch.equal(failed.raw["0.weight"], model[0].weight.detach())
    with pytest.raises(RuntimeError, match="diverged"):
        SPEC.compress(model, config(lr=1e20, nan_lr_factor=1.0, nan_retries=1, on_failure="raise", **small), Context())


# -- raw fallback ---------------------------------------------------------------------------------------
def test_small_tensors_and_unprofitable_inrs_are_stored_raw():
    model = tiny_model(0)
    default = SPEC.compress(model, build_config(SPEC.config, {"steps": 2, "frequencies": 4}), tiny_context(0))
    assert list(default.codes) == ["classifier.1.weight"]  # the only tensor above 100 KB (131 KB)
    assert not default.info["raw_layers"]
    comp = SPEC.compress(model, config(steps=2, target_ratio=2.0, frequencies=4), tiny_context(0))
    assert list(comp.codes) == ["classifier.1.weight"]
    assert set(comp.info["raw_layers"]) == {"features.0.weight", "features.4.weight", "classifier.3.weight"}
    forced = SPEC.compress(model, config(steps=2, width=128), tiny_context(0))  # width given directly: too big
    assert not forced.codes and "bits" in forced.info["raw_layers"]["classifier.1.weight"]
    assert all(v.dtype == torch.float32 for v in forced.raw.values())


def test_small_bits_quantizes_the_weights_without_an_inr():
    model = tiny_model(0)
    settings = {"steps": 2, "frequencies": 4}
    plain = SPEC.compress(model, build_config(SPEC.config, settings), tiny_context(0))
    small = SPEC.compress(model, build_config(SPEC.config, {**settings, "small_bits": 8}), tiny_context(0))
    quantized = {"features.0.weight", "features.4.weight", "classifier.3.weight"}
    assert set(small.codes) == {"classifier.1.weight", *quantized} and small.info["small_bits"]["bits"] == 8
    assert all(type(small.codes[k]).__name__ == "UniformCode" for k in quantized)
    assert not set(small.raw) & quantized and "features.1.weight" in small.raw  # conv/linear weights only
    # 8 instead of 32 bits per small weight (plus per-channel scales): fewer bits in all
    assert small.size().total_bits < plain.size().total_bits
    w = model.state_dict()["features.4.weight"]
    err = (small.codes["features.4.weight"].decode() - w).abs().max()
    assert err <= w.abs().max() / 127  # within one step of the 8-bit grid per channel
    assert torch.equal(roundtrip(small).codes["features.4.weight"].decode(), small.codes["features.4.weight"].decode())
    with pytest.raises(ConfigError, match="small_bits"):
        build_config(SPEC.config, {"small_bits": 12}, owner="big2small")


def test_budget_rule():
    cfg = config(target_ratio=4.0)
    width = choose_width((1152, 192), cfg)
    assert width % cfg.width_multiple == 0
    assert param_count(make_arch((1152, 192), width, cfg)) <= 1152 * 192 / 4
    assert param_count(make_arch((1152, 192), width + cfg.width_multiple, cfg)) > 1152 * 192 / 4
    assert choose_width((4, 4), cfg) is None
    assert choose_width((4, 4), config(width=8)) == 8


# -- artifacts, network form, deployed form ---------------------------------------------------------------
@pytest.mark.parametrize(
    "settings",
    [
        {"inr_bits": 32},
        {"inr_bits": 6, "finetune_steps": 3, "layout": "nd", "block": 3},
        {"inr_bits": 16, "fourier": "gaussian", "block": 4},
    ],
)
def test_save_and_load_reproduce_the_weights(settings):
    model = tiny_model(0)
    comp = SPEC.compress(model, config(steps=3, frequencies=4, target_ratio=2.0, **settings), tiny_context(0))
    assert comp.codes
    loaded = roundtrip(comp)
    for key, code in comp.codes.items():
        assert torch.equal(code.decode(), loaded.codes[key].decode())
        assert loaded.codes[key].bits() == code.bits()
    assert loaded.size().total_bits == comp.size().total_bits


def test_a_later_quantize_stage_quantizes_the_inr():
    comp = SPEC.compress(tiny_model(0), config(steps=3, frequencies=4, target_ratio=2.0), tiny_context(0))
    qconfig = build_config(quantize.SPEC.config, {"bits": 6})
    nested = apply_stage(comp, quantize.SPEC, qconfig, tiny_context(0))
    code = nested.codes["classifier.1.weight"]
    n = comp.codes["classifier.1.weight"].n_params
    assert code.bits().inr == 0 and code.bits().payload == 6 * n
    assert nested.size().total_bits < comp.size().total_bits
    loaded = roundtrip(nested)
    assert torch.equal(loaded.codes["classifier.1.weight"].decode(), code.decode())


def test_network_form_and_deployed_form():
    model = tiny_model(0)
    comp = SPEC.compress(model, config(steps=5, frequencies=4, target_ratio=2.0), tiny_context(0))
    code = comp.codes["classifier.1.weight"]
    net = code.as_network("code")
    with torch.no_grad():
        assert torch.allclose(net(), code.decode(), atol=1e-6)
    assert float(code.regularizer()) == code.n_params + code.n_outliers
    target = model.state_dict()["classifier.1.weight"]
    start = relative_error(code.as_network("random", torch.Generator().manual_seed(0))().detach(), target)
    result = fit_network(code.as_network("random", torch.Generator().manual_seed(0)), target, steps=10)
    assert result.rel_error < start
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        plain = comp.module()(x)
        deployed_model = comp.module(deployed=True)
        assert any(type(m).__name__ == "INRLayer" for m in deployed_model.modules())
        assert torch.allclose(deployed_model(x), plain, atol=1e-5)


# -- batched == naive -------------------------------------------------------------------------------------
def test_batched_fit_matches_the_naive_loop():
    gen = torch.Generator().manual_seed(3)
    model = nn.Sequential(
        nn.Linear(64, 96, bias=False),
        nn.Linear(96, 64, bias=False),
        nn.Linear(64, 96, bias=False),
        nn.Linear(96, 128, bias=False),
    )
    with torch.no_grad():
        for m in model:
            m.weight.copy_(smooth_matrix(*m.weight.shape) + 0.01 * torch.randn(m.weight.shape, generator=gen))
    settings = {"width": 16, "mod_width": 4, "frequencies": 4, "steps": 40, "patch_rows": 16, "patch_cols": 16}
    fits = {}
    for batched in (True, False):
        comp = SPEC.compress(model, config(batched=batched, **settings), Context())
        assert comp.info["batched"] is batched and comp.info["compressed_layers"] == 4
        fits[batched] = comp
    assert fits[True].info["fit_groups"] == 1  # one architecture, one crop shape: all four stacked
    state = model.state_dict()
    for key in fits[True].codes:
        e_batched = relative_error(fits[True].codes[key].decode(), state[key])
        e_naive = relative_error(fits[False].codes[key].decode(), state[key])
        assert abs(e_batched - e_naive) <= 0.01 * e_naive
        assert torch.allclose(fits[True].codes[key].decode(), fits[False].codes[key].decode(), atol=1e-4)


# -- the contract and the settings -----------------------------------------------------------------------
def test_contract():
    check_compressor(SPEC)
    check_compressor(SPEC, {"inr_bits": 6, "layout": "nd", "block": 3, "finetune_steps": 2})


def test_bad_settings_name_the_key():
    with pytest.raises(ConfigError, match="steps must be >= 1, got 0"):
        config(steps=0)
    with pytest.raises(ConfigError, match="inr_bits"):
        config(inr_bits=12)
    with pytest.raises(ConfigError, match="outliers"):
        config(outliers="kappa")


def test_info_reports_per_layer_and_aggregate_facts():
    comp = SPEC.compress(tiny_model(0), config(steps=3, frequencies=4, target_ratio=2.0), tiny_context(0))
    layer = comp.info["inr_layers"]["classifier.1.weight"]
    assert {"inr_params", "outliers", "width", "fit_seconds", "final_loss"} <= set(layer)
    assert comp.info["compressed_layers"] == 1 and comp.info["fit_seconds"] > 0 and comp.info["steps_per_second"] > 0
    original = tiny_model(0).state_dict()["classifier.1.weight"]
    decoded = comp.codes["classifier.1.weight"].decode()
    assert layer["rel_mae"] == pytest.approx(float((decoded - original).abs().mean() / original.abs().mean()))
    assert layer["cosine"] == pytest.approx(
        float(torch.nn.functional.cosine_similarity(decoded.reshape(1, -1), original.reshape(1, -1))), abs=1e-5
    )
    mse = float(((decoded - original) ** 2).mean())
    assert layer["psnr"] == pytest.approx(10 * math.log10(float(original.max() - original.min()) ** 2 / mse), rel=1e-4)
    assert comp.info["weight_psnr"] == pytest.approx(layer["psnr"])  # the mean over the one INR layer
    assert torch.equal(comp.state_dict()["classifier.1.weight"], decoded)  # the kept decode is the code's decode
    import json

    json.dumps(comp.info)  # goes into the record


def test_mixed_precision_fits_and_stays_out_of_cell_ids_at_its_default():
    from b2s_bench.config import config_identity

    model = linear_model(64, 96, smooth_matrix(64, 96))
    settings = dict(width=24, mod_width=4, frequencies=4, steps=150, patch_rows=0, patch_cols=0, lr=3e-3, outliers="none")
    fp32 = SPEC.compress(model, config(**settings), Context())
    bf16 = SPEC.compress(model, config(**settings, precision="bf16"), Context())
    layer = bf16.info["inr_layers"]["0.weight"]
    assert layer["final_loss"] < 0.5 * layer["first_loss"]  # bf16 autocast still fits
    assert bf16.codes["0.weight"].decode().dtype == torch.float32
    err32 = relative_error(fp32.codes["0.weight"].decode(), model[0].weight)
    err16 = relative_error(bf16.codes["0.weight"].decode(), model[0].weight)
    assert err16 < 0.5 and abs(err16 - err32) < 0.1
    # an added setting at its default is not part of the id, so earlier records stay valid
    assert "precision" not in config_identity(config())
    assert config_identity(config(precision="bf16"))["precision"] == "bf16"
    with pytest.raises(ConfigError, match="precision"):
        config(precision="fp16")


# -- budget, quantization, reordering ---------------------------------------------------------------------------
def test_target_bits_bounds_the_whole_code():
    cfg = config(target_bits=4.0, inr_bits=6, permute="pca")
    shape = (128, 576)
    width = choose_width(shape, cfg, n_outliers=10)
    total = code_bits(make_arch(shape, width, cfg), shape, 6, 10, True).total
    assert total <= 4.0 * 128 * 576 < code_bits(make_arch(shape, width + 16, cfg), shape, 6, 10, True).total


def test_reordering_is_stored_exactly_and_finds_hidden_smoothness():
    gen = torch.Generator().manual_seed(0)
    w = smooth_matrix(48, 96)[torch.randperm(48, generator=gen)][:, torch.randperm(96, generator=gen)]
    small = dict(width=16, mod_width=4, frequencies=4, steps=150, lr=3e-3, patch_rows=0, patch_cols=0, outliers="none")
    fits = {
        mode: SPEC.compress(linear_model(48, 96, w), config(**small, permute=mode), Context())
        for mode in ("none", "pca", "greedy")
    }
    errors = {m: relative_error(c.codes["0.weight"].decode(), w) for m, c in fits.items()}
    assert errors["pca"] < 0.5 * errors["none"] and errors["greedy"] < 0.5 * errors["none"]
    code = fits["greedy"].codes["0.weight"]
    assert code.permuted and not fits["none"].codes["0.weight"].permuted
    assert code.bits().indices == 48 * 6 + 96 * 7  # ceil(log2 48) = 6, ceil(log2 96) = 7 bits per index
    loaded = roundtrip(fits["greedy"]).codes["0.weight"]
    assert torch.equal(loaded.row_order, code.row_order) and torch.equal(loaded.decode(), code.decode())
    check_compressor(SPEC, {"permute": "greedy", "inr_bits": 6, "qat": "on"})


def test_deployed_form_evaluates_once_per_forward_or_caches():
    model = tiny_model(0)
    comp = SPEC.compress(model, config(steps=3, frequencies=4, target_ratio=2.0, deploy_cache=True), tiny_context(0))
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        plain = comp.module()(x)
        deployed = comp.module(deployed=True)
        layer = next(m for m in deployed.modules() if type(m).__name__ == "INRLayer")
        calls = []
        layer.decoder.register_forward_hook(lambda *a: calls.append(1))
        for _ in range(3):
            assert torch.allclose(deployed(x), plain, atol=1e-5)
    assert len(calls) == 1 and layer.decoder.features is not None  # cached: decoded on the first forward only
    assert roundtrip(comp).codes["classifier.1.weight"].deploy_cache


# -- the claims table -------------------------------------------------------------------------------------------
def _record(
    cell_id: str,
    stages: list[tuple[str, dict]],
    metrics: dict,
    bits: float,
    label: str,
    seed: int = 0,
    caveats: tuple[str, ...] = (),
) -> tuple[dict, dict]:
    row = {
        "cell_id": cell_id,
        "status": "ok",
        "model": "m",
        "method": label,
        "total_bits": bits,
        **{f"metric:{k}": v for k, v in metrics.items()},
    }
    rec = {
        "cell_id": cell_id,
        "seed": seed,
        "environment": {"device": "cpu"},
        "compressor": {"pipeline": [{"name": n, "config": c} for n, c in stages]},
        "details": {"passes": 120.4, "caveats": [{"kind": k, "message": "..."} for k in caveats]},
    }
    return row, rec


def _interval_agrees(row) -> bool:
    """A verdict never contradicts its interval."""
    if row["interval"] == "–" or row["verdict"].startswith(("inconclusive", "not testable")):
        return True
    lo, hi = (float(x) for x in row["interval"].strip("[]").split(","))
    return {"supported": lo > 0, "refuted": hi < 0, "not significant": lo <= 0 <= hi}[row["verdict"]]


def test_claims_have_evidence_levels_and_never_contradict_their_interval(tmp_path):
    import json

    import pandas as pd
    from b2s_bench_plugins.compressors.big2small import CLAIMS
    from b2s_bench_plugins.compressors.big2small.claims import claims_table

    from b2s_bench.reporting import ReportContext

    full = {"steps": 6000, "standardize": True, "outliers": "sigma", "lambda_grad": 1.0, "lambda_freq": 1.0}
    cells = []
    for seed, jitter in enumerate((0.0, 0.1, -0.1)):
        cells += [
            _record(f"full{seed}", [("big2small", full)], {"weight_psnr": 34.5 + jitter, "top1": 80.0}, 1000, "full", seed),
            _record(
                f"raw{seed}",
                [("big2small", {**full, "standardize": False, "outliers": "none"})],
                {"weight_psnr": 25.5 - jitter},
                1000,
                "raw",
                seed,
            ),  # preprocessing: about +9 dB
            _record(
                f"mse{seed}",
                [("big2small", {**full, "lambda_grad": 0.0, "lambda_freq": 0.0})],
                {"weight_psnr": 36.2 + jitter},
                1000,
                "mse",
                seed,
            ),  # the full loss: about -1.7 dB
            _record(
                f"freq{seed}",
                [("big2small", {**full, "lambda_grad": 0.0})],
                {"weight_psnr": 36.2 + (0.3, -0.3, 0.1)[seed]},
                1000,
                "freq",
                seed,
            ),  # no effect
        ]
    # the standardisation pair has one seed; the outliers pair is unconverged
    cells += [
        _record("nostd", [("big2small", {**full, "standardize": False})], {"weight_psnr": 30.0}, 1000, "nostd"),
        _record(
            "noout", [("big2small", {**full, "outliers": "none"})], {"weight_psnr": 20.0}, 1000, "noout", caveats=("unconverged",)
        ),
    ]
    frame = pd.DataFrame([r for r, _ in cells])
    records = {rec["cell_id"]: rec for _, rec in cells}
    table = claims_table(frame, records)
    by = {(r["claim"].split(" ")[0] + " " + r["claim"].split(" ")[1]): r for _, r in table.iterrows()}
    pre = by["outlier-aware preprocessing"]
    assert pre["verdict"] == "supported" and pre["seeds"] == 3 and pre["difference"] == "+9.00 dB"
    assert pre["model"] == "m" and "seed 1: 34.60 vs 25.40 dB (+9.20)" in pre["numbers"]
    assert "6,000 fit steps = 120 passes over each tensor (paper: 10,000 full-tensor epochs" in pre["setting"]
    assert by["standardisation alone"]["verdict"] == "inconclusive (1 seed)"
    assert by["outlier handling"]["verdict"] == "inconclusive (1 seed; unconverged)"
    assert "unconverged fits: noout" in by["outlier handling"]["caveat"]
    assert by["the frequency-aware"]["verdict"] == "refuted" and by["the frequency-aware"]["interval"].startswith("[-")
    assert by["the frequency"]["verdict"] == "not significant"
    assert by["the gradient"]["verdict"] == "not testable here"
    assert all(_interval_agrees(r) for _, r in table.iterrows())
    # the reporter reads the records of a run folder
    (tmp_path / "cells").mkdir()
    for _, rec in cells:
        (tmp_path / "cells" / f"{rec['cell_id']}.json").write_text(json.dumps(rec))
    written = CLAIMS.write(ReportContext(tmp_path, frame, [], {}, "s"))
    assert [p.name for p in written] == ["claims.md", "claims.json"]
    assert json.loads(written[1].read_text())[0]["verdict"] == "supported"


def test_equal_bits_claims_rest_on_a_paired_interval_over_seeds():
    import numpy as np
    import pandas as pd
    from b2s_bench_plugins.compressors.big2small.claims import claims_table

    from b2s_bench.store.samples import encode

    rng = np.random.default_rng(0)
    quant = rng.random(2000) < 0.9

    def run(*b2s_right, stages=(("big2small", {"steps": 100}),)):
        cells = [_record(f"a{s}", list(stages), {"top1": 100 * r.mean()}, 1000, "b2s", s) for s, r in enumerate(b2s_right)]
        cells.append(_record("d", [("quantize", {"bits": 6})], {"top1": 100 * quant.mean()}, 1010, "q6"))
        for (_, rec), right in zip(cells, (*b2s_right, quant), strict=True):
            rec["metrics"] = {"top1": {"value": 100 * right.mean(), "unit": "%"}}
            rec["per_example"] = {"top1": encode(right)}
        table = claims_table(pd.DataFrame([r for r, _ in cells]), {rec["cell_id"]: rec for _, rec in cells})
        assert all(_interval_agrees(r) for _, r in table.iterrows())
        claim = "Big2Small beats" if len(stages) == 1 else "Big2Small then"
        (row,) = [r for _, r in table.iterrows() if r["claim"].startswith(claim)]
        return row

    worse = [quant & (rng.random(2000) < 0.95) for _ in range(3)]  # about 4.5 points worse on the same examples
    row = run(*worse)
    assert row["verdict"] == "refuted" and row["seeds"] == 3 and row["interval"].startswith("[-")
    assert "paired bootstrap over examples and seeds" in row["numbers"]
    assert run(worse[0])["verdict"] == "inconclusive (1 seed)"  # an interval, but one fit seed
    flipped = quant.copy()
    flipped[np.flatnonzero(quant)[:3]] = False  # 3 examples of 2,000: the interval holds 0
    assert run(flipped, quant, quant)["verdict"] == "not significant"
    better = [quant | (rng.random(2000) < 0.5) for _ in range(3)]
    assert run(*better)["verdict"] == "supported"
    # composition against plain quantization at the same size
    pipeline = (("big2small", {"steps": 100}), ("quantize", {"bits": 6}))
    assert run(*worse, stages=pipeline)["verdict"] == "refuted"


def test_a_claim_from_an_unconverged_fit_is_inconclusive(tmp_path):
    """Real records of a tiny-budget run: its fits stop on budget while rising, and no verdict rests on them."""
    import json

    import pandas as pd
    from helpers import run_cli

    suite = tmp_path / "suite.yaml"
    suite.write_text("""
suite: tiny-b2s
seed: 0
models:
  - name: tiny:cnn
dataset: {name: random, n: 32}
compressors:
  - name: big2small
    settings: {min_bytes: 0, steps: 12, eval_every: 2, lr: 0.01, width: 16, mod_width: 4, frequencies: 4,
               lambda_freq: 0.0}
    grid: {lambda_grad: [0.0, 1.0]}
    seeds: 3
metrics: [agreement, bits, weight_psnr]
report: {sort_by: bits, formats: [json, claims]}
""")
    out = tmp_path / "run"
    assert run_cli("run", str(suite), "--out", str(out), "--quiet", "--no-progress") == 0
    records = [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))]
    fits = [r for r in records if r["compressor"]["pipeline"]]
    assert len(fits) == 6
    for r in fits:
        layers = r["details"]["inr_layers"].values()
        assert all(v["convergence"]["stop_reason"] == "budget" for v in layers)
        assert any(v["convergence"]["unconverged"] and v["convergence"]["slope_db_per_1k_steps"] > 0 for v in layers)
        assert [c["kind"] for c in r["details"]["caveats"]] == ["unconverged"]
    claims = pd.DataFrame(json.loads((out / "claims.json").read_text()))
    (row,) = claims[claims["claim"].str.startswith("the gradient term")].to_dict(orient="records")
    assert row["seeds"] == 3 and row["verdict"] == "inconclusive (unconverged)"


def test_a_quantized_inr_does_not_collapse():
    """The issue's targets: an 8-bit INR within 0.5 dB of the fp32 one, a 6-bit INR within 2 dB (per-row
    scales, and quantization-aware fitting from the first step at 6 bits), on a layer like a trained one:
    some structure under noise, which the fp32 INR fits to 27.6 dB (the issue measured a 6-bit INR 15 dB
    below its fp32 one on a trained conv layer). On a smooth layer fitted to 46 dB, 6 bits cost 3.4 dB:
    there the INR's rounding noise, not a collapse, sets the ceiling."""
    gen = torch.Generator().manual_seed(0)
    w = smooth_matrix(64, 96) + 0.004 * torch.randn(64, 96, generator=gen)
    model = linear_model(64, 96, w)
    settings = dict(
        width=32, mod_width=4, frequencies=4, steps=150, patch_rows=0, patch_cols=0, omega0=5.0, lr=1e-3, outliers="none"
    )
    psnr = {bits: SPEC.compress(model, config(inr_bits=bits, **settings), Context()).info["weight_psnr"] for bits in (32, 8, 6)}
    assert psnr[32] > 25, psnr  # the fit itself is good, so a collapse would show
    assert psnr[32] - psnr[8] < 0.5 and psnr[32] - psnr[6] < 2.0, psnr
