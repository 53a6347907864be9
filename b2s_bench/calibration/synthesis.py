"""BN-statistics data synthesis: inputs made from a model alone, for the synthetic data track.

A batch of inputs x, started from Gaussian noise, is optimised so that at every BatchNorm layer the
batch statistics of the layer's input match the layer's running statistics. Two forms of that loss:

- ``bn_form: zeroq`` (ZeroQ's "distilled data", Cai et al. 2020): squared distances of the means and
  of the standard deviations, each divided by the number of channels, plus the same term pulling
  the input's per-channel statistics to N(0, 1) (the normalized input distribution):

      L_BN(x) = Σ_ℓ (‖μ_ℓ(x) − μ_ℓ^BN‖₂² + ‖σ_ℓ(x) − σ_ℓ^BN‖₂²) / C_ℓ + (‖μ_0(x)‖₂² + ‖σ_0(x) − 1‖₂²) / C_0;

- ``bn_form: deepinversion`` (Yin et al. 2020): unsquared distances of the means and variances,
  the first BN layer weighted by ``first_bn_multiplier``:

      L_BN(x) = Σ_ℓ m_ℓ (‖μ_ℓ(x) − μ_ℓ^BN‖₂ + ‖σ²_ℓ(x) − σ²_ℓ^BN‖₂),   m_1 = first_bn_multiplier, m_ℓ>1 = 1.

- ``bn_form: dsg`` (DSG, Zhang, Qin et al., CVPR 2021, and its journal version, Qin et al. 2021):
  the statistics are those of each *sample* (its per-channel spatial mean and standard deviation,
  as in the ZeroQ and DSG codes), so every sample is pulled to the BN statistics, and DSG loosens
  that pull in two ways. Slack Distribution Alignment (SDA): a deviation within a margin costs
  nothing, ``max(|μ_iℓ − μ_ℓ^BN| − δ_ℓ, 0)²`` (and the same for σ with γ_ℓ). Layerwise Sample
  Enhancement (LSE): sample i weights the term of BN layer ℓ by ``1 + emphasis·[ℓ = i mod L]``
  (the authors' code doubles sample i's term of layer i: weights I + 1, emphasis 1; with more samples than
  layers we cycle, a choice of ours, where that code emphasises none past the L-th):

      L_BN(x) = Σ_ℓ (1/B) Σ_i w_iℓ Σ_c [max(|μ_iℓc − μ_ℓc^BN| − δ_ℓc, 0)² + max(|σ_iℓc − σ_ℓc^BN| − γ_ℓc, 0)²]
                + (1/B) Σ_i Σ_c (μ_i0c² + (σ_i0c − 1)²)      (the input against N(0, 1), no slack).

  The margins: the authors' code uses one δ and one γ per layer, loaded from files it does not ship
  (``m_n_perc/{m,n}.npy``, percentiles by their name; htqin/DSG issue 2 asks for them, unanswered),
  so how they were measured cannot be checked, and a data-free row cannot measure real data;
  ``slack_rule`` chooses ours: ``relative``
  (δ_ℓc = γ_ℓc = slack·σ_ℓc^BN, the margin in units of the channel's own spread) or ``absolute``
  (δ = γ = slack). A layer whose input has no spatial dims (BatchNorm1d on features) has no
  per-sample statistics: it gets the batch's, the same term for every sample.

An inter-sample diversity term (the journal version's "inhibit the correlation among samples"),
any form: ``diversity_weight·‖S − I‖²_F / (B(B − 1))`` with S the cosine similarities of the
flattened inputs, i.e. the mean squared correlation of two different samples (≈ 0 for a Gaussian
batch). The authors' code matches the eigenvalues and eigenvectors of the same Gram matrix to a
Gaussian batch's; we penalise its off-diagonal directly (same target, no eigendecomposition, whose
gradient is unstable for repeated eigenvalues).

DeepInversion-style terms can be added: cross-entropy toward target labels, a total-variation and
an ℓ2 prior on x, random jitter (a circular shift) and horizontal flips of x at each step:

    L(x) = bn_weight·L_BN + ce_weight·CE(f(x̃), y) + tv_weight·TV(x) + l2_weight·‖x‖₂ + diversity_weight·D(x).

Our own implementation (forward pre-hooks on the BN layers, Adam on x with a cosine learning rate,
where ZeroQ decays its rate on plateaus); the reference codes' licences (ZeroQ and DSG: GPL-3,
DeepInversion: NVIDIA NC) do not allow reuse.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..compression.compressor import Context, Progress
from ..compression.coverage import NotApplicableError
from ..fitting.training import train_loop

__all__ = [
    "SynthesisConfig",
    "Synthesized",
    "ZEROQ",
    "DEEPINVERSION",
    "DSG",
    "synthesize",
    "bn_loss",
    "bn_layers",
    "slack_term",
    "sample_similarity",
]

from .synthesis_settings import DEEPINVERSION, DSG, ZEROQ, SynthesisConfig


@dataclasses.dataclass
class Synthesized:
    """Synthesized inputs (on the CPU), their target labels, and the BN loss at the first and last step."""

    images: torch.Tensor
    labels: torch.Tensor
    bn_loss_start: float
    bn_loss_end: float
    seconds: float

    def info(self) -> dict[str, Any]:
        return {
            "samples": int(self.images.shape[0]),
            "bn_loss_start": self.bn_loss_start,
            "bn_loss_end": self.bn_loss_end,
            "seconds": round(self.seconds, 3),
        }


def bn_layers(model: nn.Module) -> list[nn.Module]:
    """BatchNorm layers with running statistics, in model order."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None and m.running_var is not None
    ]


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (dim 1) mean and biased variance of a batch."""
    dims = [d for d in range(x.dim()) if d != 1]
    return x.mean(dim=dims), x.var(dim=dims, correction=0)


def _zeroq_term(mean: torch.Tensor, var: torch.Tensor, ref_mean: torch.Tensor, ref_var: torch.Tensor) -> torch.Tensor:
    std, ref_std = (var + 1e-12).sqrt(), ref_var.clamp(min=0).sqrt()
    return ((mean - ref_mean).pow(2).sum() + (std - ref_std).pow(2).sum()) / mean.numel()


def input_term(x: torch.Tensor) -> torch.Tensor:
    """ZeroQ's input term: the input's per-channel statistics against N(0, 1)."""
    mean, var = _stats(x)
    return _zeroq_term(mean, var, torch.zeros_like(mean), torch.ones_like(var))


def _sample_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and standard deviation over the spatial dims, shape (B, C); an
    input without spatial dims has only the batch's statistics, repeated for every sample."""
    if x.dim() > 2:
        flat = x.flatten(2)
        mean, var = flat.mean(dim=2), flat.var(dim=2, correction=0)
    else:
        mean, var = _stats(x)
        mean, var = mean.expand(x.shape[0], -1), var.expand(x.shape[0], -1)
    return mean, (var + 1e-12).sqrt()


