"""The language-model suites: `lm` (offline, the zoo LM on python-docs) is ready here; `llm` (a 7B hub
model on WikiText-2) lists its cells and names what is missing, and `run` stops with exit 3."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run_cli

from b2s_bench.plugins import load_plugins
from b2s_bench.suites.load import load_suite

from b2s_bench_plugins.data import imagenet, text  # isort: skip

SUITES = Path(__file__).resolve().parents[3] / "suites"


def test_the_lm_suite_runs_every_family_on_the_zoo_lm() -> None:
    suite = load_suite(str(SUITES / "lm.yaml"), load_plugins())
    assert [m.request.name for m in suite.models] == ["zoo-lm:tiny-llama"]
    families = {load_plugins().compressors.get(s.name).family for c in suite.compressors for s in c.stages}
    assert {"quantization", "pruning", "lowrank", "ergodic", "inr", "distillation", "entropy"} <= families
    if text.pydoc_root(None) is not None:
        assert run_cli("validate", str(SUITES / "lm.yaml")) == 0


def test_the_llm_suite_names_the_weights_and_wikitext_it_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("transformers")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty cache
    monkeypatch.delenv(imagenet.OVERRIDE_ENV, raising=False)
    monkeypatch.delenv("B2S_WIKITEXT", raising=False)
    assert run_cli("validate", str(SUITES / "llm.yaml")) == 3
    out = capsys.readouterr()
    listing = out.out + out.err
    assert "hf:meta-llama/Llama-2-7b-hf" in listing and "quantize(bits=4, granularity=group, group_size=128)" in listing
    assert "not in the local hub cache" in listing and "--download" in listing
    assert "WikiText-2 not found" in listing and "--data ROOT" in listing
    assert run_cli("run", str(SUITES / "llm.yaml"), "--out", str(tmp_path / "run")) == 3
    assert not (tmp_path / "run" / "cells").exists()
