"""nern: NeRN reconstruction-only: a shared predictor counted once, permutations, save/load, training."""

from __future__ import annotations

import math

import b2s_bench_plugins.compressors.nern as nern
import b2s_bench_plugins.compressors.quantize as quantize
import pytest
import torch
from b2s_bench_plugins.compressors.nern import SPEC, NernCode, NernConfig
from b2s_bench_plugins.compressors.nern import encoding as enc
from torch import nn

import b2s_bench as b2s
from b2s_bench import Compressed, ConfigError, Context, build_config
from b2s_bench.execution import load_plugins
from b2s_bench.execution.cell import apply_stage
from b2s_bench.fitting.solve import fit_network, relative_error
from b2s_bench.testing import check_compressor, tiny_context, tiny_model

QUICK = dict(SPEC.quick)
CODE_TYPES = {c.kind: c for c in SPEC.codes}


pytestmark = pytest.mark.usefixtures("one_thread")


def _compress(model: nn.Module | None = None, seed: int = 0, **settings: object) -> Compressed:
    # these tests look at the predictor on tiny nets, where it may cost more than the kernels
    config = build_config(NernConfig, {**QUICK, "raw_if_larger": False, **settings}, "nern")
    return SPEC.compress(model if model is not None else tiny_model(0), config, Context(seed=seed))


def _predictor_params(hidden: int, num_blocks: int, levels: int, k: int = 3) -> int:
    sizes = [6 * levels] + [hidden] * (num_blocks - 1) + [k * k]
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def test_registered_through_the_plugin_hook() -> None:
    plugins = load_plugins(entry_points=False, extra=[("nern", nern)])
    assert plugins.compressors.get("nern") is SPEC
    assert SPEC.family == "inr" and SPEC.track == "data-free" and SPEC.identity is None


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"permutation": "none"},
        {"permutation": "crossfilter"},
        {"batch_size": 100, "magnitude_batching": 0.5, "optimizer": "adamw", "weight_decay": 1e-4},
    ],
)
def test_contract(settings: dict) -> None:
    check_compressor(SPEC, settings)


@pytest.mark.parametrize(
    "mode, perm_bits, mode_words",
    [
        ("none", 0, 1),
        # features.0: 16 x 1 kernels, features.4: 32 x 16 kernels
        ("infilter", (16 * 1 * 0 + 16 * 4) + (32 * 16 * 4 + 32 * 5), 2),
        ("crossfilter", 16 * 4 + 32 * 16 * 9, 3),  # "crossfilter": 11 bytes, 3 words
    ],
)
def test_bits_count_the_predictor_once(mode: str, perm_bits: int, mode_words: int) -> None:
    comp = _compress(permutation=mode)
    assert list(comp.codes) == ["features.0.weight", "features.4.weight"]  # only the 3x3, groups == 1 convs
    owner, other = comp.codes["features.0.weight"], comp.codes["features.4.weight"]
    assert owner.owner and not other.owner and owner.shared() is other.shared()
    params = _predictor_params(QUICK["hidden"], 5, QUICK["levels"])
    assert params == 1753 and owner.shared().numel == params
    assert owner.bits().inr == 32 * params and other.bits().inr == 0
    # the header rule (b2s.header_bits): a 4-d shape, the layer, the mode, the 24-character predictor id
    # (6 words) and the owner flag; the owner adds the predictor's 7 fields, ``base`` 0.76 as a double
    header = 32 * (4 + 1 + mode_words + 6 + 1)
    predictor_header = 32 * 6 + 64
    assert owner.bits().metadata == header + predictor_header and other.bits().metadata == header
    assert owner.bits().indices + other.bits().indices == perm_bits
    size = comp.size()
    code_bits = 32 * params + 2 * header + predictor_header + perm_bits
    raw = sum(32 * t.numel() for t in comp.raw.values())
    assert size.total_bits == code_bits + raw and size.breakdown.inr == 32 * params
    # the compressed-layers ratio covers the predicted convs only
    assert size.layers_baseline_bits == 32 * (16 * 9 + 32 * 16 * 9)
    assert size.layers_bits == code_bits
    assert comp.info["predictor_params"] == params
    # the artifact stores what is counted: the predictor once, the tables packed
    stored = sum(t.numel() * t.element_size() * 8 for c in comp.codes.values() for t in c.tensors().values())
    assert 32 * params + perm_bits <= stored <= 32 * params + perm_bits + 8 * 2 * len(comp.codes)
    assert sum(float(c.regularizer()) for c in comp.codes.values()) == params  # |φ|, once


