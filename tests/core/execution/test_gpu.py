"""GPU code paths. Marked `gpu` (excluded by default); run with `pytest -m gpu -n 0` where CUDA is present."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import run_cli

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_suite_runs_on_cuda(tiny_suite: Path, tmp_path: Path) -> None:
    assert run_cli("run", str(tiny_suite), "--out", str(tmp_path / "run"), "--device", "cuda", "--quiet") == 0
    recs = [json.loads(p.read_text()) for p in (tmp_path / "run" / "cells").glob("*.json")]
    assert recs and all(r["environment"]["device"] == "cuda" and r["status"] == "ok" for r in recs)
    assert all(r["environment"]["device_name"] == torch.cuda.get_device_name() for r in recs)


def test_every_compressor_runs_on_cuda(tmp_path: Path) -> None:
    from b2s_bench.execution.cell import apply_stage
    from b2s_bench.plugins import load_plugins
    from b2s_bench.testing import tiny_context, tiny_model

    plugins = load_plugins()
    x = torch.randn(4, 1, 28, 28, device="cuda")
    for spec in plugins.compressors:
        ctx = tiny_context()
        ctx.device = torch.device("cuda")
        config = spec.config(**spec.quick)
        if spec.recode is not None:  # a recoding stage has nothing to recode on its own: it follows quantize
            first = plugins.compressors.get("quantize")
            comp = apply_stage(first.compress(tiny_model().cuda(), first.config(bits=4), ctx), spec, config, ctx)
        else:
            comp = spec.compress(tiny_model().cuda(), config, ctx)
        with torch.no_grad():
            out = comp.module().cuda()(x)
        assert torch.isfinite(out).all(), spec.name


def test_latency_synchronizes_on_cuda(tiny_suite: Path, tmp_path: Path, write_suite) -> None:  # noqa: ANN001
    path = write_suite(tiny_suite.read_text().replace("metrics: [", "metrics: [latency_ms, "), name="lat.yaml")
    assert run_cli("run", str(path), "--out", str(tmp_path / "run"), "--device", "cuda", "--quiet") == 0
    recs = [json.loads(p.read_text()) for p in (tmp_path / "run" / "cells").glob("*.json")]
    assert all(r["metrics"]["latency_ms"]["value"] > 0 for r in recs)
