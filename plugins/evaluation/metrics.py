"""Built-in metrics: accuracy, fidelity to the dense model, stored size, weight error and time.

The weight metrics compare every weight tensor of the model (``Evaluation.weight_pairs``: the
dense model's parameters, coded or stored as they were), so every method of a table shares one
tensor set and one denominator; a tensor stored as it was counts as exact (error 0, cosine 1).
Per tensor values go to ``details["per_layer"]``, the set's size to ``details["weight_set"]``.

Over all weights: relative error ||Ŵ − W||_F / ||W||_F and relative MAE Σ|Ŵ − W| / Σ|W| pool every
weight; cosine is the mean of the tensors' cosines weighted by their sizes; PSNR is
−10·log10(mean over all weights of MSE_t / peak_t²), peak_t = max(W_t) − min(W_t) of the original
tensor (its dynamic range, as for images), i.e. each tensor's error in units of its own range and
averaged before taking dB (a mean of dB values would be infinite with one exact tensor).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import b2s_bench as b2s
from b2s_bench import MetricSpec
from b2s_bench.metrics import Evaluation, NotApplicable

if TYPE_CHECKING:  # torch loads only when a function here needs it (registering imports none)
    import torch

#: the tasks the output metrics serve: they read ``logits`` and ``labels`` (the classification task's
#: outputs, ``Evaluation.outputs``); size, weight and time metrics serve every task (tasks=None)
CLASSIFICATION = frozenset({"classification"})


def _topk(ev: Evaluation, k: int) -> float:
    """Top-k accuracy in %; each example's hit is kept in ``ev.per_example["topK"]``."""
    logits, labels = ev.logits, ev.labels
    hits = (logits.topk(min(k, logits.shape[1]), dim=1).indices == labels[:, None]).any(dim=1)
    ev.per_example[f"top{k}"] = hits.cpu()
    return 100.0 * hits.float().mean().item()


def agreement(ev: Evaluation) -> float:
    """Top-1 agreement with the dense model in %; per example in ``ev.per_example["agreement"]``."""
    agree = ev.logits.argmax(1) == ev.baseline_logits.argmax(1)
    ev.per_example["agreement"] = agree.cpu()
    return 100.0 * agree.float().mean().item()


def kl(ev: Evaluation) -> float:
    """Mean KL(dense || compressed) of the softmax outputs, in nats; per example in ``ev.per_example["kl"]``."""
    import torch.nn.functional as F

    p_log = F.log_softmax(ev.baseline_logits.double(), dim=1)
    q_log = F.log_softmax(ev.logits.double(), dim=1)
    per = (p_log.exp() * (p_log - q_log)).sum(dim=1)
    ev.per_example["kl"] = per.cpu()
    return float(per.mean())


def _errors(ev: Evaluation) -> dict[str, dict[str, float]]:
    """Per tensor error sums over every weight tensor of the model (``Evaluation.weight_pairs``)."""
    if not ev.weight_pairs:
        raise NotApplicable(ev.weight_pairs_missing)
    errors = ev.weight_errors
    exact = sum(1 for e in errors.values() if e["exact"])
    ev.details["weight_set"] = {
        "tensors": len(errors),
        "weights": int(sum(e["numel"] for e in errors.values())),
        "coded": len(ev.coded_pairs),
        "exact": exact,
    }
    return errors


def _per_layer(ev: Evaluation, name: str, values: dict[str, float]) -> None:
    ev.details.setdefault("per_layer", {})[name] = values


def rel_error(ev: Evaluation) -> float:
    errors = _errors(ev)
    num, den = sum(e["sq_err"] for e in errors.values()), sum(e["sq_norm"] for e in errors.values())
    return math.sqrt(num / den) if den else 0.0


def rel_mae(ev: Evaluation) -> float:
    errors = _errors(ev)
    _per_layer(ev, "rel_mae", {k: e["abs_err"] / max(e["abs_norm"], 1e-12 * e["numel"]) for k, e in errors.items()})
    num, den = sum(e["abs_err"] for e in errors.values()), sum(e["abs_norm"] for e in errors.values())
    return num / den if den else (0.0 if num == 0 else math.inf)


def _weighted(errors: dict[str, dict[str, float]], stat: str) -> float:
    """The mean of ``stat`` over all weights (each tensor weighted by its size), NaN values left out."""
    pairs = [(e[stat], e["numel"]) for e in errors.values() if not math.isnan(e[stat])]
    n = sum(c for _, c in pairs)
    return sum(v * c for v, c in pairs) / n if n else math.nan