@pytest.mark.parametrize("ratio", [0.5, 1.5, 3.0])
def test_target_ratio_sizes_the_predictor(ratio: float) -> None:
    settings = {k: v for k, v in QUICK.items() if k != "hidden"}
    comp = SPEC.compress(
        tiny_model(0),
        build_config(NernConfig, {**settings, "target_ratio": ratio, "steps": 5, "raw_if_larger": False}),
        Context(),
    )
    size = comp.size()
    hidden = comp.info["hidden"]
    assert size.ratio_layers >= ratio
    wider = nern.predictor_params(QUICK["levels"], hidden + 1, 5, 3) - comp.info["predictor_params"]
    assert size.layers_baseline_bits / (size.layers_bits + 32 * wider) < ratio  # the widest that fits


def test_default_width_is_written_into_the_config() -> None:
    assert NernConfig().hidden == nern.DEFAULT_HIDDEN and NernConfig(target_ratio=2.0).hidden is None


def test_save_load_round_trip(tmp_path) -> None:
    comp = _compress(permutation="crossfilter")
    disk = comp.save(tmp_path / "a")
    loaded = Compressed.load(tmp_path / "a", comp.skeleton, CODE_TYPES)
    for key, code in comp.codes.items():
        assert torch.equal(loaded.codes[key].decode(), code.decode()), key
    assert loaded.size() == comp.size() and disk * 8 >= comp.size().total_bits
    first, second = loaded.codes["features.0.weight"], loaded.codes["features.4.weight"]
    assert first.owner and first.shared() is second.shared()  # one predictor after loading too
    again = Compressed.load(tmp_path / "a", comp.skeleton, CODE_TYPES)  # a second load is independent
    assert torch.equal(again.codes["features.4.weight"].decode(), second.decode())
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded.module()(x), comp.module()(x))


def test_a_code_without_its_owner_says_so() -> None:
    meta = {"shape": [4, 2, 3, 3], "layer": 1, "permutation": "none", "predictor": "0" * 24, "owner": False}
    orphan = NernCode.restore(meta, {})
    with pytest.raises(LookupError, match="restore the code that owns it"):
        orphan.decode()


def smooth_model() -> nn.Module:
    """Two 3x3 convs whose kernels vary smoothly with (filter, channel): structure a predictor can learn
    (TinyCNN's random weights are noise, which no small predictor compresses)."""
    model = nn.Sequential(nn.Conv2d(8, 16, 3), nn.Conv2d(16, 16, 3))
    with torch.no_grad():
        for conv in model:
            f, c, i, j = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in conv.weight.shape], indexing="ij")
            conv.weight.copy_(0.1 * torch.sin(f / 6 + c / 4 + i) * torch.cos(j - f / 8))
    return model


def test_training_reduces_the_loss_and_is_seeded() -> None:
    model = smooth_model()
    comp = _compress(model, steps=300, hidden=32, permutation="none")  # smooth in the natural order already
    losses = comp.info["losses"]
    assert losses[-1] < 0.2 * losses[0] and comp.info["final_rmse"] < 0.2 * losses[0]
    w = model.state_dict()["1.weight"]
    assert relative_error(comp.codes["1.weight"].decode(), w) < 0.2
    comp = _compress(steps=150)
    same = _compress(steps=150)
    other = _compress(steps=150, seed=1)
    key = "features.4.weight"
    assert torch.equal(same.codes[key].decode(), comp.codes[key].decode())
    assert not torch.equal(other.codes[key].decode(), comp.codes[key].decode())


