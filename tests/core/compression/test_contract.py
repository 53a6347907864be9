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


def test_contract_report_is_public() -> None:
    import b2s_bench as b2s

    assert b2s.testing.ContractReport is b2s.testing.ContractReport
    report = b2s.testing.check_compressor(load_plugins().compressors.get("quantize"), {"bits": 4})
    assert isinstance(report, b2s.testing.ContractReport) and report.name == "quantize"


def test_every_builtin_code_counts_its_meta_as_its_header() -> None:
    # the one header rule: bits().metadata == header_bits(meta()), for each code the built-ins write
    import b2s_bench as b2s
    from b2s_bench.testing import tiny_context, tiny_model

    checked = 0
    for name in ("quantize", "prune", "lowrank", "hypercompress"):
        spec = load_plugins().compressors.get(name)
        config = b2s.build_config(spec.config, dict(spec.quick), owner=name)
        comp = spec.compress(tiny_model(0), config, tiny_context(0))
        for key, code in comp.codes.items():
            assert code.bits().metadata == b2s.header_bits(code.meta()) > 0 or not code.meta(), (name, key)
            checked += 1
    assert checked >= 8


def test_quantize_documents_every_setting() -> None:
    from b2s_bench.config import setting_docs

    spec = load_plugins().compressors.get("quantize")
    missing = [d.name for d in setting_docs(spec.config) if not d.help]
    assert missing == [], f"quantize settings without help (b2s-bench show quantize): {missing}"


def test_a_symbol_stream_must_be_what_the_code_stores_and_counts() -> None:
    import dataclasses

    import torch
    from b2s_bench_plugins.compressors.quantize import UniformCode

    import b2s_bench as b2s
    from b2s_bench.compression.contract import symbol_problems

    w = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    code = load_plugins().compressors.get("quantize").compress_tensor("w", w, _config("quantize", bits=4), _ctx())
    assert isinstance(code, UniformCode)
    assert symbol_problems("w", code) == []

    class Lying(UniformCode):
        kind = "test.lying"

        def symbols(self) -> dict[str, b2s.Symbols]:
            real = super().symbols()["q"]
            return {"q": dataclasses.replace(real, values=torch.zeros_like(real.values))}

    liar = Lying(**{f.name: getattr(code, f.name) for f in dataclasses.fields(code)})
    assert symbol_problems("w", liar) == ["w (Lying) symbol stream 'q': tensors()['q'] is not pack_bits(values, 4)"]


def _config(name: str, **settings: object) -> object:
    from b2s_bench.config import build_config

    return build_config(load_plugins().compressors.get(name).config, settings)


def _ctx() -> object:
    from b2s_bench.testing import tiny_context

    return tiny_context()
