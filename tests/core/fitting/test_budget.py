"""fitting.end_drop: the one rule for "this fit ran out of its step budget", on curves whose answer is known."""

from __future__ import annotations

import json
import math

import pytest

import b2s_bench as b2s
from b2s_bench.fitting import EndDrop, cosine_schedule, end_drop


def test_a_curve_still_falling_ten_percent_over_its_last_quarter_is_unconverged() -> None:
    # 21 points falling by the same factor each: over the last 5 of 20 intervals the loss falls 10 %
    r = 0.9 ** (1 / 5)
    facts = end_drop([2.0 * r**i for i in range(21)])
    assert facts.drop == pytest.approx(0.10)
    assert facts.unconverged and facts.reason.startswith("still falling: 10.00 %")
    assert facts.window == (15, 20) and facts.points == 21
    assert facts.start_loss == pytest.approx(2.0 * r**15) and facts.end_loss == pytest.approx(2.0 * r**20)


def test_an_exponential_decay_that_has_flattened_is_converged() -> None:
    steps = list(range(0, 2001, 100))
    facts = end_drop([0.05 + math.exp(-s / 100) for s in steps], steps=steps)
    assert facts.drop is not None and 0 < facts.drop < 1e-4
    assert not facts.unconverged and facts.reason.startswith("flat")
    assert facts.window == (1500, 2000)


@pytest.mark.parametrize("losses, what", [([], "no loss was logged (0 steps)"), ([0.3], "one logged loss")])
def test_a_too_short_curve_is_unconverged_with_the_reason(losses: list[float], what: str) -> None:
    facts = end_drop(losses)
    assert facts.unconverged and facts.drop is None and facts.window is None
    assert facts.reason == f"too short: {what}, no curve to show a plateau"


def _cosine_descent(lr: float, floor: float, steps: int = 1000, log_every: int = 50) -> tuple[list[int], list[float]]:
    """Gradient descent on floor + x² under a cosine-annealed rate: the loss logged as a fit logs it."""
    factor = cosine_schedule(steps)
    x, logged, losses = 1.0, [], []
    for step in range(steps):
        if step % log_every == 0 or step == steps - 1:
            logged.append(step)
            losses.append(floor + x * x)
        x *= 1 - lr * factor(step)
    return logged, losses


def test_under_a_cosine_schedule_a_fit_far_from_its_floor_is_still_flagged() -> None:
    # the annealed rate flattens every curve's end (the last quarter holds ~2.5 % of the schedule's
    # rate), yet a fit that made little progress still falls by more than 1 % there
    steps, losses = _cosine_descent(lr=0.002, floor=0.1)
    far = end_drop(losses, steps=steps)
    assert losses[-1] > 0.2 and far.unconverged and far.drop is not None and far.drop > 0.03
    # its window made a share of the whole fall close to its share of the schedule's rate (~3 %)
    assert far.fall_share is not None and 0.01 < far.fall_share < 0.06
    # the same schedule with a rate that reached the floor: flat
    steps, losses = _cosine_descent(lr=0.02, floor=0.1)
    done = end_drop(losses, steps=steps)
    assert losses[-1] == pytest.approx(0.1) and not done.unconverged and done.drop is not None and done.drop < 1e-6


def test_the_schedule_tells_a_curve_flattened_by_its_rate_from_a_plateau() -> None:
    # a loss that falls in proportion to the rate it is given (never slowing per unit of rate): under a
    # cosine its end is as flat as a plateau's, and the end drop alone does not flag it (the documented
    # blind spot); rate_share and speed show it
    grid = [*range(0, 1000, 20), 999]  # logged every 20 steps and at the last
    rate = cosine_schedule(1000)
    mass = [0.0]
    for s in range(999):
        mass.append(mass[-1] + rate(s))
    linear = [1.0 - 0.2 * mass[s] / mass[-1] for s in grid]  # a fall of 20 %, 2.8 % of it in the window
    facts = end_drop(linear, steps=grid, rates=rate)
    assert facts.window == (740, 999) and not facts.unconverged and facts.drop is not None and facts.drop < 0.01
    assert facts.rate_share == pytest.approx(0.028, abs=0.001) and facts.speed == pytest.approx(1.0)
    # a cosine-annealed descent that reached its floor long before the end: speed 0
    steps, losses = _cosine_descent(lr=0.02, floor=0.1)
    done = end_drop(losses, steps=steps, rates=cosine_schedule(1000))
    assert done.speed is not None and done.speed < 1e-3
    # without the schedule the facts stay unset; rates without the steps they refer to are refused
    assert end_drop(linear, steps=grid).speed is None
    with pytest.raises(ValueError, match="rates need the logged steps"):
        end_drop(linear, rates=rate)


