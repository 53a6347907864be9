"""The theory's claims on small tensors: each family's network form reaches its closed form;
pruning equals torch.nn.utils.prune; compositions count their bits exactly."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from b2s_bench_plugins.compressors import prune as prune_plugin
from b2s_bench_plugins.compressors.quantize import QuantizeConfig, quantize_tensor
from torch.nn.utils import prune as torch_prune

from b2s_bench import Compressed, Context
from b2s_bench.compression.compressor import weight_layers
from b2s_bench.execution.cell import NestedCode, apply_stage
from b2s_bench.fitting.solve import fit_network, relative_error
from b2s_bench.plugins import load_plugins
from b2s_bench.testing import tiny_model


@pytest.mark.parametrize("value_range", ["full", "restricted"])
@pytest.mark.parametrize("bits", [8, 4, 2])
def test_rounding_layer_reaches_round_to_nearest(bits: int, value_range: str) -> None:
    w = torch.randn(16, 36, generator=torch.Generator().manual_seed(1)) * 0.1
    code = quantize_tensor(w, QuantizeConfig(bits=bits, range=value_range))
    net = code.as_network("random", torch.Generator().manual_seed(0))
    result = fit_network(net, w, steps=1500)
    closed = relative_error(code.decode(), w)
    same = net().detach() == code.decode()
    # the misses are near-ties at bin midpoints; the full range puts each row's max|W| exactly on one
    # (±(2^b − 1)/2 steps), where both neighbours are round-to-nearest
    steps = (w / code.scale[:, None]).abs()
    far = (steps - steps.floor() - 0.5).abs() > 0.05
    assert bool(same[far].all())
    assert same.float().mean().item() >= (0.98 if value_range == "restricted" else 0.96)
    assert result.rel_error <= closed * 1.02 + 1e-6


@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_projected_mask_reaches_magnitude_pruning(sparsity: float) -> None:
    w = torch.randn(32, 72, generator=torch.Generator().manual_seed(2))
    code = prune_plugin.compress_tensor("w", w, prune_plugin.PruneConfig(sparsity=sparsity), Context())
    net = code.as_network("random", torch.Generator().manual_seed(0))
    result = fit_network(net, w, steps=1500)
    assert torch.equal(net.mask(), code.mask)
    assert result.rel_error == pytest.approx(relative_error(code.decode(), w), rel=1e-4)


@pytest.mark.parametrize(("scope", "sparsity"), [("global", 0.6), ("layer", 0.3)])
def test_pruning_equals_torch_prune_oracle(scope: str, sparsity: float) -> None:
    model = tiny_model()
    ours = prune_plugin.compress(
        copy.deepcopy(model), prune_plugin.PruneConfig(sparsity=sparsity, scope=scope), Context()
    ).state_dict()
    oracle = copy.deepcopy(model)
    layers = list(weight_layers(oracle).values())
    if scope == "global":
        torch_prune.global_unstructured([(m, "weight") for m in layers], torch_prune.L1Unstructured, amount=sparsity)
    else:
        for m in layers:
            torch_prune.l1_unstructured(m, "weight", amount=sparsity)
    for m in layers:
        torch_prune.remove(m, "weight")
    for key, value in oracle.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(ours[key], value), key


def test_identity_settings_reproduce_the_dense_model() -> None:
    plugins = load_plugins()
    model = tiny_model()
    x = torch.randn(4, 1, 28, 28)
    for name in ("quantize", "prune"):
        spec = plugins.compressors.get(name)
        config = spec.config(**spec.identity)
        out = spec.compress(copy.deepcopy(model), config, Context()).module()(x)
        assert torch.equal(out, model(x)), name


def test_pipeline_bits_replace_the_payload_exactly(tmp_path: torch.types.FileLike) -> None:
    plugins = load_plugins()
    model = tiny_model()
    pruned = prune_plugin.compress(copy.deepcopy(model), prune_plugin.PruneConfig(sparsity=0.7), Context())
    spec = plugins.compressors.get("quantize")
    both = apply_stage(pruned, spec, QuantizeConfig(bits=4), Context())
    for key, code in both.codes.items():
        assert isinstance(code, NestedCode)
        outer = pruned.codes[key]
        nnz = outer.values.numel()
        inner = quantize_tensor(outer.values, QuantizeConfig(bits=4))
        assert code.bits().total == outer.bits().total - 32 * nnz + inner.bits().total
        assert torch.equal(code.decode() == 0, outer.decode() == 0)  # the mask is kept
    assert both.size().total_bits < pruned.size().total_bits
    path = str(tmp_path / "artifact")
    both.save(path)
    loaded = Compressed.load(path, both.skeleton, plugins.code_types())
    for key, value in both.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


# --- checks built from records: equal-bits verdicts, solver references, the rate-distortion limit ---


def _frame(tmp_path, records, **kw):  # type: ignore[no-untyped-def]
    from fake_records import write_run

    from b2s_bench.reporting.tables import load_frame

    frame, metas, _ = load_frame(write_run(tmp_path / "run", records, **kw))
    return frame, metas


def _top1(metas):  # type: ignore[no-untyped-def]
    return next(m for m in metas if m.name == "top1")


def test_equal_bits_compares_methods_of_the_same_family(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from fake_records import make_record, outcomes

    from b2s_bench.reporting.theory import equal_bits

    frame, metas = _frame(
        tmp_path,
        [
            make_record("quantize(bits=4)", values={"top1": outcomes(0.85, 2000, 1)}),
            make_record("kmeans(bits=4)", bits=1_010_000, values={"top1": outcomes(0.80, 2000, 2)}),
            make_record("prune(sparsity=0.9)", "pruning", bits=2_000_000, values={"top1": outcomes(0.5, 2000, 3)}),
        ],
    )
    table = equal_bits(frame, _top1(metas))
    assert len(table) == 1  # k-means and uniform quantization, both "quantization"; pruning is twice the size
    row = table.iloc[0]
    assert (row["A"], row["B"], row["test"]) == ("quantize(bits=4)", "kmeans(bits=4)", "paired bootstrap")
    assert row["verdict"] == "quantize(bits=4) better" and row["McNemar p"] < 1e-3  # secondary: one seed, no clusters
    lo, hi = row["95% CI of Δ"]
    assert row["Δ top1 (B − A)"] == pytest.approx(-5.0) and lo < -5.0 < hi < 0


def _paired(rate_a, rate_b, n, flips):  # type: ignore[no-untyped-def]
    """Two outcome arrays on the same examples: b is a with ``flips`` right answers made wrong."""
    from fake_records import outcomes

    a = outcomes(rate_a, n, 7)
    b = a.copy()
    b[np.flatnonzero(a)[:flips]] = False
    return a, b


def test_equal_bits_verdicts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from fake_records import make_record, outcomes

    from b2s_bench.reporting.theory import equal_bits

    close_a, close_b = _paired(0.8, 0.8, 1000, 3)  # 3 discordant pairs: no evidence
    frame, metas = _frame(
        tmp_path,
        [
            make_record("dense", "dense", bits=8_000_000, values={"top1": outcomes(0.9, 1000, 0)}, num_classes=10),
            make_record("a(bits=4)", values={"top1": close_a}, num_classes=10),
            make_record("b(bits=4)", values={"top1": close_b}, num_classes=10),
            make_record("c(rank=2)", "lowrank", bits=3_000_000, values={"top1": outcomes(0.10, 1000, 1)}, num_classes=10),
            make_record("d(rank=2)", "lowrank", bits=3_050_000, values={"top1": outcomes(0.08, 1000, 2)}, num_classes=10),
            make_record("e(old)", bits=5_000_000, values={"top1": 70.0}, num_classes=10),
            make_record("f(old)", bits=5_100_000, values={"top1": 60.0}, num_classes=10),
        ],
    )
    verdicts = {(r["A"], r["B"]): r["verdict"] for _, r in equal_bits(frame, _top1(metas)).iterrows()}
    assert verdicts == {
        ("a(bits=4)", "b(bits=4)"): "not significant",
        ("c(rank=2)", "d(rank=2)"): "both fail",  # 10 % and 8 % of 10 classes: chance
        ("e(old)", "f(old)"): "not testable here",
    }  # no per-example outcomes


def test_failure_level_is_chance_or_a_tenth_of_the_dense_model() -> None:
    from b2s_bench.reporting.tables import MetricMeta
    from b2s_bench.reporting.theory import fails, failure_level

    top1 = MetricMeta("top1", "%", True, "quality")
    assert failure_level({"num_classes": 10}, {"metric:top1": 91.0}, top1) == pytest.approx(10.0)
    assert failure_level({"num_classes": 1000}, {"metric:top1": 77.0}, top1) == pytest.approx(7.7)
    assert failure_level({}, None, top1) != failure_level({}, None, top1)  # NaN: nothing to tell
    assert fails({"metric:top1": 12.0, "ci_lo:top1": 9.5}, 10.0, top1)  # its interval reaches chance
    assert not fails({"metric:top1": 12.0, "ci_lo:top1": 10.5}, 10.0, top1)
    assert not fails(
        {"metric:kl": 9.0},
        failure_level({}, {"metric:kl": 0.0}, MetricMeta("kl", "nats", False, "quality")),
        MetricMeta("kl", "nats", False, "quality"),
    )


def test_check_tables_say_what_each_check_compared_against(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from fake_records import make_record

    from b2s_bench.reporting.theory import check_sections

    frame, metas = _frame(
        tmp_path,
        [
            make_record(
                "quantize(bits=4)", values={"solver_gap": 0.001}, details={"check_reference": {"solver_gap": "closed form"}}
            ),
            make_record(
                "kmeans(bits=4)",
                bits=1_010_000,
                values={"solver_gap": -0.2},
                details={"check_reference": {"solver_gap": "local search"}},
            ),
        ],
        metrics=("bits", "solver_gap"),
    )
    ((title, table),) = check_sections(frame, metas)
    assert title.startswith("solver_gap") and list(table.columns) == ["model", "method", "family", "reference", "solver_gap"]
    assert dict(zip(table["method"], table["reference"])) == {"quantize(bits=4)": "closed form", "kmeans(bits=4)": "local search"}


def test_rate_distortion_table(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from fake_records import make_record, rd_details

    from b2s_bench.reporting.tables import BELOW_LIMIT
    from b2s_bench.reporting.theory import rate_distortion_table

    frame, _ = _frame(
        tmp_path,
        [
            make_record("quantize(bits=2)", details=rd_details(2.0, 0.1, variance_ratio=0.5)),
            make_record("svd(rank=1)", "lowrank", details=rd_details(1.0, 0.01, variance_ratio=1.0)),
            make_record("prune(sparsity=0.5)", "pruning"),  # no rate-distortion data
        ],
    )
    table = rate_distortion_table(frame).set_index("method")
    assert list(table.index) == ["quantize(bits=2)", "svd(rank=1)"]
    q = table.loc["quantize(bits=2)"]
    assert q["limit [dB]"] == pytest.approx(10 * np.log10(0.5 / 16)) and q["weight error [dB]"] == pytest.approx(-10)
    assert q["gap [dB]"] > 0 and q["flag"] == ""
    assert table.loc["svd(rank=1)", "flag"] == BELOW_LIMIT  # 0.01 < 2^-2: below the limit at 1 bit


def test_weight_structure_table_shows_outlier_channels_per_tensor(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from fake_records import make_record

    from b2s_bench.reporting.theory import WEIGHT_STRUCTURE, theory_sections, weight_structure_table

    keys = {"autocorr_rows": 0.01, "autocorr_cols": 0.02, "low_freq_energy": 0.02, "effective_rank_90": 90}
    outliers = {"outlier_ratio_cols": 21.5, "outlier_ratio_rows": 1.4, "outlier_share": 4 / 640}
    frame, metas = _frame(
        tmp_path,
        [
            make_record("quantize(bits=4)", details={"weight_structure": {"a.weight": {**keys, **outliers}}}),
            make_record("prune(sparsity=0.5)", "pruning", details={"weight_structure": {"a.weight": keys}}),
        ],
    )
    table = weight_structure_table(frame)
    assert table["tensor"].tolist() == ["a.weight"]
    row = table.iloc[0]
    assert row["max/median col norm"] == 21.5 and row["outlier channels [%]"] == pytest.approx(0.625)
    assert WEIGHT_STRUCTURE in [title for title, _ in theory_sections(frame, metas)]
    # records made before outliers were measured give no table
    old, _ = _frame(
        tmp_path / "old", [make_record("prune(sparsity=0.5)", "pruning", details={"weight_structure": {"a.weight": keys}})]
    )
    assert weight_structure_table(old).empty
