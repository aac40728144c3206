"""Shared fixtures: every test runs with a throwaway KGENV_HOME (keys, tokens, state) and
without gcloud's environment, on a fresh mock world."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

import kgenv
from kgenv import _kgenv
from kgenv.testing import Hold, MockWorld

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_TOML = REPO / "examples" / "kgenv.toml"

GUARD = 60.0
"""Bounds every wait on an event so a bug fails the test instead of hanging it; a correct
run never comes near it (this is not a timing assertion)."""


@pytest.fixture(autouse=True)
def kgenv_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "kgenv-home"
    monkeypatch.setenv("KGENV_HOME", str(home))
    monkeypatch.setenv("KGENV_JUPYTER_PASSWORD", "correct horse battery staple")
    for var in ("CLOUDSDK_CORE_PROJECT", "CLOUDSDK_COMPUTE_ZONE", "NO_COLOR"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def world() -> MockWorld:
    return MockWorld()


def gce_env(world: MockWorld, name: str = "kg", **overrides: Any) -> kgenv.Env:
    """A gce environment with every step but the slow password hashing (token auth)."""
    parts: dict[str, Any] = dict(
        instance=kgenv.Instance(project="my-project", zones=["us-central1-a", "us-central1-b"]),
        bucket=kgenv.BucketMount("my-project-data"),
        image=kgenv.Image(apt=["cmake"]),
        container=kgenv.Container(),
        jupyter=kgenv.Jupyter(auth="token"),
        data=[kgenv.Data("titanic", files=["*.csv"])],
    )
    parts.update(overrides)
    return kgenv.Env(name, backends=world, **parts)


@pytest.fixture
def env(world: MockWorld) -> Iterator[kgenv.Env]:
    e = gce_env(world)
    yield e
    e.close()


def recorded(env: kgenv.Env) -> dict[str, dict[str, str]]:
    """What the state file says kgenv created, by step."""
    if not env.state_file.exists():
        return {}
    steps = json.loads(env.state_file.read_text())["steps"]
    return {k: v.get("created", {}) for k, v in steps.items() if v.get("created")}


def assert_consistent(env: kgenv.Env, world: MockWorld) -> None:
    """Everything the world holds that kgenv makes is in the state file, and everything the
    state file records exists in the world: `down` can clean up after any stop."""
    created = recorded(env)
    s = world.state()
    instances = {k.split("/")[-1] for k in s["instances"]}
    recorded_instances = {v.split("/")[-1] for v in created.get("instance", {}).values()}
    assert instances == recorded_instances, (s["instances"].keys(), created)
    firewalls = {k.split("/")[-1] for k in s["firewalls"]}
    recorded_firewalls = {v.split("/")[-1] for step, roles in created.items() if step.startswith("firewall/") for v in roles.values()}
    assert firewalls == recorded_firewalls, (s["firewalls"].keys(), created)
    containers = set(s["containers"])
    recorded_containers = set(created.get("container", {}).values())
    assert containers == recorded_containers, (containers, created)


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[_kgenv.Run]:
    """The runs `up`/`down`/`plan` start, in order: a test can see when one is cancelled."""
    started: list[_kgenv.Run] = []
    real = _kgenv.start_run

    def start_run(*args: Any, **kwargs: Any) -> _kgenv.Run:
        run = real(*args, **kwargs)
        started.append(run)
        return run

    monkeypatch.setattr(_kgenv, "start_run", start_run)
    return started


def wait_until(condition: Callable[[], object], what: str) -> None:
    """Polls `condition` until it holds; failing after GUARD seconds, naming `what`."""
    deadline = time.monotonic() + GUARD
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {GUARD}s"
        time.sleep(0.01)


@contextlib.contextmanager
def held(world: MockWorld, *ops: str) -> Iterator[list[Hold]]:
    """Holds the next call of each of `ops` at its start (see `MockWorld.hold_next`) and
    releases them all on exit; a timer releases them after GUARD too, so a bug that never
    reaches the release cannot hang the test run."""
    holds = [world.hold_next(op) for op in ops]

    def release() -> None:
        for h in holds:
            h.release()

    timer = threading.Timer(GUARD, release)
    timer.daemon = True
    timer.start()
    try:
        yield holds
    finally:
        timer.cancel()
        release()
