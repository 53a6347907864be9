"""Built-in metrics: accuracy, fidelity to the dense model, stored size, weight error and time.

Weight PSNR convention: per tensor, PSNR = 10·log10(peak² / MSE) with peak = max(W) − min(W) of
the original tensor (the dynamic range, as for images); the aggregate is the mean over the
compressed tensors with a finite PSNR (exact copies, inf, are left out; inf when all are exact).
Relative MAE is mean|Ŵ − W| / mean|W|; relative error is ||Ŵ − W||_F / ||W||_F.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F

import b2s_bench as b2s
from b2s_bench import Evaluation, MetricSpec, NotApplicable, fidelity, fit_network, relative_error


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
    p_log = F.log_softmax(ev.baseline_logits.double(), dim=1)
    q_log = F.log_softmax(ev.logits.double(), dim=1)
    per = (p_log.exp() * (p_log - q_log)).sum(dim=1)
    ev.per_example["kl"] = per.cpu()
    return float(per.mean())


def _weights(ev: Evaluation) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    if not ev.weight_pairs:
        raise NotApplicable("no tensor was replaced with its shape kept (e.g. distillation or structured pruning)")
    return ev.weight_pairs


def rel_error(ev: Evaluation) -> float:
    num = sum(float(((wh - w) ** 2).sum()) for _, w, wh in _weights(ev))
    den = sum(float((w**2).sum()) for _, w, _ in _weights(ev))
    return math.sqrt(num / den) if den else 0.0


def rel_mae(ev: Evaluation) -> float:
    per = {k: fidelity.rel_mae(w, wh) for k, w, wh in _weights(ev)}
    ev.details.setdefault("per_layer", {})["rel_mae"] = per
    return Evaluation.mean(per)


def cosine(ev: Evaluation) -> float:
    per = {k: fidelity.cosine(w, wh) for k, w, wh in _weights(ev)}
    ev.details.setdefault("per_layer", {})["cosine"] = per
    return Evaluation.mean(per)


def psnr(ev: Evaluation) -> float:
    """Per tensor 10·log10(range² / MSE) (see :mod:`b2s_bench.fidelity`), averaged over finite values."""
    per = {k: fidelity.psnr(w, wh) for k, w, wh in _weights(ev)}
    ev.details.setdefault("per_layer", {})["psnr"] = per
    finite = [v for v in per.values() if math.isfinite(v)]
    if not finite and per:
        return math.inf
    return sum(finite) / len(finite) if finite else math.nan


def latency(ev: Evaluation) -> float:
    """Median milliseconds of one batch-1 forward pass, after warm-up, synchronizing on GPUs."""
    return _latency(ev, ev.model)


def latency_deployed(ev: Evaluation) -> float:
    """Latency of the deployed form: codes that have one run as their own modules (low-rank
    factors as two layers, INR weights rebuilt on every forward pass)."""
    return _latency(ev, ev.compressed.module(deployed=True).to(ev.device))


@torch.inference_mode()
def _latency(ev: Evaluation, model: torch.nn.Module) -> float:
    shape = tuple(ev.baseline.input_shape)
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0)).to(ev.device)
    model = model.eval()
    sync = torch.cuda.synchronize if ev.device.type == "cuda" else (lambda: None)
    for _ in range(3):
        model(x)
    sync()
    times = []
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
    codes = []
    for key, code in ev.compressed.codes.items():
        net = code.as_network("code")
        reference = _reference(net) if net is not None else None
        if reference is not None:
            codes.append((key, code, reference))
    if not codes:
        raise NotApplicable("no code of this compressor has a network form that is a closed form or a local search")
    original = ev.baseline.module.state_dict()
    gaps, details = {}, {}
    for key, code, reference in sorted(codes, key=lambda c: c[1].decode().numel())[:max_tensors]:
        target = original[key].detach().float().cpu()
        closed = relative_error(code.decode(), target)
        net = code.as_network("random", torch.Generator().manual_seed(0))
        result = fit_network(net, target, steps=steps)
        gaps[key] = (result.rel_error - closed) / closed if closed > 1e-12 else result.rel_error
        details[key] = {"gap": gaps[key], "reference": reference}
    ev.details["solver_gap"] = details
    ev.details.setdefault("check_reference", {})["solver_gap"] = " + ".join(sorted({d["reference"] for d in details.values()}))
    return Evaluation.mean(gaps)


def _size(attr: str) -> Any:
    return lambda ev: float(getattr(ev.size, attr))


METRICS = [
    MetricSpec("top1", "%", True, lambda ev: _topk(ev, 1), frozenset({"labels"}), "top-1 accuracy",
               roles=frozenset({"default", "primary"}), rank=10),
    MetricSpec("top5", "%", True, lambda ev: _topk(ev, 5), frozenset({"labels"}), "top-5 accuracy",
               roles=frozenset({"primary"}), rank=30),
    MetricSpec("agreement", "%", True, agreement, frozenset({"data"}), "top-1 agreement with the dense model",
               roles=frozenset({"default", "primary"}), rank=20, identity_target=99.999),
    MetricSpec("kl", "nats", False, kl, frozenset({"data"}), "mean KL(dense || compressed) of the outputs"),
    MetricSpec("bits", "bits", False, _size("total_bits"), description="exact stored bits of the whole model",
               kind="size", roles=frozenset({"default"})),
    MetricSpec("ratio", "x", True, _size("ratio_model"), description="fp32 bits / stored bits, whole model",
               kind="size", roles=frozenset({"default"})),
    MetricSpec("ratio_layers", "x", True, _size("ratio_layers"),
               description="fp32 bits / stored bits of the compressed layers only", kind="size",
               roles=frozenset({"default"})),
    MetricSpec("bits_per_weight", "bits/weight", False, _size("bits_per_weight"),
               description="stored bits per fp32 scalar of the dense model", kind="size"),
    MetricSpec("weight_rel_error", "", False, rel_error, frozenset({"weights"}),
               "||Ŵ − W||_F / ||W||_F over the compressed tensors", kind="weights", identity_target=1e-6),
    MetricSpec("weight_rel_mae", "", False, rel_mae, frozenset({"weights"}),
               "mean over tensors of mean|Ŵ − W| / mean|W|", kind="weights"),
    MetricSpec("weight_cosine", "", True, cosine, frozenset({"weights"}), "mean cosine(Ŵ, W) over tensors",
               kind="weights"),
    MetricSpec("weight_psnr", "dB", True, psnr, frozenset({"weights"}),
               "mean PSNR over tensors, peak = max(W) − min(W)", kind="weights"),
    MetricSpec("compress_seconds", "s", False, lambda ev: ev.timings["compress"],
               description="wall time of compression", kind="time"),
    MetricSpec("latency_ms", "ms", False, latency, description="median batch-1 forward time after warm-up",
               kind="time"),
    MetricSpec("latency_deployed_ms", "ms", False, latency_deployed,
               description="median batch-1 forward time of the deployed form (e.g. weights decoded on the fly)",
               kind="time"),
    MetricSpec("solver_gap", "", False, solver_gap, frozenset({"weights"}),
               "generic solver's error / the code's error − 1, against a closed form or a local search (theory check)",
               kind="weights", version="2",
               roles=frozenset({"check"})),
]


@b2s.hookimpl
def b2s_register_metrics(register: Any) -> None:
    for spec in METRICS:
        register(spec)
