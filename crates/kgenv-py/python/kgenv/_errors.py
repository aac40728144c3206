"""Exceptions raised by kgenv.

Every kgenv failure is a :class:`KgenvError`. The subclasses mirror the core's error
kinds and carry their structured fields, so code can ask questions instead of matching
message text::

    try:
        env.up()
    except kgenv.StockoutError as e:
        print("no GPUs left in", e.zone)
    except kgenv.QuotaError as e:
        print("raise quota", e.metric, "in", e.region or "all regions")

Fields that do not apply to an error are ``None``. Every error also says which step
failed (:attr:`KgenvError.step`), every step that failed in the run
(:attr:`KgenvError.failed_steps`), its short :attr:`KgenvError.kind` and whether a retry
may succeed (:attr:`KgenvError.retryable`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

__all__ = [
    "KgenvError",
    "ConfigError",
    "ValidationError",
    "UsageError",
    "ConfirmationRequiredError",
    "StateError",
    "EnvLockedError",
    "CancelledError",
    "BackendError",
    "NotFoundError",
    "AlreadyExistsError",
    "AuthError",
    "StockoutError",
    "QuotaError",
    "RateLimitedError",
    "TransientError",
    "InvalidRequestError",
    "OperationTimeoutError",
    "CommandTimeoutError",
    "RemoteError",
    "ConnectionFailedError",
    "HostKeyMismatchError",
    "CommandFailedError",
    "UnavailableError",
    "LocalIOError",
]


class KgenvError(Exception):
    """Base class of every kgenv error.

    Attributes:
        message: What happened, to which resource, and what to do next.
        kind: A short stable name for the kind (``"stockout"``, ``"config"``, ...).
        step: The step that failed (``"instance"``, ``"data/titanic"``), if any.
        failed_steps: Every step that failed in the run, in the order they failed.
        retryable: Whether running the same operation again may succeed.
        details: Fields this version of the Python package does not know by name.
    """

    _fields: ClassVar[tuple[str, ...]] = ()
    _default_kind: ClassVar[str] = "other"

    message: str
    kind: str
    step: str | None
    failed_steps: tuple[str, ...]
    retryable: bool
    details: dict[str, Any]

    def __init__(
        self,
        message: str,
        *,
        kind: str | None = None,
        step: str | None = None,
        failed_steps: tuple[str, ...] | list[str] = (),
        retryable: bool = False,
        **fields: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind or self._default_kind
        self.step = step
        self.failed_steps = tuple(failed_steps)
        self.retryable = retryable
        for cls in type(self).__mro__:
            for name in cls.__dict__.get("_fields", ()):
                setattr(self, name, fields.pop(name, None))
        self.details = fields

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        shown = [repr(self.message)]
        for cls in reversed(type(self).__mro__):
            for name in cls.__dict__.get("_fields", ()):
                value = getattr(self, name, None)
                if value is not None:
                    shown.append(f"{name}={value!r}")
        if self.step is not None:
            shown.append(f"step={self.step!r}")
        return f"{type(self).__name__}({', '.join(shown)})"


class ConfigError(KgenvError, ValueError):
    """``kgenv.toml`` is wrong: where, and what to change.

    Attributes:
        path: The config file.
        line: 1-based line.
        column: 1-based column.
        field: The dotted field (``instance.gpu_count``), when the error is about one.
    """

    _fields = ("path", "line", "column", "field")
    _default_kind = "config"
    path: Path | None
    line: int | None
    column: int | None
    field: str | None


class ValidationError(KgenvError, ValueError):
    """A spec built in code breaks a rule; ``field`` names the argument.

    Attributes:
        field: The argument, as a dotted path from the call that failed
            (``gpu_count`` for ``kgenv.Instance(...)``, ``instance.gpu_count`` or
            ``firewalls[1].ports`` for ``kgenv.Env(...)``).
        rule: The rule and what to do about it.
    """

    _fields = ("field", "rule")
    _default_kind = "validation"
    field: str | None
    rule: str | None


class UsageError(KgenvError, ValueError):
    """A request that cannot be honoured as asked (an unknown step name, an environment
    without the part the call needs)."""

    _default_kind = "usage"


class ConfirmationRequiredError(UsageError):
    """A change that deletes, stops or restarts needs ``yes=True``; nothing of it was done
    (the CLI's exit 2 without ``--yes``). ``env.down()`` raises it with what it would delete
    and keep, ``env.up()`` with the change that would restart the VM::

        try:
            env.down()
        except kgenv.ConfirmationRequiredError as e:
            print("\\n".join(e.changes))   # read, then env.down(yes=True)

    Attributes:
        operation: ``"down"``, ``"up"`` or ``"move"``.
        changes: What it would delete (``down``), stop and restart (``up``), or do
            (``move``, in order).
        keeps: What it keeps in any case (the bucket, the data disk).
    """

    _fields = ("operation", "changes", "keeps")
    _default_kind = "not_confirmed"
    operation: str | None
    changes: tuple[str, ...] | None
    keeps: tuple[str, ...] | None

    def __init__(self, message: str, **fields: Any) -> None:
        for key in ("changes", "keeps"):
            if fields.get(key) is not None:
                fields[key] = tuple(fields[key])
        super().__init__(message, **fields)


class StateError(KgenvError):
    """The state file could not be read or written, or cannot be used as it is.

    Attributes:
        path: The state file (or lock file).
        reason: ``"io"``, ``"corrupt"``, ``"empty"`` (the message names the backup
            ``<env>.json.bak`` to restore), ``"newer"`` (written by a newer kgenv: upgrade),
            ``"target_mismatch"`` (the state is for another target) or ``"locked"``.
    """

    _fields = ("path", "reason")
    _default_kind = "state"
    path: Path | None
    reason: str | None


class EnvLockedError(StateError):
    """Another kgenv process is running ``up`` or ``down`` on this environment."""


class CancelledError(KgenvError):
    """The run was cancelled (``Run.cancel()``); running steps finished first, so the state
    file is consistent. Ctrl-C raises :class:`KeyboardInterrupt` and cancelling an asyncio
    task raises :class:`asyncio.CancelledError` instead."""

    _default_kind = "cancelled"


class BackendError(KgenvError):
    """A cloud, host, Docker, Kaggle or GitHub call failed."""


class NotFoundError(BackendError):
    """A resource does not exist.

    Attributes:
        resource: Which resource.
    """

    _fields = ("resource",)
    _default_kind = "not_found"
    resource: str | None


class AlreadyExistsError(BackendError):
    """A resource exists already and is not kgenv's to adopt.

    Attributes:
        resource: Which resource.
    """

    _fields = ("resource",)
    _default_kind = "already_exists"
    resource: str | None


class AuthError(BackendError):
    """Credentials are missing or rejected (``kind == "unauthenticated"``), or the caller
    is not allowed (``kind == "permission_denied"``).

    Attributes:
        service: The service that wants credentials (``compute``, ``kaggle``), if known.
        resource: The resource access was denied to, if known.
    """

    _fields = ("service", "resource")
    _default_kind = "unauthenticated"
    service: str | None
    resource: str | None


class StockoutError(BackendError):
    """A zone has no capacity for the machine or GPU; another zone may.

    Attributes:
        zone: The zone that is out of stock (the last one tried).
        resource: What was requested.
    """

    _fields = ("zone", "resource")
    _default_kind = "stockout"
    zone: str | None
    resource: str | None


class QuotaError(BackendError):
    """A quota stops the request.

    Attributes:
        metric: The quota metric, e.g. ``NVIDIA_T4_GPUS`` or ``GPUS_ALL_REGIONS``.
        limit: The limit, when the API said it.
        scope: ``"region"`` or ``"global"``.
        region: The region for a regional quota, else None.
    """

    _fields = ("metric", "limit", "scope", "region")
    _default_kind = "quota"
    metric: str | None
    limit: float | None
    scope: str | None
    region: str | None


class RateLimitedError(BackendError):
    """The service asked kgenv to slow down.

    Attributes:
        service: Which service.
        retry_after: Seconds the service asked to wait, if it said.
    """

    _fields = ("service", "retry_after")
    _default_kind = "rate_limited"
    service: str | None
    retry_after: float | None


class TransientError(BackendError):
    """A failure that may pass when retried (a 5xx, a reset connection).

    Attributes:
        service: Which service.
    """

    _fields = ("service",)
    _default_kind = "transient"
    service: str | None


class InvalidRequestError(BackendError):
    """The service rejected the request as invalid; retrying will not help.

    Attributes:
        resource: Which resource.
    """

    _fields = ("resource",)
    _default_kind = "invalid_argument"
    resource: str | None


class OperationTimeoutError(BackendError, TimeoutError):
    """Waited too long for something (a VM to boot, an operation to finish).

    Attributes:
        what: What kgenv waited for.
        after: Seconds waited.
        last_seen: The last state observed, to help diagnose.
    """

    # Typed as the base's, so CommandTimeoutError below can list fields of its own.
    _fields: ClassVar[tuple[str, ...]] = ("what", "after", "last_seen")
    _default_kind = "timeout"
    what: str | None
    after: float | None
    last_seen: str | None


class CommandTimeoutError(OperationTimeoutError):
    """A command on the host ran past its time limit and was killed, with everything it
    started. Raise the limit with a ``[timeouts]`` entry for the step (``timeouts=`` in
    Python) if it only needs longer.

    Attributes:
        step: The step that ran it (``"disk-mount"``), if a step did.
        command: A short label for the command (``"disk-mount apply"``), never its secrets.
        host: The host it ran on (``user@host:22``).
        after: The limit it hit, in seconds.
        inactivity: True when the limit was on silence (no output for ``after`` seconds),
            False when it was on the total running time.
        last_lines: The last lines it printed (stdout and stderr), oldest first.
    """

    _fields = ("command", "host", "inactivity", "last_lines")
    _default_kind = "timeout"
    command: str | None
    host: str | None
    inactivity: bool | None
    last_lines: list[str] | None


class RemoteError(BackendError):
    """Something on the far side of a connection failed: the connection itself, the
    host's identity, or a command run there."""


class ConnectionFailedError(RemoteError):
    """A connection could not be made or was lost.

    Attributes:
        endpoint: Where kgenv tried to connect.
    """

    _fields = ("endpoint",)
    _default_kind = "connection"
    endpoint: str | None


class HostKeyMismatchError(RemoteError):
    """An SSH host presented a different key than the one kgenv pinned. The connection
    was refused; someone may be intercepting it, or the host was rebuilt.

    Attributes:
        host: The host.
        expected: The pinned fingerprint.
        found: The fingerprint offered.
        known_hosts: Where the pin lives.
    """

    _fields = ("host", "expected", "found", "known_hosts")
    _default_kind = "host_key_mismatch"
    host: str | None
    expected: str | None
    found: str | None
    known_hosts: str | None


class CommandFailedError(RemoteError):
    """A command on the host or in the container exited non-zero.

    Attributes:
        command: A short label for the command (never its secret arguments).
        exit_code: Its exit status.
        stderr_tail: The last lines of its stderr.
    """

    _fields = ("command", "exit_code", "stderr_tail")
    _default_kind = "command_failed"
    command: str | None
    exit_code: int | None
    stderr_tail: str | None


class UnavailableError(BackendError):
    """A backend is not available in this build or configuration.

    Attributes:
        backend: Which backend.
        hint: What to do.
    """

    _fields = ("backend", "hint")
    _default_kind = "unavailable"
    backend: str | None
    hint: str | None


class LocalIOError(BackendError):
    """A file or socket on this machine failed.

    Attributes:
        context: What kgenv was doing.
    """

    _fields = ("context",)
    _default_kind = "io"
    context: str | None