def slack_term(value: torch.Tensor, reference: torch.Tensor | float, margin: torch.Tensor | float) -> torch.Tensor:
    """DSG's slack distance per sample: Σ_c max(|value − reference| − margin, 0)², summed over the
    last dim (channels); deviations within the margin cost nothing."""
    return torch.clamp((value - reference).abs() - margin, min=0).pow(2).sum(dim=-1)


def _dsg_sample_terms(
    x: torch.Tensor, ref_mean: torch.Tensor | float, ref_std: torch.Tensor | float, margin: torch.Tensor | float
) -> torch.Tensor:
    """Each sample's SDA term at one layer, shape (B,)."""
    mean, std = _sample_stats(x)
    return slack_term(mean, ref_mean, margin) + slack_term(std, ref_std, margin)


def _dsg_input_term(x: torch.Tensor) -> torch.Tensor:
    """The DSG form's input term: each sample's per-channel statistics against N(0, 1), averaged."""
    return _dsg_sample_terms(x, 0.0, 1.0, 0.0).mean()


def sample_similarity(x: torch.Tensor) -> torch.Tensor:
    """The mean squared cosine similarity of two different samples of ``x`` (flattened): the
    diversity term D(x) = ‖S − I‖²_F / (B(B − 1)); 0 for orthogonal samples, 1 for identical ones."""
    b = x.shape[0]
    if b < 2:
        return torch.zeros((), device=x.device)
    phi = F.normalize(x.reshape(b, -1), dim=1)
    sim = phi @ phi.t()
    off = sim - torch.diag_embed(torch.diagonal(sim))
    return off.pow(2).sum() / (b * (b - 1))


