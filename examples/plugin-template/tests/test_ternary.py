"""The plugin's own tests: the b2s-bench contract, a hand-computed size, and the network form."""

from __future__ import annotations

import torch
from b2s_example_plugin import SPEC, ScaleNetwork, ternarize

import b2s_bench as b2s


def test_contract() -> None:
    """What every compressor must meet: settings, exact bits against the artifact, save/load, R(φ)."""
    b2s.testing.check_compressor(SPEC)


def test_bits_and_values() -> None:
    w = torch.tensor([[1.0, -1.0, 0.1, 0.0], [2.0, 0.0, 0.0, -3.0]])
    code = ternarize(w, 0.7)
    bits = code.bits()
    assert bits.payload == 2 * 8 and bits.scales == 32 * 2
    assert bits.metadata == b2s.header_bits({"shape": [2, 4]}) == 32 * 2  # the shape, 32 bits a dimension
    assert torch.equal(code.decode(), torch.tensor([[1.0, -1.0, 0.0, 0.0], [2.5, 0.0, 0.0, -2.5]]))


def test_the_solver_reaches_the_closed_form() -> None:
    """For a fixed pattern TWN's α is the least-squares solution: the generic solver finds it too."""
    w = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    code = ternarize(w, 0.7)
    net = code.as_network("random", torch.Generator().manual_seed(1))
    assert isinstance(net, ScaleNetwork) and net.solution == "closed form"
    assert not torch.allclose(net(), code.decode())
    result = b2s.fitting.fit_network(net, w, steps=800)
    closed = b2s.fitting.relative_error(code.decode(), w)
    assert abs(result.rel_error - closed) < 1e-4 * closed
    assert torch.allclose(net.alpha.detach(), code.alpha, rtol=1e-3)
