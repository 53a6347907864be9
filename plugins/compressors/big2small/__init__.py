"""Big2Small (Liao et al., arXiv 2603.29768): data-free compression by fitting an INR to each large weight.

Each conv/linear weight above ``min_bytes`` gets its own INR (a FiLM-modulated SIREN on Fourier
features of the entries' coordinates), fitted to the standardised tensor with its outliers set aside
and stored exactly (Outlier-Aware Preprocessing), under MSE + gradient-difference + focal frequency
loss (Frequency-Aware Loss). All INRs are fitted together as one batched computation. The INR can be
quantized to ``inr_bits``. The architecture, the outlier rule, the loss weights and the budget rule
are our [D] choices (see the module docstrings and ``docs/big2small.md``), all of them settings.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import b2s_bench as b2s
from b2s_bench import CompressorSpec, ReporterSpec
from b2s_bench.reporting import ReportContext

from .config import Big2SmallConfig

if TYPE_CHECKING:  # for type checkers; at run time the names below load on first use (torch)
    from .codes import INRCode
    from .compressor import compress

__all__ = ["SPEC", "CLAIMS", "Big2SmallConfig", "INRCode", "compress"]

__getattr__, __dir__ = b2s.lazy_exports(
    __name__,
    globals(),
    {
        "UniformCode": "..quantize.codes",
        "INRCode": ".codes",
        "compress": ".compressor",
        "target": ".compressor",
    },
)

SPEC = CompressorSpec(
    name="big2small",
    family="inr",
    track="data-free",
    config=Big2SmallConfig,
    compress=b2s.lazy(".compressor:compress", __name__),
    codes=(
        b2s.lazy(".codes:INRCode", __name__, kind="big2small.inr"),
        b2s.lazy("..quantize.codes:UniformCode", __name__, kind="quantize.uniform"),
    ),  # UniformCode: the small layers with small_bits
    identity=None,  # none: an INR approximates a tensor; a setting that codes nothing would be no test
    defaults_source=(
        "the paper's settings as docs/big2small.md reads them ([S]: tensors over 100 KB, SIREN + FiLM, the "
        "three-term loss, AdamW + cosine) and ours where it says [D] (lr 3e-4, ω0 10, 32-bit INRs, a CPU step"
        " budget of 300, not 10,000)"
    ),
    description="Big2Small: a FiLM-SIREN INR per large conv/linear weight; outlier-aware, frequency loss",
    uses_gpu=True,
    version="2",  # 2: lr 3e-4, 8 tiles per step in epochs, QAT for <= 6-bit INRs, header in meta()
    quick={
        "min_bytes": 0,
        "steps": 20,
        "patch_rows": 8,
        "patch_cols": 8,
        "patches": 2,
        "frequencies": 4,
        "block": 8,
        "max_width": 32,
        "target_ratio": 2.0,
    },
    target=b2s.lazy(".compressor:target", __name__),
)


def _write_claims(ctx: ReportContext) -> list[Path]:
    from .claims import write_claims  # pandas loads only when a report is written

    return write_claims(ctx)


CLAIMS = ReporterSpec(
    "claims", _write_claims, "claims.md and claims.json: the Big2Small paper's claims with verdicts from the records"
)


@b2s.hookimpl
def b2s_register_compressors(register: Callable[[b2s.CompressorSpec], None]) -> None:
    register(SPEC)


@b2s.hookimpl
def b2s_register_reporters(register: Callable[[b2s.ReporterSpec], None]) -> None:
    register(CLAIMS)