def cosine(ev: Evaluation) -> float:
    errors = _errors(ev)
    _per_layer(ev, "cosine", {k: e["cosine"] for k, e in errors.items()})
    return _weighted(errors, "cosine")


def psnr(ev: Evaluation) -> float:
    """−10·log10 of the mean over all weights of each tensor's MSE / range² (inf when every tensor is exact)."""
    errors = _errors(ev)
    _per_layer(ev, "psnr", {k: e["psnr"] for k, e in errors.items()})
    nmse = _weighted(errors, "nmse")
    if math.isnan(nmse):
        return math.nan
    return math.inf if nmse == 0 else -10 * math.log10(nmse)


def latency(ev: Evaluation) -> float:
    """Median milliseconds of one batch-1 forward pass, after warm-up, synchronizing on GPUs."""
    return _latency(ev, ev.model)


def latency_deployed(ev: Evaluation) -> float:
    """Latency of the deployed form: codes that have one run as their own modules (low-rank
    factors as two layers, INR weights rebuilt on every forward pass)."""
    return _latency(ev, ev.compressed.module(deployed=True).to(ev.device))


def _no_sync() -> None:
    """The CPU's stand-in for torch.cuda.synchronize: CPU work is done when the call returns."""


def _latency(ev: Evaluation, model: torch.nn.Module) -> float:
    import torch

    shape = tuple(ev.baseline.input_shape)
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0)).to(ev.device)
    model = model.eval()
    sync: Callable[[], None] = torch.cuda.synchronize if ev.device.type == "cuda" else _no_sync
    times = []
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        sync()
        for _ in range(ev.latency_repeats):
            t0 = time.perf_counter()
            model(x)
            sync()
            times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


#: what a code's decoder network says its own solution is (DecoderNetwork.solution): a "closed form"
#: (truncated SVD, top-k magnitudes, round-to-nearest) or a "local search" (k-means, AdaRound): both
#: are references the generic solver is measured against; a gradient fit (an INR) is not.
REFERENCES = ("closed form", "local search")


def _reference(net: Any) -> str | None:
    """What refitting this network is compared against, or None when it is no reference.

    A network without ``solution`` is a closed form when ``closed_form`` says so (older plugins);
    ``closed_form = False`` also overrides an inherited "closed form" (the code is a gradient fit).
    """
    solution = getattr(net, "solution", "closed form")
    if solution == "closed form" and not getattr(net, "closed_form", True):
        return None
    return solution if solution in REFERENCES else None


def solver_gap(ev: Evaluation, max_tensors: int = 3, steps: int = 1500) -> float:
    """How far the generic solver, fitting each code's network from a random start, is from the code.

    For the smallest ``max_tensors`` coded tensors whose network form is a reference (a closed form
    or a local search's result): fit with Adam (and projection where the family has a hard
    constraint) and report the mean of solver_error / code_error − 1 (0: the solver reaches the
    code; below 0 against a local search: the solver found a better optimum). Per tensor, the gap
    and the reference go to ``details["solver_gap"]``; the references also to
    ``details["check_reference"]["solver_gap"]`` for the report's check table.
    """
    import torch

    from b2s_bench.fitting import fit_network, relative_error

    codes = []
    for key, code in ev.compressed.codes.items():
        net = code.as_network("code")
        reference = _reference(net) if net is not None else None
        if reference is not None:
            codes.append((key, code, reference))
    if not codes:
        raise NotApplicable("no code of this compressor has a network form that is a closed form or a local search")
    original = ev.baseline.module.state_dict()
    gaps: dict[str, float] = {}
    details: dict[str, dict[str, Any]] = {}
    for key, code, reference in sorted(codes, key=lambda c: c[1].decode().numel())[:max_tensors]:
        target = original[key].detach().float().cpu()
        closed = relative_error(code.decode(), target)
        net = code.as_network("random", torch.Generator().manual_seed(0))
        if net is None:  # its "code" network was a reference above, so a "random" one exists too
            raise ValueError(f"{key}: the code has a network form from its own parameters but none from a random start")
        result = fit_network(net, target, steps=steps)
        gaps[key] = (result.rel_error - closed) / closed if closed > 1e-12 else result.rel_error
        details[key] = {"gap": gaps[key], "reference": reference}
    ev.details["solver_gap"] = details
    ev.details.setdefault("check_reference", {})["solver_gap"] = " + ".join(sorted({d["reference"] for d in details.values()}))
    return Evaluation.mean(gaps)


