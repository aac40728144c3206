"""Blocking plan/up/status/down on the mock backends: results, idempotence, events."""

from __future__ import annotations

import multiprocessing.queues
import threading
from datetime import datetime, timezone

import pytest

import kgenv
from conftest import assert_consistent, gce_env, recorded
from kgenv import events
from kgenv.testing import MockWorld


def test_plan_up_status_down_round_trip(env: kgenv.Env, world: MockWorld) -> None:
    plan = env.plan()
    ids = [s.id for s in env.steps]
    assert [p.step for p in plan] == ids, "plan lists steps in declared order"
    # Everything is to create but the read-only preflight, which finds nothing to change.
    assert plan.count("create") == len(ids) - 1 and plan["preflight"].change == "none" and plan.has_changes
    assert any("insert" in a for a in plan["instance"].actions)
    assert not world.mutating_calls(), "plan changes nothing"

    report = env.up()
    assert report.operation == "up" and report.env == "kg"
    assert "instance" in report.changed and "container" in report.changed
    assert set(report.changed) | set(report.satisfied) == set(ids)
    assert [s.step for s in report] == ids
    assert len(world.state()["instances"]) == 1
    assert_consistent(env, world)

    world.clear_calls()
    again = env.up()
    assert again.changed == () and set(again.satisfied) == set(ids)
    assert world.mutating_calls() == [], "a second up makes no mutating call"
    assert not env.plan().has_changes

    status = env.status()
    assert not status.is_empty
    assert status.state_file == env.state_file and env.state_file.exists()
    assert ("instance", "instance", "projects/my-project/zones/us-central1-a/instances/kg") in status.resources()
    assert status.facts["instance"]["zone"] == "us-central1-a"
    assert status.live.count("none") == len(ids)

    down = env.down(yes=True)
    assert "instance" in down.changed
    s = world.state()
    assert not s["instances"] and not s["firewalls"] and not s["containers"]
    assert s["buckets"], "down keeps buckets"
    assert s["landed"], "down keeps data"
    assert list(recorded(env)) == ["data-disk"], "only the kept data disk is recorded"
    assert s["disks"] and env.status().kept, "down keeps the data disk, and status says so"
    env.down(yes=True, delete_disks=["kg-data"])
    assert recorded(env) == {}, "the state file records nothing standing"
    assert env.status().is_empty


def test_events_are_typed_and_ordered(env: kgenv.Env) -> None:
    seen: list[kgenv.Event] = []
    threads: set[int] = set()

    def on_event(ev: kgenv.Event) -> None:
        seen.append(ev)
        threads.add(threading.get_ident())

    env.up(on_event=on_event)
    assert threads == {threading.get_ident()}, "callbacks run on the calling thread"
    kinds = {type(e) for e in seen}
    assert {events.StartedEvent, events.DoneEvent, events.SatisfiedEvent, events.LogEvent, events.ProgressEvent} <= kinds
    for step in ("instance", "container"):
        mine = [e for e in seen if e.step == step]
        assert isinstance(mine[0], events.StartedEvent) and mine[0].phase == "check"
        assert isinstance(mine[-1], events.DoneEvent) and mine[-1].phase == "apply"
    # Dependencies are respected: the container starts after its image is done.
    order = [(type(e), e.step) for e in seen]
    assert order.index((events.DoneEvent, "image")) < order.index((events.StartedEvent, "container"))
    progress = [e for e in seen if isinstance(e, events.ProgressEvent) and e.step == "data/titanic"]
    # Each file's bytes, and the pull's running total (as `kgenv data pull` shows them).
    assert {p.item for p in progress} == {"train.csv", "test.csv", "gender_submission.csv", "total"}
    assert all(p.fraction == 1.0 for p in progress if p.item != "total")
    totals = [p for p in progress if p.item == "total"]
    sizes = {p.item: p.total or 0 for p in progress if p.item != "total"}
    assert totals[-1].fraction == 1.0 and totals[-1].done == sum(sizes.values())
    assert str(progress[0]).startswith("data/titanic: ")


def test_planned_events_and_html(env: kgenv.Env) -> None:
    seen: list[kgenv.Event] = []
    plan = env.plan(on_event=seen.append)
    planned = [e for e in seen if isinstance(e, events.PlannedEvent)]
    assert {p.step for p in planned} == {s.id for s in env.steps}
    assert all(p.change == "create" for p in planned if p.step != "preflight")
    html = plan._repr_html_()
    assert "<table>" in html and "<code>instance</code>" in html and "create" in html
    assert repr(plan).startswith("<Plan plan for kg: ")
    assert "+ instance:" in str(plan)


def test_world_open_firewall_warns(world: MockWorld) -> None:
    env = gce_env(world, firewalls=[kgenv.Firewall("kg-jupyter", ports=[8888], source_ranges=["0.0.0.0/0"])])
    plan = env.plan()
    assert any(step == "firewall/kg-jupyter" and "WHOLE INTERNET" in msg for step, msg in plan.warnings), plan.warnings
    assert "⚠" in plan._repr_html_()


