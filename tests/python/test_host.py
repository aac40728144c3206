"""On the host once it is up: commands over SSH, the GPUs, the Jupyter tunnel."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

import kgenv
from conftest import gce_env
from kgenv import events
from kgenv.testing import MockWorld


def test_ssh_quotes_list_commands_and_streams_output(env: kgenv.Env, world: MockWorld) -> None:
    env.up(progress=False)
    world.clear_calls()
    result = env.ssh(["echo", "it's $HOME; rm -rf /"])
    assert result.ok and result.exit_code == 0
    (call,) = world.calls("remote.exec")
    assert call.target == "echo 'it'\\''s $HOME; rm -rf /'", "each word quoted by kgenv's shell helper"
    env.ssh("uptime && nvidia-smi")
    assert world.calls("remote.exec")[-1].target == "uptime && nvidia-smi", "a string is the user's own shell line"


def test_ssh_failure_raises_unless_unchecked(env: kgenv.Env) -> None:
    env.up(progress=False)
    # The mock host answers `check` of an unknown kgenv script with exit 1.
    script = b"# kgenv-script: never-applied\n"
    with pytest.raises(kgenv.CommandFailedError) as e:
        env.ssh("sh -s -- check", stdin=script)
    assert e.value.exit_code == 1 and e.value.step == "ssh"
    result = env.ssh("sh -s -- check", stdin=script, check=False)
    assert result.exit_code == 1 and not result.ok


def test_ssh_before_up_says_the_host_does_not_exist(env: kgenv.Env) -> None:
    with pytest.raises(kgenv.ConnectionFailedError, match="does not exist yet"):
        env.ssh("true")


def test_ssh_on_the_local_target_is_unavailable(world: MockWorld) -> None:
    env = kgenv.Env("kg", target="local", image=kgenv.Image(), container=kgenv.Container(), backends=world)
    with pytest.raises(kgenv.UnavailableError, match="local target has no SSH host"):
        env.ssh("true")


def test_gpus(env: kgenv.Env, world: MockWorld) -> None:
    env.up(progress=False)
    assert env.gpus() == ["Tesla T4, 580.65.06, 15360 MiB"]
    world.set_host_gpus(2)
    assert len(env.gpus()) == 2
    world.set_host_gpus(0)
    with pytest.raises(kgenv.CommandFailedError) as e:
        env.gpus()
    assert e.value.exit_code == 127


def test_gpu_step_logs_what_it_sees(env: kgenv.Env) -> None:
    seen: list[kgenv.Event] = []
    env.up(on_event=seen.append)
    assert any(isinstance(e, events.LogEvent) and e.step == "gpu" and "Tesla T4" in e.line for e in seen)


def _echo_through(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /api HTTP/1.1\r\n\r\n")
        return s.recv(1024)


def test_jupyter_tunnel_forwards_through_the_host_session(env: kgenv.Env, world: MockWorld, kgenv_home: Path) -> None:
    env.up(progress=False)
    url = env.jupyter_url()
    token = (kgenv_home / "config" / "keys" / "kg" / "jupyter-token").read_text().strip()
    assert url.startswith("https://127.0.0.1:") and url.endswith(f"/?token={token}")
    assert env.jupyter_url() == url, "one tunnel per Env"
    port = int(url.split(":")[2].split("/")[0])
    # The mock host's TCP forward echoes: bytes went through the SSH session and back.
    assert _echo_through(port) == b"GET /api HTTP/1.1\r\n\r\n"
    (call,) = world.calls("remote.open_tcp")
    assert call.target == "127.0.0.1:8888", "to Jupyter's port on the host's loopback"
    env.close()
    # The listener closes on the runtime's thread, a moment after close() returns.
    deadline = time.monotonic() + 5
    while True:
        try:
            _echo_through(port)
        except OSError:
            break
        assert time.monotonic() < deadline, "the tunnel still answers after close()"
        time.sleep(0.05)


def test_jupyter_tunnel_object(env: kgenv.Env) -> None:
    env.up(progress=False)
    with env.jupyter() as t:
        assert t.tunnelled and t.is_open
        assert "token" not in repr(t), "the repr never shows the token"
        assert _echo_through(t.port)
    assert not t.is_open


def test_jupyter_on_local_target_is_the_published_port(world: MockWorld) -> None:
    env = kgenv.Env(
        "kg",
        target="local",
        image=kgenv.Image(),
        container=kgenv.Container(ports=[kgenv.Publish(8888, host=18888)]),
        jupyter=kgenv.Jupyter(tls="off"),
        backends=world,
    )
    t = env.jupyter()
    assert (t.url, t.port, t.tunnelled) == ("http://127.0.0.1:18888/", 18888, False)


def test_jupyter_needs_a_jupyter_section(world: MockWorld) -> None:
    env = gce_env(world, jupyter=None)
    with pytest.raises(kgenv.UsageError, match=r"no \[jupyter\]"):
        env.jupyter_url()
