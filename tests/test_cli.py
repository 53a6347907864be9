"""The command line: ls, validate, --version, python -m."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_cli


@pytest.mark.parametrize(("kind", "expect"), [
    ("compressors", "quantization"), ("models", "tiny:cnn"), ("datasets", "fashion-mnist"),
    ("metrics", "agreement"), ("plugins", "b2s-quantize"), ("reporters", "pareto"),
])
def test_ls(kind: str, expect: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("ls", kind) == 0
    assert expect in capsys.readouterr().out


def test_ls_models_wildcard(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("ls", "models", "timm:*efficientnet_lite*") == 0
    out = capsys.readouterr().out
    assert "timm:tf_efficientnet_lite0" in out and "timm:resnet18" not in out


def test_validate_lists_cells_and_needs(tiny_suite: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("validate", str(tiny_suite)) == 0
    out = capsys.readouterr().out
    assert "4 cells on cpu" in out and "quantize(bits=4)" in out and "data:random" in out and "ready" in out


def test_python_dash_m_and_version() -> None:
    out = subprocess.run([sys.executable, "-m", "b2s_bench", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("b2s-bench ")
