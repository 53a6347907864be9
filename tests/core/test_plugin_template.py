"""The third-party plugin template is built, installed into a temporary location, listed, and run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TEMPLATE = Path(__file__).resolve().parents[2] / "examples" / "plugin-template"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Build the template's wheel and install it into a fresh --target folder (its own dist-info)."""
    site = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    source = build / "plugin-template"  # built from a copy: the build writes build/ and *.egg-info beside it
    shutil.copytree(TEMPLATE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(site),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=build,
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    return env


def b2s(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "b2s_bench", *args], env=env, capture_output=True, text=True, cwd=cwd)


def test_installed_plugin_is_listed_with_its_distribution(installed: dict[str, str]) -> None:
    out = b2s(installed, "ls", "plugins", "ternary")
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("| ternary"))
    assert "b2s-example-plugin" in line and "0.1.0" in line and "ok" in line
    comps = b2s(installed, "ls", "compressors", "tern")
    assert "ternary" in comps.stdout and "quantization" in comps.stdout


def test_installed_plugin_runs_a_suite(installed: dict[str, str], tmp_path: Path) -> None:
    out = b2s(installed, "run", str(TEMPLATE / "suite.yaml"), "--out", str(tmp_path / "run"), "--quiet")
    assert out.returncode == 0, out.stderr
    records = [json.loads(p.read_text()) for p in (tmp_path / "run" / "cells").glob("*.json")]
    ternary = [r for r in records if r["compressor"]["pipeline"] and r["compressor"]["pipeline"][0]["name"] == "ternary"]
    assert len(ternary) == 2 and all(r["status"] == "ok" for r in ternary)
    assert all(r["environment"]["plugins"]["ternary"] == "b2s-example-plugin 0.1.0" for r in ternary)
    board = (tmp_path / "run" / "leaderboard.md").read_text()
    assert "ternary(threshold=0.5)" in board and "ternary(threshold=0.7)" in board


def test_template_own_tests_pass(installed: dict[str, str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", str(TEMPLATE / "tests")],
        env=installed,
        capture_output=True,
        text=True,
        cwd=TEMPLATE,
    )
    assert out.returncode == 0, out.stdout + out.stderr
