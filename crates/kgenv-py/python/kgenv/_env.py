""":class:`Env`: one environment, built from ``kgenv.toml`` or keyword arguments, and
the operations on it — ``plan``, ``up``, ``down``, ``status``, ``stop``, ``start`` and,
once it is up, ``ssh``, ``exec``, ``logs``, ``gpu``, ``jupyter`` and ``autostop`` — each
blocking or as an ``*_async`` coroutine. They are the core runner's verbs, the same as the
CLI's (``kgenv._kgenv.verbs()`` lists them)."""

from __future__ import annotations

import html
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping, Sequence, Union

from . import _kgenv
from ._errors import ValidationError
from ._results import CommandResult, DownPreview, GpuReport, Plan, Report, Status, StepInfo
from ._runner import Dispatch, OnEvent, run_async, run_sync
from ._specs import (
    Autostop,
    Budget,
    BucketMount,
    Container,
    Data,
    Firewall,
    GithubKey,
    Image,
    Instance,
    Jupyter,
    Ssh,
    _Section,
)

if TYPE_CHECKING:
    from .testing import MockWorld

__all__ = ["Env", "Backends"]

Backends = Union[Literal["real", "mock"], "MockWorld"]
"""Where an environment's calls go: ``"real"`` (GCE, SSH, Docker, Kaggle, GitHub),
``"mock"`` (a fresh in-memory :class:`kgenv.testing.MockWorld`) or a given MockWorld."""

StrPath = Union[str, "os.PathLike[str]"]
Steps = Union[str, Sequence[str], None]
# ``wait_for_capacity=``: False/None (no wait), True (until capacity or Ctrl-C), a duration
# string like "2h" or "30m", or a number of seconds.
WaitForCapacity = Union[bool, str, int, float, None]


def _steps(only: Steps) -> list[str]:
    if only is None:
        return []
    if isinstance(only, str):
        return [only]
    return list(only)


def _names(names: Sequence[str]) -> list[str]:
    # One name given as a plain string is that name, not its letters.
    return [names] if isinstance(names, str) else list(names)


def _python_field(field: str) -> str:
    # kgenv.toml's `[[firewall]]` is the `firewalls=` argument in Python.
    return re.sub(r"^firewall(?=\[|$)", "firewalls", field)


