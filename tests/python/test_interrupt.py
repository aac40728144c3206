"""Ctrl-C during a long `up`: the run is cancelled, steps that were running finish, the
state file matches the world, and the lock is released.

The host step's `remote.connect` is held at its start (`MockWorld.hold_next`), so Ctrl-C
always comes while that step is running, and the step is let go only once the run has
seen the interrupt (`Run.cancelled`): no outcome depends on how fast the machine is."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import textwrap
from pathlib import Path
from typing import IO, Iterator

import pytest

from kgenv import _kgenv
from conftest import GUARD, REPO, assert_consistent, gce_env, held, recorded, wait_until
from kgenv.testing import MockWorld


@pytest.fixture(autouse=True)
def ctrl_c_raises() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt in these tests even when pytest was started with SIGINT
    ignored (a background job of a non-interactive shell starts so, and so may a CI runner):
    they are about what a user at a terminal or in a notebook gets."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def test_sigint_cancels_a_long_up_cleanly(world: MockWorld, runs: list[_kgenv.Run]) -> None:
    env = gce_env(world)
    problems: list[str] = []
    # Events reach on_event only from inside the blocking wait: once one has, Ctrl-C lands
    # in that wait (or in on_event, which counts the same), not before it began.
    waiting = threading.Event()

    with held(world, "remote.connect") as (connect,):

        def press_ctrl_c() -> None:
            try:
                if not (connect.wait_started(GUARD) and waiting.wait(GUARD)):
                    problems.append("the host step never connected, or no event was delivered")
                    return
                os.kill(os.getpid(), signal.SIGINT)
                wait_until(lambda: runs and runs[0].cancelled, "the run sees Ctrl-C")
            except BaseException as e:  # reported by the test below, not lost in the thread
                problems.append(repr(e))
            finally:
                connect.release()

        t = threading.Thread(target=press_ctrl_c)
        t.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                env.up(on_event=lambda _: waiting.set(), progress=False)
        finally:
            t.join()
    assert not problems, problems
    # The host step that was running finished; nothing after it started.
    assert world.calls("remote.connect"), "the running step was allowed to finish"
    assert not world.state()["containers"] and not world.state()["images"]
    assert "instance" in recorded(env)
    assert_consistent(env, world)
    # The lock is free and the next run picks up where this one stopped.
    report = env.up(progress=False)
    assert "instance" in report.satisfied and "container" in report.changed
    env.down(yes=True, progress=False)
    assert not world.state()["instances"]
    assert_consistent(env, world)


# The child holds the host step's connect, says when it is in flight ("connect-started")
# and when the run has seen Ctrl-C ("cancelled"); with `release`, it then lets the step
# finish. Its last line is the outcome.
CHILD = textwrap.dedent(
    """
    import json, signal, sys, threading
    # The child inherits an ignored SIGINT from a parent started that way: a terminal's
    # Python raises KeyboardInterrupt, which is what this child stands for.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.path.insert(0, {tests!r})
    import kgenv
    from kgenv import _kgenv
    from kgenv.testing import MockWorld
    from conftest import GUARD, gce_env, wait_until

    world = MockWorld({world!r})
    env = gce_env(world)
    connect = world.hold_next("remote.connect")
    runs = []
    real_start = _kgenv.start_run

    def start_run(*args, **kwargs):
        runs.append(real_start(*args, **kwargs))
        return runs[-1]

    _kgenv.start_run = start_run

    waiting = threading.Event()  # set by on_event, which runs only inside the blocking wait

    def report():
        if not (connect.wait_started(GUARD) and waiting.wait(GUARD)):
            print("connect-never-started", flush=True)
            return
        print("connect-started", flush=True)
        wait_until(lambda: runs and runs[0].cancelled, "the run sees Ctrl-C")
        print("cancelled", flush=True)
        if {release}:
            connect.release()

    threading.Thread(target=report, daemon=True).start()
    try:
        env.up(on_event=lambda _: waiting.set(), progress=False)
        print(json.dumps({{"outcome": "finished"}}), flush=True)
    except KeyboardInterrupt:
        connects = [c for c in world.calls() if c.op == "remote.connect"]
        print(json.dumps({{"outcome": "interrupted", "connect_finished": bool(connects), "state_file": str(env.state_file)}}), flush=True)
    """
)


def expect_line(child: subprocess.Popen[str], err: Path, want: str) -> None:
    out: IO[str] | None = child.stdout
    assert out is not None
    line = out.readline()
    if line.strip() != want:
        child.kill()
        child.wait(timeout=GUARD)
        pytest.fail(f"expected {want!r} from the child, got {line!r}; its stderr:\n{err.read_text()}")


def run_child(tmp_path: Path, presses: int) -> dict[str, object]:
    """Runs `up` in a child process and presses Ctrl-C there `presses` times, each once the
    child's run is known to be in the state the press is meant for."""
    world_path = tmp_path / "world.json"
    code = CHILD.format(tests=str(REPO / "tests" / "python"), world=str(world_path), release=presses == 1)
    err = tmp_path / "child.stderr"
    # stdout is read line by line through one reader to the end (communicate() would skip
    # what that reader already buffered); stderr goes to a file.
    with err.open("w") as err_file:
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=err_file, text=True, env=os.environ.copy())
    assert child.stdout is not None
    # A child that hangs (a bug) is killed after GUARD, so the reads below end.
    watchdog = threading.Timer(GUARD, child.kill)
    watchdog.daemon = True
    watchdog.start()
    expect_line(child, err, "connect-started")
    child.send_signal(signal.SIGINT)
    expect_line(child, err, "cancelled")
    if presses > 1:
        # The first press has been handled (the run is cancelled, the step still held):
        # this one can only mean "stop waiting".
        child.send_signal(signal.SIGINT)
    out = child.stdout.read()
    child.wait(timeout=GUARD)
    watchdog.cancel()
    assert child.returncode == 0, err.read_text()
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    result["world"] = world_path
    return result


def test_real_sigint_from_outside_the_process(tmp_path: Path) -> None:
    result = run_child(tmp_path, presses=1)
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
    # The host step stays held: only the second Ctrl-C can end the wait.
    result = run_child(tmp_path, presses=2)
    assert result["outcome"] == "interrupted"
    assert result["connect_finished"] is False, "returned without waiting for the running step"
