"""Ctrl-C during a long `up`: the run is cancelled, steps that were running finish, the
state file matches the world, and the lock is released."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import textwrap
from pathlib import Path

import pytest

import kgenv
from conftest import REPO, assert_consistent, gce_env, recorded
from kgenv import events
from kgenv.testing import MockWorld


def test_sigint_cancels_a_long_up_cleanly(world: MockWorld) -> None:
    world.set_latency("*", 0.02)
    world.set_latency("remote.connect", 1.0)  # the host step is running when Ctrl-C comes
    env = gce_env(world)
    instance_done = threading.Event()

    def on_event(ev: kgenv.Event) -> None:
        if isinstance(ev, events.DoneEvent) and ev.step == "instance":
            instance_done.set()

    def press_ctrl_c() -> None:
        instance_done.wait()
        os.kill(os.getpid(), signal.SIGINT)

    t = threading.Thread(target=press_ctrl_c)
    t.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            env.up(on_event=on_event)
    finally:
        t.join()
    # The host step that was running finished; nothing after it started.
    assert world.calls("remote.connect"), "the running step was allowed to finish"
    assert not world.state()["containers"] and not world.state()["images"]
    assert "instance" in recorded(env)
    assert_consistent(env, world)
    # The lock is free and the next run picks up where this one stopped.
    world.set_latency("*", 0)
    report = env.up(progress=False)
    assert "instance" in report.satisfied and "container" in report.changed
    env.down(yes=True, progress=False)
    assert not world.state()["instances"]
    assert_consistent(env, world)


CHILD = textwrap.dedent(
    """
    import json, sys, time
    sys.path.insert(0, {tests!r})
    import kgenv
    from kgenv import events
    from kgenv.testing import MockWorld
    from conftest import gce_env

    world = MockWorld({world!r})
    world.set_latency("*", 0.02)
    world.set_latency("remote.connect", {connect_latency})
    env = gce_env(world)

    def on_event(ev):
        if isinstance(ev, events.DoneEvent) and ev.step == "instance":
            print("instance-done", flush=True)

    try:
        env.up(on_event=on_event)
        print(json.dumps({{"outcome": "finished"}}), flush=True)
    except KeyboardInterrupt:
        connects = [c for c in world.calls() if c.op == "remote.connect"]
        print(json.dumps({{"outcome": "interrupted", "connect_finished": bool(connects), "state_file": str(env.state_file)}}), flush=True)
    """
)


def run_child(tmp_path: Path, connect_latency: float, presses: int) -> dict[str, object]:
    world_path = tmp_path / "world.json"
    code = CHILD.format(tests=str(REPO / "tests" / "python"), world=str(world_path), connect_latency=connect_latency)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.strip() == "instance-done", (line, child.stderr.read() if child.stderr else "")
    for _ in range(presses):
        child.send_signal(signal.SIGINT)
        if presses > 1:
            threading.Event().wait(0.3)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    result["world"] = world_path
    return result


def test_real_sigint_from_outside_the_process(tmp_path: Path) -> None:
    result = run_child(tmp_path, connect_latency=0.5, presses=1)
    assert result["outcome"] == "interrupted"
    assert result["connect_finished"] is True, "Ctrl-C waited for the running step"
    world = MockWorld(result["world"])  # type: ignore[arg-type]
    env = gce_env(world)
    assert str(env.state_file) == result["state_file"]
    assert world.state()["instances"] and not world.state()["containers"]
    assert_consistent(env, world)
    env.down(yes=True, progress=False)
    assert not world.state()["instances"]


def test_second_ctrl_c_stops_waiting(tmp_path: Path) -> None:
    # The host step sleeps 5 s; the second Ctrl-C returns before it ends.
    result = run_child(tmp_path, connect_latency=5.0, presses=2)
    assert result["outcome"] == "interrupted"
    assert result["connect_finished"] is False, "returned without waiting for the running step"
