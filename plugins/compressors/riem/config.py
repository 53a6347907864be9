"""The settings of ``riem``."""

from __future__ import annotations

import dataclasses
from typing import Literal

from b2s_bench import check

#: how the neuron states start (:func:`.metric.initial_states`); here so that the config imports no torch
INITS = ("centred", "authors")

__all__ = ["RiemConfig", "DEFAULT_TARGET_RATIO", "LAYER_KINDS"]

# the ratio RieM reports at 4 bits: 7.9 on ResNet-50 (W4A4) and 8.0 on Swin-T (W4A8), whole model, as the
# Big2Small paper's comparison quotes it (plugins/reporting/paper_values.yaml); ours applies it per layer
DEFAULT_TARGET_RATIO = 8.0
LAYER_KINDS = ("all", "conv", "linear")


@dataclasses.dataclass(frozen=True)
class RiemConfig:
    """Settings of ``riem``.

    Attributes:
        dim: d, the dimension of every neuron's state (one row state per output neuron, one column
            state per input neuron of the weight seen as a matrix out × in·k·k). The authors' notebook
            uses d = 52 for a 128 × 256 matrix. Unset: chosen per layer by ``target_ratio``.
        target_ratio: instead of ``dim``, per layer the largest d whose code (states, their ranges,
            the metric network, the header) costs at most the layer's fp32 bits / target_ratio; a
            layer where not even d = 1 fits stays raw. Default 8 when neither is set: the paper's
            reported ratios at 4 bits (7.9 and 8.0, whole model); per layer and the choice of d: ours.
        heads: branches of the metric network, each seeing the column states cyclically shifted by
            m·d/heads features (the authors' code: 6).
        hidden: width h of each branch, the "metric dimension" (the authors' code: 14).
        bits: bits of each stored neuron-state entry, per state dimension a min-max grid over the
            neurons (the paper's "W4"; 32 stores the states in fp32, unquantized).
        steps: Adam steps of the full-precision fit (the authors' notebook: 1,000,000; ours: 2,000).
        lr: Adam's learning rate, the weights standardised per layer, cosine-annealed (ours: 3e-2;
            the authors use a constant 5e-5 on the raw weights over their 10^6 steps).
        init: the random start: "centred" (ours: states U[−1, 1), the output bias set so the start's
            weights have mean 0; far faster fits) or "authors" (the notebook's U[0, 1) states).
        restarts: random initialisations each fitted ``restart_steps`` steps, keeping per layer the
            best, before the main fit (the authors pick the best of 100 after 5,000 steps; ours: 1).
        restart_steps: steps of each restart's short fit (with ``restarts`` > 1; one start is not refitted).
        refit_steps: after the states are quantized, steps refitting the metric network alone with the
            quantized states fixed (ours, not in the authors' code; 0 turns it off).
        layers: which weights: "all" conv and linear layers, only "conv", only "linear".
        skip_first / skip_last: keep the first / last such layer raw.
        raw_if_larger: store a layer raw when its code would cost at least its fp32 bits (with ``dim``
            set; under ``target_ratio`` a layer whose smallest code is over the budget stays raw anyway).
        plateau_tol: a fit is reported unconverged (a caveat on the record) when its loss still fell
            by at least this fraction over the last quarter of its steps (``b2s.fitting.end_drop``, the
            rule NeRN shares; 0 steps count as unconverged).
        batch_layers: fit the layers of one matrix shape and d together in one batched network:
            "auto" on a GPU only (on a CPU, 8 layers of 64 × 288 batched took 2.2-3.2 s against 1.0-1.2 s
            one after another: the larger block leaves the caches), "yes" or "no".
        max_batch_floats: a batch is split so that batch × rows × cols × hidden × heads stays below
            this (memory bound).
    """

    dim: int | None = None
    target_ratio: float | None = None
    heads: int = 6
    hidden: int = 14
    bits: int = 4
    steps: int = 2000
    lr: float = 3e-2
    init: Literal["centred", "authors"] = "centred"
    restarts: int = 1
    restart_steps: int = 200
    refit_steps: int = 0
    layers: Literal["all", "conv", "linear"] = "all"
    skip_first: bool = False
    skip_last: bool = False
    raw_if_larger: bool = True
    plateau_tol: float = 0.01
    batch_layers: Literal["auto", "yes", "no"] = "auto"
    max_batch_floats: int = 1 << 26

    def __post_init__(self) -> None:
        check(
            self.dim is None or self.target_ratio is None,
            f"set only one of dim, target_ratio, got dim={self.dim}, target_ratio={self.target_ratio}",
            "target_ratio",
        )
        if self.dim is not None:
            check(self.dim >= 1, f"dim must be >= 1, got {self.dim}", "dim")
        elif self.target_ratio is None:  # the default, written into the config so the record shows it
            object.__setattr__(self, "target_ratio", DEFAULT_TARGET_RATIO)
        else:
            check(self.target_ratio > 0, f"target_ratio must be > 0, got {self.target_ratio}", "target_ratio")
        check(self.heads >= 1, f"heads must be >= 1, got {self.heads}", "heads")
        check(self.hidden >= 1, f"hidden must be >= 1, got {self.hidden}", "hidden")
        check(
            1 <= self.bits <= 16 or self.bits == 32,
            f"bits must be 1 to 16 (quantized states) or 32 (fp32 states), got {self.bits}",
            "bits",
        )
        check(self.steps >= 0, f"steps must be >= 0, got {self.steps}", "steps")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}", "lr")
        check(self.init in INITS, f"init must be one of {list(INITS)}, got {self.init!r}", "init")
        check(self.restarts >= 1, f"restarts must be >= 1, got {self.restarts}", "restarts")
        check(self.restart_steps >= 0, f"restart_steps must be >= 0, got {self.restart_steps}", "restart_steps")
        check(self.refit_steps >= 0, f"refit_steps must be >= 0, got {self.refit_steps}", "refit_steps")
        check(self.layers in LAYER_KINDS, f"layers must be one of {list(LAYER_KINDS)}, got {self.layers!r}", "layers")
        check(0.0 <= self.plateau_tol < 1.0, f"plateau_tol must be in [0, 1), got {self.plateau_tol}", "plateau_tol")
        check(
            self.batch_layers in ("auto", "yes", "no"),
            f"batch_layers must be one of ['auto', 'yes', 'no'], got {self.batch_layers!r}",
            "batch_layers",
        )
        check(self.max_batch_floats >= 1, f"max_batch_floats must be >= 1, got {self.max_batch_floats}", "max_batch_floats")