class Env:
    """One environment: where it runs, what it is made of, and the operations on it.

    Build it from a file::

        env = kgenv.Env.from_toml("kgenv.toml")

    or in code, with the same names as the file::

        env = kgenv.Env(
            "kaggle-gpu",
            instance=kgenv.Instance(project="my-project", zones=["us-central1-a"]),
            image=kgenv.Image(pip=["lightgbm"]),
            container=kgenv.Container(),
            jupyter=kgenv.Jupyter(),
            data=[kgenv.Data("titanic")],
        )

    Everything is validated before anything is sent; a bad value raises
    :class:`kgenv.ValidationError` whose ``field`` names the argument
    (``instance.gpu_count``, ``firewalls[1].ports``).

    Args:
        name: Names the VM, the container, the state file and the ``ssh <name>`` alias
            (a GCE name: lowercase letters, digits, hyphens).
        target: ``"gce"`` (kgenv creates the VM, the default), ``"ssh"`` (an existing
            host, see ``ssh``) or ``"local"`` (this machine's Docker). An :class:`Ssh`
            here means ``target="ssh", ssh=...``.
        ssh: The host for ``target="ssh"``.
        instance: The VM (``gce`` only; required there).
        firewalls: Firewall rules (``gce`` only). None: SSH from your IP only; ``[]``: none.
        bucket: A GCS bucket to mount with gcsfuse.
        github_key: A key for the host on GitHub.
        image: Kaggle's image and extras (needed by ``container``).
        container: The container.
        jupyter: Jupyter in the container.
        data: Competition data to fetch.
        autostop: Stop the VM when idle (``gce`` only).
        budget: Stop the VM after running hours or a cost (``gce`` only).
        timeouts: Limits on each step's commands on the host (kgenv.toml's ``[timeouts]``),
            by step id, family or ``"default"``: ``{"data": "2h", "default": "20m"}``. A
            command past its limit is killed and raises :class:`kgenv.CommandTimeoutError`.
        project: Project when ``instance`` leaves it out (default ``CLOUDSDK_CORE_PROJECT``).
        zone: Zone when ``instance`` leaves it out (default ``CLOUDSDK_COMPUTE_ZONE``).
        backends: ``"real"`` (default), ``"mock"`` or a :class:`kgenv.testing.MockWorld`.
        state_dir: Where the state file lives. Default: the mock world's own directory for
            mocks, else the XDG state dir (``$KGENV_HOME/state`` when set).
    """

    _spec: _kgenv.EnvSpec
    _world: MockWorld | None
    _state_dir: Path | None
    _tunnel: _kgenv.JupyterTunnel | None

    def __init__(
        self,
        name: str,
        *,
        target: Literal["gce", "ssh", "local"] | Ssh = "gce",
        ssh: Ssh | None = None,
        instance: Instance | None = None,
        firewalls: Sequence[Firewall] | None = None,
        bucket: BucketMount | None = None,
        github_key: GithubKey | None = None,
        image: Image | None = None,
        container: Container | None = None,
        jupyter: Jupyter | None = None,
        data: Sequence[Data] = (),
        autostop: Autostop | None = None,
        budget: Budget | None = None,
        timeouts: Mapping[str, str] | None = None,
        project: str | None = None,
        zone: str | None = None,
        backends: Backends = "real",
        state_dir: StrPath | None = None,
    ) -> None:
        kind: str
        if isinstance(target, Ssh):
            if ssh is not None:
                raise ValidationError("kgenv.Env: give the host either as target=Ssh(...) or as ssh=, not both", field="ssh", rule="given twice")
            kind, ssh = "ssh", target
        else:
            kind = target
        if not isinstance(name, str):
            raise TypeError(f"kgenv.Env(name={name!r}): expected str, got {type(name).__name__}")
        doc: dict[str, Any] = {"name": name, "target": kind}
        parts: list[tuple[str, _Section | None, type[_Section]]] = [
            ("ssh", ssh, Ssh),
            ("instance", instance, Instance),
            ("bucket", bucket, BucketMount),
            ("github_key", github_key, GithubKey),
            ("image", image, Image),
            ("container", container, Container),
            ("jupyter", jupyter, Jupyter),
            ("autostop", autostop, Autostop),
            ("budget", budget, Budget),
        ]
        for key, value, cls in parts:
            if value is None:
                continue
            if not isinstance(value, cls):
                raise TypeError(f"kgenv.Env({key}=...): expected kgenv.{cls.__name__}, got {type(value).__name__}")
            doc[key] = value.to_dict()
        for key, items, cls, toml_key in (("firewalls", firewalls, Firewall, "firewall"), ("data", data, Data, "data")):
            if items is None:
                continue
            if isinstance(items, _Section) or not isinstance(items, (list, tuple)):
                raise TypeError(f"kgenv.Env({key}=...): expected a list of kgenv.{cls.__name__}")
            for i, item in enumerate(items):
                if not isinstance(item, cls):
                    raise TypeError(f"kgenv.Env({key}[{i}]=...): expected kgenv.{cls.__name__}, got {type(item).__name__}")
            doc[toml_key] = [item.to_dict() for item in items]
        if timeouts is not None:
            if not isinstance(timeouts, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in timeouts.items()):
                raise TypeError('kgenv.Env(timeouts=...): expected a dict of step id to duration, like {"data": "2h"}')
            doc["timeouts"] = dict(timeouts)
        try:
            spec = _kgenv.EnvSpec.from_dict(doc, project=project, zone=zone)
        except ValidationError as e:
            field = _python_field(e.field or "")
            raise ValidationError(f"kgenv.Env: invalid `{field}`: {e.rule}", field=field, rule=e.rule) from None
        self._init(spec, backends, state_dir)

    def _init(self, spec: _kgenv.EnvSpec, backends: Backends, state_dir: StrPath | None) -> None:
        from .testing import MockWorld

        if backends == "mock":
            backends = MockWorld()
        if isinstance(backends, MockWorld):
            self._world = backends
        elif backends == "real":
            self._world = None
        else:
            raise TypeError(f"backends={backends!r}: use \"real\", \"mock\" or a kgenv.testing.MockWorld")
        self._spec = spec
        self._state_dir = Path(state_dir) if state_dir is not None else None
        self._tunnel = None

    @classmethod
    def from_toml(
        cls,
        path: StrPath = "kgenv.toml",
        *,
        target: Literal["gce", "ssh", "local"] | None = None,
        ssh_host: str | None = None,
        project: str | None = None,
        zone: str | None = None,
        backends: Backends = "real",
        state_dir: StrPath | None = None,
    ) -> Env:
        """Reads and validates a ``kgenv.toml``.

        Errors raise :class:`kgenv.ConfigError` with ``path``, ``line``, ``column`` and
        ``field``. ``target`` and ``ssh_host`` override the file as the CLI's
        ``--target``/``--host`` do (sections that do not apply are ignored); ``project`` and
        ``zone`` fill in what the file leaves out (default: gcloud's environment variables).
        """
        spec = _kgenv.EnvSpec.from_toml(os.fspath(path), target=target, ssh_host=ssh_host, project=project, zone=zone)
        env = cls.__new__(cls)
        env._init(spec, backends, state_dir)
        return env

    @classmethod
    def from_toml_str(
        cls,
        text: str,
        *,
        path: StrPath = "kgenv.toml",
        target: Literal["gce", "ssh", "local"] | None = None,
        ssh_host: str | None = None,
        project: str | None = None,
        zone: str | None = None,
        backends: Backends = "real",
        state_dir: StrPath | None = None,
    ) -> Env:
        """Like :meth:`from_toml` for TOML text; ``path`` is only used in error messages."""
        spec = _kgenv.EnvSpec.from_toml_str(text, os.fspath(path), target=target, ssh_host=ssh_host, project=project, zone=zone)
        env = cls.__new__(cls)
        env._init(spec, backends, state_dir)
        return env

    # -- what it is ---------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The environment's name."""
        return self._spec.name

    @property
    def target(self) -> str:
        """``gce``, ``ssh`` or ``local``."""
        return self._spec.target

    @property
    def spec(self) -> dict[str, Any]:
        """The validated spec with every default filled in, as plain data."""
        return self._spec.to_dict()

    @property
    def steps(self) -> tuple[StepInfo, ...]:
        """The steps ``up`` runs, in declared order, with their dependencies."""
        return tuple(StepInfo(i, tuple(d), s) for i, d, s in self._spec.steps())

    @property
    def world(self) -> MockWorld | None:
        """The mock world the environment runs on, or None for the real backends."""
        return self._world

    @property
    def backends(self) -> Literal["real", "mock"]:
        """``"mock"`` or ``"real"``."""
        return "real" if self._world is None else "mock"

    @property
    def state_dir(self) -> Path:
        """The directory of the state file."""
        return self.state_file.parent

    @property
    def state_file(self) -> Path:
        """The state file (it exists only while kgenv has created something)."""
        return Path(self._spec.state_path(self._dir()))

    def _dir(self) -> str | None:
        if self._state_dir is not None:
            return str(self._state_dir)
        if self._world is not None:
            return str(self._world.state_dir)
        return None

    def _kw(self) -> dict[str, Any]:
        return {"world": None if self._world is None else self._world._world, "state_dir": self._dir()}

    def _order(self) -> list[str]:
        return [s.id for s in self.steps]

    # -- operations -----------------------------------------------------------------------

    def _start(
        self,
        operation: str,
        only: Steps = None,
        until: str | None = None,
        delete_buckets: Sequence[str] = (),
        delete_disks: Sequence[str] = (),
        yes: bool = False,
        wait_for_capacity: WaitForCapacity = None,
    ) -> Any:
        spec, kw = self._spec, self._kw()
        steps = _steps(only)
        buckets, disks = _names(delete_buckets), _names(delete_disks)
        if not isinstance(yes, bool):
            raise TypeError(f"yes must be True or False, got {type(yes).__name__}")
        if wait_for_capacity is not None and not isinstance(wait_for_capacity, (bool, str, int, float)):
            raise TypeError(
                f'wait_for_capacity must be True, a duration like "2h" or a number of seconds, got {type(wait_for_capacity).__name__}'
            )
        return lambda notify: _kgenv.start_run(
            spec,
            operation,
            only=steps,
            until=until,
            delete_buckets=buckets,
            delete_disks=disks,
            yes=yes,
            wait_for_capacity=wait_for_capacity,
            notify=notify,
            **kw,
        )

    def _preview_start(self, only: Steps, delete_buckets: Sequence[str], delete_disks: Sequence[str]) -> Any:
        spec, kw = self._spec, self._kw()
        steps, buckets, disks = _steps(only), _names(delete_buckets), _names(delete_disks)
        return lambda notify: _kgenv.start_down_preview(spec, only=steps, delete_buckets=buckets, delete_disks=disks, notify=notify, **kw)

    def plan(self, *, only: Steps = None, until: str | None = None, on_event: OnEvent | None = None, progress: bool | None = False) -> Plan:
        """What ``up`` would change and the calls it would make. Changes nothing.

        Args:
            only: Only these steps (an id, or a prefix such as ``"firewall"``).
            until: This step and everything it depends on.
            on_event: Called with each :class:`kgenv.Event` as it happens.
            progress: Show progress (default off: the plan itself is the display).
        """
        d = Dispatch("plan", self.name, on_event, progress)
        return Plan._build(run_sync(self._start("plan", only, until), d), d.events, self._order())

    def up(
        self,
        *,
        only: Steps = None,
        until: str | None = None,
        yes: bool = False,
        wait_for_capacity: WaitForCapacity = None,
        on_event: OnEvent | None = None,
        progress: bool | None = None,
    ) -> Report:
        """Brings the environment to its spec: each step checks, and changes only what
        differs. A second ``up`` changes nothing.

        A change that stops and restarts the VM (a new machine type, GPU, scopes, a bigger
        disk; :meth:`plan` marks it) is applied only with ``yes=True``: without it that
        step raises :class:`kgenv.ConfirmationRequiredError` naming the change, and is not
        applied.

        Blocks with the GIL released. Ctrl-C (KeyboardInterrupt) cancels cleanly: steps
        already running finish, nothing new starts, the state file stays consistent, then
        KeyboardInterrupt is raised. Pressing it again stops waiting at once.

        Args:
            only: Only these steps (an id, or a prefix such as ``"firewall"``).
            until: This step and everything it depends on.
            yes: Apply changes that stop and restart the VM (the CLI's ``--yes``).
            wait_for_capacity: When every zone (and GPU choice) is out of capacity, try
                them all again in rounds with growing pauses (30 s to 10 min, with
                jitter), each round an event: ``True`` until capacity or Ctrl-C, a
                duration like ``"2h"``, or seconds (the CLI's ``--wait-for-capacity``).
                Quota and bad input are not waited on.
            on_event: Called with each :class:`kgenv.Event` on this thread; raising from it
                cancels the run, then re-raises.
            progress: Show progress (default: when ``on_event`` is not given) — a live
                table in Jupyter, lines on stderr elsewhere.
        """
        d = Dispatch("up", self.name, on_event, progress)
        return Report._build(
            run_sync(self._start("up", only, until, yes=yes, wait_for_capacity=wait_for_capacity), d), d.events, self._order()
        )

    def down(
        self,
        *,
        yes: bool = False,
        only: Steps = None,
        delete_buckets: Sequence[str] = (),
        delete_disks: Sequence[str] = (),
        on_event: OnEvent | None = None,
        progress: bool | None = None,
    ) -> Report:
        """Removes what kgenv created for this environment, dependents first, once
        confirmed with ``yes=True``.

        Without ``yes=True`` nothing is changed: it raises
        :class:`kgenv.ConfirmationRequiredError` whose ``changes`` and ``keeps`` list what
        it would delete and keep (as ``kgenv down`` does without a terminal and without
        ``--yes``). :meth:`down_preview` shows the same list without raising. With nothing
        left to delete it returns without needing ``yes``.

        Buckets and data disks are kept; ``delete_buckets`` and ``delete_disks`` name ones
        to delete too (only the environment's own, as ``kgenv down --delete-bucket`` /
        ``--delete-disk``; another name raises :class:`kgenv.UsageError` before anything
        changes). Cancels like :meth:`up`.
        """
        d = Dispatch("down", self.name, on_event, progress)
        return Report._build(
            run_sync(self._start("down", only, delete_buckets=delete_buckets, delete_disks=delete_disks, yes=yes), d), d.events, self._order()
        )

    def down_preview(self, *, only: Steps = None, delete_buckets: Sequence[str] = (), delete_disks: Sequence[str] = ()) -> DownPreview:
        """What :meth:`down` with the same arguments would delete and keep, step by step in
        the order ``down`` goes. Reads the state file only: no call, no change."""
        d = Dispatch("down", self.name, None, False)
        return DownPreview._build(run_sync(self._preview_start(only, delete_buckets, delete_disks), d))

    async def down_preview_async(self, *, only: Steps = None, delete_buckets: Sequence[str] = (), delete_disks: Sequence[str] = ()) -> DownPreview:
        """:meth:`down_preview` as a coroutine."""
        d = Dispatch("down", self.name, None, False)
        return DownPreview._build(await run_async(self._preview_start(only, delete_buckets, delete_disks), d))

    def status(self, *, on_event: OnEvent | None = None, progress: bool | None = False) -> Status:
        """What kgenv recorded, and a live check of each step."""
        d = Dispatch("status", self.name, on_event, progress)
        return Status._build(run_sync(self._start("status"), d), d.events, self._order())

    async def plan_async(self, *, only: Steps = None, until: str | None = None, on_event: OnEvent | None = None, progress: bool | None = False) -> Plan:
        """:meth:`plan` as a coroutine for a running event loop (Jupyter's included)."""
        d = Dispatch("plan", self.name, on_event, progress)
        return Plan._build(await run_async(self._start("plan", only, until), d), d.events, self._order())

    async def up_async(
        self,
        *,
        only: Steps = None,
        until: str | None = None,
        yes: bool = False,
        wait_for_capacity: WaitForCapacity = None,
        on_event: OnEvent | None = None,
        progress: bool | None = None,
    ) -> Report:
        """:meth:`up` as a coroutine. ``on_event`` runs on the loop's thread; cancelling
        the task cancels the run cleanly (a capacity wait too), then raises
        :class:`asyncio.CancelledError`."""
        d = Dispatch("up", self.name, on_event, progress)
        return Report._build(
            await run_async(self._start("up", only, until, yes=yes, wait_for_capacity=wait_for_capacity), d), d.events, self._order()
        )

    async def down_async(
        self,
        *,
        yes: bool = False,
        only: Steps = None,
        delete_buckets: Sequence[str] = (),
        delete_disks: Sequence[str] = (),
        on_event: OnEvent | None = None,
        progress: bool | None = None,
    ) -> Report:
        """:meth:`down` as a coroutine (``yes=True`` to go ahead, as there)."""
        d = Dispatch("down", self.name, on_event, progress)
        return Report._build(
            await run_async(self._start("down", only, delete_buckets=delete_buckets, delete_disks=delete_disks, yes=yes), d),
            d.events,
            self._order(),
        )

    async def status_async(self, *, on_event: OnEvent | None = None, progress: bool | None = False) -> Status:
        """:meth:`status` as a coroutine."""
        d = Dispatch("status", self.name, on_event, progress)
        return Status._build(await run_async(self._start("status"), d), d.events, self._order())

    def stop(self, *, on_event: OnEvent | None = None, progress: bool | None = None) -> Report:
        """Stops the environment's GCE VM and keeps its disks, so the GPU stops billing.
        :meth:`start` or :meth:`up` resumes."""
        d = Dispatch("stop", self.name, on_event, progress)
        return Report._build(run_sync(self._start("stop"), d), d.events, self._order())

    async def stop_async(self, *, on_event: OnEvent | None = None, progress: bool | None = None) -> Report:
        """:meth:`stop` as a coroutine."""
        d = Dispatch("stop", self.name, on_event, progress)
        return Report._build(await run_async(self._start("stop"), d), d.events, self._order())

    def start(
        self, *, wait_for_capacity: WaitForCapacity = None, on_event: OnEvent | None = None, progress: bool | None = None
    ) -> Report:
        """Starts the stopped VM and reaches it again (``up`` until the ``host`` step: its
        new address recorded, host keys pinned, firewall and ``ssh <name>`` updated).

        ``wait_for_capacity`` (as for :meth:`up`: ``True``, ``"2h"`` or seconds) retries
        the start in rounds while the VM's zone has no capacity; the VM stays stopped with
        its disks meanwhile."""
        d = Dispatch("start", self.name, on_event, progress)
        return Report._build(run_sync(self._start("start", wait_for_capacity=wait_for_capacity), d), d.events, self._order())

    async def start_async(
        self, *, wait_for_capacity: WaitForCapacity = None, on_event: OnEvent | None = None, progress: bool | None = None
    ) -> Report:
        """:meth:`start` as a coroutine."""
        d = Dispatch("start", self.name, on_event, progress)
        return Report._build(
            await run_async(self._start("start", wait_for_capacity=wait_for_capacity), d), d.events, self._order()
        )

    # -- on the host ----------------------------------------------------------------------

    def _ssh_start(self, command: str | Sequence[str], stdin: bytes | None, sudo: bool, timeout: float | None) -> Any:
        if not isinstance(command, str):
            command = list(command)
        spec, kw = self._spec, self._kw()
        return lambda notify: _kgenv.start_ssh(spec, command, stdin=stdin, sudo=sudo, timeout=timeout, notify=notify, **kw)

    @staticmethod
    def _command_result(command: str | Sequence[str], r: dict[str, Any], check: bool, step: str = "ssh") -> CommandResult:
        from ._errors import CommandFailedError

        line = command if isinstance(command, str) else " ".join(command)
        result = CommandResult(line, int(r["exit_code"]), r["stdout"], r["stderr"])
        if check and not result.ok:
            tail = "\n".join(result.stderr.decode("utf-8", "replace").splitlines()[-5:])
            raise CommandFailedError(
                f"`{line}` exited with {result.exit_code}" + (f": {tail}" if tail else ""),
                step=step,
                command=line,
                exit_code=result.exit_code,
                stderr_tail=tail,
            )
        return result

    def ssh(
        self,
        command: str | Sequence[str],
        *,
        stdin: bytes | None = None,
        sudo: bool = False,
        timeout: float | None = None,
        check: bool = True,
        on_event: OnEvent | None = None,
    ) -> CommandResult:
        """Runs a command on the host over kgenv's verified SSH session (``gce``/``ssh``).

        A list is quoted word by word (safe for any value); a string is used as the shell
        line it is. Output lines arrive as :class:`kgenv.events.LogEvent` of step ``ssh``.
        With ``check`` (default), a non-zero exit raises :class:`kgenv.CommandFailedError`.
        """
        d = Dispatch("ssh", self.name, on_event, False)
        return self._command_result(command, run_sync(self._ssh_start(command, stdin, sudo, timeout), d), check)

    async def ssh_async(
        self,
        command: str | Sequence[str],
        *,
        stdin: bytes | None = None,
        sudo: bool = False,
        timeout: float | None = None,
        check: bool = True,
        on_event: OnEvent | None = None,
    ) -> CommandResult:
        """:meth:`ssh` as a coroutine."""
        d = Dispatch("ssh", self.name, on_event, False)
        return self._command_result(command, await run_async(self._ssh_start(command, stdin, sudo, timeout), d), check)

    # -- in the container -----------------------------------------------------------------

    @staticmethod
    def _argv(command: str | Sequence[str]) -> list[str]:
        # A string is a shell line (run by the container's `sh -c`); a list is the argv.
        if isinstance(command, str):
            return ["sh", "-c", command]
        return list(command)

    def _exec_start(self, command: str | Sequence[str]) -> Any:
        spec, kw, argv = self._spec, self._kw(), self._argv(command)
        return lambda notify: _kgenv.start_exec(spec, argv, notify=notify, **kw)

    def exec(self, command: str | Sequence[str], *, check: bool = True, on_event: OnEvent | None = None) -> CommandResult:
        """Runs a command in the environment's container (``kgenv exec``): a list is the
        argv as is, a string a shell line. Output lines arrive as
        :class:`kgenv.events.LogEvent` of step ``exec``. With ``check`` (default), a non-zero
        exit raises :class:`kgenv.CommandFailedError`."""
        d = Dispatch("exec", self.name, on_event, False)
        return self._command_result(command, run_sync(self._exec_start(command), d), check, "exec")

    async def exec_async(self, command: str | Sequence[str], *, check: bool = True, on_event: OnEvent | None = None) -> CommandResult:
        """:meth:`exec` as a coroutine."""
        d = Dispatch("exec", self.name, on_event, False)
        return self._command_result(command, await run_async(self._exec_start(command), d), check, "exec")

    def _logs_start(self, tail: int | None, follow: bool) -> Any:
        spec, kw = self._spec, self._kw()
        return lambda notify: _kgenv.start_logs(spec, follow=follow, tail=tail, notify=notify, **kw)

    def logs(self, *, tail: int | None = None, follow: bool = False, on_event: OnEvent | None = None) -> str:
        """The container's logs (Jupyter's among them), the last ``tail`` lines or all. With
        ``follow``, keeps streaming new lines to ``on_event`` (as
        :class:`kgenv.events.LogEvent`) until the container stops or Ctrl-C."""
        d = Dispatch("logs", self.name, on_event, False)
        return "\n".join(run_sync(self._logs_start(tail, follow), d))

    async def logs_async(self, *, tail: int | None = None, follow: bool = False, on_event: OnEvent | None = None) -> str:
        """:meth:`logs` as a coroutine; cancelling the task stops following."""
        d = Dispatch("logs", self.name, on_event, False)
        return "\n".join(await run_async(self._logs_start(tail, follow), d))

    def _gpu_start(self) -> Any:
        spec, kw = self._spec, self._kw()
        return lambda notify: _kgenv.start_gpu(spec, notify=notify, **kw)

    def gpu(self) -> GpuReport:
        """What the container sees of the GPU (``kgenv gpu``): GPUs, driver and CUDA
        versions, whether PyTorch can use it, and why not."""
        d = Dispatch("gpu", self.name, None, False)
        return GpuReport._build(run_sync(self._gpu_start(), d))

    async def gpu_async(self) -> GpuReport:
        """:meth:`gpu` as a coroutine."""
        d = Dispatch("gpu", self.name, None, False)
        return GpuReport._build(await run_async(self._gpu_start(), d))

    @staticmethod
    def _gpu_lines(report: GpuReport) -> list[str]:
        from ._errors import CommandFailedError

        if not report.gpus:
            why = report.problem or "nvidia-smi: not found"
            raise CommandFailedError(
                f"no GPU visible in the container: {why}", step="gpu", command="nvidia-smi", exit_code=127, stderr_tail=why
            )
        return [str(g) for g in report.gpus]

    def gpus(self) -> list[str]:
        """The GPUs the container sees: one ``name, driver, memory`` line each (see
        :meth:`gpu` for the whole report). Raises :class:`kgenv.CommandFailedError` when
        no GPU is visible."""
        return self._gpu_lines(self.gpu())

    async def gpus_async(self) -> list[str]:
        """:meth:`gpus` as a coroutine."""
        return self._gpu_lines(await self.gpu_async())

    def _autostop_start(self, minutes: int | None) -> Any:
        if minutes is not None and (not isinstance(minutes, int) or isinstance(minutes, bool)):
            raise TypeError(f"minutes must be an int or None, got {type(minutes).__name__}")
        spec, kw = self._spec, self._kw()
        return lambda notify: _kgenv.start_autostop(spec, minutes, notify=notify, **kw)

    def _move_start(self, zone: str, yes: bool) -> Any:
        spec, kw = self._spec, self._kw()
        if not isinstance(zone, str):
            raise TypeError(f"zone must be a str like 'us-central1-b', got {type(zone).__name__}")
        if not isinstance(yes, bool):
            raise TypeError(f"yes must be True or False, got {type(yes).__name__}")
        return lambda notify: _kgenv.start_run(spec, "move", zone=zone, yes=yes, notify=notify, **kw)

    def move(self, zone: str, *, yes: bool = False, on_event: OnEvent | None = None, progress: bool | None = None) -> Report:
        """Moves the data disk and the VM to ``zone`` (``kgenv move ZONE``), e.g. after a
        stockout in the disk's zone.

        A disk cannot change zone, so the data travels by snapshot: the VM is stopped, the
        data disk snapshotted, ``<name>-data`` made in ``zone`` from the snapshot, the old
        VM deleted, and :meth:`up` run in ``zone`` (the disk is attached and mounted as it
        is, never formatted). Only once the new VM is up with the disk mounted are the old
        disk and the snapshot deleted. It takes about as long as a first ``up``, plus the
        copy.

        Without ``yes=True`` nothing is changed: it raises
        :class:`kgenv.ConfirmationRequiredError` whose ``changes`` list what it would do.
        A bad zone, the disk's own zone, or an environment without a data disk raise
        :class:`kgenv.UsageError` before any call. Interrupted, call it again with the same
        zone: it goes on where it stopped (meanwhile :meth:`up` refuses, and :meth:`down`
        keeps the old disk and the snapshot). Cancels like :meth:`up`.
        """
        d = Dispatch("move", self.name, on_event, progress)
        return Report._build(run_sync(self._move_start(zone, yes), d), d.events, self._order())

    async def move_async(
        self, zone: str, *, yes: bool = False, on_event: OnEvent | None = None, progress: bool | None = None
    ) -> Report:
        """:meth:`move` as a coroutine (``yes=True`` to go ahead, as there)."""
        d = Dispatch("move", self.name, on_event, progress)
        return Report._build(await run_async(self._move_start(zone, yes), d), d.events, self._order())

    def autostop(self, minutes: int | None, *, on_event: OnEvent | None = None) -> None:
        """Changes the running VM's idle stop in place (``kgenv autostop``): stop after
        ``minutes`` (5 to 10080) without activity (the spec's :class:`kgenv.Autostop`
        thresholds are kept), or never with None. A :class:`kgenv.Budget` stays in force
        either way. The next :meth:`up` brings back what the spec says."""
        d = Dispatch("autostop", self.name, on_event, False)
        run_sync(self._autostop_start(minutes), d)

    async def autostop_async(self, minutes: int | None, *, on_event: OnEvent | None = None) -> None:
        """:meth:`autostop` as a coroutine."""
        d = Dispatch("autostop", self.name, on_event, False)
        await run_async(self._autostop_start(minutes), d)

    # -- Jupyter --------------------------------------------------------------------------

    def jupyter(self, *, local_port: int = 0) -> _kgenv.JupyterTunnel:
        """Opens a new local address for Jupyter: on ``gce``/``ssh`` a tunnel through the
        host's SSH session (no public port needed), on ``local`` the published port. Close
        it with ``close()`` or use it as a context manager."""
        spec, kw = self._spec, self._kw()
        d = Dispatch("jupyter", self.name, None, False)
        return run_sync(lambda notify: _kgenv.start_jupyter(spec, local_port=local_port, notify=notify, **kw), d)  # type: ignore[no-any-return]

    async def jupyter_async(self, *, local_port: int = 0) -> _kgenv.JupyterTunnel:
        """:meth:`jupyter` as a coroutine."""
        spec, kw = self._spec, self._kw()
        d = Dispatch("jupyter", self.name, None, False)
        return await run_async(lambda notify: _kgenv.start_jupyter(spec, local_port=local_port, notify=notify, **kw), d)  # type: ignore[no-any-return]

    def jupyter_url(self) -> str:
        """The URL of the environment's Jupyter on this machine, opening a tunnel on first
        use that lives as long as this ``Env`` (or until :meth:`close`). In token mode the
        URL carries the token; with a password, Jupyter asks for it."""
        if self._tunnel is None or not self._tunnel.is_open:
            self._tunnel = self.jupyter()
        return self._tunnel.url

    def close(self) -> None:
        """Closes the Jupyter tunnel :meth:`jupyter_url` opened, if any."""
        if self._tunnel is not None:
            self._tunnel.close()
            self._tunnel = None

    def __enter__(self) -> Env:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- display --------------------------------------------------------------------------

    def __repr__(self) -> str:
        where = "real" if self._world is None else repr(self._world)
        return f"Env({self.name!r}, target={self.target!r}, steps={len(self.steps)}, backends={where})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Env) and self._spec == other._spec and self._world is other._world

    def __hash__(self) -> int:
        return hash(self._spec)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td style='text-align:left'><code>{html.escape(s.id)}</code></td>"
            f"<td style='text-align:left'>{html.escape(', '.join(s.deps))}</td>"
            f"<td style='text-align:left'>{html.escape(s.summary)}</td></tr>"
            for s in self.steps
        )
        return (
            f"<div><b>kgenv environment {html.escape(self.name)}</b> (target {html.escape(self.target)}, "
            f"{html.escape(self.backends)} backends)<table><thead><tr><th>step</th><th>after</th><th>what</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></div>"
        )