def test_with_a_speed_tolerance_a_curve_flattened_only_by_its_rate_is_unconverged() -> None:
    """NeRN's judgement: a fit whose last quarter fell faster per unit of rate than its average (the
    return of more rate has not diminished) ran out of budget, though the cosine made its end drop small."""
    from b2s_bench.fitting import DEFAULT_SPEED_TOLERANCE

    grid = [0, 750, 1000]  # NeRN's measuring points
    rate = cosine_schedule(1000)
    mass = [0.0]
    for s in range(1000):
        mass.append(mass[-1] + rate(s))
    share = (mass[1000] - mass[750]) / mass[1000]  # the last quarter's share of the rate, about 2.5 %
    # the UNet's case: 0.21 % over the window while the whole fit fell 6 %: speed about 1.4
    accelerating = [1.0, 1.0 - 0.06 + 0.0021, 1.0 - 0.06]
    facts = end_drop(accelerating, steps=grid, rates=rate, speed_tolerance=DEFAULT_SPEED_TOLERANCE)
    assert facts.drop is not None and facts.drop < 0.01 and facts.speed is not None
    assert facts.speed == pytest.approx((0.0021 / 0.06) / share, rel=1e-6) and facts.speed > 1
    assert facts.unconverged and "still descending" in facts.reason and "no plateau yet" in facts.reason
    assert not end_drop(accelerating, steps=grid, rates=rate).unconverged  # the end drop alone: flat
    # the CNN's case: the window holds 1.4 % of the fall, speed 0.57: converged
    slowing = [1.0, 0.9 + 0.1 * 0.0143, 0.9]
    facts = end_drop(slowing, steps=grid, rates=rate, speed_tolerance=DEFAULT_SPEED_TOLERANCE)
    assert facts.speed is not None and facts.speed < 1 and not facts.unconverged
    # a loss that rose over the window is flat whatever its speed
    assert not end_drop([1.0, 0.8, 0.81], steps=grid, rates=rate, speed_tolerance=DEFAULT_SPEED_TOLERANCE).unconverged


def test_a_loss_that_rose_or_sits_at_zero_is_flat_and_a_nonfinite_one_is_unconverged() -> None:
    rose = end_drop([1.0, 0.5, 0.4, 0.41, 0.42])
    assert rose.drop is not None and rose.drop < 0 and not rose.unconverged
    zero = end_drop([1.0, 0.0, 0.0, 0.0, 0.0])
    assert zero.drop == 0.0 and not zero.unconverged
    nan = end_drop([1.0, 0.5, float("nan")])
    assert nan.unconverged and nan.drop is None and "not finite" in nan.reason


def test_the_window_follows_the_logged_steps_and_the_settings() -> None:
    # a fit of 2,000 steps logged every 100 and at its last step (1999): the window starts at the
    # last point at or before 1999 - 0.25 * 1999 = 1499.25; without steps, at index 15 (step 1500)
    steps = [*range(0, 2000, 100), 1999]
    losses = [1.0 / (1 + s) for s in steps]
    assert end_drop(losses, steps=steps).window == (1400, 1999)
    assert end_drop(losses).window == (15, 20)
    # evenly spaced steps and indices pick the same point
    even = list(range(0, 2001, 100))
    assert end_drop(losses, steps=even).start_loss == end_drop(losses).start_loss
    # a larger fraction looks further back; the tolerance decides
    assert end_drop(losses, fraction=1.0).window == (0, 20)
    falling = [1.0, 0.9, 0.8, 0.7, 0.6]  # 14.3 % over the last quarter
    assert end_drop(falling, tolerance=0.2).unconverged is False and end_drop(falling, tolerance=0.1).unconverged


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"losses": [1.0, -0.1]}, "losses must be >= 0"),
        ({"losses": [1.0, 0.5], "steps": [0]}, "one step per logged loss"),
        ({"losses": [1.0, 0.5], "steps": [3, 3]}, "steps must increase"),
        ({"losses": [1.0, 0.5], "fraction": 0.0}, "fraction must be in"),
        ({"losses": [1.0, 0.5], "tolerance": 1.0}, "tolerance must be in"),
    ],
)
def test_bad_input_says_what_is_wrong(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        end_drop(**kwargs)


def test_the_facts_are_a_frozen_json_ready_dict_on_the_public_face() -> None:
    facts = end_drop([1.0, 0.5, 0.25], steps=[0, 10, 19])
    assert isinstance(facts, EndDrop) and b2s.fitting.end_drop is end_drop
    with pytest.raises(AttributeError):
        facts.drop = 0.0  # type: ignore[misc]
    d = json.loads(json.dumps(facts.as_dict()))
    assert d["window"] == [10, 19] and d["drop"] == pytest.approx(0.5) and d["unconverged"] is True
    assert d["fall_share"] == pytest.approx(1 / 3)  # (0.5 - 0.25) / (1.0 - 0.25): the window's share of the whole fall
    keys = {"drop", "unconverged", "reason", "fraction", "tolerance", "points", "window", "start_loss", "end_loss"}
    keys |= {"fall_share", "rate_share", "speed"}
    assert set(d) == keys
