"""``wait_for_capacity``: rounds of tries until a zone has capacity, sync and async."""

from __future__ import annotations

import asyncio

import pytest

import kgenv
from conftest import assert_consistent, gce_env
from kgenv.events import LogEvent
from kgenv.testing import MockWorld


def _rounds(events: list[kgenv.Event]) -> list[str]:
    return [e.line for e in events if isinstance(e, LogEvent) and e.line.startswith("round ")]


def test_up_waits_in_rounds_until_capacity_returns(world: MockWorld) -> None:
    env = gce_env(world)
    world.add_stockout_zone("us-central1-a")
    world.add_stockout_zone("us-central1-b")
    # Two full rounds of two stockouts; the third round's first insert lands.
    world.capacity_returns_after(4)
    events: list[kgenv.Event] = []
    env.up(only=["preflight", "firewall", "instance"], wait_for_capacity=True, on_event=events.append)
    assert list(world.state()["instances"]) == ["my-project/us-central1-a/kg"]
    rounds = _rounds(events)
    assert len(rounds) == 2, rounds
    assert rounds[0].startswith("round 1: 2 candidates out of capacity; next try in "), rounds
    assert rounds[0].endswith("waiting until Ctrl-C"), rounds
    assert_consistent(env, world)


def test_a_limit_gives_up_with_a_stockout_and_leaves_nothing(world: MockWorld) -> None:
    env = gce_env(world)
    world.add_stockout_zone("us-central1-a")
    world.add_stockout_zone("us-central1-b")
    with pytest.raises(kgenv.StockoutError) as e:
        env.up(only=["preflight", "firewall", "instance"], wait_for_capacity=0.2, progress=False)
    assert "rounds in" in e.value.message, e.value.message
    assert not world.state()["instances"]


def test_up_async_takes_a_duration_string(world: MockWorld) -> None:
    env = gce_env(world)
    world.add_stockout_zone("us-central1-a")
    world.capacity_returns_after(1)
    events: list[kgenv.Event] = []
    asyncio.run(env.up_async(only=["preflight", "firewall", "instance"], wait_for_capacity="2h", on_event=events.append))
    # us-central1-a was out in round 1, us-central1-b had capacity in the same round.
    assert list(world.state()["instances"]) == ["my-project/us-central1-b/kg"]
    assert _rounds(events) == []


@pytest.mark.parametrize(
    ("value", "error"),
    [("soon", ValueError), (-5, ValueError), ([1], TypeError)],
)
def test_bad_values_are_refused_before_anything_runs(world: MockWorld, value: object, error: type[Exception]) -> None:
    env = gce_env(world)
    with pytest.raises(error):
        env.up(wait_for_capacity=value, progress=False)  # type: ignore[arg-type]
    assert not world.state()["instances"]