def test_convergence_is_judged_on_the_exact_rmse_at_its_checkpoints() -> None:
    assert nern.predictor.checkpoints(0) == [] and nern.predictor.checkpoints(1) == [0, 1]
    assert nern.predictor.checkpoints(5) == [0, 3, 5] and nern.predictor.checkpoints(1000) == [0, 750, 1000]
    # with minibatches (batch_size below the 16 + 512 kernels of tiny_model) the logged losses are
    # one batch's; the rule's points are the RMSE over all kernels: the last one is the reported final RMSE
    comp = _compress(steps=40, batch_size=64)
    facts = comp.info["convergence"]
    assert facts["points"] == 3 and facts["window"] == [30, 40] and facts["end_loss"] == comp.info["final_rmse"]
    assert len(comp.info["losses"]) == 40  # the logged curve stays in the record, every step at 40 steps
    # the same fit run twice gives the same facts (the extra passes draw nothing at random)
    assert _compress(steps=40, batch_size=64).info["convergence"] == facts


def constant_model() -> nn.Module:
    """tiny_model with every conv kernel 0.1: a target the predictor learns fast, so few steps still move it."""
    model = tiny_model(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(0.1)
    return model


def test_a_fit_out_of_steps_says_so_and_one_on_a_plateau_does_not() -> None:
    short = _compress(constant_model(), steps=5, hidden=8, levels=4, lr=0.02)
    facts = short.info["convergence"]
    assert facts["unconverged"] and facts["drop"] >= 0.01 and facts["window"] == [3, 5]
    (caveat,) = short.info["caveats"]
    assert caveat["kind"] == "unconverged"
    assert caveat["message"].startswith("1 of 1 NeRN fit(s) ran out of steps (5) before a plateau, the loss still falling by")
    assert caveat["message"].endswith("the numbers measure the step budget, not the method")
    # 0 steps: no curve, unconverged with the reason
    none = _compress(steps=0)
    assert none.info["convergence"]["unconverged"] and "(too short: no loss was logged" in none.info["caveats"][0]["message"]
    # 300 steps on random kernels: the end drop is small (0.4 %) only because the cosine annealed; the last
    # quarter still fell 2.1x as fast per unit of rate as the fit's average, so the speed rule flags it
    early_fit = _compress(tiny_model(0), steps=300, hidden=8, levels=4)
    early = early_fit.info["convergence"]
    assert early["drop"] < 0.01 and early["speed"] > 1 and early["unconverged"] and "still descending" in early["reason"]
    (said,) = early_fit.info["caveats"]  # the caveat says why: the rate it fell on, and its speed
    assert "% of the learning rate (" in said["message"] and "x its average fall per unit of rate)" in said["message"]
    # enough steps: the fit has flattened (the drop and the speed are facts of the record)
    done = _compress(tiny_model(0), steps=1000, hidden=8, levels=4)
    assert not done.info["convergence"]["unconverged"] and done.info["convergence"]["drop"] < 0.01
    assert "caveats" not in done.info and done.info["convergence"]["window"] == [750, 1000]
    # the cosine schedule's facts: the last quarter of the steps gets 2.5-3 % of the rate
    assert 0.02 < done.info["convergence"]["rate_share"] < 0.03 and done.info["convergence"]["speed"] < 1
    # the tolerance is the setting: the same short fit judged with a loose one is not flagged
    loose = _compress(constant_model(), steps=5, hidden=8, levels=4, lr=0.02, plateau_tol=0.5)
    assert not loose.info["convergence"]["unconverged"] and "caveats" not in loose.info


def test_an_unconverged_fit_reaches_the_record_through_the_runner(tmp_path) -> None:
    import json

    from helpers import run_cli

    suite = tmp_path / "suite.yaml"
    suite.write_text("""
suite: tiny-nern
seed: 0
models: [{name: tiny:cnn}]
dataset: {name: random, n: 16}
compressors:
  - name: nern
    settings: {hidden: 8, levels: 4, raw_if_larger: false}
    grid: {steps: [0, 1000]}
metrics: [agreement, bits]
report: {formats: [json]}
""")
    out = tmp_path / "run"
    assert run_cli("run", str(suite), "--out", str(out), "--quiet", "--no-progress", "--workers", "1") == 0
    records = [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))]
    fits = {r["compressor"]["pipeline"][0]["config"]["steps"]: r for r in records if r["compressor"]["pipeline"]}
    assert sorted(fits) == [0, 1000]
    assert [c["kind"] for c in fits[0]["details"]["caveats"]] == ["unconverged"]
    assert fits[0]["details"]["convergence"]["unconverged"] is True
    assert "caveats" not in fits[1000]["details"] and fits[1000]["details"]["convergence"]["unconverged"] is False


