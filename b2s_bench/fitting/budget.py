"""Whether a fit ran out of its step budget, judged from its logged loss curve (one rule for every fit).

The rule: look back over the last ``fraction`` of the curve (a quarter by default) and measure the
*end drop*, the relative fall of the loss over that window, (L_start − L_end) / L_start. A fit is
*unconverged* when the end drop is at least ``tolerance`` (its loss was still falling as its steps
ran out), and also when the curve cannot show a plateau: fewer than two logged losses (0 or 1 step
run) or a loss that is not finite. A loss that rose over the window has a negative drop and counts
as flat (more steps of this schedule would not have lowered it). An unconverged fit measures its
budget, not the method: its compressor puts an ``unconverged`` caveat on the record
(:func:`b2s_bench.add_caveat`), which the reports mark with † and the claims refuse as evidence.

The window: with the logged ``steps`` it starts at the last logged point at or before
s_last − fraction · (s_last − s_first); without them the points are taken as evenly spaced and it
starts at index ⌊(1 − fraction) · (n − 1)⌋ of the n losses (the same point when they are).

What "still falling" means under a cosine-annealed learning rate (our INR fits anneal to 0 at their
last step, so every curve flattens at its end whatever its budget): over the last quarter the rate
starts at 0.5·(1 + cos(0.75π)) ≈ 14.6 % of its peak and averages ≈ 5.0 %, so that quarter holds only
≈ 2.5 % of the schedule's total rate. A loss that still falls by ≥ ``tolerance`` (1 %) on that little
rate was far from a plateau, and more steps (a longer schedule) would have moved the result. Part of
such a fall can be the annealing itself quieting the optimizer's noise rather than descent; the rule
does not tell the two apart and flags both, the conservative choice (a converged fit flagged costs a
†, an unconverged one unflagged would be taken as the method's number). A later window (the last
tenth, where the rate is < 2.5 % of its peak) would see every cosine curve flat and judge nothing;
an earlier one would judge the schedule's middle, not its end. ``fraction`` and ``tolerance`` are
the callers' settings (RieM's and NeRN's ``plateau_tol``).

What the rule cannot see: a fit whose loss falls in proportion to the rate it is given (far from a
plateau, but slowly) flattens at a cosine's end as a converged one does, and a fit whose every step
barely moves its loss shows a small end drop whatever its budget. The facts therefore also give
``fall_share``, the window's share of the curve's whole fall: against the window's share of the
schedule's rate (≈ 2.5-2.8 % for the last quarter of a cosine) it tells a fit still descending at its
average speed per unit of rate (a share near that) from one that stopped (a share near 0). It is a
fact for the reader. Given the schedule
(``rates``, the learning-rate factor of the update at each step, e.g. :func:`cosine_schedule`), the
facts add ``rate_share`` (the window's share of the rate) and ``speed`` = fall_share / rate_share:
the window's fall per unit of rate against the whole fit's average (≈ 1: still descending as fast as
on average, the curve flattened by the schedule alone; ≈ 0: a plateau). A caller that passes the
schedule may also pass ``speed_tolerance`` (NeRN passes :data:`DEFAULT_SPEED_TOLERANCE`, 1): then a
fit whose last quarter fell at least that fast per unit of rate is unconverged too. Measured on NeRN:
the embedded suite's CNN fit (1,000 steps) has speed 0.57 and is converged; the segmentation UNet's
(600 steps) has 1.85 with an end drop of 0.21 %, and more steps keep lowering its error (relative
weight error 0.96 at 600 steps, 0.895 at 1,200, 0.828 at 3,600): the end drop alone called it flat.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["EndDrop", "end_drop", "DEFAULT_FRACTION", "DEFAULT_TOLERANCE", "DEFAULT_SPEED_TOLERANCE"]

#: the part of the curve the rule looks back over: its last quarter
DEFAULT_FRACTION = 0.25
#: the end drop at which a fit counts as still falling (RieM's and NeRN's ``plateau_tol`` default)
DEFAULT_TOLERANCE = 0.01
#: with the schedule: the ``speed`` at which a fit counts as still descending (its last quarter fell at
#: least as fast per unit of learning rate as the whole fit on average: no diminishing return yet)
DEFAULT_SPEED_TOLERANCE = 1.0


@dataclasses.dataclass(frozen=True)
class EndDrop:
    """The facts of one fit's end, by :func:`end_drop`.

    Attributes:
        drop: the relative fall of the loss over the window, (start_loss − end_loss) / start_loss
            (0 when start_loss is 0; negative when the loss rose); None when the curve is too short.
        unconverged: the fit ran out of budget: drop ≥ tolerance, or no drop could be measured.
        reason: why, in words (e.g. "still falling: 10.0 % over the last 25 % of the curve").
        fraction: the part of the curve looked back over.
        tolerance: the end drop at which a fit counts as still falling.
        points: the logged losses.
        window: the first and last point of the window, as logged steps (or indices without steps).
        start_loss / end_loss: the losses at those points.
        fall_share: the window's share of the curve's whole fall, (start_loss − end_loss) /
            (first loss − end_loss); None when the loss did not fall overall or the curve is too short.
        rate_share: with ``rates``, the window's share of the learning rate the updates between the
            first and the last logged loss were given.
        speed: with ``rates``, fall_share / rate_share (see the module docstring).
    """

    drop: float | None
    unconverged: bool
    reason: str
    fraction: float
    tolerance: float
    points: int
    window: tuple[int, int] | None
    start_loss: float | None
    end_loss: float | None
    fall_share: float | None
    rate_share: float | None = None
    speed: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The facts as JSON-ready values (the window as a list)."""
        facts = dataclasses.asdict(self)
        facts["window"] = list(self.window) if self.window is not None else None
        return facts


