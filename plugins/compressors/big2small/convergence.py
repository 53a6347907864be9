"""Whether a fit converged, as facts from its curve: how it stopped and how fast it still rose at the end.

A fit stops on its ``target`` PSNR, on a ``plateau`` (``tracking.py``) or on its step ``budget``. Its
end slope is the least-squares slope of the weight PSNR over the last ``window`` + 1 curve points, in
dB per 1,000 steps and in dB per pass over the tensor (a step covers a fraction of the tensor, so a
pass is the unit that compares budgets of different crop sizes, and our steps with the paper's
full-tensor epochs).

A fit is *unconverged* when it stopped on its budget while the plateau rule still saw it improving:
the best PSNR of its last ``window`` points beats the best before them by at least ``min_delta_db``
(the rule that would have stopped it), or its curve is too short (one point) to show a plateau.
``window`` is the stop rule's ``patience`` or, with early stopping off, :data:`DEFAULT_WINDOW` points
(a quarter of the automatic 20-point curve). An unconverged fit measures its budget, not the method:
the record says so in ``details.caveats`` and the claims never take it as evidence.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["DEFAULT_WINDOW", "Convergence", "judge", "end_slope", "summarize", "caveat"]

DEFAULT_WINDOW = 5


@dataclasses.dataclass(frozen=True)
class Convergence:
    """One layer's fit: how it stopped, its end slope and gain, and the judgement."""

    stop_reason: str  # "target_psnr", "plateau" or "budget"
    steps: int  # fit steps run
    slope_db_per_1k_steps: float | None  # None: fewer than two curve points
    slope_db_per_pass: float | None
    gain_db: float | None  # best PSNR of the last ``window`` points minus the best before them
    window: int  # curve points the judgement looked back over
    min_delta_db: float
    unconverged: bool

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def end_slope(steps: Sequence[float], psnrs: Sequence[float], window: int) -> float | None:
    """dB per step: the least-squares slope of the last ``window`` + 1 points (None below two points)."""
    xs, ys = list(steps)[-(window + 1) :], list(psnrs)[-(window + 1) :]
    if len(xs) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var


def judge(
    curve: Mapping[str, Sequence[float]], stop_reason: str, steps: int, passes_per_step: float, patience: int, min_delta_db: float
) -> Convergence:
    """The convergence facts of one fit from its curve (``step`` and ``psnr``, the fit's points only)."""
    xs, ps = list(curve.get("step", [])), list(curve.get("psnr", []))
    window = patience if patience > 0 else DEFAULT_WINDOW
    slope = end_slope(xs, ps, window)
    look = min(window, len(ps) - 1)
    gain = max(ps[-look:]) - max(ps[:-look]) if look >= 1 else None
    unconverged = stop_reason == "budget" and (gain is None or gain >= min_delta_db)
    per_pass = slope / passes_per_step if slope is not None and passes_per_step > 0 else None
    return Convergence(
        stop_reason, steps, None if slope is None else 1000 * slope, per_pass, gain, window, min_delta_db, unconverged
    )


def summarize(layers: Mapping[str, Convergence]) -> dict[str, Any]:
    """The model-level facts: stop reasons counted, the unconverged layers, the steepest end slope."""
    slopes = [c.slope_db_per_1k_steps for c in layers.values() if c.slope_db_per_1k_steps is not None]
    per_pass = [c.slope_db_per_pass for c in layers.values() if c.slope_db_per_pass is not None]
    return {
        "layers": len(layers),
        "stop_reasons": dict(Counter(c.stop_reason for c in layers.values())),
        "unconverged": sorted(k for k, c in layers.items() if c.unconverged),
        "max_slope_db_per_1k_steps": max(slopes) if slopes else None,
        "max_slope_db_per_pass": max(per_pass) if per_pass else None,
    }


def caveat(summary: Mapping[str, Any]) -> dict[str, str] | None:
    """The record's ``unconverged`` caveat (``details.caveats``), or None when every fit converged."""
    bad = summary["unconverged"]
    if not bad:
        return None
    slope = summary["max_slope_db_per_1k_steps"]
    rise = f", still rising up to {slope:+.2f} dB per 1,000 steps" if slope is not None else ""
    return {
        "kind": "unconverged",
        "message": f"{len(bad)} of {summary['layers']} INR fit(s) stopped on the step budget before a plateau"
        f"{rise}: the numbers measure the budget, not the method",
    }