def _size(attr: str) -> Any:
    return lambda ev: float(getattr(ev.size, attr))


METRICS = [
    MetricSpec(
        "top1",
        "%",
        True,
        lambda ev: _topk(ev, 1),
        frozenset({"labels"}),
        "top-1 accuracy",
        roles=frozenset({"default", "primary"}),
        rank=10,
        tasks=CLASSIFICATION,
    ),
    MetricSpec(
        "top5",
        "%",
        True,
        lambda ev: _topk(ev, 5),
        frozenset({"labels"}),
        "top-5 accuracy",
        roles=frozenset({"primary"}),
        rank=30,
        tasks=CLASSIFICATION,
    ),
    MetricSpec(
        "agreement",
        "%",
        True,
        agreement,
        frozenset({"data"}),
        "top-1 agreement with the dense model",
        roles=frozenset({"default", "primary"}),
        rank=20,
        identity_target=99.999,
        tasks=CLASSIFICATION,
    ),
    MetricSpec("kl", "nats", False, kl, frozenset({"data"}), "mean KL(dense || compressed) of the outputs", tasks=CLASSIFICATION),
    MetricSpec(
        "bits",
        "bits",
        False,
        _size("total_bits"),
        description="exact stored bits of the whole model",
        kind="size",
        roles=frozenset({"default"}),
    ),
    MetricSpec(
        "ratio",
        "x",
        True,
        _size("ratio_model"),
        description="fp32 bits / stored bits, whole model",
        kind="size",
        roles=frozenset({"default"}),
    ),
    MetricSpec(
        "ratio_layers",
        "x",
        True,
        _size("ratio_layers"),
        description="fp32 bits / stored bits of the compressed layers only",
        kind="size",
        roles=frozenset({"default"}),
    ),
    MetricSpec(
        "bits_per_weight",
        "bits/weight",
        False,
        _size("bits_per_weight"),
        description="whole model: all stored bits / scalars of the dense inference state (raw tensors at 32)",
        kind="size",
    ),
    MetricSpec(
        "weight_rel_error",
        "",
        False,
        rel_error,
        frozenset({"weights"}),
        "||Ŵ − W||_F / ||W||_F over all weight tensors of the model (uncoded ones exact)",
        kind="weights",
        identity_target=1e-6,
        version="2",
    ),
    MetricSpec(
        "weight_rel_mae",
        "",
        False,
        rel_mae,
        frozenset({"weights"}),
        "Σ|Ŵ − W| / Σ|W| over all weight tensors of the model (uncoded ones exact)",
        kind="weights",
        version="2",
    ),
    MetricSpec(
        "weight_cosine",
        "",
        True,
        cosine,
        frozenset({"weights"}),
        "cosine(Ŵ, W) per tensor, mean weighted by size over all weight tensors (uncoded ones 1)",
        kind="weights",
        version="2",
    ),
    MetricSpec(
        "weight_psnr",
        "dB",
        True,
        psnr,
        frozenset({"weights"}),
        "−10·log10 of the mean over all weight tensors (size-weighted, uncoded ones exact) of MSE / (max W − min W)²",
        kind="weights",
        version="2",
    ),
    MetricSpec(
        "compress_seconds", "s", False, lambda ev: ev.timings["compress"], description="wall time of compression", kind="time"
    ),
    MetricSpec("latency_ms", "ms", False, latency, description="median batch-1 forward time after warm-up", kind="time"),
    MetricSpec(
        "latency_deployed_ms",
        "ms",
        False,
        latency_deployed,
        description="median batch-1 forward time of the deployed form (e.g. weights decoded on the fly)",
        kind="time",
    ),
    MetricSpec(
        "solver_gap",
        "",
        False,
        solver_gap,
        frozenset({"weights"}),
        "generic solver's error / the code's error − 1, against a closed form or a local search (theory check)",
        kind="weights",
        version="2",
        roles=frozenset({"check"}),
    ),
]


@b2s.hookimpl
def b2s_register_metrics(register: Callable[[b2s.MetricSpec], None]) -> None:
    for spec in METRICS:
        register(spec)
