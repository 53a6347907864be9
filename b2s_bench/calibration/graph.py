"""What the BatchNorm statistics say about a layer's input, data-free, and capturing a layer's inputs.

**The Gaussian model of a layer's input**: a layer fed by BatchNorm (+ one elementwise activation,
through mean-preserving ops) sees per channel f(z), z ~ N(β, γ²) (:func:`bn_input_models`); from it come
data-free E[x] (:func:`bn_input_means`) and activation ranges (:func:`~b2s_bench.calibration.ranges.bn_activation_ranges`).

**Bias correction** (DFQ, Nagel et al. 2019): quantizing W shifts a layer's mean output by
(Ŵ − W)·E[x]; the bias absorbs −(Ŵ − W)·E[x]. Data-free, E[x] comes from the BatchNorm right before
the layer: its output is taken as N(β, γ²) per channel, so E[x] = E[f(z)] for the activation f
between them (computed by quadrature; any elementwise activation), carried through mean-preserving
ops (average pooling, flatten, dropout). The graph comes from ``torch.fx``; layers whose input is
not such a chain are skipped and recorded. With data (synthetic or real), the shift is measured.

Activation ranges are in :mod:`.ranges`; quantize's AdaRound uses :func:`layer_inputs`. Our own
implementation, after the papers' equations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

__all__ = [
    "layer_inputs",
    "run_hooked",
    "bn_input_means",
    "bn_input_models",
    "BNInput",
    "bn_successors",
    "analytic_shift",
    "measured_shifts",
]

# -- capturing a layer's input -------------------------------------------------------------------------


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the wanted input is captured."""


@torch.no_grad()
def layer_inputs(model: nn.Module, name: str, batches: Iterable[torch.Tensor], device: torch.device) -> torch.Tensor | None:
    """The input of layer ``name`` for each batch, concatenated (the forward stops at the layer)."""
    got: list[torch.Tensor] = []

    def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        got.append(args[0].detach())
        raise _Stop

    handle = model.get_submodule(name).register_forward_pre_hook(hook)
    try:
        for xb in batches:
            try:
                model(xb.to(device))
            except _Stop:
                pass
    finally:
        handle.remove()
    return torch.cat(got) if got else None


# -- data-free E[x] from the graph -------------------------------------------------------------------------
_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
_TRANSPARENT_MODULES = (*_DROPOUTS, nn.Identity)  # no-ops in eval mode: allowed anywhere on the chain
_TRANSPARENT_FUNCS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d}
_MEAN_MODULES = (*_POOLS, nn.Flatten)  # keep each channel's mean: allowed after the activation
_MEAN_FUNCS = {
    torch.flatten,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d,
    F.avg_pool1d,
    F.avg_pool2d,
    F.avg_pool3d,
}
_MEAN_METHODS = {"flatten", "view", "reshape", "mean"}
_ACT_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.SiLU,
    nn.GELU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Tanh,
    nn.Mish,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.Softplus,
)
_ACT_FUNCS = {
    F.relu,
    torch.relu,
    F.relu_,
    torch.relu_,
    F.relu6,
    F.leaky_relu,
    F.silu,
    F.gelu,
    F.hardswish,
    F.hardsigmoid,
    F.hardtanh,
    torch.sigmoid,
    F.sigmoid,
    torch.tanh,
    F.tanh,
    F.mish,
    F.elu,
    F.selu,
}
_ACT_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_"}
_FLATTENS = {"flatten", "view", "reshape"}


