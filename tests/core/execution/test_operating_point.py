"""Each stage's operating point: where its compressor's defaults come from, and which settings a cell changed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from b2s_bench.execution.cell import operating_point
from b2s_bench.plugins import Plugins, load_plugins
from b2s_bench.suites.cells import expand
from b2s_bench.suites.load import load_suite

SUITE = """
suite: op
seed: 0
models:
  - name: tiny:cnn
dataset: {{name: random, n: 16}}
compressors:
  - name: quantize
    settings: {{bits: 4, calibration_samples: 8, granularity: channel}}
  - name: lowrank
    settings: {{rank: 2}}
  - name: prune
{prune}
metrics: [bits]
"""


def _points(suite: Path, plugins: Plugins) -> dict[str, dict]:
    cells = expand(load_suite(suite, plugins), plugins, "cpu")
    return {c.stages[0].name: operating_point(plugins.compressors.get(c.stages[0].name), c.stages[0]) for c in cells if c.stages}


def test_changed_settings_budget_settings_and_the_source(write_suite: Callable[..., Path]) -> None:
    plugins = load_plugins()
    points = _points(write_suite(SUITE.format(prune="    device_settings: {cpu: {sparsity: 0.7}, cuda: {}}")), plugins)
    quantize = points["quantize"]
    assert quantize["defaults_source"] == plugins.compressors.get("quantize").defaults_source != ""
    # granularity: channel is the default (written, not changed); calibration_samples is a quick (budget) key
    assert (quantize["changed"], quantize["budget"], quantize["at_defaults"]) == (["bits"], ["calibration_samples"], False)
    # lowrank derives energy from its rules: only the rank the suite wrote counts
    assert points["lowrank"]["changed"] == ["rank"]
    # a device_settings value is this device's budget, not a choice of operating point
    assert (points["prune"]["changed"], points["prune"]["budget"], points["prune"]["at_defaults"]) == ([], ["sparsity"], True)


def test_the_operating_point_is_not_part_of_the_cell_id(write_suite: Callable[..., Path]) -> None:
    plugins = load_plugins()
    as_budget = write_suite(SUITE.format(prune="    device_settings: {cpu: {sparsity: 0.7}, cuda: {}}"), "a.yaml")
    as_setting = write_suite(SUITE.format(prune="    settings: {sparsity: 0.7}"), "b.yaml")
    a, b = (expand(load_suite(p, plugins), plugins, "cpu") for p in (as_budget, as_setting))
    assert [c.id for c in a] == [c.id for c in b]  # the same cells, whichever key set the sparsity
    assert _points(as_setting, plugins)["prune"]["changed"] == ["sparsity"]
    for cell in a:
        text = json.dumps(cell.fingerprint)
        assert "defaults_source" not in text and "budget" not in text and "at_defaults" not in text


def test_every_built_in_compressor_says_where_its_defaults_come_from() -> None:
    plugins = load_plugins()
    builtin = [
        "quantize", "prune", "lowrank", "big2small", "nern", "hypercompress", "distill", "share", "ecsq", "entropy",
    ]  # fmt: skip
    for name in builtin:
        source = plugins.compressors.get(name).defaults_source
        assert any(word in source for word in ("ours", "paper", "the authors'", "Deep Compression", "Hinton")), (name, source)
