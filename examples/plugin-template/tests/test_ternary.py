"""The plugin's own tests: the b2s-bench contract and a hand-computed size."""

from __future__ import annotations

import torch
from b2s_example_plugin import SPEC, ternarize

from b2s_bench import check_compressor


def test_contract() -> None:
    check_compressor(SPEC)


def test_bits_and_values() -> None:
    w = torch.tensor([[1.0, -1.0, 0.1, 0.0], [2.0, 0.0, 0.0, -3.0]])
    code = ternarize(w, 0.7)
    assert code.bits().total == 2 * 8 + 32 * 2
    assert torch.equal(code.decode(), torch.tensor([[1.0, -1.0, 0.0, 0.0], [2.5, 0.0, 0.0, -2.5]]))
