"""The settings of ``share``."""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Literal

from b2s_bench import check, one_of

__all__ = ["ShareConfig", "INITS", "data_track"]

#: the centroid initialisations of Han et al. (2016), Section 3.2
INITS = ("linear", "density", "random")


@dataclasses.dataclass(frozen=True)
class ShareConfig:
    """Settings of ``share``.

    Attributes:
        bits: bits per stored index, 1-8: each tensor shares k = 2**bits values (Deep Compression
            used 8 for conv layers and 5 for fully connected ones).
        layer_bits: bits by tensor name, overriding ``bits``: ``{glob pattern: bits}``, the first
            pattern (in the order written) matching the weight's key (``features.0.weight``; in a
            later pipeline stage the key of the code whose payload is shared) wins, e.g.
            ``{"features.*": 8, "classifier.*": 5}`` for the paper's conv/fc split.
        init: where Lloyd's iterations start: "linear" (k centroids evenly spaced between the
            tensor's min and max, the paper's choice: it keeps the rare large weights represented),
            "density" (at the quantiles (i + 0.5)/k of the weights, equal mass per centroid) or
            "random" (k distinct weights drawn with the run's seed: Forgy).
        iterations: the most Lloyd iterations (assign, then move each centroid to its cluster's mean).
        tolerance: stop once an iteration lowered the tensor's mean squared error by less than
            this fraction (or changed no assignment); the paper gives no stopping rule. Which
            tensors ran out of ``iterations`` first is recorded (``info["unconverged"]``).
        keep_zeros: a tensor holding exact zeros (pruned weights stored dense by ``prune``) keeps
            a centroid pinned at 0, so they stay exactly zero; the other k − 1 are fitted to the
            non-zero weights. Off: zeros are clustered like any weight.
        codebook_bits: the stored precision of the shared values (32: fp32, 16: fp16).
        min_numel: leave weights with fewer elements at fp32 (whatever the size, a tensor whose
            codebook and indices would cost at least its fp32 values stays fp32 too).
        skip_first / skip_last: keep the first / last conv or linear layer in fp32.
        finetune_epochs: epochs of the paper's trained quantization on the training split (the
            shared values fine-tuned with the indices fixed; :mod:`.finetune`); 0 (the default) is
            data-free weight sharing, more puts the method on the training track (and a pipeline
            holding it with it). As the first stage the model's codebooks train; as a later stage
            (after ``prune``) those of the earlier codes' shared payload, on the whole pruned model,
            the indices and the earlier stage's positions kept (pruned weights stay 0).
        finetune_lr: the step size of c ← c − lr · Σ ∂L/∂w over the weights sharing c (the
            paper's update; plain gradient steps).
        finetune_batches: at most this many training batches per epoch (null: the whole split).
    """

    bits: int = 5
    layer_bits: dict[str, int] = dataclasses.field(default_factory=dict)
    init: Literal["linear", "density", "random"] = "linear"
    iterations: int = 300
    tolerance: float = 1e-4
    keep_zeros: bool = True
    codebook_bits: int = 32
    min_numel: int = 0
    skip_first: bool = False
    skip_last: bool = False
    finetune_epochs: int = 0
    finetune_lr: float = 1e-4
    finetune_batches: int | None = None

    def __post_init__(self) -> None:
        check(1 <= self.bits <= 8, f"bits must be in 1..8, got {self.bits}", "bits")
        for pattern, value in self.layer_bits.items():
            check(
                isinstance(pattern, str) and isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 8,
                f"layer_bits maps a glob pattern to bits in 1..8, got {pattern!r}: {value!r} "
                '(write e.g. layer_bits: {"classifier.*": 5})',
                "layer_bits",
            )
        one_of(self.init, INITS, "init")
        check(self.iterations >= 1, f"iterations must be >= 1, got {self.iterations}", "iterations")
        check(self.tolerance >= 0, f"tolerance must be >= 0, got {self.tolerance}", "tolerance")
        check(self.codebook_bits in (16, 32), f"codebook_bits must be 16 or 32, got {self.codebook_bits}", "codebook_bits")
        check(self.min_numel >= 0, f"min_numel must be >= 0, got {self.min_numel}", "min_numel")
        check(self.finetune_epochs >= 0, f"finetune_epochs must be >= 0, got {self.finetune_epochs}", "finetune_epochs")
        check(self.finetune_lr > 0, f"finetune_lr must be > 0, got {self.finetune_lr}", "finetune_lr")
        check(
            self.finetune_batches is None or self.finetune_batches >= 1,
            f"finetune_batches must be >= 1 or null, got {self.finetune_batches}",
            "finetune_batches",
        )

    def bits_for(self, name: str) -> int:
        """The index width for the tensor ``name`` (a later stage's ``key/payload``: matched on ``key``)."""
        key = name.split("/", 1)[0]
        for pattern, value in self.layer_bits.items():
            if fnmatch.fnmatchcase(key, pattern):
                return value
        return self.bits


def data_track(config: ShareConfig) -> str:
    """Weight sharing alone is data-free; fine-tuning the shared values trains on the training split."""
    return "training" if config.finetune_epochs > 0 else "data-free"
