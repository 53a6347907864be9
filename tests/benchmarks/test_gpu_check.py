"""benchmarks/gpu_check.py's ``--quick`` CPU mode, so the one script a GPU owner runs does not rot.

Slow (minutes on 2 busy cores): ``pytest -m slow tests/benchmarks/test_gpu_check.py``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def test_the_quick_mode_prints_every_row_of_the_table() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--device",
            "cpu",
            "--layers",
            "2",
            "--fit-steps",
            "2",
            "--paper-steps",
            "5",
            "--repeats",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=SCRIPT.parent,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    names = [line.split("|")[1].strip() for line in table[1:]]
    assert names == [
        "fit: batched vs naive",
        "one layer, 5 steps",
        "inference, batch 1",
        "inference, batch 256",
        "evaluation throughput",
    ]
    assert "ResNet-18, 2 largest layers" in done.stdout
    assert all("x" in line.split("|")[3] or "dB" in line for line in table[1:])
