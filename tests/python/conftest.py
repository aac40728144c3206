"""Shared fixtures: every test runs with a throwaway KGENV_HOME (keys, tokens, state) and
without gcloud's environment, on a fresh mock world."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest

import kgenv
from kgenv.testing import MockWorld

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_TOML = REPO / "examples" / "kgenv.toml"


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
