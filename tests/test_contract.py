"""The contract, run over every registered compressor (built-in or installed)."""

from __future__ import annotations

import pytest

from b2s_bench.plugins import load_plugins
from b2s_bench.testing import check_compressor

COMPRESSORS = load_plugins().compressors.names()


@pytest.mark.parametrize("name", COMPRESSORS)
def test_compressor_contract(name: str) -> None:
    spec = load_plugins().compressors.get(name)
    report = check_compressor(spec)
    assert report.bits > 0
    assert report.coverage is not None and 0.0 <= report.coverage <= 1.0  # every record states its coverage
    if spec.identity is not None:
        assert report.identity_max_error is not None and report.identity_max_error <= 1e-5


def test_every_builtin_family_is_registered() -> None:
    assert {"quantize", "prune"} <= set(COMPRESSORS)