def _gaussian_expectation(f: Callable[[torch.Tensor], torch.Tensor], mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """E[f(z)], z ~ N(mean, std²) per channel, by quadrature on ±10 std (4001 points)."""
    t = torch.linspace(-10.0, 10.0, 4001, dtype=torch.float64)
    w = torch.exp(-0.5 * t**2)
    w = w / w.sum()
    z = mean.double()[:, None] + std.double().abs()[:, None] * t[None, :]
    with torch.no_grad():
        fz = f(z.float().clone()).double()
    return (fz * w[None, :]).sum(dim=1).float()


def _is_bn(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        m = modules.get(str(node.target))
        return isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None
    return node.op == "call_function" and node.target is F.batch_norm


def _attr(gm: fx.GraphModule, arg: Any) -> torch.Tensor | None:
    if isinstance(arg, fx.Node) and arg.op == "get_attr":
        obj: Any = gm
        for part in str(arg.target).split("."):
            obj = getattr(obj, part)
        return obj if isinstance(obj, torch.Tensor) else None
    return None


def _bn_affine(node: fx.Node, gm: fx.GraphModule, modules: dict[str, nn.Module]) -> tuple[torch.Tensor, torch.Tensor] | str:
    """(β, γ) of a BN node in eval mode, or why not."""
    if node.op == "call_module":
        m = modules[str(node.target)]
        if not isinstance(m, nn.modules.batchnorm._BatchNorm) or m.running_mean is None:
            return "its BatchNorm module has no running statistics"
        if m.training:
            return "its BatchNorm is in training mode"
        c = m.running_mean.numel()
        gamma = m.weight.detach() if m.weight is not None else torch.ones(c)
        beta = m.bias.detach() if m.bias is not None else torch.zeros(c)
        return beta.float().cpu(), gamma.float().cpu()
    names = ("input", "running_mean", "running_var", "weight", "bias", "training")
    args = dict(zip(names, node.args, strict=False))
    args.update({k: v for k, v in node.kwargs.items() if k in names})
    if args.get("training", False) is not False:
        return "its batch_norm runs in training mode"
    mean = _attr(gm, args.get("running_mean"))
    if mean is None:
        return "its batch_norm has no running statistics"
    weight, bias = _attr(gm, args.get("weight")), _attr(gm, args.get("bias"))
    c = mean.numel()
    gamma = weight.detach() if weight is not None else torch.ones(c)
    beta = bias.detach() if bias is not None else torch.zeros(c)
    return beta.float().cpu(), gamma.float().cpu()


def _activation(node: fx.Node, modules: dict[str, nn.Module]) -> Callable[[torch.Tensor], torch.Tensor] | None:
    if node.op == "call_module" and isinstance(modules.get(str(node.target)), _ACT_MODULES):
        return modules[str(node.target)]
    extra = [*node.args[1:], *node.kwargs.values()]
    if any(isinstance(a, fx.Node) for a in extra):
        return None
    if node.op == "call_function" and callable(node.target) and node.target in _ACT_FUNCS:
        fn, args, kwargs = node.target, node.args[1:], dict(node.kwargs)
        return lambda z: fn(z, *args, **kwargs)
    if node.op == "call_method" and node.target in _ACT_METHODS:
        name, args, kwargs = str(node.target), node.args[1:], dict(node.kwargs)
        return lambda z: getattr(z, name)(*args, **kwargs)
    return None


def _transparent(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(str(node.target)), _TRANSPARENT_MODULES)
    if node.op == "call_function":
        training = node.kwargs.get("training", node.args[2] if len(node.args) > 2 else False)
        return node.target in _TRANSPARENT_FUNCS and training is False
    return node.op == "call_method" and node.target == "contiguous"


def _shape_only(node: fx.Node) -> bool:
    """A user of a tensor that reads its shape only (timm's input asserts), not its values."""
    return (node.op == "call_function" and node.target is getattr) or (
        node.op == "call_method" and node.target in ("dim", "size")
    )


def _mean_preserving(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[bool, bool]:
    """(keeps each channel's mean, flattens channels with positions) for one node."""
    if node.op == "call_module":
        m = modules.get(str(node.target))
        return isinstance(m, _MEAN_MODULES), isinstance(m, nn.Flatten)
    if node.op == "call_function" and node.target in _MEAN_FUNCS:
        return True, node.target is torch.flatten
    if node.op == "call_method" and node.target in _MEAN_METHODS:
        if node.target == "mean":
            dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            dims = (dims,) if isinstance(dims, int) else dims
            return isinstance(dims, (tuple, list)) and all(isinstance(d, int) and d >= 2 for d in dims), False
        return True, node.target in _FLATTENS
    return False, False


def _describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"{type(modules.get(str(node.target))).__name__} {node.target}"
    if node.op == "placeholder":
        return "the model input"
    return f"{node.op} {getattr(node.target, '__name__', node.target)}"


class _Tracer(fx.Tracer):
    """torch.fx's tracer, with every conv, linear and BatchNorm module a leaf, subclasses included:
    the analysis reads them as modules, and a subclass's forward may branch on shapes (timm's
    Conv2dSame pads "same" by the input's size; its BatchNormAct2d holds its activation)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        leaf = isinstance(m, (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm))
        return leaf or super().is_leaf_module(m, module_qualified_name)


def _trace(model: nn.Module) -> tuple[fx.GraphModule | None, str]:
    try:
        return fx.GraphModule(model, _Tracer().trace(model)), ""
    except Exception as e:  # any tracing failure: the caller records it per layer
        first = (str(e).splitlines() or [""])[0][:200]
        return None, f"not traceable by torch.fx ({type(e).__name__}: {first})"


def _layer_nodes(gm: fx.GraphModule, names: Sequence[str]) -> dict[str, list[fx.Node]]:
    found: dict[str, list[fx.Node]] = {n: [] for n in names}
    for node in gm.graph.nodes:
        if node.op == "call_module" and str(node.target) in found:
            found[str(node.target)].append(node)
    return found


_Activation = Callable[[torch.Tensor], torch.Tensor]


def _inner_activation(node: fx.Node, modules: dict[str, nn.Module]) -> _Activation | None:
    """The activation a BatchNorm module applies itself (timm's BatchNormAct2d: ``act``), or None."""
    m = modules.get(str(node.target)) if node.op == "call_module" else None
    act = getattr(m, "act", None)
    return act if isinstance(act, nn.Module) and not isinstance(act, nn.Identity) else None


def _chain_to_bn(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[fx.Node, _Activation | None, bool] | str:
    """Walk up from a layer's input to the BatchNorm that feeds it, through at most one activation
    and mean-preserving ops: (the BN node, the activation, whether channels were flattened), or why not."""
    cur = node.args[0] if node.args else None
    act: _Activation | None = None
    flattened = False
    while isinstance(cur, fx.Node):
        if _is_bn(cur, modules):
            inner = _inner_activation(cur, modules)
            if inner is not None and act is not None:
                return f"two activations follow {_describe(cur, modules)}"
            return cur, act or inner, flattened
        f = _activation(cur, modules) if act is None else None
        keeps, flat = _mean_preserving(cur, modules) if act is None else (False, False)
        if _transparent(cur, modules):
            pass
        elif f is not None:
            act = f
        elif keeps:
            flattened = flattened or flat
        else:
            return f"its input comes from {_describe(cur, modules)}, not a BatchNorm (+ activation)"
        cur = cur.args[0] if cur.args else None
    return "its input is not a traced tensor"


def _exclusive(layer: fx.Node, bn: fx.Node) -> bool:
    """Whether every node from ``bn`` down to ``layer`` has exactly one reader (shape reads aside)."""
    below, cur = layer, (layer.args[0] if layer.args else None)
    while isinstance(cur, fx.Node):
        if [u for u in cur.users if not _shape_only(u)] != [below]:
            return False
        if cur is bn:
            return True
        below, cur = cur, (cur.args[0] if cur.args else None)
    return False


def _repeat(layer: nn.Module, channels: int, flattened: bool) -> int | str:
    """How many input features of ``layer`` each BN channel feeds (1, or its positions when flattened), or why
    the two do not fit."""
    need = layer.in_channels if isinstance(layer, nn.modules.conv._ConvNd) else getattr(layer, "in_features", None)
    if need == channels:
        return 1
    if flattened and need and need % channels == 0:
        return need // channels
    return f"its input has {need} features, the BatchNorm {channels} channels"


@dataclasses.dataclass(frozen=True)
class BNInput:
    """The Gaussian model of a layer's input: per BN channel f(z), z ~ N(beta, gamma²), with ``act`` the
    activation f (None: identity); ``repeat`` > 1 when the channels were flattened with their positions
    (each channel then feeds ``repeat`` consecutive input features)."""

    beta: torch.Tensor
    gamma: torch.Tensor
    act: Callable[[torch.Tensor], torch.Tensor] | None
    repeat: int = 1
    #: the BatchNorm module's name ("" for a functional batch_norm)
    bn: str = ""
    #: whether the layer is the only reader of the BatchNorm's output (every op between them has one
    #: reader): no residual add or other branch sees the channels
    exclusive: bool = False

    def mean(self) -> torch.Tensor:
        """E[x] per input channel or feature."""
        ex = _gaussian_expectation(self.act, self.beta, self.gamma) if self.act is not None else self.beta
        return ex.repeat_interleave(self.repeat) if self.repeat > 1 else ex

    @torch.no_grad()
    def sample(self, per_channel: int, generator: torch.Generator) -> torch.Tensor:
        """(channels, per_channel) draws of f(z), seeded by ``generator``."""
        z = torch.randn(self.beta.numel(), per_channel, generator=generator)
        z = self.beta[:, None] + self.gamma.abs()[:, None] * z
        return self.act(z.clone()) if self.act is not None else z


def bn_input_models(model: nn.Module, names: Sequence[str]) -> tuple[dict[str, BNInput], dict[str, str]]:
    """The Gaussian model of each layer's input, from the BatchNorm (+ activation) before it.

    Returns (models, skipped): ``skipped`` says for each other layer why its input has no such model.
    """
    gm, why = _trace(model)
    if gm is None:
        return {}, {n: why for n in names}
    modules = dict(gm.named_modules())
    found: dict[str, BNInput] = {}
    skipped: dict[str, str] = {}
    for name, nodes in _layer_nodes(gm, names).items():
        if len(nodes) != 1:
            skipped[name] = "not called once in the traced graph" if nodes else "not in the traced graph"
            continue
        chain = _chain_to_bn(nodes[0], modules)
        if isinstance(chain, str):
            skipped[name] = chain
            continue
        affine = _bn_affine(chain[0], gm, modules)
        if isinstance(affine, str):
            skipped[name] = affine
            continue
        (beta, gamma), act, flattened = affine, chain[1], chain[2]
        repeat = _repeat(model.get_submodule(name), beta.numel(), flattened)
        if isinstance(repeat, str):
            skipped[name] = repeat
        else:
            bn = str(chain[0].target) if chain[0].op == "call_module" else ""
            found[name] = BNInput(beta, gamma, act, repeat, bn, _exclusive(nodes[0], chain[0]))
    return found, skipped


def bn_input_means(model: nn.Module, names: Sequence[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Data-free E[x] of each layer's input (one value per input channel or feature), from the BN before it.

    Returns (means, skipped): ``skipped`` says for each other layer why its input has no such estimate.
    """
    found, skipped = bn_input_models(model, names)
    return {name: m.mean() for name, m in found.items()}, skipped


def bn_successors(model: nn.Module, names: Sequence[str]) -> dict[str, str]:
    """For layers whose only consumer is an eval-mode BatchNorm: layer -> that BN's running_mean key."""
    gm, _ = _trace(model)
    if gm is None:
        return {}
    modules = dict(gm.named_modules())
    out = {}
    for name, nodes in _layer_nodes(gm, names).items():
        users = [u for u in nodes[0].users if not _shape_only(u)] if len(nodes) == 1 else []
        if len(users) != 1:
            continue
        user = users[0]
        if not _is_bn(user, modules) or user.args[0] is not nodes[0]:
            continue
        if user.op == "call_module":
            bn = modules[str(user.target)]
            if not bn.training and bn.track_running_stats:
                out[name] = f"{user.target}.running_mean"
        else:
            arg = user.args[1] if len(user.args) > 1 else user.kwargs.get("running_mean")
            training = user.args[5] if len(user.args) > 5 else user.kwargs.get("training", False)
            if isinstance(arg, fx.Node) and arg.op == "get_attr" and training is False:
                out[name] = str(arg.target)
    return out


def analytic_shift(layer: nn.Module, delta: torch.Tensor, ex: torch.Tensor) -> torch.Tensor:
    """(Ŵ − W)·E[x] per output channel, for E[x] constant over positions (padding ignored)."""
    delta, ex = delta.float().cpu(), ex.float().cpu()
    if isinstance(layer, nn.modules.conv._ConvNd):
        groups = layer.groups
        d = delta.reshape(delta.shape[0], delta.shape[1], -1).sum(dim=2)  # (C_out, C_in/g)
        d = d.reshape(groups, delta.shape[0] // groups, delta.shape[1])
        return torch.einsum("gok,gk->go", d, ex.reshape(groups, -1)).reshape(-1)
    return delta.reshape(delta.shape[0], -1) @ ex


def _shifted_output(layer: nn.Module, x: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The layer's output with weight ``delta`` and no bias, and its channel dimension."""
    if isinstance(layer, nn.modules.conv._ConvNd):
        return layer._conv_forward(x, delta, None), 1
    return F.linear(x, delta), -1


@torch.no_grad()
def measured_shifts(
    model: nn.Module, deltas: dict[str, torch.Tensor], batches: Iterable[torch.Tensor], device: torch.device
) -> dict[str, torch.Tensor]:
    """E[(Ŵ − W) x] per output channel of each layer, measured on its inputs in ``model``."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    handles = []

    def make_hook(name: str, delta: torch.Tensor) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            out, dim = _shifted_output(module, args[0], delta)
            flat = out.movedim(dim, -1).reshape(-1, out.shape[dim]).double()
            sums[name] = sums.get(name, 0) + flat.sum(dim=0)
            counts[name] = counts.get(name, 0) + flat.shape[0]

        return hook

    for name, delta in deltas.items():
        layer = model.get_submodule(name)
        handles.append(layer.register_forward_pre_hook(make_hook(name, delta.to(device, torch.float32))))
    run_hooked(model, handles, batches, device)
    return {n: (sums[n] / counts[n]).float().cpu() for n in sums}


def run_hooked(model: nn.Module, handles: list[Any], batches: Iterable[torch.Tensor], device: torch.device) -> None:
    """Run every batch through ``model`` so its hooks observe it; the hooks are removed afterwards."""
    try:
        for xb in batches:
            model(xb.to(device))
    finally:
        for h in handles:
            h.remove()
