"""Coverage and targets: a cell that compresses nothing, or misses what its config asked, is not ``ok``.

A cell whose codes leave every weight as it was would otherwise rank first (ratio 1.00x, agreement
100 %); one that asked for 25 % sparsity and removed 0.02 % would compete with the ones that did.
The core checks every cell right after compress (:mod:`b2s_bench.execution.cell`):

- **Coverage**: the share of the model's weights that the result changes. The tensors that count
  are the ``weight`` of every conv and linear layer (:data:`b2s_bench.compression.compressor.LAYER_TYPES`, the
  tensors compressors target); biases, norms and embeddings do not. A weight is covered when the
  result replaces it (``Compressed.replaced``) with something other than an exact copy: a code that
  decodes to other values, is stored in fewer bits than fp32, or has another shape (structured
  pruning), or a model of another architecture (distillation). A code that stores the tensor as it
  was (e.g. a low-rank layer kept dense because factoring costs more) covers nothing.
- **Targets**: a compressor states what its config asked and what it achieved through
  ``CompressorSpec.target(config, compressed, model) -> Target | None`` (``model`` is the dense
  model; it is checked for the first stage of a pipeline).

Statuses (:data:`b2s_bench.store.records.STATUSES`): ``not-applicable`` when the codes cover less than
:data:`MIN_COVERAGE` of the weights or the compressor raised :class:`NotApplicableError`;
``short-of-target`` when a target is missed beyond its tolerance. Both are "done" for resume and
not failures for the exit code; reports keep them out of rankings and list them in their own table.
The dense baseline and identity cells (the exact-copy check) are exempt.

Caveats: ``record["details"]["caveats"]`` is a list of ``{"kind", "message"}`` (kinds such as
``ineffective-setting`` or ``unconverged``); :func:`add_caveat` appends one. A cell with an
``ineffective-setting`` caveat also says so in its label.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .compressor import weight_layers
from .sizes import FP32

if TYPE_CHECKING:
    from .compressed import Compressed

__all__ = [
    "NotApplicableError",
    "Target",
    "add_caveat",
    "coverage",
    "MIN_COVERAGE",
    "CAVEAT_KINDS",
    "INEFFECTIVE",
    "label_with_caveats",
    "coverage_reason",
]

#: below this share of the conv/linear weights a cell is ``not-applicable``: 1 % leaves the model
#: as it was for any comparison (NeRN on EfficientNet-Lite0 codes 0.02 %, its stem alone)
MIN_COVERAGE = 0.01
#: the caveat kind of a setting that had no effect (its label says so)
INEFFECTIVE = "ineffective-setting"
#: caveat kinds the core knows; others are allowed (reports show every caveat's message)
CAVEAT_KINDS = (INEFFECTIVE, "unconverged")


class NotApplicableError(Exception):
    """Raised by a compressor when nothing of this model is its to compress; the cell is
    ``not-applicable`` with this reason (e.g. "NeRN predicts 3×3 kernels; this model has none")."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Target:
    """What a config asked against what the result achieved, both "at least" quantities
    (sparsity, compression ratio, energy kept).

    Attributes:
        name: what is measured, e.g. "sparsity" or "layer ratio".
        asked / achieved: the config's value and the result's.
        tolerance: relative: the target is missed when achieved < asked · (1 − tolerance).
        unit: shown with the values ("%" values are stored as fractions and shown times 100).
    """

    name: str
    asked: float
    achieved: float
    tolerance: float = 0.05
    unit: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a Target needs a name")
        for key in ("asked", "achieved", "tolerance"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
                raise ValueError(f"Target {self.name!r}: {key} must be a number, got {value!r}")
        if not 0.0 <= self.tolerance < 1.0:
            raise ValueError(f"Target {self.name!r}: tolerance must be in [0, 1), got {self.tolerance}")

    @property
    def met(self) -> bool:
        return self.achieved >= self.asked * (1.0 - self.tolerance)

    def _show(self, value: float) -> str:
        return f"{100 * value:.3g} %" if self.unit == "%" else f"{value:.4g}{self.unit}"

    def reason(self) -> str:
        return (
            f"{self.name}: asked {self._show(self.asked)}, achieved {self._show(self.achieved)} "
            f"(tolerance {100 * self.tolerance:.0f} %)"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "asked": float(self.asked),
            "achieved": float(self.achieved),
            "tolerance": float(self.tolerance),
            "unit": self.unit,
            "met": self.met,
        }


def add_caveat(details: MutableMapping[str, Any], kind: str, message: str) -> None:
    """Append ``{"kind": kind, "message": message}`` to ``details["caveats"]`` (a record's details or a
    compressor's ``Compressed.info``, which becomes part of them); the same caveat is kept once."""
    if not kind or not message:
        raise ValueError("a caveat needs a kind and a message")
    caveats = details.setdefault("caveats", [])
    if not isinstance(caveats, list):
        raise TypeError(f"details['caveats'] must be a list of {{kind, message}}, got {type(caveats).__name__}")
    entry = {"kind": str(kind), "message": str(message)}
    if entry not in caveats:
        caveats.append(entry)


def label_with_caveats(label: str, caveats: Any) -> str:
    """The cell's label, marked when a setting of it had no effect (so a table never shows a
    "bias-corrected" row that was not corrected without saying so)."""
    kinds = {c.get("kind") for c in caveats or [] if isinstance(c, dict)}
    return f"{label} [no effect]" if INEFFECTIVE in kinds and not label.endswith("[no effect]") else label


def _covered(key: str, original: torch.Tensor, compressed: Compressed, decoded: Mapping[str, torch.Tensor]) -> bool:
    if key not in compressed.replaced:
        return False
    if compressed.architecture is not None:  # another model (a distilled student) replaces it all
        return True
    new = decoded.get(key)
    if new is None or tuple(new.shape) != tuple(original.shape):
        return True  # removed or reshaped (structured pruning)
    code = compressed.codes.get(key)
    if code is not None and code.bits().total < FP32 * original.numel():
        return True
    return not torch.equal(new.detach().cpu().float(), original.detach().cpu().float())


def coverage(compressed: Compressed, model: nn.Module) -> dict[str, Any]:
    """How much of ``model``'s conv/linear weights ``compressed`` changes (see the module's docstring).

    Returns:
        ``{"weights", "covered", "share", "layers", "covered_layers"}``: weight elements and layers
        that count, those covered, and the covered share of the elements (None for a model without
        conv or linear weights).
    """
    state = model.state_dict()
    keys = [k for k in weight_layers(model) if k in state]
    decoded = compressed.state_dict()
    total = covered = layers = 0
    for key in keys:
        n = state[key].numel()
        total += n
        if _covered(key, state[key], compressed, decoded):
            covered += n
            layers += 1
    return {
        "weights": total,
        "covered": covered,
        "share": covered / total if total else None,
        "layers": len(keys),
        "covered_layers": layers,
    }


def coverage_reason(cov: Mapping[str, Any]) -> str | None:
    """Why a cell with this coverage is not applicable, or None when it covers enough."""
    share = cov.get("share")
    if share is None or share >= MIN_COVERAGE:
        return None
    if not cov.get("covered"):
        return f"its result leaves all {cov['layers']} conv/linear weights of this model as they were"
    return (
        f"its result changes only {cov['covered_layers']} of {cov['layers']} conv/linear weights "
        f"({100 * share:.2g} % of the weights, under the {100 * MIN_COVERAGE:g} % minimum)"
    )