def test_decoded_final_rmse_matches_the_report() -> None:
    comp = _compress(steps=100, permutation="infilter")
    state = tiny_model(0).state_dict()
    sq = sum(float((c.decode() - state[k]).pow(2).sum()) for k, c in comp.codes.items())
    n = sum(state[k].numel() for k in comp.codes)
    assert math.isclose(math.sqrt(sq / n), comp.info["final_rmse"], rel_tol=1e-4)


class MixedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.pw = nn.Conv2d(8, 16, 1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.b = nn.Conv2d(16, 8, 5, padding=2)
        self.c = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.c(self.b(self.dw(self.pw(self.a(x))))).mean(dim=(2, 3)))


def test_only_kxk_convs_with_groups_1_are_predicted() -> None:
    model = MixedNet()
    comp = _compress(model)
    assert list(comp.codes) == ["a.weight", "c.weight"] and comp.codes["c.weight"].layer == 1
    assert {"pw.weight", "dw.weight", "b.weight", "fc.weight", "a.bias"} <= set(comp.raw)
    assert comp.size().layers_baseline_bits == 32 * (8 * 3 * 9 + 8 * 8 * 9)
    grouped = _compress(model, include_grouped=True)
    assert list(grouped.codes) == ["a.weight", "dw.weight", "c.weight"]
    five = _compress(model, kernel_size=5)
    assert list(five.codes) == ["b.weight"] and five.codes["b.weight"].decode().shape == (8, 16, 5, 5)
    with torch.no_grad():
        assert five.module()(torch.randn(1, 3, 8, 8)).shape == (1, 4)


def test_a_model_without_predicted_layers_is_not_applicable() -> None:
    with pytest.raises(b2s.NotApplicableError, match="NeRN predicts 3×3 kernels of convs with groups = 1; this model has none"):
        _compress(nn.Sequential(nn.Linear(4, 3)))


def test_kernels_that_hold_a_tiny_share_of_the_weights_are_not_applicable() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 64))  # 18 of 4626 weights
    with pytest.raises(b2s.NotApplicableError, match=r"this model's \(0.weight\) hold only 0.39 % of its"):
        _compress(model)


