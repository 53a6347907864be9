"""Fitting: the generic solver, training loops, and the measures of a fit (public face).

:func:`fit_network` and :func:`relative_error` (a decoder network fitted to a tensor),
:func:`train_loop`, :func:`cosine_schedule` and :class:`TrainResult` (one seeded optimizer loop),
:func:`end_drop` and :class:`EndDrop` (whether a fit ran out of its step budget, from its loss curve:
the one rule for every fit's ``unconverged`` caveat, :mod:`~b2s_bench.fitting.budget`),
:mod:`~b2s_bench.fitting.fidelity` (per-tensor rel-MAE, cosine, PSNR) and
:mod:`~b2s_bench.fitting.limits` (the rate-distortion limits of a tensor and a code's gap to them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_face

_EXPORTS = {
    "fit_network": "solve",
    "relative_error": "solve",
    "SolveResult": "solve",
    "train_loop": "training",
    "cosine_schedule": "training",
    "TrainResult": "training",
    "end_drop": "budget",
    "EndDrop": "budget",
    "DEFAULT_SPEED_TOLERANCE": "budget",
    "fidelity": "module:fidelity",
    "limits": "module:limits",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_face(__name__, globals(), _EXPORTS)

if TYPE_CHECKING:
    from . import fidelity, limits
    from .budget import DEFAULT_SPEED_TOLERANCE, EndDrop, end_drop
    from .solve import SolveResult, fit_network, relative_error
    from .training import TrainResult, cosine_schedule, train_loop