class _BNTerms:
    """Forward pre-hooks that record each BN layer's statistics term, in execution order (the DSG
    form: also each sample's term, for the layer emphasis)."""

    def __init__(self, model: nn.Module, form: str = "deepinversion", config: SynthesisConfig | None = None):
        self.form = form
        self.config = config or SynthesisConfig(bn_form=form)
        self.terms: list[torch.Tensor] = []
        self.per_sample: list[torch.Tensor] = []  # DSG form: (B,) per layer, unweighted
        self.handles = [m.register_forward_pre_hook(self._hook) for m in bn_layers(model)]
        if not self.handles:
            norms = sorted({type(m).__name__ for m in model.modules() if isinstance(m, (nn.LayerNorm, nn.GroupNorm))})
            uses = f" (it normalises with {' and '.join(norms)})" if norms else ""
            raise NotApplicableError(
                "synthesized inputs match BatchNorm running statistics, and the model has no BatchNorm layers "
                f"with running statistics to synthesize data from{uses}; use real inputs (the calibration track)"
            )

    def clear(self) -> None:
        self.terms.clear()
        self.per_sample.clear()

    def _hook(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        running_mean, running_var = module.running_mean, module.running_var
        # bn_layers hooks only BatchNorm layers with both running statistics
        assert isinstance(running_mean, torch.Tensor) and isinstance(running_var, torch.Tensor)
        if self.form == "dsg":
            ref_std = running_var.clamp(min=0).sqrt()
            c = self.config
            margin = c.slack * ref_std if c.slack_rule == "relative" else c.slack
            self.per_sample.append(_dsg_sample_terms(args[0], running_mean, ref_std, margin))
            self.terms.append(self.per_sample[-1].mean())
            return
        mean, var = _stats(args[0])
        if self.form == "zeroq":
            self.terms.append(_zeroq_term(mean, var, running_mean, running_var))
        else:
            self.terms.append(torch.linalg.vector_norm(mean - running_mean) + torch.linalg.vector_norm(var - running_var))

    def _emphasised(self) -> list[torch.Tensor]:
        """DSG's LSE: each layer's per-sample terms weighted by 1 + emphasis·[layer = sample mod L]."""
        layers, emphasis = len(self.per_sample), self.config.emphasis
        out = []
        for ell, t in enumerate(self.per_sample):
            w = torch.ones_like(t)
            if emphasis:
                w[torch.arange(t.shape[0], device=t.device) % layers == ell] += emphasis
            out.append((w * t).mean())
        return out

    def total(self, first_multiplier: float = 1.0) -> torch.Tensor:
        terms = self._emphasised() if self.form == "dsg" else self.terms
        return terms[0] * first_multiplier + sum(terms[1:], torch.zeros((), device=terms[0].device))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@contextlib.contextmanager
def _frozen_eval(model: nn.Module) -> Iterator[None]:
    """The model in eval mode with its parameters out of autograd; both restored afterwards."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def _input_loss(x: torch.Tensor, form: str) -> torch.Tensor | None:
    """The input's term against N(0, 1), in the forms that have one."""
    if form == "zeroq":
        return input_term(x)
    if form == "dsg":
        return _dsg_input_term(x)
    return None


@torch.no_grad()
def bn_loss(model: nn.Module, x: torch.Tensor, form: str = "deepinversion", config: SynthesisConfig | None = None) -> float:
    """The BN-statistics loss L_BN of the batch ``x`` in the given form (first-layer multiplier 1);
    with ``config``, in its form with its DSG settings (slack, emphasis)."""
    if config is not None:
        form = config.bn_form
    with _frozen_eval(model):
        terms = _BNTerms(model, form, config)
        try:
            model(x)
            extra = _input_loss(x, form)
            return float(terms.total()) + (float(extra) if extra is not None else 0.0)
        finally:
            terms.remove()


def _tv(x: torch.Tensor) -> torch.Tensor:
    if x.dim() < 4:
        return torch.zeros((), device=x.device)
    return torch.linalg.vector_norm(x[..., 1:, :] - x[..., :-1, :]) + torch.linalg.vector_norm(x[..., :, 1:] - x[..., :, :-1])


def _batch_sizes(config: SynthesisConfig) -> list[int]:
    """How many inputs each batch makes: ``batch_size``, the remainder last (never a batch of one)."""
    sizes = [min(config.batch_size, config.samples - s) for s in range(0, config.samples, config.batch_size)]
    if len(sizes) > 1 and sizes[-1] < 2:  # a batch of one has no variance: merge it into the previous one
        last = sizes.pop()
        sizes[-1] += last
    return sizes


def _augmented(x: torch.Tensor, config: SynthesisConfig, gen: torch.Generator) -> torch.Tensor:
    """``x`` randomly shifted (circularly) and flipped, as the settings ask (images only)."""
    if x.dim() == 4 and config.jitter > 0:
        limit = max(int(round(config.jitter * min(x.shape[-2:]))), 0)
        dy, dx = torch.randint(-limit, limit + 1, (2,), generator=gen).tolist()
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    if x.dim() == 4 and config.flip and bool(torch.rand((), generator=gen) < 0.5):
        x = torch.flip(x, dims=(3,))
    return x


class _Batch:
    """One batch of inputs being synthesized: the loss of a step, and the BN loss of each step."""

    def __init__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: SynthesisConfig, terms: _BNTerms, gen: torch.Generator
    ):
        self.model, self.x, self.y, self.config, self.terms, self.gen = model, x, y, config, terms, gen
        self.bn: list[float] = []  # L_BN at each step, without the weights (what the record reports)

    def loss(self, step: int) -> torch.Tensor:
        """The step's loss L(x) on a jittered, flipped view of x (module docstring)."""
        c, x = self.config, self.x
        xin = _augmented(x, c, self.gen)
        self.terms.clear()
        out = self.model(xin)
        lbn = self.terms.total(c.first_bn_multiplier)
        extra = _input_loss(xin, c.bn_form)
        if extra is not None:
            self.terms.terms.append(extra)
            lbn = lbn + extra
        loss = c.bn_weight * lbn
        if c.ce_weight:
            loss = loss + c.ce_weight * F.cross_entropy(out, self.y)
        if c.tv_weight:
            loss = loss + c.tv_weight * _tv(x)
        if c.l2_weight:
            loss = loss + c.l2_weight * torch.linalg.vector_norm(x)
        if c.diversity_weight:
            loss = loss + c.diversity_weight * sample_similarity(x)
        return loss

    def record(self, step: int) -> None:
        """Keep this step's L_BN (the terms of its forward pass, unweighted)."""
        self.bn.append(float(sum(t.detach() for t in self.terms.terms)))

    @torch.no_grad()
    def noise_bn(self) -> float:
        """L_BN of the inputs as they are (with no steps: of the noise)."""
        self.terms.clear()
        self.model(self.x)
        extra = _input_loss(self.x, self.config.bn_form)
        if extra is not None:
            self.terms.terms.append(extra)
        return float(sum(t for t in self.terms.terms))


