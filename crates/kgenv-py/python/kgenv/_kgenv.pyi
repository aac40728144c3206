"""Type stubs for the compiled module ``kgenv._kgenv`` (crates/kgenv-py/src).

Kept in sync with the Rust signatures; ``tests/python/test_typing.py`` runs stubtest on
it. Use the public API in :mod:`kgenv` rather than this module.
"""

import os
from pathlib import Path
from typing import Any, Callable, Literal, Sequence, final

__all__ = [
    "EnvSpec",
    "JupyterTunnel",
    "MockHold",
    "MockWorld",
    "Run",
    "hash_password",
    "noop",
    "start_autostop",
    "start_down_preview",
    "start_download",
    "start_exec",
    "start_gpu",
    "start_jupyter",
    "start_list",
    "start_logs",
    "start_run",
    "start_ssh",
    "validate_section",
    "verbs",
    "verify_password",
    "version",
]

_Notify = Callable[[], None] | None
_StrPath = str | os.PathLike[str]

def version() -> str:
    """The version of the compiled module (the kgenv workspace version)."""

def noop() -> None:
    """Does nothing; `scripts/bench` times it to measure the cost of crossing into Rust."""

def verbs() -> list[tuple[str, str, str, str]]:
    """The core's verbs, for the parity test: `(verb, cli, python, rust)` each."""

@final
class EnvSpec:
    """A validated environment (the core's `Env`). Immutable."""

    @staticmethod
    def from_toml(
        path: _StrPath, *, target: str | None = None, ssh_host: str | None = None, project: str | None = None, zone: str | None = None
    ) -> EnvSpec: ...
    @staticmethod
    def from_toml_str(
        text: str,
        path: _StrPath,
        *,
        target: str | None = None,
        ssh_host: str | None = None,
        project: str | None = None,
        zone: str | None = None,
    ) -> EnvSpec: ...
    @staticmethod
    def from_dict(doc: dict[str, Any], *, project: str | None = None, zone: str | None = None) -> EnvSpec: ...
    @property
    def name(self) -> str: ...
    @property
    def target(self) -> str: ...
    def to_dict(self) -> dict[str, Any]: ...
    def steps(self) -> list[tuple[str, list[str], str]]: ...
    def state_path(self, state_dir: _StrPath | None = None) -> Path: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

def validate_section(section: str, doc: dict[str, Any]) -> None:
    """Validates one section given as a dictionary shaped like its TOML table."""

@final
class MockWorld:
    """A simulated world for the mock backends."""

    def __new__(cls, path: _StrPath | None = None) -> MockWorld: ...
    @property
    def state_dir(self) -> Path: ...
    @property
    def path(self) -> Path | None: ...
    def fail_next(
        self, op: str, kind: str, times: int = 1, *, metric: str | None = None, limit: float | None = None, region: str | None = None
    ) -> None: ...
    def set_latency(self, op: str, seconds: float) -> None: ...
    def hold_next(self, op: str) -> MockHold: ...
    def calls(self) -> list[tuple[str, str, bool, float, float, bool]]: ...
    def clear_calls(self) -> None: ...
    def state(self) -> dict[str, Any]: ...
    def set_state(self, state: dict[str, Any]) -> None: ...

@final
class MockHold:
    """A call held at its start by `MockWorld.hold_next`."""

    @property
    def op(self) -> str: ...
    @property
    def started(self) -> bool: ...
    def wait_started(self, timeout: float) -> bool: ...
    def release(self) -> None: ...

@final
class Run:
    """A running operation."""

    def wait(self, on_event: Callable[[dict[str, Any]], object] | None = None) -> Any: ...
    def poll(self) -> tuple[Literal["event", "ok", "error"], Any] | None: ...
    def cancel(self) -> None: ...
    @property
    def cancelled(self) -> bool: ...

@final
class JupyterTunnel:
    """A local address for the environment's Jupyter (an SSH tunnel on gce/ssh)."""

    @property
    def url(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def tunnelled(self) -> bool: ...
    @property
    def cert_sha256(self) -> str | None: ...
    @property
    def is_open(self) -> bool: ...
    def close(self) -> None: ...
    def __enter__(self) -> JupyterTunnel: ...
    def __exit__(self, *_args: object) -> None: ...

def start_run(
    spec: EnvSpec,
    operation: str,
    *,
    world: MockWorld | None = None,
    state_dir: _StrPath | None = None,
    only: Sequence[str] = ...,
    until: str | None = None,
    delete_buckets: Sequence[str] = ...,
    delete_disks: Sequence[str] = ...,
    yes: bool = False,
    zone: str | None = None,
    wait_for_capacity: bool | str | int | float | None = None,
    notify: _Notify = None,
) -> Run: ...
def start_down_preview(
    spec: EnvSpec,
    *,
    world: MockWorld | None = None,
    state_dir: _StrPath | None = None,
    only: Sequence[str] = ...,
    until: str | None = None,
    delete_buckets: Sequence[str] = ...,
    delete_disks: Sequence[str] = ...,
    notify: _Notify = None,
) -> Run: ...
def start_ssh(
    spec: EnvSpec,
    command: str | Sequence[str],
    *,
    world: MockWorld | None = None,
    state_dir: _StrPath | None = None,
    stdin: bytes | None = None,
    sudo: bool = False,
    timeout: float | None = None,
    notify: _Notify = None,
) -> Run: ...
def start_exec(
    spec: EnvSpec, command: Sequence[str], *, world: MockWorld | None = None, state_dir: _StrPath | None = None, notify: _Notify = None
) -> Run: ...
def start_logs(
    spec: EnvSpec,
    *,
    world: MockWorld | None = None,
    state_dir: _StrPath | None = None,
    follow: bool = False,
    tail: int | None = None,
    notify: _Notify = None,
) -> Run: ...
def start_gpu(spec: EnvSpec, *, world: MockWorld | None = None, state_dir: _StrPath | None = None, notify: _Notify = None) -> Run: ...
def start_autostop(
    spec: EnvSpec, minutes: int | None, *, world: MockWorld | None = None, state_dir: _StrPath | None = None, notify: _Notify = None
) -> Run: ...
def start_jupyter(
    spec: EnvSpec, *, world: MockWorld | None = None, state_dir: _StrPath | None = None, local_port: int = 0, notify: _Notify = None
) -> Run: ...
def start_download(
    competition: str,
    dest: str,
    *,
    files: Sequence[str] | None = None,
    extract: bool = False,
    world: MockWorld | None = None,
    notify: _Notify = None,
) -> Run: ...
def start_list(competition: str, *, world: MockWorld | None = None, notify: _Notify = None) -> Run: ...
def hash_password(password: str) -> str:
    """Hashes `password` in jupyter_server's argon2 format."""

def verify_password(password: str, hashed: str) -> bool:
    """Whether `password` matches `hashed`."""
