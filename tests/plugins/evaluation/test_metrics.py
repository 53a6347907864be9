"""Built-in metrics against values worked out by hand on tiny tensors.

Each metric is looked up in the plugin registry (as the runner does) and computed on an
:class:`Evaluation` built from known logits or known original/decoded weights.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import pytest
import torch
from torch import nn

from b2s_bench import Compressed, DecoderNetwork, StoredTensorCode
from b2s_bench.metrics import Evaluation, NotApplicable
from b2s_bench.plugins import Plugins
from b2s_bench.sources import LoadedData, LoadedModel

# --- outputs: the compressed "model" is the identity, so its logits are the inputs fed to it ---

#: 4 examples, 6 classes; the comments give the rank of the label among the logits
LOGITS = torch.tensor(
    [
        [0.1, 5.0, 0.2, 0.3, 0.4, 0.5],  # label 1: rank 1 (top-1 hit)
        [3.0, 2.0, 1.0, 0.0, -1.0, -2.0],  # label 2: rank 3 (top-5 hit only)
        [0.0, 0.1, 0.2, 0.3, 0.4, 9.0],  # label 5: rank 1 (top-1 hit)
        [6.0, 5.0, 4.0, 3.0, 2.0, 1.0],  # label 5: rank 6, the smallest (miss even in top 5)
    ]
)
LABELS = torch.tensor([1, 2, 5, 5])
#: the dense model's argmax is 1, 0, 5, 2: the compressed model agrees on the first three only
BASELINE = torch.tensor(
    [
        [0.0, 1.0, 0.0, 0.0, 0.0, 0.0],
        [1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
        [0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
    ]
)


def output_eval(logits: torch.Tensor, baseline: torch.Tensor, labels: torch.Tensor | None, batch_size: int = 3) -> Evaluation:
    """An Evaluation whose compressed model outputs ``logits`` (in batches) and whose dense model outputs ``baseline``."""
    n, classes = logits.shape

    def batches(bs: int) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        return [(logits[i : i + bs], None if labels is None else labels[i : i + bs]) for i in range(0, n, bs)]

    data = LoadedData(batches, n, labels is not None, "hand-made")
    dense = LoadedModel(nn.Identity(), (classes,), classes, "hand-made")
    compressed = Compressed.from_codes(nn.Identity(), {})
    return Evaluation(
        nn.Identity(), dense, compressed, data, torch.device("cpu"), batch_size, lambda: (baseline, labels), {"compress": 0.0}
    )


def metric(plugins: Plugins, name: str, ev: Evaluation) -> float:
    return float(plugins.metrics.get(name).compute(ev))


def test_top1_and_top5(plugins: Plugins) -> None:
    ev = output_eval(LOGITS, BASELINE, LABELS)
    assert metric(plugins, "top1", ev) == pytest.approx(50.0)  # examples 0 and 2
    assert metric(plugins, "top5", ev) == pytest.approx(75.0)  # example 3's label has the smallest logit
    # the batching of the eval set does not matter
    assert metric(plugins, "top1", output_eval(LOGITS, BASELINE, LABELS, batch_size=1)) == pytest.approx(50.0)
    assert metric(plugins, "top5", output_eval(LOGITS, BASELINE, LABELS, batch_size=4)) == pytest.approx(75.0)


def test_top5_with_fewer_than_five_classes_counts_every_class(plugins: Plugins) -> None:
    logits = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    ev = output_eval(logits, logits, torch.tensor([2, 0]))
    assert metric(plugins, "top1", ev) == pytest.approx(0.0)
    assert metric(plugins, "top5", ev) == pytest.approx(100.0)


def test_accuracy_needs_labels_but_agreement_and_kl_do_not(plugins: Plugins) -> None:
    ev = output_eval(LOGITS, BASELINE, None)
    for name in ("top1", "top5"):
        with pytest.raises(NotApplicable, match="no labels"):
            metric(plugins, name, ev)
    assert metric(plugins, "agreement", ev) == pytest.approx(75.0)
    assert math.isfinite(metric(plugins, "kl", ev))


def test_agreement(plugins: Plugins) -> None:
    ev = output_eval(LOGITS, BASELINE, LABELS)
    assert metric(plugins, "agreement", ev) == pytest.approx(75.0)  # argmax 1, 0, 5 agree; 0 vs 2 does not
    assert metric(plugins, "agreement", output_eval(LOGITS, LOGITS + 7.0, LABELS)) == pytest.approx(100.0)


def test_kl_is_dense_to_compressed(plugins: Plugins) -> None:
    # example 0: dense p = (1/2, 1/2), compressed q = (3/4, 1/4):
    #   KL(p || q) = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3)
    # example 1: the same distribution (logits shifted by a constant): KL = 0
    dense = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    comp = torch.tensor([[math.log(3.0), 0.0], [11.0, 12.0]])
    ev = output_eval(comp, dense, torch.tensor([0, 1]))
    expected = (0.5 * math.log(4 / 3) + 0.0) / 2
    assert metric(plugins, "kl", ev) == pytest.approx(expected, rel=1e-6)
    # the reverse direction, KL(q || p) = 3/4 ln(3/2) + 1/4 ln(1/2), is a different number
    reverse = (0.75 * math.log(1.5) + 0.25 * math.log(0.5)) / 2
    assert metric(plugins, "kl", output_eval(dense, comp, torch.tensor([0, 1]))) == pytest.approx(reverse, rel=1e-6)
    assert abs(expected - reverse) > 1e-3
    assert metric(plugins, "kl", output_eval(dense, dense, torch.tensor([0, 1]))) == pytest.approx(0.0, abs=1e-12)


def test_output_metric_specs(plugins: Plugins) -> None:
    specs = {name: plugins.metrics.get(name) for name in ("top1", "top5", "agreement", "kl")}
    assert [(s.unit, s.higher_is_better) for s in specs.values()] == [("%", True), ("%", True), ("%", True), ("nats", False)]
    assert specs["top1"].needs == {"labels"} and specs["kl"].needs == {"data"}


# --- weights: a model of three tensors; "a" and "b" are coded, "c" is stored raw (not compressed) ---

W_A = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
W_HAT_A = torch.tensor([[1.0, 2.0], [3.0, 2.0]])  # one entry off by 2
W_B = torch.tensor([[-2.0, 2.0]])
W_HAT_B = torch.tensor([[-1.0, 1.0]])  # half of W_B: the same direction


class Three(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(W_A.clone())
        self.b = nn.Parameter(W_B.clone())
        self.c = nn.Parameter(torch.tensor([100.0, -100.0, 5.0]))


def weight_eval(decoded: dict[str, torch.Tensor]) -> Evaluation:
    dense = LoadedModel(Three(), (2,), 2, "hand-made")
    compressed = Compressed.from_codes(Three(), {k: StoredTensorCode(v) for k, v in decoded.items()})
    return Evaluation(
        dense.module, dense, compressed, None, torch.device("cpu"), 1, lambda: (torch.empty(0), None), {"compress": 0.0}
    )


# every weight tensor counts: c (|c| sums to 205, c² to 20025) is stored raw, so exact (error 0)
NORM2 = 30 + 8 + 20025
ABS = 10 + 4 + 205


def test_weight_pairs_are_every_weight_tensor_and_coded_pairs_the_coded_ones() -> None:
    ev = weight_eval({"a": W_HAT_A, "b": W_HAT_B})
    assert [k for k, _, _ in ev.coded_pairs] == ["a", "b"]
    assert [k for k, _, _ in ev.weight_pairs] == ["a", "b", "c"]
    (_, w, wh), _, (_, c, c_hat) = ev.weight_pairs
    assert torch.equal(w, W_A) and torch.equal(wh, W_HAT_A) and torch.equal(c, c_hat)


def test_weight_rel_error_pools_all_tensors(plugins: Plugins) -> None:
    ev = weight_eval({"a": W_HAT_A, "b": W_HAT_B})
    # ||Ŵ − W||_F² = 4 (a) + 2 (b) + 0 (c, raw); ||W||_F² over all three tensors
    assert metric(plugins, "weight_rel_error", ev) == pytest.approx(math.sqrt(6 / NORM2))
    assert metric(plugins, "weight_rel_error", weight_eval({"a": W_HAT_A})) == pytest.approx(math.sqrt(4 / NORM2))
    assert ev.details["weight_set"] == {"tensors": 3, "weights": 9, "coded": 2, "exact": 1}


def test_weight_rel_mae_pools_all_weights(plugins: Plugins) -> None:
    ev = weight_eval({"a": W_HAT_A, "b": W_HAT_B})
    # Σ|Ŵ − W| = 2 (a) + 2 (b) + 0 (c) over Σ|W| of all three; per tensor a: 2/10, b: 2/4, c: 0
    assert metric(plugins, "weight_rel_mae", ev) == pytest.approx(4 / ABS)
    assert ev.details["per_layer"]["rel_mae"] == pytest.approx({"a": 0.2, "b": 0.5, "c": 0.0})


def test_weight_cosine_is_the_size_weighted_mean(plugins: Plugins) -> None:
    ev = weight_eval({"a": W_HAT_A, "b": W_HAT_B})
    # a: <W, Ŵ> = 1 + 4 + 9 + 8 = 22, ||W|| = sqrt(30), ||Ŵ|| = sqrt(18); b: a positive multiple, cosine 1
    cos_a = 22 / math.sqrt(30 * 18)
    assert metric(plugins, "weight_cosine", ev) == pytest.approx((4 * cos_a + 2 * 1.0 + 3 * 1.0) / 9)
    assert ev.details["per_layer"]["cosine"] == pytest.approx({"a": cos_a, "b": 1.0, "c": 1.0})
    flipped = weight_eval({"b": -W_B})
    assert metric(plugins, "weight_cosine", flipped) == pytest.approx((4 - 2 + 3) / 9)


def test_weight_psnr_uses_each_tensors_range(plugins: Plugins) -> None:
    ev = weight_eval({"a": W_HAT_A, "b": W_HAT_B})
    # a: peak = 4 − 1 = 3, MSE = 4/4 = 1 -> MSE/peak² = 1/9; b: peak 4, MSE 1 -> 1/16; c: exact, 0
    nmse = (4 / 9 + 2 / 16 + 3 * 0) / 9
    assert metric(plugins, "weight_psnr", ev) == pytest.approx(-10 * math.log10(nmse))
    assert ev.details["per_layer"]["psnr"] == pytest.approx({"a": 10 * math.log10(9), "b": 10 * math.log10(16), "c": math.inf})


def test_lossless_tensors(plugins: Plugins) -> None:
    exact = weight_eval({"a": W_A.clone(), "b": W_B.clone()})
    assert metric(plugins, "weight_rel_error", exact) == 0.0
    assert metric(plugins, "weight_rel_mae", exact) == 0.0
    assert metric(plugins, "weight_cosine", exact) == pytest.approx(1.0)
    assert metric(plugins, "weight_psnr", exact) == math.inf
    # an exact tensor counts with error 0 (it is not left out): b's 1/16 over all 9 weights
    mixed = weight_eval({"a": W_A.clone(), "b": W_HAT_B})
    assert metric(plugins, "weight_psnr", mixed) == pytest.approx(10 * math.log10(9 * 16 / 2))
    assert mixed.details["per_layer"]["psnr"]["a"] == math.inf


@pytest.mark.parametrize("name", ["weight_rel_error", "weight_rel_mae", "weight_cosine", "weight_psnr"])
def test_two_methods_coding_different_tensors_share_one_denominator(plugins: Plugins, name: str) -> None:
    # method 1 codes a alone; method 2 codes a the same way and b losslessly: the same weights, the
    # same errors, so the same value (the coded subsets differ; the compared set does not)
    one = weight_eval({"a": W_HAT_A})
    two = weight_eval({"a": W_HAT_A, "b": W_B.clone()})
    assert metric(plugins, name, one) == pytest.approx(metric(plugins, name, two))
    assert one.details["weight_set"]["weights"] == two.details["weight_set"]["weights"] == 9


@pytest.mark.parametrize("name", ["weight_rel_error", "weight_rel_mae", "weight_cosine", "weight_psnr"])
def test_weight_metrics_not_applicable_without_same_shape_tensors(plugins: Plugins, name: str) -> None:
    assert plugins.metrics.get(name).needs == {"weights"}
    with pytest.raises(NotApplicable, match="no tensor was replaced"):
        metric(plugins, name, weight_eval({}))
    # a tensor decoded to another shape (structured pruning) has no pair to compare
    with pytest.raises(NotApplicable):
        metric(plugins, name, weight_eval({"b": torch.tensor([[1.0]])}))
    # ... nor has the model when one tensor is coded with its shape and another changed shape
    with pytest.raises(NotApplicable, match="no tensor 'b'"):
        metric(plugins, name, weight_eval({"a": W_HAT_A, "b": torch.tensor([[1.0]])}))


# --- per-example outcomes, kept for confidence intervals ---


def test_output_metrics_keep_their_per_example_outcomes(plugins: Plugins) -> None:
    from b2s_bench.store import samples

    ev = output_eval(LOGITS, BASELINE, LABELS)
    values = {name: metric(plugins, name, ev) for name in ("top1", "top5", "agreement", "kl")}
    assert ev.per_example["top1"].tolist() == [True, False, True, False]
    assert ev.per_example["top5"].tolist() == [True, True, True, False]
    assert ev.per_example["agreement"].tolist() == [True, True, True, False]
    assert ev.per_example["kl"].shape == (4,) and ev.per_example["kl"].dtype == torch.float64
    stored = {k: samples.decode(v) for k, v in samples.encode_all(ev.per_example).items()}
    for name in ("top1", "top5", "agreement"):  # the value is the mean of the outcomes, in %
        assert stored[name].dtype == bool and 100 * stored[name].mean() == pytest.approx(values[name])
    assert stored["kl"].mean() == pytest.approx(values["kl"], rel=1e-3)


def test_an_evaluation_starts_without_outcomes() -> None:
    assert weight_eval({"a": W_HAT_A}).per_example == {}


# --- the solver check: what each code is compared against ---


class _Free(DecoderNetwork):
    """W = φ: the solver reaches the target exactly, so a lossy code is beaten (a negative gap)."""

    projection = "never"

    def __init__(self, start: torch.Tensor) -> None:
        super().__init__()
        self.phi = nn.Parameter(start.clone())

    def forward(self) -> torch.Tensor:
        return self.phi


class _LocalSearch(_Free):
    solution = "local search"  # e.g. k-means or AdaRound


class _GradientFit(_Free):
    closed_form = False  # e.g. an INR: the code is itself a gradient fit


class _Other(_Free):
    solution = "gradient fit"


@dataclasses.dataclass
class _NoisyCode(StoredTensorCode):
    """A tensor stored with an error, whose decoder network is ``network``."""

    network: type = _Free
    kind: ClassVar[str] = "test-noisy"

    def as_network(self, init: str = "code", generator: torch.Generator | None = None) -> DecoderNetwork:
        start = self.value.float() if init == "code" else torch.randn(self.value.shape, generator=generator)
        return self.network(start)


def _solver_eval(network: type) -> Evaluation:
    ev = weight_eval({})
    ev.compressed = Compressed.from_codes(Three(), {"a": _NoisyCode(W_A + 0.5, network), "b": _NoisyCode(W_B + 0.1, network)})
    return ev


@pytest.mark.parametrize(("network", "reference"), [(_Free, "closed form"), (_LocalSearch, "local search")])
def test_solver_gap_labels_what_each_code_is_compared_against(network: type, reference: str) -> None:
    from b2s_bench_plugins.evaluation.metrics import solver_gap

    ev = _solver_eval(network)
    gap = solver_gap(ev, steps=300)
    assert set(ev.details["solver_gap"]) == {"a", "b"}
    assert {d["reference"] for d in ev.details["solver_gap"].values()} == {reference}
    assert ev.details["check_reference"] == {"solver_gap": reference}
    assert gap < -0.9  # W = φ reaches the target: far below the lossy code's error
    assert gap == pytest.approx(sum(d["gap"] for d in ev.details["solver_gap"].values()) / 2)


@pytest.mark.parametrize("network", [_GradientFit, _Other])
def test_solver_gap_skips_codes_that_are_no_reference(network: type) -> None:
    from b2s_bench_plugins.evaluation.metrics import solver_gap

    with pytest.raises(NotApplicable, match="closed form or a local search"):
        solver_gap(_solver_eval(network), steps=10)


def test_large_cpu_batches_are_evaluated_in_parts_with_the_same_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    from b2s_bench import metrics

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(5)).eval()
    xs, ys = torch.randn(10, 3, 8, 8), torch.arange(10) % 5
    data = LoadedData(lambda bs: [(xs[i : i + bs], ys[i : i + bs]) for i in range(0, 10, bs)], 10, True, "parts")
    model(xs[:1])  # materialize the lazy layer
    whole, labels = metrics.run_model(model, data, torch.device("cpu"), 10)
    seen: list[int] = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    monkeypatch.setattr(metrics, "CPU_BATCH_VALUES", 3 * 8 * 8 * 3)  # three examples a part
    parts, labels2 = metrics.run_model(model, data, torch.device("cpu"), 10)
    assert seen == [3, 3, 3, 1]
    assert torch.allclose(parts, whole, atol=1e-6) and labels2 is not None and torch.equal(labels2, labels)