def test_a_target_ratio_a_width_1_predictor_cannot_reach_is_short() -> None:
    config = build_config(NernConfig, {**QUICK, "hidden": None, "target_ratio": 50.0, "raw_if_larger": False}, "nern")
    comp = SPEC.compress(tiny_model(0), config, Context())
    assert comp.info["hidden"] == 1
    target = SPEC.target(config, comp, tiny_model(0))
    assert target is not None and not target.met and target.asked == 50.0 and target.achieved < 50 * 0.95
    assert "predicted-layer ratio: asked 50x" in target.reason()


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"hidden": 0}, "hidden must be >= 1, got 0"),
        ({"hidden": 8, "target_ratio": 2.0}, "set only one of hidden, target_ratio"),
        ({"target_ratio": 0.0}, "target_ratio must be > 0, got 0.0"),
        ({"num_blocks": 1}, "num_blocks must be >= 2, got 1"),
        ({"levels": 0}, "levels must be >= 1, got 0"),
        ({"base": 1.5}, "base must be in (0, 1], got 1.5"),
        ({"kernel_size": 0}, "kernel_size must be >= 1, got 0"),
        ({"steps": -1}, "steps must be >= 0, got -1"),
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
        ({"lr": 0.0}, "lr must be > 0, got 0.0"),
        ({"magnitude_batching": 1.5}, "magnitude_batching must be in [0, 1], got 1.5"),
        ({"weight_decay": -1.0}, "weight_decay must be >= 0, got -1.0"),
        ({"permutation": "crosfilter"}, "did you mean 'crossfilter'"),
        ({"optimizer": "sgd"}, "optimizer must be one of"),
        ({"hiden": 8}, "did you mean 'hidden'"),
        ({"plateau_tol": 1.0}, "plateau_tol must be in [0, 1), got 1.0"),
    ],
)
def test_bad_settings(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        build_config(NernConfig, settings, "nern")
    assert message in str(e.value)


def test_encoding_is_nerns_smooth_encoding() -> None:
    coords = enc.grid_coords(2, 4, 3, 5)
    assert coords.shape == (15, 3)
    torch.testing.assert_close(coords[7], torch.tensor([0.5, 1 / 3, 2 / 5], dtype=torch.float64))
    feats = enc.encode(coords, levels=40, base=0.76)
    assert feats.shape == (15, 240)
    p = float(coords[7, 1])
    j = 3
    assert math.isclose(float(feats[7, 80 + j]), math.sin(math.pi * 0.76**j * p), abs_tol=1e-6)
    assert math.isclose(float(feats[7, 80 + 40 + j]), math.cos(math.pi * 0.76**j * p), abs_tol=1e-6)


@pytest.mark.parametrize("mode", ["infilter", "crossfilter"])
@pytest.mark.parametrize("limit", [enc.GREEDY_LIMIT, 0])  # greedy chains, or the principal-component sort
def test_permutations_are_valid_smoother_and_round_trip(mode: str, limit: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(enc, "GREEDY_LIMIT", limit)
    g = torch.Generator().manual_seed(0)
    # kernels from a few prototypes, shuffled: a permutation can make the grid much smoother
    protos = torch.randn(4, 9, generator=g)
    w = protos[torch.randint(0, 4, (24 * 12,), generator=g)] + 0.05 * torch.randn(24 * 12, 9, generator=g)
    w = w.reshape(24, 12, 3, 3)
    orders = enc.layer_order(w, mode)
    src = enc.source_index(orders, 24, 12)
    assert torch.equal(torch.sort(src).values, torch.arange(24 * 12))

    def roughness(grid: torch.Tensor) -> float:  # squared differences along the channel axis of the grid
        g2 = grid.reshape(24, 12, 9)
        return float((g2[:, 1:] - g2[:, :-1]).pow(2).sum())

    kernels = w.reshape(-1, 9)
    assert roughness(kernels[src]) < 0.5 * roughness(kernels)
    packed = enc.pack_orders(mode, orders, 24, 12)
    bits = enc.permutation_bits(mode, 24, 12)
    assert bits == (24 * 12 * 9 if mode == "crossfilter" else 24 * 12 * 4 + 24 * 5)
    assert 8 * sum(t.numel() for t in packed.values()) - bits < 8 * len(packed)  # to within a byte each
    restored = enc.unpack_orders(mode, packed, 24, 12)
    assert torch.equal(enc.source_index(restored, 24, 12), src)


def test_permutation_is_undone_on_decode() -> None:
    """With a perfect predictor (lookup of the permuted targets), decode gives the original weights."""
    comp = _compress(permutation="crossfilter", steps=0)
    code = comp.codes["features.4.weight"]
    w = tiny_model(0).state_dict()["features.4.weight"]
    src = enc.source_index(code.orders, 32, 16)
    inverse = torch.argsort(src)
    assert torch.equal(w.reshape(512, 9)[src][inverse].reshape(w.shape), w)


def test_network_form() -> None:
    comp = _compress(steps=30)
    code = comp.codes["features.4.weight"]
    net = code.as_network("code")
    torch.testing.assert_close(net(), code.decode())
    assert net.projection == "never"
    random = code.as_network("random", torch.Generator().manual_seed(3))
    w = tiny_model(0).state_dict()["features.4.weight"]
    start = relative_error(random(), w)
    result = fit_network(random, w, steps=100, lr=0.05)
    assert result.rel_error < start


def test_a_later_stage_cannot_split_the_shared_predictor() -> None:
    comp = _compress()
    assert comp.codes["features.4.weight"].payload() == {}
    qconfig = build_config(quantize.QuantizeConfig, {"bits": 8})
    with pytest.raises(NotImplementedError, match="shared by all predicted layers"):
        apply_stage(comp, quantize.SPEC, qconfig, tiny_context(0))


@pytest.mark.gpu
def test_trains_on_the_context_device() -> None:  # pragma: no cover - needs CUDA
    config = build_config(NernConfig, QUICK)
    comp = SPEC.compress(tiny_model(0), config, Context(device=torch.device("cuda")))
    assert comp.info["losses"][-1] < comp.info["losses"][0]
    assert comp.codes["features.4.weight"].decode().device.type == "cpu"


def test_a_predictor_bigger_than_its_kernels_is_not_applicable() -> None:
    model = MixedNet()  # 3x3 convs of 216 and 576 weights: a width-128 predictor is far bigger
    with pytest.raises(b2s.NotApplicableError, match="costs at least the 792 weights it would predict"):
        SPEC.compress(model, build_config(NernConfig, {"hidden": 128, "steps": 5}, "nern"), Context())
    kept = _compress(model, hidden=128, steps=5)  # raw_if_larger: False keeps the (bigger) predictor
    assert list(kept.codes) == ["a.weight", "c.weight"] and kept.size().ratio_layers < 1


def test_cosine_similarity_orders_kernels_by_shape_not_magnitude() -> None:
    """NeRN's cosine ordering: kernels of 3 shapes at magnitudes over three decades; within each filter,
    cosine chains keep a shape together (neighbours point the same way), where Euclidean chains pair
    the small kernels of different shapes (all near zero)."""
    g = torch.Generator().manual_seed(1)
    protos = torch.randn(3, 9, generator=g)
    scale = 10 ** (torch.rand(16 * 12, 1, generator=g) * 3 - 2)
    shapes = protos[torch.randint(0, 3, (16 * 12,), generator=g)] + 0.01 * torch.randn(16 * 12, 9, generator=g)
    w = (shapes * scale).reshape(16, 12, 3, 3)

    def turning(similarity: str) -> float:  # 1 - cos between grid neighbours along the channel axis
        src = enc.source_index(enc.layer_order(w, "infilter", similarity), 16, 12)
        assert src is not None and torch.equal(torch.sort(src).values, torch.arange(16 * 12))
        grid = torch.nn.functional.normalize(w.reshape(-1, 9)[src], dim=1).reshape(16, 12, 9)
        return float((1 - (grid[:, 1:] * grid[:, :-1]).sum(-1)).sum())

    assert turning("cosine") < 0.6 * turning("euclidean")  # seeds 0-2: 0.50-0.58
    with pytest.raises(ValueError, match="similarity"):
        enc.order_rows(w.reshape(1, -1, 9), similarity="manhattan")


def test_cosine_similarity_is_a_setting() -> None:
    comp = _compress(permutation="crossfilter", similarity="cosine", steps=2)
    assert set(comp.codes) and all(torch.isfinite(c.decode()).all() for c in comp.codes.values())
    with pytest.raises(ConfigError, match="similarity"):
        build_config(NernConfig, {"similarity": "cosine", "permutation": "none"}, owner="nern")
    with pytest.raises(ConfigError, match="similarity"):
        build_config(NernConfig, {"similarity": "l1"}, owner="nern")
