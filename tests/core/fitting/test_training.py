"""The shared optimizer loop, b2s.fitting.train_loop: the order of a step, logging, schedules, divergence."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

import b2s_bench as b2s
from b2s_bench.fitting.training import TrainResult, cosine_schedule


def _problem(seed: int = 0) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 5, generator=gen)
    y = x @ torch.randn(5, 1, generator=gen) + 0.1
    torch.manual_seed(seed)
    return nn.Linear(5, 1), x, y


def _batches(x: torch.Tensor, y: torch.Tensor, epochs: int, gen: torch.Generator):
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], 16):
            yield x[order[i : i + 16]], y[order[i : i + 16]]


def test_same_weights_as_the_hand_written_loop() -> None:
    """The loop is a refactoring aid: it must give bit-identical weights to the loop it replaces."""
    model, x, y = _problem()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, 12) / 12)))
    gen = torch.Generator().manual_seed(1)
    for xb, yb in _batches(x, y, 3, gen):
        loss = nn.functional.mse_loss(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    expected = [p.detach().clone() for p in model.parameters()]

    model, x, y = _problem()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    result = b2s.fitting.train_loop(
        opt,
        lambda b: nn.functional.mse_loss(model(b[0]), b[1]),
        _batches(x, y, 3, torch.Generator().manual_seed(1)),
        scheduler=cosine_schedule(12),
    )
    assert result.steps == 12
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), expected, strict=True))


def test_losses_are_logged_every_n_steps_and_at_the_last() -> None:
    model, x, y = _problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen: list[float] = []

    def loss(step: int) -> torch.Tensor:
        value = nn.functional.mse_loss(model(x), y)
        seen.append(float(value.detach()))
        return value

    result = b2s.fitting.train_loop(opt, loss, 10, log_every=4)
    assert result == TrainResult(10, (seen[0], seen[4], seen[8], seen[9]))
    assert result.losses[-1] < result.losses[0]  # it trains
    assert b2s.fitting.train_loop(opt, loss, 9, log_every=4).losses[-1] == seen[-1]  # last step 8 is logged once
    assert len(b2s.fitting.train_loop(opt, loss, 9, log_every=4).losses) == 3


def test_batches_from_an_iterable_capped_by_islice() -> None:
    model, x, y = _problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    drawn = []

    def batches():
        for i in itertools.count():
            drawn.append(i)
            yield x[i % 4 :: 4], y[i % 4 :: 4]

    result = b2s.fitting.train_loop(opt, lambda b: nn.functional.mse_loss(model(b[0]), b[1]), itertools.islice(batches(), 5))
    assert result.steps == 5 and drawn == [0, 1, 2, 3, 4]  # no batch drawn past the cap


def test_no_steps() -> None:
    model, _, _ = _problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    assert b2s.fitting.train_loop(opt, lambda b: torch.zeros(()), 0) == TrainResult(0, ())


class _Bar:
    def __init__(self) -> None:
        self.n, self.texts, self.closed = 0, [], False

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, s: str) -> None:
        self.texts.append(s)

    def close(self) -> None:
        self.closed = True


def test_scheduler_hook_and_progress() -> None:
    model, x, y = _problem()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    lrs, steps, bar = [], [], _Bar()

    def after(step: int) -> None:
        steps.append(step)
        lrs.append(opt.param_groups[0]["lr"])

    b2s.fitting.train_loop(
        opt,
        lambda _: nn.functional.mse_loss(model(x), y) * 1e-3,
        6,
        scheduler=cosine_schedule(6, warmup=2),
        after_step=after,
        progress=bar,
        log_every=2,
        postfix=lambda loss: f"loss {loss:.3g}",
    )
    factor = cosine_schedule(6, warmup=2)
    assert steps == list(range(6)) and lrs == [factor(i) for i in range(1, 7)]  # stepped after each step
    assert bar.n == 6 and len(bar.texts) == 3 and bar.texts[0].startswith("loss ") and not bar.closed


def test_an_explicit_scheduler_is_stepped_as_it_is() -> None:
    model, x, y = _problem()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    b2s.fitting.train_loop(opt, lambda _: nn.functional.mse_loss(model(x), y) * 1e-3, 4, scheduler=sched)
    assert opt.param_groups[0]["lr"] == 0.25


def test_cosine_schedule() -> None:
    f = cosine_schedule(10)
    assert f(0) == 1.0 and f(10) == pytest.approx(0.0, abs=1e-15) and f(20) == f(10)
    # bit for bit the hand-written form the built-in loops used: π·i first, then / n
    assert all(f(i) == 0.5 * (1 + math.cos(math.pi * i / 10)) for i in range(11))
    w = cosine_schedule(10, warmup=4)
    assert [w(i) for i in range(4)] == [0.25, 0.5, 0.75, 1.0] and w(4) == 1.0 and w(7) == pytest.approx(0.5)
    assert cosine_schedule(0)(0) == 1.0  # no steps: no division by zero


def test_a_diverged_loss_stops_training() -> None:
    model, x, _ = _problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(FloatingPointError, match="at step 0"):
        b2s.fitting.train_loop(opt, lambda _: model(x).sum() * float("nan"), 3)
    model, x, _ = _problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(FloatingPointError, match="at step 2"):  # found at the last step, though not a logged one
        b2s.fitting.train_loop(opt, lambda s: model(x).sum() * (float("inf") if s == 2 else 0.0), 3)


def test_log_every_must_be_positive() -> None:
    model, _, _ = _problem()
    with pytest.raises(ValueError, match="log_every"):
        b2s.fitting.train_loop(torch.optim.SGD(model.parameters(), lr=0.1), lambda _: torch.zeros(()), 1, log_every=0)
