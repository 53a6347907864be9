"""Big2Small's fitting loop: what each step sees, the schedule, chunked steps, the curve and early stopping."""

from __future__ import annotations

import pytest
import torch
from b2s_bench_plugins.compressors.big2small import SPEC
from test_big2small import config, linear_model, smooth_matrix

from b2s_bench import Context

pytestmark = pytest.mark.usefixtures("one_thread")


# -- sampling, schedule, chunks ------------------------------------------------------------------------------
def test_tiles_cover_the_matrix_once_per_epoch_and_patches_0_takes_them_all():
    from b2s_bench_plugins.compressors.big2small.sampling import crop_shape, crop_starts, passes, tile_starts

    tiles = tile_starts(10, 7, 4, 3)  # rows 0, 4, 6 (shifted inward) x blocks 0, 3, 4
    assert tiles.tolist() == [[r, c] for r in (0, 4, 6) for c in (0, 3, 4)]
    assert crop_shape(10, 56, 8, 4, 24, 0) == (4, 3, 9)  # 7 blocks of 8 columns: 3 x 3 tiles
    gen = torch.Generator().manual_seed(0)
    every = crop_starts(10, 56, 8, 4, 24, 0, "random", 100, gen)
    assert every.shape == (1, 9, 2) and every[0].tolist() == tiles.tolist()
    epochs = crop_starts(10, 56, 8, 4, 24, 3, "tiles", 6, gen)  # 18 crops: two passes over the 9 tiles
    for half in (epochs.reshape(-1, 2)[:9], epochs.reshape(-1, 2)[9:]):
        assert sorted(map(tuple, half.tolist())) == sorted(map(tuple, tiles.tolist()))
    rand = crop_starts(10, 56, 8, 4, 24, 3, "random", 50, gen)
    assert rand.shape == (50, 3, 2) and rand[..., 0].max() <= 6 and rand[..., 1].max() <= 4
    assert crop_starts(10, 56, 8, 0, 0, 3, "random", 5, gen).shape == (1, 1, 2)  # the whole matrix
    assert passes(100, 10, 56, 8, 4, 3, 2) == pytest.approx(100 * 2 * 12 / 70)


