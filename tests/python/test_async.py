"""`await env.*_async()` on the running event loop: results, events on the loop's thread,
concurrency, and task cancellation that stops runs cleanly."""

from __future__ import annotations

import asyncio
import threading

import pytest

import kgenv
from conftest import assert_consistent, gce_env
from kgenv import events
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


@pytest.mark.asyncio
async def test_loop_stays_responsive_and_runs_overlap(world: MockWorld) -> None:
    world.set_latency("compute.insert_instance", 0.3)
    a, b = gce_env(world, "env-a"), gce_env(world, "env-b")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    t = asyncio.create_task(ticker())
    ra, rb = await asyncio.gather(a.up_async(progress=False), b.up_async(progress=False))
    t.cancel()
    assert "instance" in ra.changed and "instance" in rb.changed
    assert ticks > 5, "the loop kept running other tasks while kgenv worked"
    inserts = world.calls("compute.insert_instance")
    assert len(inserts) == 2
    first, second = sorted(inserts, key=lambda c: c.start)
    assert second.start < first.end, "two environments came up concurrently"


@pytest.mark.asyncio
async def test_cancelling_the_task_stops_the_run_cleanly(world: MockWorld) -> None:
    world.set_latency("*", 0.05)
    env = gce_env(world)
    started = asyncio.Event()

    def on_event(ev: kgenv.Event) -> None:
        if isinstance(ev, events.DoneEvent) and ev.step == "instance":
            started.set()

    task = asyncio.create_task(env.up_async(on_event=on_event))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The run stopped at a safe point: what exists is recorded, and the lock is free.
    assert world.state()["instances"]
    assert not world.state()["containers"]
    assert_consistent(env, world)
    world.set_latency("*", 0)
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
async def test_callback_errors_cancel_and_reraise_in_async(env: kgenv.Env, world: MockWorld) -> None:
    def on_event(ev: kgenv.Event) -> None:
        if isinstance(ev, events.DoneEvent) and ev.step == "instance":
            raise LookupError("stop here")

    with pytest.raises(LookupError, match="stop here"):
        await env.up_async(on_event=on_event)
    assert not world.state()["containers"]
    assert_consistent(env, world)


@pytest.mark.asyncio
async def test_blocking_call_from_a_coroutine(env: kgenv.Env) -> None:
    # In a notebook, a plain env.up() runs inside the kernel's loop; it must just work.
    assert "instance" in env.up(progress=False).changed
