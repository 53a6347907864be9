"""AdaRound (Nagel et al. 2020) for ``quantize``: learn, per layer, whether each weight rounds up or down.

Per layer, h(V) is the rectified sigmoid and the loss is ‖Wx − Ŵx̃‖² + λ Σ (1 − |2h(V) − 1|^β), β
annealed 20 → 2 after a 20 % warm-up; x̃ is the layer's input in the model whose earlier layers are
already rounded (AdaRound's asymmetric reconstruction), Wx the dense layer's output on the dense
input. The grid (scales, zero points, clipping) stays the one ``quantize`` set; a learned rounding is
kept only where its reconstruction error is not worse than round-to-nearest's, and its code is then
an :class:`~.codes.AdaRoundCode` (a local search's result, for the solver check).

Our own implementation, after the paper's equations.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from b2s_bench import Code, Context
from b2s_bench.calibration import layer_inputs

from .codes import AdaRoundCode, UniformCode, grid_range
from .config import QuantizeConfig
from .rounding import grouped

__all__ = ["Reconstruction", "adaround_q", "adaround_model"]

ZETA, GAMMA = 1.1, -0.1


def _h(v: torch.Tensor) -> torch.Tensor:
    """The rectified sigmoid h(V) = clamp(σ(V)(ζ − γ) + γ, 0, 1)."""
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def _rec_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error summed over channels (dim 1), averaged over everything else."""
    diff = (out - target) ** 2
    return diff.sum(dim=1).mean() if diff.dim() > 1 else diff.mean()


@dataclasses.dataclass
class Reconstruction:
    """One layer's reconstruction problem.

    Attributes:
        forward: ``forward(weight, x)``, the layer with that weight.
        x: its inputs x̃ (from the model with the earlier layers rounded).
        target: the dense layer's outputs on the dense inputs.
        batch: inputs per step (and per chunk when measuring the error).
    """

    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    x: torch.Tensor
    target: torch.Tensor
    batch: int

    @torch.no_grad()
    def error(self, w: torch.Tensor) -> float:
        """The reconstruction loss with weight ``w`` on all inputs (the mean over samples)."""
        n, total = self.x.shape[0], 0.0
        for i in range(0, n, self.batch):
            out = self.forward(w, self.x[i : i + self.batch])
            total += float(_rec_loss(out, self.target[i : i + self.batch])) * min(self.batch, n - i)
        return total / n


def _learn(
    v: nn.Parameter,
    weight: Callable[[torch.Tensor], torch.Tensor],
    problem: Reconstruction,
    iterations: int,
    lr: float,
    lam: float,
    generator: torch.Generator,
    warmup: float,
    beta: tuple[float, float],
) -> None:
    """Adam on V. Not :func:`b2s_bench.fitting.train_loop`: a diverged V must fall back to round-to-nearest
    (its error is then not better), not stop the compression."""
    opt = torch.optim.Adam([v], lr=lr)
    start = int(warmup * iterations)
    n = problem.x.shape[0]
    for it in range(iterations):
        idx = torch.randint(0, n, (min(problem.batch, n),), generator=generator).to(problem.x.device)
        with torch.enable_grad():
            h = _h(v)
            loss = _rec_loss(problem.forward(weight(h), problem.x[idx]), problem.target[idx])
            if it >= start:
                rel = (it - start) / max(iterations - start, 1)
                b = beta[1] + (beta[0] - beta[1]) * max(0.0, 1.0 - rel)
                loss = loss + lam * (1 - (2 * h - 1).abs().pow(b)).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
        opt.step()


