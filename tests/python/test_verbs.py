"""The Python surface of kgenv's verbs: every verb of the core's list (``runner::VERBS``,
which the CLI's and Rust's parity tests walk too) exists here, and each new one works on
the mock world as its CLI twin does."""

from __future__ import annotations

import asyncio
import inspect
import json

import pytest

import kgenv
from conftest import gce_env, recorded
from kgenv import _kgenv, events
from kgenv.testing import MockWorld


def _resolve(dotted: str) -> object:
    obj: object = kgenv
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def test_every_core_verb_has_a_python_name() -> None:
    verbs = _kgenv.verbs()
    assert len(verbs) >= 15
    for verb, cli, python, rust in verbs:
        fn = _resolve(python)
        assert callable(fn), f"{verb} ({cli}) → kgenv.{python} is not callable"
        assert inspect.getdoc(fn), f"kgenv.{python} has no docstring"
        if python.startswith("Env."):
            twin = _resolve(python + "_async")
            assert inspect.iscoroutinefunction(twin), f"kgenv.{python}_async is not a coroutine function"


def test_stop_keeps_the_vm_and_start_brings_it_back(env: kgenv.Env, world: MockWorld) -> None:
    env.up(progress=False)
    status = lambda: next(iter(world.state()["instances"].values()))["status"]  # noqa: E731
    stopped = env.stop(progress=False)
    assert stopped.operation == "stop" and stopped["instance"].outcome == "changed"
    assert status() == "TERMINATED"
    assert "stopped, disks kept" in str(stopped)
    assert env.stop(progress=False)["instance"].outcome == "nothing"
    started = env.start(progress=False)
    assert started["instance"].outcome == "changed" and status() == "RUNNING"
    assert "host" in started.satisfied or "host" in started.changed


def test_stop_needs_a_vm(world: MockWorld) -> None:
    env = kgenv.Env("kg", target="local", image=kgenv.Image(), container=kgenv.Container(), backends=world)
    with pytest.raises(kgenv.UsageError, match="needs a GCE instance"):
        env.stop()


def test_exec_runs_in_the_container(env: kgenv.Env, world: MockWorld) -> None:
    env.up(progress=False)
    seen: list[kgenv.Event] = []
    r = env.exec(["echo", "hi there"], on_event=seen.append)
    assert r.ok and r.text == "hi there\n"
    assert [e.line for e in seen if isinstance(e, events.LogEvent) and e.step == "exec"] == ["hi there"]
    with pytest.raises(kgenv.CommandFailedError) as e:
        env.exec(["false"])
    assert e.value.step == "exec" and e.value.exit_code == 1
    assert env.exec(["false"], check=False).exit_code == 1
    assert world.calls("engine.exec")[-1].target.endswith(": false")


def test_logs_and_gpu_report(env: kgenv.Env, world: MockWorld) -> None:
    env.up(progress=False)
    assert isinstance(env.logs(tail=10), str)
    report = env.gpu()
    assert report.usable and report.gpus[0].name == "Tesla T4"
    assert "GPU: Tesla T4" in str(report)
    world.set_host_gpus(0)
    assert not env.gpu().usable and env.gpu().problem


def test_autostop_in_place(world: MockWorld) -> None:
    env = gce_env(world, autostop=kgenv.Autostop(idle_minutes=60))
    env.up(progress=False)
    facts = lambda: json.loads(env.state_file.read_text())["steps"].get("autostop", {}).get("facts", {})  # noqa: E731
    assert facts()["idle_minutes"] == "60"
    env.autostop(15)
    assert facts()["idle_minutes"] == "15"
    env.autostop(None)
    assert "idle_minutes" not in facts()
    with pytest.raises(kgenv.ValidationError, match="idle_minutes"):
        env.autostop(2)
    with pytest.raises(TypeError):
        env.autostop("soon")  # type: ignore[arg-type]


def test_down_deletes_only_the_named_bucket(env: kgenv.Env, world: MockWorld) -> None:
    env.up(progress=False)
    with pytest.raises(kgenv.UsageError, match="not this environment's bucket"):
        env.down(yes=True, delete_buckets=["someone-elses"], progress=False)
    assert world.state()["buckets"], "nothing deleted on a usage error"
    env.down(yes=True, delete_buckets=["gs://my-project-data"], progress=False)
    assert world.state()["buckets"] == {}


