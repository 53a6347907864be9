"""Block-by-block calibration: per-layer input statistics, one block of a model at a time.

Calibration-based methods (GPTQ, SparseGPT, Wanda, AWQ, SmoothQuant) compress a layer from statistics
of its inputs. Run on the whole model at once, every layer's statistics and activations would be live
together; here the model is processed one **block** at a time, so that only one block's inputs,
outputs and statistics are live (a 7B model at fp16 fits one 80 GB GPU: :func:`plan_peak_memory`).

**Blocks** (:func:`find_blocks`; the rule is a setting, ``blocks=``):

- ``"auto"``: the *repeated blocks* are the children of the longest ``ModuleList``/``Sequential``
  whose children (at least 2) are all of one class and each hold a conv/linear layer (a
  transformer's layers; ties go to the list with more parameters). They are **chained**: block i+1's
  first positional input is block i's output (its first element when a tuple); its other arguments
  (attention masks, position ids, keyword arguments) are those the first block received for the same
  batch. Every conv/linear layer outside that list (embeddings' projections, a classifier, a CNN's
  layers) is a block of its own. A model without such a list (a CNN) is thus processed layer by layer.
- ``"layers"``: every conv/linear layer is a block of its own (nothing is chained).
- a list of module names: those modules, unchained, plus (as above) every conv/linear layer outside them.

Chaining is checked on the first batch (:func:`chain_problem`: each block runs once and its first input is
exactly the previous block's output); where it fails (a U-Net's pooling between blocks), the blocks are
processed unchained and the report says why. An unchained block's inputs are captured by running the
whole (partly compressed) model on each batch
until the block is reached (a forward pre-hook stops it), which is right for any ``forward``; a chained
block's inputs are the previous block's outputs, which costs one block forward instead of a model's.
Blocks run in model order (the order of ``named_modules``, i.e. of definition; chained blocks at
the place of the first one).

**The pass** (:func:`calibrate_blocks`): for each block, (1) its inputs for every calibration batch,
(2) one forward of the block with hooks accumulating its layers' input statistics, (3) a callback
that compresses the block's layers in place (it may run the block again on its inputs:
:meth:`BlockStep.forward`), (4) for a chained block, a forward of the *compressed* block gives the next
block's inputs (as in GPTQ's reference code: later layers see the errors of earlier ones).

**Order within a block** (``sequential=``): by default all layers of a block get their statistics
from the same pass over the block's inputs (the dense block's). With ``sequential=True`` (GPTQ's
"true sequential" order, ``--true-sequential`` in the authors' LLaMA scripts) the block's target
layers are split into **input groups** (:func:`input_groups`): layers that receive the same input
tensor object in one forward form one group (a transformer's q/k/v, a SwiGLU's gate/up; found by
hooks on the block's first calibration batch, never by names), ordered by their first execution
(a LLaMA block: [q, k, v], [o], [gate, up], [down]). Each group in turn gets its statistics from a
forward of the block over all its inputs *after the earlier groups were compressed* (the callback
runs once per group), so o_proj's Hessian is over the attention output of the quantized q/k/v.
Cost: one block forward over all calibration inputs per group (4 instead of 1 for a LLaMA block),
plus one batch's forward to find the groups; only one group's statistics are live at a time. A
layer the grouping forward does not reach joins a last group; a layer called more than once per
forward belongs to the group of its first call (its statistics cover all calls).

**Statistics** (:class:`LayerStats`), for ``nn.Linear`` and ``nn.Conv2d``, over the rows of X:
a Linear's input flattened to (tokens, in_features); a Conv2d's input through im2col
(``torch.nn.functional.unfold`` with the layer's kernel, stride, padding and dilation, zero padding
included as it is in the convolution) to (N·L, C_in·kh·kw), the columns in the order of
``weight.reshape(out, -1)``:

- ``"hessian"``: H = 2·XᵀX / n (float32; n = the number of rows), the quadratic form of the layer's
  output error ||WX − ŴX||²  (GPTQ, SparseGPT);
- ``"col_norm"``: ||X_j||₂ over all rows, per column (Wanda's input norm, un-normalised as in the paper);
- ``"mean_abs"`` / ``"max_abs"``: mean and max of |x| per **input channel** (in_features, or C_in of a
  Conv2d over batch and positions, padding excluded): AWQ's activation salience and SmoothQuant's
  per-channel activation range.

Grouped convolutions (``groups > 1``) get no im2col statistics (their weight is not one matrix over
the input's columns; a per-group Hessian is not implemented), nor do convolutions with a non-zero
padding mode or other layer types; the reason is recorded in :attr:`LayerwiseReport.skipped`. The
per-channel ``mean_abs``/``max_abs`` are still recorded for grouped convolutions.

Our own implementation, after GPTQ's reference code's block loop (Frantar et al. 2023).
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from ..compression.codes import Code

__all__ = [
    "Block",
    "BlockStep",
    "LayerStats",
    "LayerwiseReport",
    "MemoryPlan",
    "STATISTICS",
    "find_blocks",
    "input_groups",
    "capture_inputs",
    "chain_problem",
    "calibrate_blocks",
    "compress_layerwise",
    "im2col_rows",
    "plan_peak_memory",
    "stats_reason",
]

#: the per-layer statistics :func:`calibrate_blocks` can accumulate
STATISTICS = ("hessian", "col_norm", "mean_abs", "max_abs")
#: the layer types with input statistics
STAT_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d)
_WEIGHT_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

#: one calibration batch: a tensor (``model(x)``), a tuple (``model(*x)``) or a dict (``model(**x)``)
Batch = Any


@dataclasses.dataclass(frozen=True)
class Block:
    """One unit of the block-by-block pass.

    Attributes:
        name: the module's name in the model (``"layers.3"``).
        module: the module.
        chained: its first input is the previous block's output (see the module docstring).
    """

    name: str
    module: nn.Module
    chained: bool = False


def _is_weight_layer(m: nn.Module) -> bool:
    return isinstance(m, _WEIGHT_TYPES) and isinstance(getattr(m, "weight", None), nn.Parameter)


def _has_weight_layer(m: nn.Module) -> bool:
    return any(_is_weight_layer(s) for s in m.modules())


def _repeated_list(model: nn.Module) -> str | None:
    """The name of the longest ModuleList/Sequential of ≥ 2 same-class children with weight layers."""
    best: tuple[int, int, str] | None = None
    for name, m in model.named_modules():
        if not isinstance(m, (nn.ModuleList, nn.Sequential)) or not name:
            continue
        children = list(m.children())
        if len(children) < 2 or len({type(c) for c in children}) != 1 or not all(_has_weight_layer(c) for c in children):
            continue
        if _is_weight_layer(children[0]):  # a list of bare layers (heads, a Sequential of Linears): not blocks
            continue
        size = sum(p.numel() for p in m.parameters())
        key = (len(children), size, name)
        if best is None or key[:2] > best[:2]:
            best = key
    return None if best is None else best[2]


def find_blocks(model: nn.Module, rule: str | Sequence[str] = "auto") -> list[Block]:
    """The blocks of ``model`` in the order they are processed (see the module docstring for the rule).

    ``rule`` is ``"auto"``, ``"layers"`` or a list of module names.
    """
    names = [n for n, _ in model.named_modules()]
    order = {n: i for i, n in enumerate(names)}
    chained: list[str] = []
    units: list[str] = []
    if isinstance(rule, str):
        if rule not in ("auto", "layers"):
            raise ValueError(f"blocks must be 'auto', 'layers' or a list of module names, got {rule!r}")
        if rule == "auto":
            listed = _repeated_list(model)
            if listed is not None:
                chained = [f"{listed}.{c}" for c, _ in model.get_submodule(listed).named_children()]
    else:
        missing = [n for n in rule if n not in order]
        if missing:
            raise ValueError(f"blocks names modules the model does not have: {missing[:5]} (see model.named_modules())")
        units = list(rule)
    covered = [*chained, *units]

    def inside(name: str) -> bool:
        return any(name == c or name.startswith(c + ".") for c in covered)

    singles = [n for n, m in model.named_modules() if _is_weight_layer(m) and not inside(n)]
    entries = [(order[n], n, False) for n in [*units, *singles]]
    if chained:
        entries.append((order[chained[0]], "", True))  # the chain, at the place of its first block
    blocks: list[Block] = []
    for _, name, is_chain in sorted(entries):
        if is_chain:
            blocks.extend(Block(n, model.get_submodule(n), True) for n in chained)
        else:
            blocks.append(Block(name, model.get_submodule(name), False))
    return blocks


def stats_reason(layer: nn.Module) -> str | None:
    """Why ``layer`` gets no im2col statistics (Hessian, column norms), or None if it does."""
    if isinstance(layer, nn.Linear):
        return None
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1:
            return f"a grouped convolution (groups={layer.groups}): its weight is not one matrix over the input columns"
        if layer.padding_mode != "zeros":
            return f"padding_mode {layer.padding_mode!r}: im2col here pads with zeros only"
        if isinstance(layer.padding, str) and layer.padding == "same":
            if any(d * (k - 1) % 2 for k, d in zip(layer.kernel_size, layer.dilation)):
                return "padding 'same' with an even effective kernel pads unevenly; im2col here pads evenly"
        return None
    return f"{type(layer).__name__} has no im2col statistics (Linear and Conv2d only)"


def _conv_padding(layer: nn.Conv2d) -> tuple[int, int]:
    if isinstance(layer.padding, str):
        if layer.padding == "valid":
            return (0, 0)
        return (
            layer.dilation[0] * (layer.kernel_size[0] - 1) // 2,
            layer.dilation[1] * (layer.kernel_size[1] - 1) // 2,
        )
    return (int(layer.padding[0]), int(layer.padding[1]))


def im2col_rows(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as the rows X of its matrix product: (tokens, in_features) for a Linear,
    (N·L, C_in·kh·kw) for a Conv2d (im2col, columns ordered as ``weight.reshape(out, -1)``)."""
    if isinstance(layer, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    if isinstance(layer, nn.Conv2d):
        if x.dim() == 3:
            x = x.unsqueeze(0)
        cols = F.unfold(x, layer.kernel_size, layer.dilation, _conv_padding(layer), layer.stride)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    raise TypeError(f"no im2col rows for {type(layer).__name__}")


def _channels(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input as (positions, channels): the last dim of a Linear's input, dim 1 of a Conv's."""
    if isinstance(layer, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    if x.dim() == 3 and isinstance(layer, nn.Conv2d):  # unbatched
        x = x.unsqueeze(0)
    return x.movedim(1, -1).reshape(-1, x.shape[1])


@dataclasses.dataclass
class LayerStats:
    """The input statistics of one layer over the calibration inputs (see the module docstring).

    Attributes:
        name: the layer's name in the model.
        rows: n, the number of rows of X (tokens, or im2col positions) behind ``hessian``/``col_norm``.
        hessian: 2·XᵀX / n, (d, d) float32, d = in_features or C_in·kh·kw; None if not asked or skipped.
        col_norm: ||X_j||₂ per column (d,); None if not asked or skipped.
        mean_abs / max_abs: mean / max |x| per input channel (in_features or C_in); None if not asked.
        positions: the number of (token or pixel) positions behind ``mean_abs``.
    """

    name: str
    rows: int = 0
    hessian: torch.Tensor | None = None
    col_norm: torch.Tensor | None = None
    mean_abs: torch.Tensor | None = None
    max_abs: torch.Tensor | None = None
    positions: int = 0
    _xtx: torch.Tensor | None = dataclasses.field(default=None, repr=False)
    _sq: torch.Tensor | None = dataclasses.field(default=None, repr=False)
    _abs: torch.Tensor | None = dataclasses.field(default=None, repr=False)

    def add(self, layer: nn.Module, x: torch.Tensor, statistics: Collection[str], im2col: bool) -> None:
        """Accumulate one input batch ``x`` of ``layer``."""
        x = x.detach()
        if im2col and ("hessian" in statistics or "col_norm" in statistics):
            rows = im2col_rows(layer, x).float()
            self.rows += rows.shape[0]
            if "hessian" in statistics:
                xtx = rows.t() @ rows
                self._xtx = xtx if self._xtx is None else self._xtx.add_(xtx)
            if "col_norm" in statistics:
                sq = rows.pow(2).sum(dim=0)
                self._sq = sq if self._sq is None else self._sq.add_(sq)
            del rows
        if "mean_abs" in statistics or "max_abs" in statistics:
            ch = _channels(layer, x).abs()
            self.positions += ch.shape[0]
            if "mean_abs" in statistics:
                s = ch.float().sum(dim=0)
                self._abs = s if self._abs is None else self._abs.add_(s)
            if "max_abs" in statistics:
                m = ch.float().amax(dim=0)
                self.max_abs = m if self.max_abs is None else torch.maximum(self.max_abs, m)

    def finish(self) -> LayerStats:
        """Turn the sums into the statistics (H = 2·XᵀX/n, ||X_j||₂, mean |x|)."""
        if self._xtx is not None:
            self.hessian = self._xtx.mul_(2.0 / max(self.rows, 1))
        if self._sq is not None:
            self.col_norm = self._sq.sqrt_()
        if self._abs is not None:
            self.mean_abs = self._abs.div_(max(self.positions, 1))
        self._xtx = self._sq = self._abs = None
        return self


@dataclasses.dataclass
class BlockStep:
    """What the callback of :func:`calibrate_blocks` gets for one block.

    Attributes:
        index: the block's position in the pass.
        block: the :class:`Block`.
        layers: ``{name in the model: layer}`` for the block's target layers.
        stats: ``{name in the model: LayerStats}`` for the target layers the inputs reached.
        inputs: the block's captured inputs, one ``(args, kwargs)`` per calibration batch.
        group: with ``sequential=True``, the position of ``layers`` among the block's input groups
            (the callback runs once per group, the earlier groups already compressed); else 0.
        groups: how many callbacks this block gets (its input groups; 1 without ``sequential``).
    """

    index: int
    block: Block
    layers: dict[str, nn.Module]
    stats: dict[str, LayerStats]
    inputs: list[tuple[tuple[Any, ...], dict[str, Any]]]
    group: int = 0
    groups: int = 1

    @torch.no_grad()
    def forward(self) -> list[Any]:
        """The block's outputs on its inputs, one per batch (run it again after changing its weights)."""
        return [self.block.module(*args, **kwargs) for args, kwargs in self.inputs]


@dataclasses.dataclass
class LayerwiseReport:
    """What a block-by-block pass did.

    Attributes:
        blocks: the names of the blocks processed, in order.
        chained: how many of them were chained.
        layers: the target layers that got statistics.
        skipped: ``{layer name: why it got no (im2col) statistics}``, for layers skipped or not
            reached by the calibration inputs.
        unchained: why the repeated blocks were not chained after all (the check on the first batch
            failed: see :func:`chain_problem`), or None.
        groups: with ``sequential=True``, ``{block name: its input groups}`` (layer names, in the order
            compressed; :func:`input_groups`); empty otherwise.
    """

    blocks: list[str]
    chained: int
    layers: list[str]
    skipped: dict[str, str]
    unchained: str | None = None
    groups: dict[str, list[list[str]]] = dataclasses.field(default_factory=dict)

    def info(self) -> dict[str, Any]:
        out = {"blocks": len(self.blocks), "chained_blocks": self.chained, "layers": len(self.layers), "skipped": self.skipped}
        if self.unchained:
            out["unchained"] = self.unchained
        if self.groups:  # the true-sequential order: how many groups (block forwards) each block took
            out["sequential_groups"] = {name: len(g) for name, g in self.groups.items()}
        return out


class _Stop(Exception):
    """Raised by a pre-hook to end a forward once a block's inputs are captured."""


def _call(model: nn.Module, batch: Batch, device: torch.device | None) -> Any:
    if device is not None:
        batch = _to(batch, device)
    if isinstance(batch, dict):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


def _to(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to(v, device) for v in obj)
    return obj


@torch.no_grad()
def capture_inputs(
    model: nn.Module, module: nn.Module, batches: Iterable[Batch], device: torch.device | None = None
) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """``(args, kwargs)`` that ``module`` receives for each batch; each forward stops at the module."""
    got: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def hook(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        got.append((tuple(args), dict(kwargs)))
        raise _Stop

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for batch in batches:
            try:
                _call(model, batch, device)
            except _Stop:
                pass
    finally:
        handle.remove()
    return got


def _first(out: Any) -> Any:
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def chain_problem(model: nn.Module, chain: Sequence[Block], batch: Batch, device: torch.device | None = None) -> str | None:
    """Why ``chain`` cannot be chained on this model, or None: on one batch of the model's own forward,
    each block must run once and receive, as its first positional input, exactly the previous block's
    output (its first element when a tuple). A list whose blocks have something between them (a
    U-Net's pooling, a scaling) or that is not applied in order fails, and the pass captures each
    block's inputs from the whole model instead (right for any forward, slower)."""
    calls = [0] * len(chain)
    problems: list[str] = []
    last: dict[str, Any] = {}
    handles = []
    for i, block in enumerate(chain):

        def pre(mod: nn.Module, args: tuple[Any, ...], i: int = i) -> None:
            calls[i] += 1
            x = args[0] if args else None
            if not isinstance(x, torch.Tensor):
                problems.append(f"{chain[i].name} takes no positional tensor first")
            elif i > 0:
                prev = last.pop("out", None)
                if not isinstance(prev, torch.Tensor) or prev.shape != x.shape or not torch.equal(prev, x):
                    problems.append(f"the input of {chain[i].name} is not the output of {chain[i - 1].name}")

        def post(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            last["out"] = _first(out)

        handles += [block.module.register_forward_pre_hook(pre), block.module.register_forward_hook(post)]
    try:
        _call(model, batch, device)
    finally:
        for h in handles:
            h.remove()
    if problems:
        return problems[0]
    if any(c != 1 for c in calls):
        return "a block runs more than once, or not at all, in one forward"
    return None


def _target_layers(block: Block, layers: Callable[[str, nn.Module], bool] | None) -> dict[str, nn.Module]:
    prefix = f"{block.name}." if block.name else ""
    found: dict[str, nn.Module] = {}
    for sub, m in block.module.named_modules():
        name = f"{prefix}{sub}" if sub else block.name
        if _is_weight_layer(m) and (layers is None or layers(name, m)):
            found[name] = m
    return found


@torch.no_grad()
def input_groups(layers: dict[str, nn.Module], run: Callable[[], Any]) -> list[list[str]]:
    """``layers`` (``{name: module}``) grouped by the input they consume, from one call of ``run``
    (a forward that reaches them; its result is dropped).

    Layers whose first call receives the same tensor *object* as first positional input form one group
    (q/k/v of an attention, gate/up of a SwiGLU MLP, a residual block's conv and its downsampling conv);
    equal values in different tensors do not join. Groups come in the order of their first execution,
    their members in the order of their calls. A layer called again later keeps its first call's group;
    a layer ``run`` does not reach (or that gets no tensor first) is a group of its own, the unreached
    ones together, last. The identity is kept through weak references, so no input is held alive and a
    freed tensor's address reused by a later one cannot join two groups.
    """
    groups: list[tuple[weakref.ref[torch.Tensor] | None, list[str]]] = []
    seen: set[str] = set()
    handles = []
    for name, layer in layers.items():

        def hook(mod: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
            if name in seen:
                return
            seen.add(name)
            x = args[0] if args else None
            if isinstance(x, torch.Tensor):
                for ref, members in groups:
                    if ref is not None and ref() is x:
                        members.append(name)
                        return
                groups.append((weakref.ref(x), [name]))
            else:
                groups.append((None, [name]))

        handles.append(layer.register_forward_pre_hook(hook))
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    found = [members for _, members in groups]
    unreached = [name for name in layers if name not in seen]
    return found + [unreached] if unreached else found


@torch.no_grad()
def _accumulate(
    step_layers: dict[str, nn.Module],
    run: Callable[[], Any],
    statistics: Collection[str],
    skipped: dict[str, str],
) -> dict[str, LayerStats]:
    stats: dict[str, LayerStats] = {}
    handles = []
    for name, layer in step_layers.items():
        if not isinstance(layer, STAT_LAYERS):
            skipped[name] = stats_reason(layer) or "no statistics"
            continue
        why = stats_reason(layer)
        if why is not None and not ({"mean_abs", "max_abs"} & set(statistics)):
            skipped[name] = why
            continue
        if why is not None:
            skipped[name] = why + " (per-channel |x| statistics only)"
        stats[name] = LayerStats(name)

        def hook(mod: nn.Module, args: tuple[Any, ...], s: LayerStats = stats[name], im2col: bool = why is None) -> None:
            s.add(mod, args[0], statistics, im2col)

        handles.append(layer.register_forward_pre_hook(hook))
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    reached = {n: s.finish() for n, s in stats.items() if s.rows or s.positions}
    for name in stats:
        if name not in reached:
            skipped[name] = "not reached by the calibration inputs"
    return reached


@torch.no_grad()
def calibrate_blocks(
    model: nn.Module,
    batches: Sequence[Batch],
    callback: Callable[[BlockStep], None],
    *,
    blocks: str | Sequence[str] = "auto",
    layers: Callable[[str, nn.Module], bool] | None = None,
    statistics: Collection[str] = ("hessian",),
    device: torch.device | None = None,
    sequential: bool = False,
) -> LayerwiseReport:
    """Run the calibration ``batches`` through ``model`` block by block, calling ``callback`` once per
    block with its layers' input statistics, so that it compresses them in place (module docstring);
    with ``sequential``, once per input group of the block, each group's statistics taken after the
    earlier groups were compressed (GPTQ's "true sequential" order: one block forward per group).

    Args:
        batches: the calibration inputs, each one call of the model (tensor, tuple of args, or dict of
            keyword arguments).
        callback: ``callback(step)``; changes the weights of ``step.layers`` in place.
        blocks: the block rule (:func:`find_blocks`).
        layers: which conv/linear layers of a block are targets (``layers(name, module) -> bool``);
            None: all of them.
        statistics: which of :data:`STATISTICS` to accumulate.
        device: where batches are moved before the model runs (None: as given).
        sequential: split each block's target layers into input groups (:func:`input_groups`) and
            collect and hand over one group at a time (see the module docstring).
    """
    unknown = sorted(set(statistics) - set(STATISTICS))
    if unknown:
        raise ValueError(f"statistics must be among {STATISTICS}, got {unknown}")
    was_training = model.training
    model.eval()
    skipped: dict[str, str] = {}
    grouped: dict[str, list[list[str]]] = {}
    done: list[str] = []
    with_stats: list[str] = []
    chain: list[tuple[tuple[Any, ...], dict[str, Any]]] | None = None
    units = find_blocks(model, blocks)
    unchained = None
    try:
        chained = [b for b in units if b.chained]
        if chained and batches:
            unchained = chain_problem(model, chained, batches[0], device)
            if unchained is not None:
                units = [dataclasses.replace(b, chained=False) for b in units]
        for index, block in enumerate(units):
            if block.chained and chain is not None:
                inputs = chain
            else:
                inputs = capture_inputs(model, block.module, batches, device)
            step_layers = _target_layers(block, layers)
            step = BlockStep(index, block, step_layers, {}, inputs)
            if not inputs:
                skipped.update(dict.fromkeys(step_layers, "not reached by the calibration inputs"))
            elif step_layers:
                if sequential:
                    groups = input_groups(step_layers, dataclasses.replace(step, inputs=inputs[:1]).forward)  # the first batch
                    grouped[block.name] = groups
                else:
                    groups = [list(step_layers)]
                for g, names in enumerate(groups):  # one pass per group: its statistics after the earlier groups' callbacks
                    part = dataclasses.replace(step, layers={n: step_layers[n] for n in names}, group=g, groups=len(groups))
                    part.stats = _accumulate(part.layers, part.forward, statistics, skipped)
                    with_stats.extend(part.stats)
                    callback(part)
                    del part
            if block.chained:
                nxt = index + 1 < len(units) and units[index + 1].chained
                outs = step.forward() if nxt and inputs else []
                chain = [((_first(o), *args[1:]), kwargs) for o, (args, kwargs) in zip(outs, inputs)] if nxt else None
            del inputs, step
            done.append(block.name)
    finally:
        model.train(was_training)
    return LayerwiseReport(done, sum(b.chained for b in units), with_stats, skipped, unchained, grouped)


@torch.no_grad()
def compress_layerwise(
    model: nn.Module,
    batches: Sequence[Batch],
    compress_layer: Callable[[str, nn.Module, LayerStats | None], Code],
    targets: Collection[str],
    *,
    statistics: Collection[str] = ("hessian",),
    blocks: str | Sequence[str] = "auto",
    device: torch.device | None = None,
    sequential: bool = False,
) -> tuple[dict[str, Code], LayerwiseReport]:
    """A code for each weight in ``targets`` (``"name.weight"`` keys), made block by block.

    ``compress_layer(name, layer, stats)`` returns the layer's weight code; the layer's weight is
    replaced by what the code decodes to for the rest of the pass (later blocks see the compressed
    model's outputs) and restored at the end, so ``model`` comes back unchanged. A target that got no
    statistics (skipped or not reached: :attr:`LayerwiseReport.skipped` says why) is compressed after
    the pass with ``stats=None``: the method's data-free fallback. ``sequential``: the "true sequential"
    order of :func:`calibrate_blocks` (each input group's statistics from the block with the earlier
    groups' weights already replaced by their codes).
    """
    wanted = {key.rpartition(".")[0] for key in targets}
    codes: dict[str, Code] = {}
    originals: dict[str, torch.Tensor] = {}

    def place(name: str, layer: nn.Module, stats: LayerStats | None) -> None:
        code = compress_layer(name, layer, stats)
        weight = layer.weight
        assert isinstance(weight, torch.Tensor)
        originals[name] = weight.detach().to("cpu", copy=True)
        weight.copy_(code.decode().reshape(weight.shape).to(weight.device, weight.dtype))
        codes[f"{name}.weight"] = code

    def step(s: BlockStep) -> None:
        for name, layer in s.layers.items():
            place(name, layer, s.stats.get(name))

    try:
        report = calibrate_blocks(
            model,
            batches,
            step,
            blocks=blocks,
            layers=lambda name, m: name in wanted,
            statistics=statistics,
            device=device,
            sequential=sequential,
        )
        for name in sorted(wanted - {key.rpartition(".")[0] for key in codes}):
            place(name, model.get_submodule(name), None)
    finally:
        for name, w in originals.items():
            weight = model.get_submodule(name).weight
            assert isinstance(weight, torch.Tensor)
            weight.copy_(w.to(weight.device))
    return {key: codes[key] for key in targets}, report


# -- planned peak memory --------------------------------------------------------------------------------


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, (tuple, list)):
        return [t for v in obj for t in _tensors(v)]
    return []


def _distinct_bytes(obj: Any) -> int:
    seen: dict[int, int] = {}
    for t in _tensors(obj):
        seen[id(t)] = _nbytes(t)
    return sum(seen.values())


class _LiveBytes(TorchDispatchMode):
    """Tracks the bytes of the storages that ops create while any tensor on them is referenced: the
    peak is what a forward needs beyond the memory that existed before it (inputs, weights). A view or
    an in-place result shares its input's storage and costs nothing new."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._refs: dict[int, int] = {}
        self._sizes: dict[int, int] = {}

    def _release(self, key: int) -> None:
        self._refs[key] -= 1
        if not self._refs[key]:
            del self._refs[key]
            self.live -= self._sizes.pop(key)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        before = {t.untyped_storage()._cdata for t in _tensors((args, kwargs))}
        for t in _tensors(out):
            storage = t.untyped_storage()
            key = storage._cdata
            if key in self._refs:
                self._refs[key] += 1
            elif key in before:  # an alias of memory that existed before the forward
                continue
            else:
                self._refs[key] = 1
                self._sizes[key] = storage.nbytes()
                self.live += storage.nbytes()
            weakref.finalize(t, self._release, key)
        self.peak = max(self.peak, self.live)
        return out


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """The planned peak memory of a block-by-block pass, in bytes (:func:`plan_peak_memory`).

    Attributes:
        weights: every parameter and buffer of the model, at its dtype (the model lives on the device).
        block_io: the inputs of the peak block for all calibration batches (every distinct tensor of its
            captured arguments), plus its outputs when it is chained (the next block's inputs).
        statistics: the accumulated statistics of the peak block's target layers, live together
            (XᵀX: d²·4 bytes per layer; 4 bytes per entry of each per-column/channel vector); with
            ``sequential``, those of its largest input group (one group's are live at a time).
        transient: the peak of the tensors created by one batch's forward of the peak block with the
            statistics hooks running (their float32 im2col/row copies included), measured on the meta
            device.
        capture: the peak of the tensors created while one batch's inputs of the block are captured
            (the model's forward up to the block, the captured input included), measured the same way:
            before the block's statistics exist, next to the inputs already captured.
        block: the name of the peak block.
    """

    weights: int
    block_io: int
    statistics: int
    transient: int
    block: str
    capture: int = 0

    @property
    def peak(self) -> int:
        return self.weights + self.block_io + max(self.capture, self.statistics + self.transient)

    def describe(self) -> str:
        gib = 2.0**30
        return (
            f"planned peak {self.peak / gib:.2f} GiB = weights {self.weights / gib:.2f} + block inputs/outputs "
            f"{self.block_io / gib:.2f} + the larger of statistics {self.statistics / gib:.2f} + transient "
            f"{self.transient / gib:.2f} and capture {self.capture / gib:.2f} (block {self.block})"
        )


def _stats_bytes(layers: dict[str, nn.Module], statistics: Collection[str]) -> int:
    total = 0
    for layer in layers.values():
        if not isinstance(layer, STAT_LAYERS):
            continue
        weight = layer.weight
        assert isinstance(weight, torch.Tensor)
        channels = weight.shape[1] * (layer.groups if isinstance(layer, nn.Conv2d) else 1)
        if stats_reason(layer) is None:
            d = math.prod(weight.shape[1:])
            total += 4 * d * d * ("hessian" in statistics) + 4 * d * ("col_norm" in statistics)
        total += 4 * channels * (("mean_abs" in statistics) + ("max_abs" in statistics))
    return total


def _split(found: dict[str, nn.Module], block: str, relative: dict[str, int], count: int) -> list[dict[str, nn.Module]]:
    """``found`` (a block's target layers) split into the groups ``relative`` gives by name relative to
    the block; a layer it does not name joins one more group, as unreached layers do."""
    parts: list[dict[str, nn.Module]] = [{} for _ in range(count + 1)]
    for name, layer in found.items():
        rel = name[len(block) + 1 :] if block else name
        parts[relative.get(rel, count)][name] = layer
    return parts


@torch.no_grad()
def plan_peak_memory(
    model: nn.Module,
    example: Batch,
    batches: int,
    *,
    statistics: Collection[str] = ("hessian",),
    blocks: str | Sequence[str] = "auto",
    layers: Callable[[str, nn.Module], bool] | None = None,
    sequential: bool = False,
) -> MemoryPlan:
    """The planned peak bytes of :func:`calibrate_blocks` over ``batches`` calibration batches shaped
    like ``example`` (e.g. 128 batches of one 2048-token sequence: the pass keeps every batch's block
    inputs, and runs one batch at a time).

    Works on a model built on ``torch.device("meta")`` with a meta ``example``: nothing is allocated
    (the forward runs on meta tensors; the transient is measured by tracking the tensors it creates).
    The peak is taken over blocks: weights + the block's inputs/outputs + the larger of (its statistics +
    its forward's transient) and (the transient of capturing its inputs). With ``sequential`` (the
    true-sequential pass of :func:`calibrate_blocks`), the statistics are those of the block's largest
    input group (the groups found on the example; a chain's other blocks grouped by the same names
    relative to their block); the transient stays the forward's with every layer hooked, an upper bound
    on each group's forward.
    """
    weights = sum(_nbytes(t) for t in [*model.parameters(), *model.buffers()])
    best: MemoryPlan | None = None
    units = find_blocks(model, blocks)
    for i, block in enumerate(units):
        if block.chained and i > 0 and units[i - 1].chained:
            continue  # the first block of a chain stands for its inputs and forward; statistics: the chain's largest
        capturing = _LiveBytes()
        with capturing:
            captured = capture_inputs(model, block.module, [example])
        if not captured:
            continue
        args, kwargs = captured[0]
        step_layers = _target_layers(block, layers)
        run_stats = {k: v for k, v in step_layers.items() if isinstance(v, STAT_LAYERS)}

        def run(b: Block = block, a: tuple[Any, ...] = args, k: dict[str, Any] = kwargs) -> Any:
            return b.module(*a, **k)

        groups = input_groups(step_layers, run) if sequential and step_layers else [list(step_layers)]
        relative = {name[len(block.name) + 1 :] if block.name else name: g for g, names in enumerate(groups) for name in names}
        holder = {name: LayerStats(name) for name in run_stats}
        handles = []
        for name, layer in run_stats.items():
            im2col = stats_reason(layer) is None

            def hook(mod: nn.Module, a: tuple[Any, ...], s: LayerStats = holder[name], im2col: bool = im2col) -> None:
                s.add(mod, a[0], statistics, im2col)

            handles.append(layer.register_forward_pre_hook(hook))
        tracker = _LiveBytes()
        try:
            run()  # once untracked: the accumulators exist before the tracked forward (they are counted apart)
            with tracker:
                out = run()
                out_bytes = _distinct_bytes(_first(out)) if block.chained else 0
                del out
        finally:
            for h in handles:
                h.remove()
        del holder
        transient = tracker.peak
        chain_blocks = [b for b in units if b.chained] if block.chained else [block]
        parts = [
            _split(found, b.name, relative, len(groups)) if sequential else [found]
            for b in chain_blocks
            for found in [_target_layers(b, layers)]
        ]
        stats_bytes = max(_stats_bytes(part, statistics) for block_parts in parts for part in block_parts)
        io = batches * (_distinct_bytes((args, kwargs)) + out_bytes)
        plan = MemoryPlan(weights, io, stats_bytes, transient, block.name, capturing.peak)
        if best is None or plan.peak > best.peak:
            best = plan
    if best is None:
        raise ValueError("plan_peak_memory: the example reached no block of the model")
    return best
