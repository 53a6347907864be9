"""``udfc`` on a model: prune channels, quantize, and let each next layer absorb the loss.

Layers are taken in the model's order. Each conv/linear layer l, its input columns already
compensated by the layer before it, is pruned (if it heads a chain, :mod:`.chains`: its
smallest-norm filters, with the BatchNorm's rows) and quantized; then the next layer's columns take
the closed-form compensation (:mod:`.compensation`) and lose the pruned channels' columns, before
that layer is itself pruned and quantized. Layers outside a chain are quantized only; what was
skipped and why is in ``info``.

Storage: quantized weights as :class:`.codes.UDFCCode` (N·b + scales + header; their header holds
the shrunk shape); every other tensor raw at fp32, the shrunk BatchNorm rows and a changed next
layer included (32 bits a dimension for a raw tensor's new shape, in the core); a bias added by the
compensation is stored and counted too.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from b2s_bench import Compressed, Context, Target, inference_state, skeleton_of, weight_layers
from b2s_bench.calibration import analytic_shift, bn_input_models, bn_successors

from ..quantize.codes import UniformCode
from ..quantize.config import QuantizeConfig
from ..quantize.rounding import quantize_tensor
from .chains import Chain, find_chains
from .codes import UDFCCode
from .compensation import Gaussians, cosine, moments, norm_ratio, pair_channels, scales
from .config import UDFCConfig

__all__ = ["compress", "target", "prune_plan", "PAIRING_POINTS"]

#: quadrature points a dimension for the search over all pruned × kept pairs (the scales use more)
PAIRING_POINTS = 17


def _prunable(module: nn.Module) -> bool:
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.groups == 1 and not module.transposed
    return isinstance(module, nn.Linear)


def _norms(w: torch.Tensor, criterion: str) -> torch.Tensor:
    rows = w.detach().float().reshape(w.shape[0], -1)
    return rows.abs().sum(dim=1) if criterion == "l1" else rows.norm(dim=1)


def prune_plan(weights: dict[str, torch.Tensor], config: UDFCConfig) -> dict[str, torch.Tensor]:
    """The output channels to prune of each prunable layer (sorted indices), by the smallest filter
    norms: ``sparsity`` of each layer, or of all of them ranked by norm / the layer's mean norm.
    Every layer keeps at least one channel."""
    if config.sparsity <= 0 or not weights:
        return {}
    norms = {name: _norms(w, config.criterion) for name, w in weights.items()}
    if config.scope == "layer":
        counts = {name: min(round(config.sparsity * n.numel()), n.numel() - 1) for name, n in norms.items()}
    else:
        flat = torch.cat([n / n.mean().clamp(min=1e-30) for n in norms.values()])
        owner = torch.cat([torch.full((n.numel(),), i) for i, n in enumerate(norms.values())])
        order = owner[flat.argsort()][: round(config.sparsity * flat.numel())]
        names = list(norms)
        counts = {name: min(int((order == i).sum()), norms[name].numel() - 1) for i, name in enumerate(names)}
    return {name: norms[name].argsort()[:k].sort().values for name, k in counts.items() if k > 0}


class _Run:
    """One compression: the state being edited, and what it records."""

    def __init__(self, model: nn.Module, config: UDFCConfig):
        self.model, self.config = model, config
        self.state = {k: v.detach().cpu().clone() for k, v in inference_state(model).items()}
        self.codes: dict[str, UDFCCode] = {}
        self.changed: set[str] = set()
        #: for a layer whose inputs lost channels: the indices of its input features that are left
        self.kept_inputs: dict[str, torch.Tensor] = {}
        #: next layer -> the running-mean key of the BatchNorm that alone reads it (set by compress)
        self.successors: dict[str, str] = {}
        self.info: dict[str, Any] = {
            "data_track": "data-free",
            "weight_bits": config.bits,
            "pruned_channels": {},
            "prunable_channels": 0,
            "compensated": {},
            "bias": {},
            "mean_shift": {},
        }

    def quantize(self, key: str) -> torch.Tensor:
        c = self.config
        q = QuantizeConfig(bits=c.bits, granularity=c.granularity, symmetric=c.symmetric, scale_bits=c.scale_bits)
        code = quantize_tensor(self.state[key], q)
        assert isinstance(code, UniformCode)  # bits 2-8: integer codes
        ours = UDFCCode(**{f.name: getattr(code, f.name) for f in dataclasses.fields(code)})
        self.codes[key] = ours
        return ours.decode()

    def shrink_rows(self, chain: Chain, keep: torch.Tensor) -> None:
        """Remove the pruned filters of ``chain.layer`` and their BatchNorm rows."""
        keys = [f"{chain.layer}.weight", f"{chain.layer}.bias"] + [
            f"{chain.bn}.{n}" for n in ("weight", "bias", "running_mean", "running_var")
        ]
        for key in keys:
            if key in self.state:
                self.state[key] = self.state[key][keep].clone()
                self.changed.add(key)

    def input_means(self, names: list[str]) -> dict[str, torch.Tensor]:
        """E[x] of each layer's input from the BatchNorm (+ activation) before it (the core's Gaussian
        model, its expectation on this plugin's quadrature grid)."""
        if self.config.mean_shift != "bn" or not names:
            return {}
        found, skipped = bn_input_models(self.model, names)
        for name, why in skipped.items():
            self.info["mean_shift"][name] = f"none: {why}"
        means = {}
        for name, m in found.items():
            ex, _ = moments(m.act, Gaussians(m.beta.double(), m.gamma.double()), self.config.quadrature_points)
            means[name] = ex.float().repeat_interleave(m.repeat)
            self.info["mean_shift"][name] = "bn"
        return means

    def compensate(
        self,
        chain: Chain,
        w: torch.Tensor,
        w_new: torch.Tensor,
        keep: torch.Tensor,
        pruned: torch.Tensor,
        ex: torch.Tensor | None,
    ) -> None:
        """The closed form into ``chain.next`` (see :mod:`.compensation`): ``w`` is layer l's weight
        before pruning and quantization, ``w_new`` its kept rows as stored."""
        c = self.config
        bn = self.model.get_submodule(chain.bn)
        assert isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.running_var is not None
        channels = chain.channels
        gamma = bn.weight.detach().float().cpu() if bn.weight is not None else torch.ones(channels)
        beta = bn.bias.detach().float().cpu() if bn.bias is not None else torch.zeros(channels)
        sigma = torch.sqrt(bn.running_var.detach().float().cpu() + bn.eps)
        rows = w.reshape(w.shape[0], -1).double()
        new_rows = w_new.reshape(w_new.shape[0], -1).double()
        kept_rows = rows[keep]
        sign = torch.sign(gamma).double()
        sign = torch.where(sign == 0, torch.ones_like(sign), sign)

        # the damaged regressors f(ỹ_k) of the kept channels
        shift = torch.zeros(keep.numel(), dtype=torch.float64)
        if ex is not None and not torch.equal(new_rows, kept_rows):
            layer = self.model.get_submodule(chain.layer)
            shift = analytic_shift(layer, (w_new - w[keep]).float(), ex).double()
        reg = Gaussians(
            beta[keep].double() + gamma[keep].double() * shift / sigma[keep].double(),
            gamma[keep].double().abs() * norm_ratio(new_rows, kept_rows),
        )
        own = Gaussians(beta[keep].double(), gamma[keep].double().abs())
        points = c.quadrature_points
        damaged = not torch.equal(new_rows, kept_rows)
        if damaged:
            rho_own = torch.nn.functional.cosine_similarity(kept_rows, new_rows, dim=1)
            s_own, t_own = scales(chain.act, own, reg, rho_own, points)
        else:
            s_own, t_own = torch.ones(keep.numel(), dtype=torch.float64), torch.zeros(keep.numel(), dtype=torch.float64)

        partner = torch.zeros(0, dtype=torch.long)
        s_p = t_p = torch.zeros(0, dtype=torch.float64)
        if pruned.numel():
            lost = Gaussians(beta[pruned].double(), gamma[pruned].double().abs())
            rho = cosine(rows[pruned], new_rows) * sign[pruned][:, None] * sign[keep][None, :]
            partner, error = pair_channels(chain.act, lost, reg, rho, c.pairing, min(points, PAIRING_POINTS))
            chosen = Gaussians(reg.mean[partner], reg.std[partner])
            s_p, t_p = scales(chain.act, lost, chosen, rho.gather(1, partner[:, None])[:, 0], points)
            self.info["compensated"][chain.layer] = {
                "next": chain.next,
                "pruned": int(pruned.numel()),
                "mean_abs_scale": float(s_p.abs().mean()),
                "mean_error_left": float(error.mean()),
            }
        else:
            self.info["compensated"][chain.layer] = {"next": chain.next, "pruned": 0}

        nkey = f"{chain.next}.weight"
        v = self.state[nkey].double()
        out = v.shape[0]
        cols = v.reshape(out, channels, -1)  # (out, C, positions·kernel)
        new = cols[:, keep] * s_own[None, :, None]
        if pruned.numel():
            new.index_add_(1, partner, cols[:, pruned] * s_p[None, :, None])
        self.state[nkey] = new.reshape(out, *self._next_shape(v, keep.numel(), chain)).float()
        self.changed.add(nkey)
        if c.bias_compensation:
            delta = cols[:, keep].sum(dim=2) @ t_own
            if pruned.numel():
                delta = delta + cols[:, pruned].sum(dim=2) @ t_p
            self._absorb(chain.next, delta.float())
        if pruned.numel():
            feats = torch.arange(channels * chain.positions).reshape(channels, chain.positions)[keep].reshape(-1)
            self.kept_inputs[chain.next] = feats

    @staticmethod
    def _next_shape(v: torch.Tensor, kept: int, chain: Chain) -> tuple[int, ...]:
        if v.dim() == 2:  # linear: channel-major features
            return (kept * chain.positions,)
        return (kept, *v.shape[2:])

    def _absorb(self, name: str, delta: torch.Tensor) -> None:
        """Add ``delta`` to the output of layer ``name``: its bias, the running mean of the
        BatchNorm that alone reads it (subtracted there), or a new fp32 bias."""
        if not bool(delta.abs().max() > 0):
            return
        key = f"{name}.bias"
        if key in self.state:
            self.state[key] = self.state[key].float() + delta
            self.info["bias"][name] = "bias"
            self.changed.add(key)
            return
        if name in self.successors and self.successors[name] in self.state:
            mean = self.successors[name]
            self.state[mean] = self.state[mean].float() - delta
            self.info["bias"][name] = mean
            self.changed.add(mean)
            return
        self.state[key] = delta.clone()
        self.info["bias"][name] = "added"