def _window_start(n: int, steps: Sequence[int] | None, fraction: float) -> int:
    if steps is None:
        return int((1.0 - fraction) * (n - 1))
    at = steps[-1] - fraction * (steps[-1] - steps[0])
    return max(i for i, s in enumerate(steps) if s <= at)


def end_drop(
    losses: Sequence[float],
    *,
    steps: Sequence[int] | None = None,
    fraction: float = DEFAULT_FRACTION,
    tolerance: float = DEFAULT_TOLERANCE,
    rates: Callable[[int], float] | None = None,
    speed_tolerance: float | None = None,
) -> EndDrop:
    """Judge a fit by the relative fall of its loss over the last ``fraction`` of its curve.

    Args:
        losses: the logged losses (≥ 0, e.g. an MSE or RMSE), in step order.
        steps: the steps they were logged at (increasing, as many as ``losses``); None: evenly spaced.
        fraction: the part of the curve to look back over, in (0, 1].
        tolerance: the end drop at which the fit counts as still falling, in [0, 1).
        rates: the learning-rate factor of the update at each step (needs ``steps``; the loss logged
            at step s precedes the update of step s): adds the facts ``rate_share`` and ``speed``.
        speed_tolerance: with ``rates``, also judge by ``speed``: a fit whose loss fell over the window
            and whose speed is at least this (e.g. :data:`DEFAULT_SPEED_TOLERANCE`) is unconverged even
            when its end drop is below ``tolerance`` (a cosine flattened its curve, not a plateau).
            None: the end drop alone decides.

    Raises:
        ValueError: a setting out of range, ``steps`` not matching ``losses``, or a negative loss (a
            relative fall of a loss that can be negative means nothing).
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance}")
    values = [float(v) for v in losses]
    n = len(values)
    if steps is not None:
        steps = [int(s) for s in steps]
        if len(steps) != n:
            raise ValueError(f"steps must give one step per logged loss: {len(steps)} steps for {n} losses")
        if any(b <= a for a, b in zip(steps[:-1], steps[1:], strict=False)):
            raise ValueError(f"steps must increase, got {steps}")
    if rates is not None and steps is None:
        raise ValueError("rates need the logged steps: pass steps= with rates=")
    if any(v < 0 for v in values):
        raise ValueError(f"losses must be >= 0 (an error or a distance), got a minimum of {min(values)}")
    if n < 2:
        what = "no loss was logged (0 steps)" if n == 0 else "one logged loss"
        reason = f"too short: {what}, no curve to show a plateau"
        return EndDrop(None, True, reason, fraction, tolerance, n, None, None, None, None)
    first = _window_start(n, steps, fraction)
    window = (steps[first], steps[-1]) if steps is not None else (first, n - 1)
    start, end = values[first], values[-1]
    if not (math.isfinite(start) and math.isfinite(end)):
        return EndDrop(None, True, f"the loss is not finite ({start} -> {end})", fraction, tolerance, n, window, start, end, None)
    drop = (start - end) / start if start > 0 else 0.0
    span = f"over the last {100 * fraction:.0f} % of the curve"
    unconverged = drop >= tolerance
    if unconverged:
        reason = f"still falling: {100 * drop:.2f} % {span}, at least the tolerance {100 * tolerance:g} %"
    else:
        reason = f"flat: {100 * drop:.2f} % {span}, below the tolerance {100 * tolerance:g} %"
    fall = values[0] - end
    share = (start - end) / fall if fall > 0 else None
    rate_share = speed = None
    if rates is not None and steps is not None:
        mass = [float(rates(s)) for s in range(steps[0], steps[-1])]
        total = sum(mass)
        rate_share = sum(mass[steps[first] - steps[0] :]) / total if total > 0 else None
        speed = share / rate_share if share is not None and rate_share else None
    if speed_tolerance is not None and not unconverged and drop > 0 and speed is not None and speed >= speed_tolerance:
        unconverged = True
        reason = (
            f"still descending: {100 * drop:.2f} % {span}, below the tolerance {100 * tolerance:g} % only because the "
            f"learning rate annealed; per unit of rate it fell {speed:.2f}x as fast as the fit's average "
            f"(at least {speed_tolerance:g}x: no plateau yet)"
        )
    return EndDrop(drop, unconverged, reason, fraction, tolerance, n, window, start, end, share, rate_share, speed)
