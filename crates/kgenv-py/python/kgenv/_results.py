"""What operations return: a :class:`Plan`, a :class:`Report`, a :class:`Status`, a
:class:`CommandResult`, a :class:`GpuReport`, a :class:`DataFile` list or a
:class:`DownloadResult`. Each is a frozen dataclass with a
readable ``repr`` and, for notebooks, an HTML view (``_repr_html_``)."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Mapping, Sequence

from .events import Change, Event, PlannedEvent, WarningEvent

__all__ = [
    "Cost",
    "DiskCost",
    "RunningCost",
    "PlannedStep",
    "Plan",
    "StepResult",
    "Report",
    "Status",
    "CommandResult",
    "GpuInfo",
    "GpuReport",
    "DataFile",
    "DownloadResult",
    "StepInfo",
    "StepTeardown",
    "DownPreview",
]

_SIGN = {"none": " ", "create": "+", "update": "~", "delete": "-", "unknown": "?"}
_COLOR = {"create": "#1a7f37", "update": "#9a6700", "delete": "#cf222e", "unknown": "#6e7781", "none": "#6e7781"}

Outcome = Literal["satisfied", "changed", "removed", "nothing", "planned", "failed", "skipped"]


def _e(s: object) -> str:
    return html.escape(str(s))


def _table(title: str, header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    head = "".join(f"<th style='text-align:left'>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td style='text-align:left;vertical-align:top'>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<div><b>{_e(title)}</b><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def _usd(estimate: Mapping[str, Any] | None) -> Decimal | None:
    """The total of a core ``Estimate`` (``{"known": {"total": "0.73", ...}}``), or
    ``None`` when it is ``{"unknown": reason}``. Exact: the core sends decimal strings."""
    known = (estimate or {}).get("known")
    return Decimal(str(known["total"])) if known else None


def _why(estimate: Mapping[str, Any] | None) -> str | None:
    return (estimate or {}).get("unknown")


def _money(v: Decimal | None, places: int, unit: str) -> str:
    return "unknown" if v is None else f"${v.quantize(Decimal(1).scaleb(-places))}{unit}"


@dataclass(frozen=True)
class DiskCost:
    """What one persistent disk costs.

    Attributes:
        role: ``boot`` or ``data`` (the data disk ``down`` keeps).
        disk_type: ``pd-balanced``, ``pd-ssd``, ``pd-standard``.
        size_gb: Size in GB.
        per_month: US dollars a month, ``None`` when unknown.
        per_hour: The monthly price over 730 hours.
    """

    role: str
    disk_type: str
    size_gb: int
    per_month: Decimal | None
    per_hour: Decimal | None

    def __str__(self) -> str:
        return f"{self.role} disk {self.size_gb} GB {self.disk_type}: {_money(self.per_month, 2, '/month')}"


@dataclass(frozen=True)
class Cost:
    """What an environment costs, from Compute Engine's list prices (the Cloud Billing
    Catalog, cached for a week). Amounts are exact :class:`~decimal.Decimal` US dollars;
    ``None`` means unknown (no access to the catalog, or no price for a part) — never a
    guess. :attr:`reasons` says why.

    Attributes:
        date: The day the prices were fetched (``2026-12-04``), ``None`` without prices.
        note: Why prices are unknown, or older than a week.
        region: The region priced.
        machine_type: The VM's machine type.
        gpu: ``(type, count)`` attached, if any.
        spot: Whether the environment asks for a spot VM.
        vm_on_demand: The VM with its GPUs, per hour, on demand.
        vm_spot: The same as a spot VM.
        disks: Each disk's price.
        total_on_demand: VM and disks per hour, on demand.
        total_spot: VM and disks per hour, spot.
        reasons: Why any amount is unknown.
        raw: The core's report, with every part and its SKU.
    """

    date: str | None
    note: str | None
    region: str
    machine_type: str
    gpu: tuple[str, int] | None
    spot: bool
    vm_on_demand: Decimal | None
    vm_spot: Decimal | None
    disks: tuple[DiskCost, ...]
    total_on_demand: Decimal | None
    total_spot: Decimal | None
    reasons: tuple[str, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def per_hour(self) -> Decimal | None:
        """VM and disks per hour as the environment is provisioned (spot or on demand)."""
        return self.total_spot if self.spot else self.total_on_demand

    def _lines(self) -> list[str]:
        when = f"prices of {self.date}" if self.date else "prices unknown"
        gpu = f" + {self.gpu[1]} × {self.gpu[0]}" if self.gpu else ""
        lines = [
            f"cost in {self.region} ({when}):",
            f"  VM {self.machine_type}{gpu}: {_money(self.vm_on_demand, 4, '/h')} on demand, {_money(self.vm_spot, 4, '/h')} spot",
        ]
        lines += [f"  {d}" for d in self.disks]
        lines.append(f"  total: {_money(self.total_on_demand, 4, '/h')} on demand, {_money(self.total_spot, 4, '/h')} spot")
        lines += [f"  ({r})" for r in self.reasons]
        return lines

    def __str__(self) -> str:
        return "\n".join(self._lines())

    def _repr_html_(self) -> str:
        rows = [["VM " + _e(self.machine_type), _e(_money(self.vm_on_demand, 4, "/h")), _e(_money(self.vm_spot, 4, "/h"))]]
        # A disk costs the same whichever way the VM is provisioned.
        rows += [
            [_e(f"{d.role} disk {d.size_gb} GB {d.disk_type} ({_money(d.per_month, 2, '/month')})"), _e(_money(d.per_hour, 4, "/h")), _e(_money(d.per_hour, 4, "/h"))]
            for d in self.disks
        ]
        rows.append(["<b>total</b>", _e(_money(self.total_on_demand, 4, "/h")), _e(_money(self.total_spot, 4, "/h"))])
        when = f"prices of {self.date}" if self.date else "prices unknown"
        out = _table(f"cost in {self.region} ({when})", ["", "on demand", "spot"], rows)
        return out + "".join(f"<div style='color:#6e7781'>{_e(r)}</div>" for r in self.reasons)

    @classmethod
    def _build(cls, prices: Mapping[str, Any] | None) -> Cost | None:
        if not prices or not prices.get("vm"):
            return None
        vm = prices["vm"]
        source = prices.get("source", {})
        disks = tuple(
            DiskCost(str(d["role"]), str(d["disk_type"]), int(d["size_gb"]), _usd(d.get("per_month")), _usd(d.get("per_hour")))
            for d in prices.get("disks", [])
        )
        reasons: list[str] = []
        note = source.get("note")
        if note:
            reasons.append(str(note))
        for e in [vm.get("on_demand"), vm.get("spot")] + [d.get("per_month") for d in prices.get("disks", [])]:
            why = _why(e)
            if why and why not in reasons:
                reasons.append(why)
        gpu = vm.get("gpu")
        return cls(
            date=source.get("date"),
            note=note,
            region=str(vm.get("region", "")),
            machine_type=str(vm.get("machine_type", "")),
            gpu=(str(gpu[0]), int(gpu[1])) if gpu else None,
            spot=bool(prices.get("spot", False)),
            vm_on_demand=_usd(vm.get("on_demand")),
            vm_spot=_usd(vm.get("spot")),
            disks=disks,
            total_on_demand=_usd(prices.get("total_on_demand")),
            total_spot=_usd(prices.get("total_spot")),
            reasons=tuple(reasons),
            raw=dict(prices),
        )


@dataclass(frozen=True)
class RunningCost:
    """What the running VM has cost since it last started.

    Attributes:
        since: When it last started (GCE's ``lastStartTimestamp``).
        seconds: How long it has run since.
        per_hour: Its price per hour (spot or on demand, as provisioned), ``None`` when unknown.
        so_far: ``per_hour`` × the hours it has run, ``None`` when unknown.
        reason: Why they are unknown.
    """

    since: str
    seconds: int
    per_hour: Decimal | None
    so_far: Decimal | None
    reason: str | None = None

    def __str__(self) -> str:
        return f"running since {self.since} ({self.seconds / 3600:.1f} h): {_money(self.so_far, 2, '')} so far at {_money(self.per_hour, 4, '/h')}"

    @classmethod
    def _build(cls, running: Mapping[str, Any] | None) -> RunningCost | None:
        if not running:
            return None
        return cls(
            since=str(running.get("since", "")),
            seconds=int(running.get("seconds", 0)),
            per_hour=_usd(running.get("per_hour")),
            so_far=_usd(running.get("so_far")),
            reason=_why(running.get("per_hour")),
        )


@dataclass(frozen=True)
class StepInfo:
    """One step of an environment, before anything runs.

    Attributes:
        id: Step id (``instance``, ``firewall/kg-ssh``, ``data/titanic``).
        deps: Steps that must be done first.
        summary: What the step manages.
    """

    id: str
    deps: tuple[str, ...]
    summary: str


@dataclass(frozen=True)
class PlannedStep:
    """What ``plan`` expects one step to do.

    Attributes:
        step: Step id.
        summary: What the step manages.
        change: ``none``, ``create``, ``update``, ``delete`` or ``unknown``.
        diff: Readable differences (updates), or why the state cannot be observed yet.
        actions: The API calls and host commands the change would make.
        disruption: What the change stops or restarts (``"stops and restarts the VM"``),
            when it does: ``up`` applies it only with ``yes=True``.
    """

    step: str
    summary: str
    change: Change
    diff: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    disruption: str | None = None

    def __str__(self) -> str:
        note = f"; {self.disruption}" if self.disruption else ""
        lines = [f"{_SIGN.get(self.change, '?')} {self.step}: {self.summary} ({self.change}{note})"]
        lines += [f"      {d}" for d in self.diff]
        lines += [f"      > {a}" for a in self.actions]
        return "\n".join(lines)


@dataclass(frozen=True)
class Plan:
    """What ``up`` would change, step by step, with the calls it would make.

    Iterating yields the :class:`PlannedStep` objects in the environment's step order.

    Attributes:
        env: Environment name.
        steps: Every step's verdict.
        warnings: ``(step, message)`` pairs the user should read (a world-open firewall).
        elapsed_ms: How long planning took.
        cost: What the environment would cost (GCE target), prices unknown included.
    """

    env: str
    steps: tuple[PlannedStep, ...]
    warnings: tuple[tuple[str, str], ...] = ()
    elapsed_ms: int = 0
    cost: Cost | None = None

    def __iter__(self) -> Iterator[PlannedStep]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, step: str) -> PlannedStep:
        """The verdict for one step id."""
        for s in self.steps:
            if s.step == step:
                return s
        raise KeyError(step)

    def count(self, change: Change) -> int:
        """How many steps expect ``change``."""
        return sum(1 for s in self.steps if s.change == change)

    @property
    def changes(self) -> tuple[PlannedStep, ...]:
        """The steps that would change something (or cannot be observed yet)."""
        return tuple(s for s in self.steps if s.change != "none")

    @property
    def has_changes(self) -> bool:
        """Whether ``up`` would change anything."""
        return bool(self.changes)

    def _headline(self) -> str:
        return (
            f"plan for {self.env}: {self.count('create')} to create, {self.count('update')} to update, "
            f"{self.count('none')} unchanged, {self.count('unknown')} unknown"
        )

    def __str__(self) -> str:
        lines = [self._headline()] + [str(s) for s in self.steps]
        lines += [f"warning: {step}: {msg}" for step, msg in self.warnings]
        if self.cost is not None:
            lines.append(str(self.cost))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Plan {self._headline()}>\n" + "\n".join(str(s) for s in self.steps) + "".join(
            f"\nwarning: {step}: {msg}" for step, msg in self.warnings
        )

    def _repr_html_(self) -> str:
        rows = []
        for s in self.steps:
            color = _COLOR.get(s.change, "#000")
            details = "<br>".join([_e(d) for d in s.diff] + [f"<code>{_e(a)}</code>" for a in s.actions])
            rows.append(
                [f"<code>{_e(s.step)}</code>", f"<span style='color:{color}'>{_e(_SIGN.get(s.change, '?'))} {_e(s.change)}</span>", _e(s.summary), details]
            )
        out = _table(self._headline(), ["step", "change", "what", "details"], rows)
        if self.warnings:
            out += "".join(f"<div style='color:#cf222e'>⚠ {_e(step)}: {_e(msg)}</div>" for step, msg in self.warnings)
        if self.cost is not None:
            out += self.cost._repr_html_()
        return out

    @classmethod
    def _build(cls, report: Mapping[str, Any], events: Sequence[Event], order: Sequence[str]) -> Plan:
        planned = {e.step: e for e in events if isinstance(e, PlannedEvent)}
        steps = []
        for r in report.get("steps", []):
            p = planned.get(r["step"])
            if p is not None:
                steps.append(PlannedStep(p.step, p.summary, p.change, p.diff, p.actions, p.disruption))
        rank = {s: i for i, s in enumerate(order)}
        steps.sort(key=lambda s: rank.get(s.step, len(rank)))
        warnings = tuple((e.step, e.message) for e in events if isinstance(e, WarningEvent))
        return cls(
            str(report.get("env", "")),
            tuple(steps),
            warnings,
            int(report.get("elapsed_ms", 0)),
            Cost._build(report.get("prices")),
        )


@dataclass(frozen=True)
class StepResult:
    """How one step ended in ``up`` or ``down``.

    Attributes:
        step: Step id.
        outcome: ``satisfied`` or ``changed`` (up), ``removed`` or ``nothing`` (down),
            ``failed`` or ``skipped``.
        elapsed_ms: Its wall time.
        error_kind: The error's kind when it failed.
        message: The error when it failed.
        reason: Why it was skipped.
    """

    step: str
    outcome: Outcome
    elapsed_ms: int = 0
    error_kind: str | None = None
    message: str | None = None
    reason: str | None = None

    def __str__(self) -> str:
        extra = self.message or self.reason
        return f"{self.step}: {self.outcome}" + (f" ({extra})" if extra else "") + f" [{self.elapsed_ms} ms]"


_MARK = {"satisfied": "=", "changed": "✓", "removed": "-", "nothing": "·", "failed": "✗", "skipped": "…", "planned": "?"}


@dataclass(frozen=True)
class Report:
    """What ``up``, ``down``, ``stop`` or ``start`` did.

    Attributes:
        operation: ``up``, ``down``, ``stop``, ``start`` or ``move``.
        env: Environment name.
        steps: Each step's result, in the environment's step order.
        warnings: ``(step, message)`` pairs raised during the run.
        elapsed_ms: Wall time.
    """

    operation: str
    env: str
    steps: tuple[StepResult, ...]
    warnings: tuple[tuple[str, str], ...] = ()
    elapsed_ms: int = 0

    def __iter__(self) -> Iterator[StepResult]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, step: str) -> StepResult:
        """The result of one step id."""
        for s in self.steps:
            if s.step == step:
                return s
        raise KeyError(step)

    def with_outcome(self, *outcomes: Outcome) -> tuple[str, ...]:
        """Ids of the steps that ended in one of ``outcomes``."""
        return tuple(s.step for s in self.steps if s.outcome in outcomes)

    @property
    def changed(self) -> tuple[str, ...]:
        """Steps that changed something (created, updated or removed)."""
        return self.with_outcome("changed", "removed")

    @property
    def satisfied(self) -> tuple[str, ...]:
        """Steps that were already as specified."""
        return self.with_outcome("satisfied")

    def _headline(self) -> str:
        took = f"in {self.elapsed_ms / 1000:.1f}s"
        if self.operation == "down":
            return f"down {self.env}: {len(self.changed)} removed, {len(self.with_outcome('nothing'))} had nothing to remove {took}"
        if self.operation == "stop":
            return f"stop {self.env}: {'stopped, disks kept' if self.changed else 'already stopped'} {took}"
        return f"{self.operation} {self.env}: {len(self.changed)} changed, {len(self.satisfied)} already as specified {took}"

    def __str__(self) -> str:
        return "\n".join([self._headline()] + [f"  {_MARK.get(s.outcome, '?')} {s}" for s in self.steps])

    def __repr__(self) -> str:
        return f"<Report {self._headline()}>\n" + "\n".join(f"  {_MARK.get(s.outcome, '?')} {s}" for s in self.steps)

    def _repr_html_(self) -> str:
        rows = [
            [f"<code>{_e(s.step)}</code>", f"{_e(_MARK.get(s.outcome, '?'))} {_e(s.outcome)}", f"{s.elapsed_ms} ms", _e(s.message or s.reason or "")]
            for s in self.steps
        ]
        out = _table(self._headline(), ["step", "outcome", "time", ""], rows)
        return out + "".join(f"<div style='color:#cf222e'>⚠ {_e(step)}: {_e(msg)}</div>" for step, msg in self.warnings)

    @classmethod
    def _build(cls, report: Mapping[str, Any], events: Sequence[Event], order: Sequence[str]) -> Report:
        steps = [
            StepResult(
                step=r["step"],
                outcome=r["outcome"],
                elapsed_ms=int(r.get("elapsed_ms", 0)),
                error_kind=r.get("kind"),
                message=r.get("message"),
                reason=r.get("reason"),
            )
            for r in report.get("steps", [])
        ]
        rank = {s: i for i, s in enumerate(order)}
        steps.sort(key=lambda s: rank.get(s.step, len(rank)))
        warnings = tuple((e.step, e.message) for e in events if isinstance(e, WarningEvent))
        return cls(str(report.get("operation", "")), str(report.get("env", "")), tuple(steps), warnings, int(report.get("elapsed_ms", 0)))


@dataclass(frozen=True)
class Preempted:
    """A VM stopped because GCE preempted it (a spot VM), as :attr:`Status.preempted` shows.

    Attributes:
        at: When, RFC 3339 in UTC (``2026-12-04T10:02:11Z``).
        provisioning: The VM's provisioning model (``spot``).
        message: What ``status`` prints: when, and that ``start`` or ``up`` brings it back
            with its disks and data.
    """

    at: str
    provisioning: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class KeptBucket:
    """A bucket ``down`` keeps, as :attr:`Status.buckets` shows it: still billed by its size.

    Attributes:
        name: Bucket name.
        bytes: Bytes in its objects; ``None`` when it could not be listed.
        objects: How many objects; ``None`` when it could not be listed.
        note: Why the size is unknown.
    """

    name: str
    bytes: int | None
    objects: int | None
    note: str | None = None

    def __str__(self) -> str:
        if self.bytes is None:
            return f"bucket gs://{self.name}: size unknown ({self.note or 'not listed'})"
        return f"bucket gs://{self.name} holds {self.bytes} bytes in {self.objects} object(s)"


@dataclass(frozen=True)
class Status:
    """What kgenv recorded for an environment and a live look at each step.

    Attributes:
        env: Environment name.
        target: ``gce``, ``ssh`` or ``local``.
        state_file: The state file (it may not exist when nothing stands).
        created: By step, what kgenv created and still owns (role → resource).
        facts: By step, what steps observed (zone used, external IP, ...). Never secrets.
        live: The live check, as :meth:`kgenv.Env.plan` shows it.
        kept: What ``down`` keeps (data disks with their size, buckets): still billed, and
            where your work lives.
        cost: What the environment costs per hour, and its disks per month (GCE target).
        running: What the running VM has cost since it last started; ``None`` when stopped.
        preempted: Set when the VM is stopped because GCE preempted it: when, and how to
            bring it back (:meth:`kgenv.Env.start` or :meth:`kgenv.Env.up`).
    """

    env: str
    target: str
    state_file: Path
    created: Mapping[str, Mapping[str, str]]
    facts: Mapping[str, Mapping[str, str]]
    live: Plan
    kept: tuple[str, ...] = ()
    cost: Cost | None = None
    running: RunningCost | None = None
    preempted: Preempted | None = None
    buckets: tuple[KeptBucket, ...] = ()

    @property
    def is_empty(self) -> bool:
        """Whether nothing kgenv created still stands."""
        return not any(self.created.values())

    def resources(self) -> list[tuple[str, str, str]]:
        """Every created resource as ``(step, role, resource)``."""
        return [(step, role, res) for step, roles in self.created.items() for role, res in roles.items()]

    def _lines(self) -> list[str]:
        head = f"status of {self.env} ({self.target}): " + ("nothing created" if self.is_empty else f"{len(self.resources())} resource(s)")
        lines = [head, f"  state file: {self.state_file}"]
        lines += [f"  {step}: {role} = {res}" for step, role, res in self.resources()]
        lines += [f"  kept by down: {k}" for k in self.kept]
        lines += [f"  {b}" for b in self.buckets]
        if self.preempted is not None:
            lines.append(f"  instance: {self.preempted.message}")
        lines.append("  " + self.live._headline())
        if self.cost is not None:
            lines += ["  " + line for line in self.cost._lines()]
        if self.running is not None:
            lines.append(f"  {self.running}")
        return lines

    def __str__(self) -> str:
        return "\n".join(self._lines())

    def __repr__(self) -> str:
        return "<Status " + "\n".join(self._lines()) + ">"

    def _repr_html_(self) -> str:
        rows = [[f"<code>{_e(s)}</code>", _e(r), f"<code>{_e(v)}</code>"] for s, r, v in self.resources()]
        head = f"status of {self.env} ({self.target}) — state file {self.state_file}"
        return _table(head, ["step", "role", "resource"], rows) + self.live._repr_html_()

    @classmethod
    def _build(cls, status: Mapping[str, Any], events: Sequence[Event], order: Sequence[str]) -> Status:
        state = status.get("state", {})
        steps = state.get("steps", {})
        return cls(
            env=str(state.get("env", "")),
            target=str(state.get("target", "")),
            state_file=Path(status.get("state_file", "")),
            created={k: dict(v.get("created", {})) for k, v in steps.items() if v.get("created")},
            facts={k: dict(v.get("facts", {})) for k, v in steps.items() if v.get("facts")},
            live=Plan._build(status.get("live", {}), events, order),
            kept=tuple(str(k) for k in status.get("kept", [])),
            cost=Cost._build(status.get("prices")),
            running=RunningCost._build(status.get("running")),
            preempted=_preempted(status.get("preempted")),
            buckets=tuple(_kept_bucket(b) for b in status.get("buckets", [])),
        )


def _kept_bucket(b: Mapping[str, Any]) -> KeptBucket:
    usage = b.get("usage")
    note = b.get("note")
    return KeptBucket(
        name=str(b.get("name", "")),
        bytes=int(usage["bytes"]) if usage else None,
        objects=int(usage["objects"]) if usage else None,
        note=str(note) if note is not None else None,
    )


def _preempted(p: Mapping[str, Any] | None) -> Preempted | None:
    if not p:
        return None
    return Preempted(at=str(p.get("at", "")), provisioning=str(p.get("provisioning", "")), message=str(p.get("message", "")))


@dataclass(frozen=True)
class CommandResult:
    """A command's result from :meth:`kgenv.Env.ssh` or :meth:`kgenv.Env.exec`.

    Attributes:
        command: The shell line that ran.
        exit_code: Its exit status (-1 when killed by a signal).
        stdout: Everything it wrote to stdout.
        stderr: Everything it wrote to stderr.
    """

    command: str
    exit_code: int
    stdout: bytes = field(repr=False)
    stderr: bytes = field(repr=False)

    @property
    def ok(self) -> bool:
        """Whether it exited 0."""
        return self.exit_code == 0

    @property
    def text(self) -> str:
        """Stdout decoded as UTF-8 (invalid bytes replaced)."""
        return self.stdout.decode("utf-8", "replace")


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as ``nvidia-smi`` sees it in the container.

    Attributes:
        name: Model (``Tesla T4``).
        driver_version: Driver version.
        memory_mib: Memory in MiB, when reported.
    """

    name: str
    driver_version: str
    memory_mib: int | None = None

    def __str__(self) -> str:
        return f"{self.name}, {self.driver_version}" + (f", {self.memory_mib} MiB" if self.memory_mib is not None else "")


@dataclass(frozen=True)
class GpuReport:
    """What :meth:`kgenv.Env.gpu` saw in the container.

    Attributes:
        gpus: GPUs visible inside the container.
        driver_version: The driver version (of the first GPU).
        cuda_version: The highest CUDA version the driver supports.
        torch_cuda: ``torch.cuda.is_available()``; None when the image has no PyTorch.
        stub_shadowing: A CUDA stub directory that shadows the driver's ``libcuda``.
        ld_library_path: ``LD_LIBRARY_PATH`` inside the container.
        problem: Why no GPU was seen.
    """

    gpus: tuple[GpuInfo, ...]
    driver_version: str | None = None
    cuda_version: str | None = None
    torch_cuda: bool | None = None
    stub_shadowing: str | None = None
    ld_library_path: str | None = None
    problem: str | None = None

    @property
    def usable(self) -> bool:
        """Whether a GPU is visible and nothing stops PyTorch from using it."""
        return bool(self.gpus) and self.stub_shadowing is None and self.torch_cuda is not False

    def __str__(self) -> str:
        lines = [f"GPU: {g}" for g in self.gpus]
        if self.cuda_version:
            lines.append(f"CUDA (driver): {self.cuda_version}")
        if self.torch_cuda is not None:
            lines.append(f"torch.cuda.is_available(): {self.torch_cuda}")
        if self.stub_shadowing:
            lines.append(f"CUDA stub library in {self.stub_shadowing} shadows the driver's libcuda")
        if self.problem:
            lines.append(f"no GPU: {self.problem}")
        return "\n".join(lines)

    @classmethod
    def _build(cls, r: Mapping[str, Any]) -> GpuReport:
        gpus = tuple(GpuInfo(g["name"], g["driver_version"], g.get("memory_mib")) for g in r.get("gpus", []))
        return cls(
            gpus,
            r.get("driver_version"),
            r.get("cuda_version"),
            r.get("torch_cuda"),
            r.get("stub_shadowing"),
            r.get("ld_library_path"),
            r.get("problem"),
        )


@dataclass(frozen=True)
class DataFile:
    """One file of a competition's data.

    Attributes:
        name: Path within the competition's data.
        size: Size in bytes.
    """

    name: str
    size: int


@dataclass(frozen=True)
class DownloadResult:
    """What :func:`kgenv.data.download` did.

    Attributes:
        competition: The competition.
        dest: Where the files are.
        fetched: ``(file, bytes)`` for each file downloaded.
        skipped: Files already complete at ``dest``.
    """

    competition: str
    dest: str
    fetched: tuple[tuple[str, int], ...]
    skipped: tuple[str, ...]
    elapsed_ms: int = 0

    @property
    def bytes(self) -> int:
        """Bytes downloaded."""
        return sum(n for _, n in self.fetched)

    def __str__(self) -> str:
        return f"{self.competition} → {self.dest}: {len(self.fetched)} file(s), {self.bytes} bytes fetched; {len(self.skipped)} already there"

    def _repr_html_(self) -> str:
        rows = [[f"<code>{_e(n)}</code>", f"{b:,}", "fetched"] for n, b in self.fetched] + [[f"<code>{_e(n)}</code>", "", "already there"] for n in self.skipped]
        return _table(str(self), ["file", "bytes", ""], rows)


@dataclass(frozen=True)
class StepTeardown:
    """What ``down`` would do to one step.

    Attributes:
        step: Step id.
        deletes: What it deletes, one readable line each.
        keeps: What it keeps (the bucket, the data disk), with how to delete it.
        disks: The persistent disks the step holds: the names ``delete_disks=`` accepts.
    """

    step: str
    deletes: tuple[str, ...] = ()
    keeps: tuple[str, ...] = ()
    disks: tuple[str, ...] = ()


@dataclass(frozen=True)
class DownPreview:
    """What :meth:`kgenv.Env.down` would delete and keep, step by step in the order
    ``down`` goes (read from the state file; nothing is called or changed).

    Attributes:
        env: Environment name.
        steps: The steps that delete or keep something.
    """

    env: str
    steps: tuple[StepTeardown, ...] = ()

    @property
    def deletes(self) -> tuple[str, ...]:
        """Everything ``down`` would delete."""
        return tuple(d for s in self.steps for d in s.deletes)

    @property
    def keeps(self) -> tuple[str, ...]:
        """Everything ``down`` keeps."""
        return tuple(k for s in self.steps for k in s.keeps)

    @property
    def disks(self) -> tuple[str, ...]:
        """The persistent disks ``down`` keeps unless named in ``delete_disks=``."""
        return tuple(d for s in self.steps for d in s.disks)

    def __len__(self) -> int:
        return len(self.deletes)

    def __str__(self) -> str:
        width = max((len(s.step) for s in self.steps), default=0)
        if self.deletes:
            lines = [f"down: deletes {len(self.deletes)} resource(s) of `{self.env}`:"]
            lines += [f"  - {s.step:<{width}}  {d}" for s in self.steps for d in s.deletes]
        else:
            lines = [f"down: nothing of `{self.env}` to delete"]
        if self.keeps:
            lines.append("keeps:")
            lines += [f"  = {s.step:<{width}}  {k}" for s in self.steps for k in s.keeps]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<DownPreview {self.env}: {len(self.deletes)} to delete, {len(self.keeps)} kept>"

    def _repr_html_(self) -> str:
        rows = [[f"<code>{_e(s.step)}</code>", "<span style='color:#cf222e'>delete</span>", _e(d)] for s in self.steps for d in s.deletes]
        rows += [[f"<code>{_e(s.step)}</code>", "keep", _e(k)] for s in self.steps for k in s.keeps]
        return _table(f"down {self.env}: {len(self.deletes)} to delete, {len(self.keeps)} kept", ["step", "", "what"], rows)

    @classmethod
    def _build(cls, p: Mapping[str, Any]) -> DownPreview:
        steps = tuple(
            StepTeardown(str(s["step"]), tuple(s.get("deletes", ())), tuple(s.get("keeps", ())), tuple(s.get("disks", ())))
            for s in p.get("steps", [])
        )
        return cls(str(p.get("env", "")), steps)
