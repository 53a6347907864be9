"""The built-in classification task: its outputs, and the metrics reading them through Evaluation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from b2s_bench import Compressed
from b2s_bench.metrics import Evaluation, NotApplicable
from b2s_bench.plugins import Plugins
from b2s_bench.sources import LoadedData, LoadedModel

XS = torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, 1.0], [1.0, 0.0, 4.0], [5.0, 1.0, 0.0]])
YS = torch.tensor([0, 1, 1, 0])


def _data(labeled: bool) -> LoadedData:
    return LoadedData(
        lambda bs: [(XS[i : i + bs], YS[i : i + bs] if labeled else None) for i in range(0, 4, bs)], 4, labeled, "xs"
    )


def _eval(plugins: Plugins, data: LoadedData, dense: dict[str, torch.Tensor]) -> Evaluation:
    model = LoadedModel(nn.Identity(), (3,), 3, "hand-made")
    return Evaluation(
        nn.Identity(),
        model,
        Compressed.from_codes(nn.Identity(), {}),
        data,
        torch.device("cpu"),
        3,
        lambda: dense,
        {"compress": 0.0},
        task=plugins.tasks.get(data.task),
    )


def test_classification_outputs_logits_and_labels_in_eval_order(plugins: Plugins) -> None:
    task = plugins.tasks.get("classification")
    out = task.run(nn.Identity(), _data(True), torch.device("cpu"), 3)  # batches of 3 and 1
    assert set(out) == {"logits", "labels"} and torch.equal(out["logits"], XS) and torch.equal(out["labels"], YS)
    assert set(task.run(nn.Identity(), _data(False), torch.device("cpu"), 2)) == {"logits"}
    assert plugins.tasks.origin("classification") == "b2s-tasks"


def test_metrics_read_the_tasks_outputs_and_the_dense_reference(plugins: Plugins) -> None:
    dense = {"logits": torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 1.0, 0], [0, 0, 1.0]]), "labels": YS}
    ev = _eval(plugins, _data(True), dense)
    assert plugins.metrics.get("top1").compute(ev) == pytest.approx(75.0)  # argmax 0, 1, 2, 0
    assert plugins.metrics.get("agreement").compute(ev) == pytest.approx(50.0)  # dense argmax 0, 1, 1, 2
    assert ev.per_example["agreement"].tolist() == [True, True, False, False]
    unlabeled = _eval(plugins, _data(False), {"logits": dense["logits"]})
    with pytest.raises(NotApplicable, match="no labels"):
        plugins.metrics.get("top1").compute(unlabeled)
    assert plugins.metrics.get("agreement").compute(unlabeled) == pytest.approx(50.0)


def test_a_task_without_logits_makes_classification_metrics_not_applicable(plugins: Plugins) -> None:
    ev = _eval(plugins, _data(True), {"masks": YS})
    ev.__dict__["outputs"] = {"masks": YS}  # what another task's run would have given
    with pytest.raises(NotApplicable, match="'classification' task's outputs have no 'logits'"):
        plugins.metrics.get("kl").compute(ev)
    assert {m.name for m in plugins.metrics if m.tasks is not None and "classification" in m.tasks} == {
        "top1",
        "top5",
        "agreement",
        "kl",
    }