def adaround_q(
    g: torch.Tensor,
    code: UniformCode,
    problem: Reconstruction,
    iterations: int,
    lr: float,
    lam: float,
    generator: torch.Generator,
    warmup: float = 0.2,
    beta: tuple[float, float] = (20.0, 2.0),
) -> tuple[torch.Tensor, dict[str, float]]:
    """AdaRound's integer codes for the grouped weights ``g`` (groups, group_len) on ``code``'s grid.

    Returns (q, facts) with the reconstruction error of round-to-nearest and of the learned rounding
    on all inputs; the learned one is kept (``facts["kept"]``) only if it is not worse.
    """
    device = problem.x.device
    qmin, qmax = grid_range(code.nbits, code.symmetric)
    s, z = code.scale.to(device)[:, None], code.zero.to(device)[:, None]
    g = g.to(device)
    base = torch.floor(g / s)
    rest = (g / s - base).clamp(0.0, 1.0)
    v = nn.Parameter(-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1))  # h(V) = rest: starts at the weights

    def weight(h: torch.Tensor) -> torch.Tensor:
        return code.unflatten(s * (torch.clamp(base + h + z, qmin, qmax) - z))

    rtn = (v.detach() >= 0).float()
    _learn(v, weight, problem, iterations, lr, lam, generator, warmup, beta)
    learned = (v.detach() >= 0).float()
    err_rtn, err_ada = problem.error(weight(rtn)), problem.error(weight(learned))
    keep = learned if err_ada <= err_rtn else rtn
    q = torch.clamp(base + keep + z, qmin, qmax).cpu()
    flipped = float((learned != rtn).float().mean())
    return q, {"error_rtn": err_rtn, "error_adaround": err_ada, "flipped": flipped, "kept": float(err_ada <= err_rtn)}


def _adaround_layer(
    model: nn.Module,
    name: str,
    code: UniformCode,
    x_q: torch.Tensor,
    config: QuantizeConfig,
    ctx: Context,
    batches: list[torch.Tensor],
    generator: torch.Generator,
) -> tuple[UniformCode, dict[str, float]]:
    """AdaRound one layer given its inputs ``x_q`` in the partly rounded model: its new code and facts."""
    layer = model.get_submodule(name)
    fixed = {n: p.detach() for n, p in layer.named_parameters() if n != "weight"}
    x_fp = layer_inputs(model, name, batches, ctx.device)
    if x_fp is None:
        raise ValueError(f"AdaRound: layer {name!r} got no input from the calibration batches")
    with torch.no_grad():
        target = torch.cat([layer(xb) for xb in x_fp.split(64)])
    del x_fp

    def forward(w: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(layer, {**fixed, "weight": w}, (xb,))

    g, _ = grouped(layer.get_parameter("weight").detach().cpu(), config.granularity, config.group_size)
    problem = Reconstruction(forward, x_q, target, config.adaround_batch)
    q, facts = adaround_q(g, code, problem, config.adaround_iterations, config.adaround_lr, config.adaround_lambda, generator)
    fields = {f.name: getattr(code, f.name) for f in dataclasses.fields(code)}
    return (AdaRoundCode if facts["kept"] else UniformCode)(**{**fields, "q": q}), facts


def adaround_model(
    model: nn.Module, codes: dict[str, Code], config: QuantizeConfig, ctx: Context, batches: list[torch.Tensor]
) -> dict[str, Any]:
    """AdaRound each layer in model order, in place in ``codes``; the layer facts for the record."""
    qmodel = copy.deepcopy(model).eval()  # earlier layers rounded: where x̃ comes from
    gen = ctx.generator(31)
    facts: dict[str, Any] = {}
    bar = ctx.progress(len(codes), "adaround")
    try:
        for key, code in list(codes.items()):
            name = key.rpartition(".")[0]
            x_q = layer_inputs(qmodel, name, batches, ctx.device) if isinstance(code, UniformCode) else None
            if x_q is not None and isinstance(code, UniformCode):
                code, facts[name] = _adaround_layer(model, name, code, x_q, config, ctx, batches, gen)
                codes[key] = code
                del x_q
            with torch.no_grad():
                weight = qmodel.get_submodule(name).get_parameter("weight")
                weight.copy_(code.decode().to(weight.device, weight.dtype))
            bar.update(1)
    finally:
        bar.close()
    done = list(facts.values())
    return {
        "layers": facts,
        "iterations": config.adaround_iterations,
        "error_rtn": sum(f["error_rtn"] for f in done),
        "error_adaround": sum(f["error_adaround"] if f["kept"] else f["error_rtn"] for f in done),
    }