def _synthesize_batch(batch: _Batch, bar: Progress) -> tuple[torch.Tensor, float, float]:
    """Optimise one batch: Adam on x with a cosine learning rate; (x, L_BN at the first step, at the last)."""
    iterations = batch.config.iterations
    opt = torch.optim.Adam([batch.x], lr=batch.config.lr)

    def after_step(step: int) -> None:
        batch.record(step)
        bar.set_postfix_str(f"bn {batch.bn[-1]:.3g}")

    train_loop(
        opt,
        batch.loss,
        iterations,
        after_step=after_step,
        progress=bar,
        log_every=max(iterations, 1),
        scheduler=lambda i: 0.5 * (1 + math.cos(math.pi * i / max(iterations, 1))),
    )
    batch.x = batch.x.detach()
    if not batch.bn:  # no iterations: report the loss of the noise
        batch.bn.append(batch.noise_bn())
    return batch.x, batch.bn[0], batch.bn[-1]


def synthesize(
    model: nn.Module, config: SynthesisConfig, ctx: Context, offset: int = 0, num_classes: int | None = None
) -> Synthesized:
    """Make ``config.samples`` inputs of shape ``ctx.input_shape`` from ``model``'s BN statistics.

    Seeded by ``ctx.seed + offset`` (noise, labels, jitter and flips come from CPU generators, so
    the result does not depend on the device up to floating point); runs on ``ctx.device``.
    """
    if ctx.input_shape is None:
        raise ValueError("data synthesis needs the model's input shape (ctx.input_shape)")
    if ctx.input_vocab is not None:
        raise NotApplicableError(
            "data-free synthesis optimizes continuous inputs (images) against BatchNorm statistics; this model "
            "reads discrete token ids (a language model), which gradient steps cannot synthesize"
        )
    shape = tuple(ctx.input_shape)
    gen = ctx.generator(1000 + offset)
    sizes = _batch_sizes(config)
    classes = num_classes or ctx.num_classes
    images, labels, starts, ends = [], [], [], []
    t0 = time.perf_counter()
    bar = ctx.progress(len(sizes) * config.iterations, "synthesize")
    with _frozen_eval(model), torch.enable_grad():
        terms = _BNTerms(model, config.bn_form, config)
        try:
            for b in sizes:
                x = torch.randn((b, *shape), generator=gen).to(ctx.device).requires_grad_(True)
                if classes is None:
                    with torch.no_grad():
                        classes = int(model(x[:2]).shape[-1])
                y = torch.randint(0, classes, (b,), generator=gen)
                made, start, end = _synthesize_batch(_Batch(model, x, y.to(ctx.device), config, terms, gen), bar)
                images.append(made.cpu())
                labels.append(y)
                starts.append(start)
                ends.append(end)
        finally:
            terms.remove()
            bar.close()
    return Synthesized(
        torch.cat(images),
        torch.cat(labels),
        sum(starts) / len(starts),
        sum(ends) / len(ends),
        time.perf_counter() - t0,
    )