def test_down_without_yes_raises_with_the_preview_and_changes_nothing(env: kgenv.Env, world: MockWorld) -> None:
    env.up(progress=False)
    before, state_before = world.state(), env.state_file.read_bytes()
    preview = env.down_preview()
    assert isinstance(preview, kgenv.DownPreview)
    assert any(d.startswith("instance projects/my-project/") for d in preview.deletes), str(preview)
    assert any(k.startswith("bucket gs://my-project-data") for k in preview.keeps), str(preview)
    assert not any(d.startswith("bucket gs://") for d in preview.deletes), "the bucket is kept"
    assert [s.step for s in preview.steps].index("container") < [s.step for s in preview.steps].index("instance"), "down's order"
    assert "keeps:" in str(preview) and len(preview) == len(preview.deletes)
    assert env.state_file.read_bytes() == state_before, "the preview is read-only"

    with pytest.raises(kgenv.ConfirmationRequiredError) as e:
        env.down(progress=False)
    err = e.value
    assert isinstance(err, kgenv.UsageError), "the exit-2 family, as the CLI's"
    assert err.kind == "not_confirmed" and err.operation == "down"
    assert err.changes == preview.deletes and err.keeps == preview.keeps
    assert "yes=True" in str(err)
    assert world.state() == before and env.state_file.read_bytes() == state_before, "nothing changed"

    with pytest.raises(kgenv.UsageError, match="disk `someone-elses`"):
        env.down(yes=True, delete_disks=["someone-elses"], progress=False)
    assert world.state() == before

    with pytest.raises(kgenv.ConfirmationRequiredError):
        asyncio.run(env.down_async(progress=False))
    assert asyncio.run(env.down_preview_async()) == preview

    report = env.down(yes=True, progress=False)
    assert "instance" in report.changed
    assert not world.state()["instances"] and world.state()["buckets"], "removed; bucket kept"
    assert not env.down_preview().deletes
    env.down(progress=False)  # nothing left to delete: nothing to confirm


def test_planned_disruption_is_a_field_of_the_planned_event() -> None:
    ev = events.from_dict(
        {
            "event": "planned",
            "step": "instance",
            "text": "~ instance: …",
            "summary": "the VM",
            "change": "update",
            "diff": ["machine_type: n1-standard-8 → n1-standard-16"],
            "actions": ["POST setMachineType"],
            "disruption": "stops and restarts the VM",
        }
    )
    assert isinstance(ev, events.PlannedEvent) and ev.disruption == "stops and restarts the VM"
    step = kgenv.PlannedStep(ev.step, ev.summary, ev.change, ev.diff, ev.actions, ev.disruption)
    assert str(step).splitlines()[0].endswith("(update; stops and restarts the VM)")


def test_up_and_down_take_yes(env: kgenv.Env) -> None:
    for fn in (env.up, env.up_async, env.down, env.down_async):
        params = inspect.signature(fn).parameters
        assert params["yes"].default is False and params["yes"].kind is inspect.Parameter.KEYWORD_ONLY, fn
    assert "delete_disks" in inspect.signature(env.down).parameters
    with pytest.raises(TypeError, match="yes must be True or False"):
        env.down(yes="yes", progress=False)  # type: ignore[arg-type]


def test_data_list(world: MockWorld) -> None:
    files = kgenv.data.list_files("titanic", backends=world)
    assert {f.name for f in files} >= {"train.csv", "test.csv"}
    assert all(isinstance(f.size, int) and f.size > 0 for f in files)
    with pytest.raises(kgenv.NotFoundError):
        kgenv.data.list_files("no-such-competition", backends=world)


def test_async_twins(env: kgenv.Env) -> None:
    async def go() -> tuple[kgenv.CommandResult, kgenv.GpuReport, bool, kgenv.Report]:
        await env.up_async(progress=False)
        r = await env.exec_async(["echo", "async"])
        g = await env.gpu_async()
        with await env.jupyter_async() as t:
            tunnelled = t.tunnelled and t.port > 0
        return r, g, tunnelled, await env.stop_async(progress=False)

    r, g, tunnelled, s = asyncio.run(go())
    assert r.text == "async\n" and g.usable and tunnelled and s.operation == "stop"


def test_move_asks_first_then_moves_the_data_disk_and_the_vm(env: kgenv.Env, world: MockWorld) -> None:
    env.up(progress=False)
    before = json.dumps(world.state(), sort_keys=True)
    with pytest.raises(kgenv.ConfirmationRequiredError) as e:
        env.move("us-central1-c")
    assert e.value.operation == "move"
    assert any("snapshot" in c for c in e.value.changes), e.value.changes
    assert json.dumps(world.state(), sort_keys=True) == before, "nothing changed without yes=True"
    with pytest.raises(kgenv.UsageError, match="is not a zone"):
        env.move("nowhere", yes=True)
    with pytest.raises(kgenv.UsageError, match="already in"):
        env.move("us-central1-a", yes=True)
    report = env.move("us-central1-c", yes=True, progress=False)
    assert report.operation == "move"
    w = world.state()
    assert len(w["instances"]) == 1 and all("/us-central1-c/" in k for k in w["instances"]), w["instances"]
    assert any(k.endswith("-data") for k in w["disks"]) and all("/us-central1-c/" in k for k in w["disks"]), w["disks"]
    assert w["snapshots"] == {}
    assert "move" not in recorded(env)


def test_move_async_is_the_same_move(env: kgenv.Env, world: MockWorld) -> None:
    env.up(progress=False)
    report = asyncio.run(env.move_async("us-central1-b", yes=True, progress=False))
    assert report.operation == "move"
    assert all("/us-central1-b/" in k for k in world.state()["instances"])
