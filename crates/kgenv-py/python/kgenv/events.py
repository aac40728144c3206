"""Typed events a run streams while it works.

Pass ``on_event=`` to any operation to receive them as they happen (on the calling
thread for blocking calls, on the event loop's thread for ``*_async`` calls)::

    def show(ev: kgenv.Event) -> None:
        if isinstance(ev, kgenv.events.FailedEvent):
            print("!!", ev.step, ev.message)

    env.up(on_event=show)

Each event is a frozen dataclass with the step it is about; ``str(event)`` is the line
the CLI prints. Raising from the callback cancels the run cleanly and re-raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

__all__ = [
    "Event",
    "PlannedEvent",
    "StartedEvent",
    "ProgressEvent",
    "LogEvent",
    "WarningEvent",
    "SatisfiedEvent",
    "DoneEvent",
    "FailedEvent",
    "SkippedEvent",
    "Change",
    "Phase",
]

Change = Literal["none", "create", "update", "delete", "unknown"]
"""What ``plan`` expects a step to do."""

Phase = Literal["check", "apply", "destroy", "stop"]
"""Which part of its work a step is doing."""


@dataclass(frozen=True, kw_only=True)
class Event:
    """Something that happened during a run.

    Attributes:
        step: The step the event is about (``instance``, ``data/titanic``; ``ssh`` for a
            command run with :meth:`kgenv.Env.ssh`).
        text: The event as one readable line (also ``str(event)``).
    """

    kind: ClassVar[str] = "event"
    step: str
    text: str = field(default="", repr=False, compare=False)

    def __str__(self) -> str:
        return self.text or f"{self.step}: {self.kind}"


@dataclass(frozen=True, kw_only=True)
class PlannedEvent(Event):
    """``plan``'s verdict for a step.

    Attributes:
        summary: What the step manages.
        change: The expected change.
        diff: Readable differences (for updates) or why the state is unknown.
        actions: The API calls and host commands the change would make.
        disruption: What the change stops or restarts (``"stops and restarts the VM"``),
            when it does: ``up`` then needs ``yes=True``.
    """

    kind: ClassVar[str] = "planned"
    summary: str
    change: Change
    diff: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    disruption: str | None = None


@dataclass(frozen=True, kw_only=True)
class StartedEvent(Event):
    """A step began a phase (``check``, ``apply``, ``destroy`` or ``stop``)."""

    kind: ClassVar[str] = "started"
    phase: Phase


@dataclass(frozen=True, kw_only=True)
class ProgressEvent(Event):
    """Bytes of a transfer (an image layer, a data file).

    Attributes:
        item: What is transferred.
        done: Bytes done.
        total: Total bytes, when known.
        bytes_per_sec: Recent rate, for transfers that measure it (downloads).
        eta_secs: Seconds left at the recent rate, when known.
    """

    kind: ClassVar[str] = "progress"
    item: str
    done: int
    total: int | None = None
    bytes_per_sec: int | None = None
    eta_secs: int | None = None

    @property
    def fraction(self) -> float | None:
        """``done / total`` between 0 and 1, or None when the total is unknown."""
        if not self.total:
            return None
        return min(1.0, self.done / self.total)


@dataclass(frozen=True, kw_only=True)
class LogEvent(Event):
    """A line of output from a command a step runs.

    Attributes:
        stream: ``stdout`` or ``stderr``.
        line: The line, without its newline.
    """

    kind: ClassVar[str] = "log"
    stream: Literal["stdout", "stderr"]
    line: str


@dataclass(frozen=True, kw_only=True)
class WarningEvent(Event):
    """Something the user should know (a world-open firewall, no GPU on the host)."""

    kind: ClassVar[str] = "warning"
    message: str


@dataclass(frozen=True, kw_only=True)
class SatisfiedEvent(Event):
    """The step found everything as specified and changed nothing."""

    kind: ClassVar[str] = "satisfied"


@dataclass(frozen=True, kw_only=True)
class DoneEvent(Event):
    """The step finished a phase.

    Attributes:
        phase: The phase.
        elapsed_ms: Its wall time in milliseconds.
    """

    kind: ClassVar[str] = "done"
    phase: Phase
    elapsed_ms: int


@dataclass(frozen=True, kw_only=True)
class FailedEvent(Event):
    """The step failed. The run's exception carries the structured fields.

    Attributes:
        error_kind: The error's kind (``stockout``, ``quota``, ...).
        message: The error with its causes.
    """

    kind: ClassVar[str] = "failed"
    error_kind: str
    message: str


@dataclass(frozen=True, kw_only=True)
class SkippedEvent(Event):
    """The step did not run (a prerequisite failed, or the run was cancelled)."""

    kind: ClassVar[str] = "skipped"
    reason: str


_KINDS: dict[str, type[Event]] = {
    c.kind: c
    for c in (
        PlannedEvent,
        StartedEvent,
        ProgressEvent,
        LogEvent,
        WarningEvent,
        SatisfiedEvent,
        DoneEvent,
        FailedEvent,
        SkippedEvent,
    )
}


def from_dict(d: dict[str, Any]) -> Event:
    """An event from the dictionary the compiled module sends (``event`` names the kind)."""
    d = dict(d)
    kind = d.pop("event", "")
    cls = _KINDS.get(kind)
    if cls is None:
        # A newer core's event: keep what every event has.
        return Event(step=str(d.get("step", "")), text=str(d.get("text", "")))
    if cls is FailedEvent:
        d["error_kind"] = d.pop("kind", "")
    for key in ("diff", "actions"):
        if key in d:
            d[key] = tuple(d[key])
    return cls(**d)