def test_warm_up_then_cosine():
    from b2s_bench_plugins.compressors.big2small.fit import FitSettings, lr_at

    s = FitSettings(
        steps=110,
        lr=1.0,
        weight_decay=0,
        patch_rows=0,
        patch_cols=0,
        patches=1,
        lambda_grad=0,
        lambda_freq=0,
        focal_alpha=1,
        warmup=10,
    )
    assert [lr_at(i, s) for i in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert lr_at(10, s) == pytest.approx(1.0) and lr_at(60, s) == pytest.approx(0.5)
    assert lr_at(109, s) < 0.001


def test_chunked_steps_are_the_same_steps():
    model = linear_model(64, 96, smooth_matrix(64, 96))
    settings = dict(width=16, mod_width=4, frequencies=4, steps=20, patch_rows=16, patch_cols=32, patches=0, outliers="none")
    whole = SPEC.compress(model, config(**settings), Context())
    chunked = SPEC.compress(model, config(**settings, chunk=16 * 32), Context())  # one of the 12 tiles at a time
    assert torch.allclose(whole.codes["0.weight"].decode(), chunked.codes["0.weight"].decode(), atol=1e-5)
    layer = whole.info["inr_layers"]["0.weight"]
    assert layer["passes"] == pytest.approx(20.0) and layer["entries_per_step"] == 64 * 96


# -- the curve and early stopping ------------------------------------------------------------------------------
def test_the_curve_is_recorded_and_estimates_the_stored_psnr():
    model = linear_model(48, 64, smooth_matrix(48, 64))
    comp = SPEC.compress(
        model,
        config(
            width=16,
            mod_width=4,
            frequencies=4,
            steps=60,
            eval_every=10,
            lr=3e-3,
            patch_rows=0,
            patch_cols=0,
            inr_bits=6,
            qat="on",
            eval_points=48 * 64,
        ),
        Context(),
    )
    curve = comp.info["curves"]["0.weight"]
    assert set(curve) == {"step", "train_loss", "psnr", "seconds"} and curve["step"] == [10, 20, 30, 40, 50, 60]
    assert curve["psnr"][-1] > curve["psnr"][0]
    # the sample is the whole tensor and the fit is quantization-aware: the last point is the stored code's PSNR
    assert curve["psnr"][-1] == pytest.approx(comp.info["inr_layers"]["0.weight"]["psnr"], abs=0.01)
    assert comp.info["curve"]["psnr"] == pytest.approx(curve["psnr"])  # one layer: the model curve is its curve
    assert comp.info["inr_layers"]["0.weight"]["stop_reason"] == "budget"


def test_a_layer_stops_at_its_target_psnr_or_on_a_plateau():
    model = linear_model(48, 64, smooth_matrix(48, 64))
    small = dict(width=16, mod_width=4, frequencies=4, eval_every=10, lr=3e-3, patch_rows=0, patch_cols=0, outliers="none")
    first = SPEC.compress(model, config(**small, steps=10), Context()).info["curves"]["0.weight"]["psnr"][0]
    target = SPEC.compress(model, config(**small, steps=400, target_psnr=first + 3), Context())
    layer = target.info["inr_layers"]["0.weight"]
    assert layer["stop_reason"] == "target_psnr" and layer["steps_run"] < 400
    assert layer["psnr"] >= first + 3 - 0.5  # the kept parameters are those of the stopping point
    plateau = SPEC.compress(model, config(**small, steps=400, patience=2, min_delta_db=50.0), Context())
    info = plateau.info["inr_layers"]["0.weight"]
    assert info["stop_reason"] == "plateau" and info["steps_run"] == 30


# -- convergence as a fact ---------------------------------------------------------------------------------------
_SMALL = dict(width=16, mod_width=4, frequencies=4, eval_every=5, lr=3e-3, patch_rows=0, patch_cols=0, outliers="none")


def test_a_fit_cut_by_its_budget_while_rising_is_unconverged():
    model = linear_model(48, 64, smooth_matrix(48, 64))
    info = SPEC.compress(model, config(**_SMALL, steps=30), Context()).info
    layer = info["inr_layers"]["0.weight"]["convergence"]
    assert layer["stop_reason"] == "budget" and layer["unconverged"]
    assert layer["slope_db_per_1k_steps"] > 0 and layer["gain_db"] >= layer["min_delta_db"]
    # patches=0 covers the whole tensor every step: a pass is a step
    assert layer["slope_db_per_pass"] == pytest.approx(layer["slope_db_per_1k_steps"] / 1000)
    assert info["convergence"]["unconverged"] == ["0.weight"] and info["convergence"]["stop_reasons"] == {"budget": 1}
    assert [c["kind"] for c in info["caveats"]] == ["unconverged"]
    assert "1 of 1 INR fit(s) stopped on the step budget" in info["caveats"][0]["message"]


def test_a_fit_that_reached_its_plateau_has_no_caveat():
    model = linear_model(48, 64, smooth_matrix(48, 64))
    info = SPEC.compress(model, config(**_SMALL, steps=400, patience=2, min_delta_db=50.0), Context()).info
    layer = info["inr_layers"]["0.weight"]["convergence"]
    assert layer["stop_reason"] == "plateau" and not layer["unconverged"] and layer["steps"] == 15
    assert "caveats" not in info and info["convergence"]["unconverged"] == []


def test_the_judgement_of_a_curve():
    from b2s_bench_plugins.compressors.big2small.convergence import judge

    rising = {"step": [100, 200, 300, 400], "psnr": [20.0, 21.0, 22.0, 23.0]}
    c = judge(rising, "budget", 400, 0.01, patience=0, min_delta_db=0.05)
    assert c.unconverged and c.slope_db_per_1k_steps == pytest.approx(10.0)
    assert c.slope_db_per_pass == pytest.approx(0.01 / 0.01) and c.gain_db == pytest.approx(3.0)
    flat = {"step": [100, 200, 300, 400, 500, 600, 700], "psnr": [20.0, 25.0, 25.01, 25.0, 25.02, 25.01, 25.0]}
    assert not judge(flat, "budget", 700, 0.01, patience=3, min_delta_db=0.05).unconverged  # flat at the end
    assert judge({"step": [10], "psnr": [20.0]}, "budget", 10, 0.1, 0, 0.05).unconverged  # no curve to show a plateau
    assert not judge(rising, "target_psnr", 400, 0.01, 0, 0.05).unconverged  # it reached what it was asked for