def compress(model: nn.Module, config: UDFCConfig, ctx: Context) -> Compressed:
    """Prune and quantize the model's conv/linear layers with UDFC's data-free compensation."""
    everything = weight_layers(model)
    names = [k.rpartition(".")[0] for k in everything]
    quantized = set(weight_layers(model, skip_first=config.skip_first, skip_last=config.skip_last)) if config.quantizes else set()
    ends = {names[0], names[-1]} if names else set()
    protected = {n for n in ends if (n == names[0] and config.skip_first) or (n == names[-1] and config.skip_last)}
    run = _Run(model, config)
    shapes = {k: tuple(v.shape) for k, v in run.state.items()}
    skeleton = skeleton_of(model)
    if config.sparsity == 0 and not quantized:
        return Compressed({}, run.state, skeleton, shapes, replaced=(), info=run.info)
    chains, skipped = find_chains(model, names)
    prunable = {n: ch for n, ch in chains.items() if _prunable(model.get_submodule(n)) and n not in protected}
    plan = prune_plan({n: run.state[f"{n}.weight"] for n in prunable}, config)
    run.info["prunable_channels"] = sum(ch.channels for ch in prunable.values())
    run.info["chains"] = {n: ch.next for n, ch in chains.items()}
    run.info["skipped"] = skipped
    if config.bias_compensation:
        run.successors = bn_successors(model, sorted({ch.next for ch in chains.values()}))
    means = run.input_means([n for n in chains if f"{n}.weight" in quantized])
    for name in names:
        key = f"{name}.weight"
        w = run.state[key].float().clone()
        chain = chains.get(name)
        pruned = plan.get(name, torch.zeros(0, dtype=torch.long))
        keep = torch.tensor([i for i in range(w.shape[0]) if i not in set(pruned.tolist())], dtype=torch.long)
        if chain is not None and pruned.numel():
            run.shrink_rows(chain, keep)
            run.info["pruned_channels"][name] = int(pruned.numel())
        w_new = run.quantize(key) if key in quantized else run.state[key]
        if chain is not None and (pruned.numel() or key in quantized):
            ex = means.get(name)
            if ex is not None and name in run.kept_inputs:
                ex = ex[run.kept_inputs[name]] if ex.numel() > run.kept_inputs[name].numel() else ex
            run.compensate(chain, w, w_new, keep, pruned, ex)
    raw = {k: v for k, v in run.state.items() if k not in run.codes}
    replaced = set(run.codes) | {k for k in run.changed if k in shapes}
    return Compressed(run.codes, raw, skeleton, shapes, replaced=replaced, info=run.info)


def target(config: UDFCConfig, compressed: Compressed, model: nn.Module) -> Target | None:
    """The share of the prunable layers' channels removed against the asked ``sparsity``."""
    if config.sparsity <= 0:
        return None
    total = int(compressed.info.get("prunable_channels", 0))
    removed = sum(compressed.info.get("pruned_channels", {}).values())
    return Target("sparsity (channels of prunable layers)", config.sparsity, removed / total if total else 0.0, 0.05, "%")
