"""`await env.*_async()` on the running event loop: results, events on the loop's thread,
concurrency, and task cancellation that stops runs cleanly.

Where a test must act while a call is in flight (both environments inserting at once, a
cancel during the host step), that call is held at its start (`MockWorld.hold_next`) and
let go only once the test has seen what it waits for: nothing depends on the clock."""

from __future__ import annotations

import asyncio
import threading

import pytest

import kgenv
from conftest import GUARD, assert_consistent, gce_env, held
from kgenv import _kgenv, events
from kgenv.testing import MockWorld


@pytest.mark.asyncio
async def test_async_round_trip(env: kgenv.Env, world: MockWorld) -> None:
    plan = await env.plan_async()
    assert plan.count("create") == len(env.steps) - 1, "all but the read-only preflight"
    loop_thread = threading.get_ident()
    threads: set[int] = set()
    seen: list[kgenv.Event] = []

    def on_event(ev: kgenv.Event) -> None:
        threads.add(threading.get_ident())
        seen.append(ev)

    report = await env.up_async(on_event=on_event)
    assert "instance" in report.changed
    assert threads == {loop_thread}, "on_event runs on the event loop's thread"
    assert any(isinstance(e, events.DoneEvent) and e.step == "container" for e in seen)
    world.clear_calls()
    assert (await env.up_async(progress=False)).changed == ()
    assert world.mutating_calls() == []
    status = await env.status_async()
    assert not status.is_empty
    assert await env.gpus_async() == ["Tesla T4, 580.65.06, 15360 MiB"]
    result = await env.ssh_async(["echo", "hi"])
    assert result.ok
    down = await env.down_async(yes=True, progress=False)
    assert "instance" in down.changed
    assert not world.state()["instances"]


async def cancelled(runs: list[_kgenv.Run], what: str) -> None:
    """Waits, on the loop, until the first run has been asked to stop."""
    deadline = asyncio.get_running_loop().time() + GUARD
    while not (runs and runs[0].cancelled):
        assert asyncio.get_running_loop().time() < deadline, f"{what}: not within {GUARD}s"
        await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_loop_stays_responsive_and_runs_overlap(world: MockWorld) -> None:
    a, b = gce_env(world, "env-a"), gce_env(world, "env-b")
    with held(world, "compute.insert_instance", "compute.insert_instance") as holds:
        ups = asyncio.gather(a.up_async(progress=False), b.up_async(progress=False))
        # Both inserts are in flight at once (held), and this coroutine got to run on the
        # loop meanwhile: kgenv's runs did not block it.
        both = await asyncio.to_thread(lambda: all(h.wait_started(GUARD) for h in holds))
        assert both, "two environments came up concurrently: both inserts started"
        assert not ups.done()
    ra, rb = await ups
    assert "instance" in ra.changed and "instance" in rb.changed
    inserts = world.calls("compute.insert_instance")
    assert len(inserts) == 2
    first, second = sorted(inserts, key=lambda c: c.start)
    assert second.start < first.end, "the inserts overlapped"


@pytest.mark.asyncio
async def test_cancelling_the_task_stops_the_run_cleanly(world: MockWorld, runs: list[_kgenv.Run]) -> None:
    env = gce_env(world)
    with held(world, "remote.connect") as (connect,):
        task = asyncio.create_task(env.up_async(progress=False))
        assert await asyncio.to_thread(connect.wait_started, GUARD), "the host step connects"
        task.cancel()
        # The host step goes on only once the run has seen the cancellation.
        await cancelled(runs, "cancelling the task cancels the run")
    with pytest.raises(asyncio.CancelledError):
        await task
    # The run stopped at a safe point: what exists is recorded, and the lock is free.
    assert world.calls("remote.connect"), "the running step finished"
    assert world.state()["instances"]
    assert not world.state()["containers"]
    assert_consistent(env, world)
    report = await env.up_async(progress=False)
    assert "container" in report.changed and "instance" in report.satisfied
    await env.down_async(yes=True, progress=False)
    assert_consistent(env, world)
    assert not world.state()["instances"]


@pytest.mark.asyncio
async def test_errors_raise_from_await(world: MockWorld) -> None:
    env = gce_env(world)
    world.fail_next("compute.insert_firewall", kgenv.testing.Fault.permission_denied())
    with pytest.raises(kgenv.AuthError) as e:
        await env.up_async(progress=False)
    assert e.value.step == "firewall/kg-ssh"
    assert_consistent(env, world)


@pytest.mark.asyncio
async def test_callback_errors_cancel_and_reraise_in_async(env: kgenv.Env, world: MockWorld, runs: list[_kgenv.Run]) -> None:
    def on_event(ev: kgenv.Event) -> None:
        if isinstance(ev, events.DoneEvent) and ev.step == "instance":
            raise LookupError("stop here")

    # The host step is held until the callback's error has cancelled the run, so the run
    # cannot reach the container before the error is seen.
    with held(world, "remote.connect"):
        task = asyncio.create_task(env.up_async(on_event=on_event))
        await cancelled(runs, "the callback's error cancels the run")
    with pytest.raises(LookupError, match="stop here"):
        await task
    assert not world.state()["containers"]
    assert_consistent(env, world)


@pytest.mark.asyncio
async def test_blocking_call_from_a_coroutine(env: kgenv.Env) -> None:
    # In a notebook, a plain env.up() runs inside the kernel's loop; it must just work.
    assert "instance" in env.up(progress=False).changed