def test_only_and_until_select_steps(env: kgenv.Env, world: MockWorld) -> None:
    report = env.up(until="host")
    assert {s.step for s in report} == {"preflight", "firewall/kg-ssh", "instance", "host"}
    assert not world.state()["containers"]
    assert_consistent(env, world)
    report = env.up(only="firewall")
    assert [s.step for s in report] == ["firewall/kg-ssh"]
    with pytest.raises(kgenv.UsageError, match="no step `nope`"):
        env.up(only=["nope"])


def test_raising_from_on_event_cancels_the_run_and_reraises(env: kgenv.Env, world: MockWorld) -> None:
    class Stop(Exception):
        pass

    def on_event(ev: kgenv.Event) -> None:
        if isinstance(ev, events.DoneEvent) and ev.step == "instance":
            raise Stop("enough")

    with pytest.raises(Stop):
        env.up(on_event=on_event)
    # Started steps finished, nothing after them ran, and the state file says so.
    assert world.state()["instances"]
    assert not world.state()["containers"]
    assert_consistent(env, world)
    env.down(yes=True, progress=False)
    assert not world.state()["instances"]


def test_default_progress_prints_lines_outside_notebooks(env: kgenv.Env, capsys: pytest.CaptureFixture[str]) -> None:
    env.up()
    err = capsys.readouterr().err
    assert "instance: applying" in err and "data/titanic: train.csv" in err
    env.up(progress=False)
    assert capsys.readouterr().err == ""
    env.up(on_event=lambda e: None)
    assert capsys.readouterr().err == "", "a callback replaces the default display"


def test_sync_calls_work_inside_a_running_event_loop(env: kgenv.Env) -> None:
    import asyncio

    async def main() -> kgenv.Report:
        return env.up(progress=False)  # blocking, but legal inside a loop (as in a notebook cell)

    assert "instance" in asyncio.run(main()).changed


def test_runs_release_the_gil(world: MockWorld) -> None:
    world.set_latency("compute.insert_instance", 0.3)
    env = gce_env(world)
    ticks = 0
    stop = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            stop.wait(0.01)

    t = threading.Thread(target=count)
    t.start()
    env.up(progress=False)
    stop.set()
    t.join()
    assert ticks > 5, "another Python thread kept running while up() waited"


def test_state_is_kept_apart_per_world(world: MockWorld, tmp_path: object) -> None:
    other = MockWorld()
    a, b = gce_env(world), gce_env(other)
    a.up(progress=False)
    assert a.state_file != b.state_file
    assert b.status().is_empty and recorded(a)


def test_persistent_world_is_shared_by_path(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "world.json"  # type: ignore[operator]
    first = MockWorld(path)
    gce_env(first).up(progress=False)
    second = MockWorld(path)
    assert second.path == path and second.state_dir == first.state_dir
    env = gce_env(second)
    assert not env.plan().has_changes, "a new process sees the same world and state"
    env.down(yes=True, progress=False)
    assert not MockWorld(path).state()["instances"]


def _plan_in_child(env: kgenv.Env, out: "multiprocessing.queues.Queue[int]") -> None:
    out.put(len(env.plan()))


def test_runs_work_in_a_forked_child(env: kgenv.Env) -> None:
    import multiprocessing
    import warnings

    steps = len(env.plan())  # the parent's runtime is running now
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.queues.Queue[int] = ctx.Queue()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        child = ctx.Process(target=_plan_in_child, args=(env, out))
        child.start()
    child.join(60)
    assert child.exitcode == 0, "the child did not hang on the parent's runtime threads"
    assert out.get(timeout=5) == steps


def test_status_says_when_a_spot_vm_was_preempted(world: MockWorld) -> None:
    env = gce_env(world, instance=kgenv.Instance(project="my-project", zones=["us-central1-a"], provisioning="spot"))
    try:
        env.up()
        assert env.status().preempted is None, "running: nothing to report"
        # What GCE's preemption leaves: the VM stopped, its disks kept, the operation listed.
        when = datetime.now(timezone.utc)
        s = world.state()
        vm = s["instances"]["my-project/us-central1-a/kg"]
        vm["status"] = "TERMINATED"
        vm["external_ip"] = None
        s["preemptions"] = {vm["id"]: [{"at": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"), "operation": "operation-1"}]}
        world.set_state(s)

        status = env.status()
        shown = when.replace(microsecond=0).isoformat().replace("+00:00", "Z")
        assert status.preempted == kgenv.Preempted(
            at=shown,
            provisioning="spot",
            message=f"preempted at {shown} (spot); `kgenv start` or `kgenv up` brings it back, disks and data intact",
        )
        assert f"preempted at {shown}" in str(status)
        env.up()
        assert world.state()["instances"]["my-project/us-central1-a/kg"]["status"] == "RUNNING"
        assert env.status().preempted is None, "back"
    finally:
        env.close()


def test_status_shows_what_the_kept_bucket_holds(world: MockWorld) -> None:
    env = gce_env(world)
    try:
        env.up()
        s = world.state()
        s["bucket_usage"] = {"my-project-data": {"bytes": 71111, "objects": 5}}
        world.set_state(s)
        status = env.status()
        assert status.buckets == (kgenv.KeptBucket(name="my-project-data", bytes=71111, objects=5),)
        assert "bucket gs://my-project-data holds 71111 bytes in 5 object(s)" in str(status)
    finally:
        env.close()
