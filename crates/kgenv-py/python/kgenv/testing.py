"""Offline testing: the core's stateful mock backends.

A :class:`MockWorld` simulates the cloud, the host, the Docker engine, Kaggle and GitHub
together: what the mock compute creates, the mock SSH can log into. Pass it to an
environment to run everything offline, then look inside::

    from kgenv.testing import Fault, MockWorld

    world = MockWorld()
    env = kgenv.Env.from_toml("kgenv.toml", backends=world)
    world.fail_next("compute.insert_instance", Fault.stockout())
    with pytest.raises(kgenv.StockoutError):
        env.up()
    assert not world.state()["instances"]

Operation names are ``backend.call``: ``compute.get_instance``,
``compute.insert_instance``, ``compute.delete_instance``, ``compute.insert_firewall``,
``compute.caller_ip``, ``storage.*``, ``remote.connect``, ``remote.exec``,
``remote.put_file``, ``engine.pull_image``, ``engine.create_container``,
``engine.exec``, ``kaggle.list_files``, ``kaggle.fetch``, ``github.*`` — or ``*`` for
every call. :meth:`MockWorld.calls` lists what ran.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, Union

from . import _kgenv

__all__ = ["MockWorld", "Fault", "Call", "Hold"]

Hold = _kgenv.MockHold
"""A call held at its start by :meth:`MockWorld.hold_next`: ``started`` says whether it
has started, ``wait_started(timeout)`` blocks (GIL released) until it has or ``timeout``
seconds pass and returns which, ``release()`` lets it go on (so does dropping the hold)."""

FaultKind = Literal[
    "transient", "rate_limited", "stockout", "quota", "permission_denied", "connection", "command_timeout"
]


@dataclass(frozen=True)
class Fault:
    """An error to inject with :meth:`MockWorld.fail_next`.

    Attributes:
        kind: ``transient`` (a 503), ``rate_limited`` (a 429), ``stockout`` (the zone is out
            of GPUs), ``quota``, ``permission_denied``, ``connection`` (a dropped link) or
            ``command_timeout`` (a host command killed past its limit; inject on
            ``remote.exec``).
        metric: The quota metric (quota only).
        limit: The quota limit (quota only).
        region: The quota's region; None for a project-wide quota (quota only).
    """

    kind: FaultKind
    metric: str | None = None
    limit: float | None = None
    region: str | None = None

    @classmethod
    def transient(cls) -> Fault:
        """A retryable 5xx-like failure (:class:`kgenv.TransientError`)."""
        return cls("transient")

    @classmethod
    def rate_limited(cls) -> Fault:
        """A 429 (:class:`kgenv.RateLimitedError`)."""
        return cls("rate_limited")

    @classmethod
    def stockout(cls) -> Fault:
        """The zone has no capacity (:class:`kgenv.StockoutError`)."""
        return cls("stockout")

    @classmethod
    def quota(cls, metric: str, limit: float | None = None, region: str | None = None) -> Fault:
        """A quota stops the call (:class:`kgenv.QuotaError`)."""
        return cls("quota", metric, limit, region)

    @classmethod
    def permission_denied(cls) -> Fault:
        """The caller is not allowed (:class:`kgenv.AuthError`)."""
        return cls("permission_denied")

    @classmethod
    def connection(cls) -> Fault:
        """The connection dropped (:class:`kgenv.ConnectionFailedError`)."""
        return cls("connection")

    @classmethod
    def command_timeout(cls) -> Fault:
        """A command on the host hung and was killed at its limit
        (:class:`kgenv.CommandTimeoutError`); inject it on ``remote.exec``."""
        return cls("command_timeout")


@dataclass(frozen=True)
class Call:
    """One recorded backend call.

    Attributes:
        op: ``backend.call``, e.g. ``compute.insert_instance``.
        target: What it was about (an instance path, a container, a command).
        mutating: Whether it changes anything.
        start: Seconds since the world was made, when it started.
        end: Seconds since the world was made, when it ended.
        failed: Whether it failed.
    """

    op: str
    target: str
    mutating: bool
    start: float
    end: float
    failed: bool


class MockWorld:
    """A simulated world for the mock backends: one GPU on the host and the ``titanic``
    competition to start with.

    Args:
        path: Keep the world in this file (loaded if it exists, saved after every change),
            so several processes share it, like the CLI's ``--mock``. Default: in memory.

    Environments running on a world keep their state files in :attr:`state_dir` (a
    temporary directory, or ``<path>.state``), never with real environments' state.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self._world = _kgenv.MockWorld(None if path is None else os.fspath(path))

    @property
    def state_dir(self) -> Path:
        """Where environments on this world keep their state files."""
        return Path(self._world.state_dir)

    @property
    def path(self) -> Path | None:
        """The file the world is saved to, if any."""
        p = self._world.path
        return None if p is None else Path(p)

    def fail_next(self, op: str, fault: Fault | FaultKind = "transient", times: int = 1) -> None:
        """Makes the next ``times`` calls of ``op`` (or ``*`` for any) fail with ``fault``."""
        if isinstance(fault, str):
            fault = Fault(fault)
        self._world.fail_next(op, fault.kind, times, metric=fault.metric, limit=fault.limit, region=fault.region)

    def set_latency(self, op: str, seconds: float) -> None:
        """Adds ``seconds`` to every call of ``op`` (or ``*``): for progress, cancellation
        and concurrency tests."""
        self._world.set_latency(op, float(seconds))

    def hold_next(self, op: str) -> Hold:
        """Holds the next call of ``op`` (an exact name, e.g. ``remote.connect``) at its start
        until the returned :data:`Hold` is released: a test can act while that call is known
        to be in flight (press Ctrl-C, cancel a task) instead of sleeping and hoping. Several
        holds on one ``op`` take its next calls in turn."""
        return self._world.hold_next(op)

    def calls(self, op: str | None = None) -> list[Call]:
        """Recorded calls, oldest first; only those of ``op`` when given."""
        return [Call(*c) for c in self._world.calls() if op is None or c[0] == op]

    def mutating_calls(self) -> list[Call]:
        """Recorded calls that changed something."""
        return [c for c in self.calls() if c.mutating]

    def clear_calls(self) -> None:
        """Forgets the recorded calls."""
        self._world.clear_calls()

    def state(self) -> dict[str, Any]:
        """A copy of everything the world holds: ``instances``, ``firewalls``, ``buckets``,
        ``host_files``, ``images``, ``containers``, ``github_keys``, ``competitions``,
        ``landed`` (data files at their destination), ...."""
        return self._world.state()

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Replaces the world's state with one shaped like :meth:`state`'s."""
        self._world.set_state(dict(state))

    def _edit(self, key: str, value: Any) -> None:
        s = self.state()
        s[key] = value
        self.set_state(s)

    def set_price_catalog(self, skus: Sequence[Mapping[str, Any]] | None) -> None:
        """Compute Engine's SKUs the mock Billing Catalog serves, in the Cloud Billing
        Catalog API's shape (``skuId``, ``description``, ``category``, ``serviceRegions``,
        ``pricingInfo``); ``None`` (the default) makes it unavailable, so prices are
        unknown. The mock's prices are never cached on disk."""
        self._edit("billing_skus", None if skus is None else [dict(s) for s in skus])

    def set_host_gpus(self, n: int) -> None:
        """How many GPUs the simulated host has (0: ``nvidia-smi`` is missing)."""
        self._edit("host_gpus", int(n))

    def add_stockout_zone(self, zone: str) -> None:
        """Makes instance inserts in ``zone`` fail with a stockout until further notice."""
        s = self.state()
        s["stockout_zones"] = sorted({*s["stockout_zones"], zone})
        self.set_state(s)

    def capacity_returns_after(self, failed_inserts: int) -> None:
        """Capacity comes back in every zone once ``failed_inserts`` more inserts have
        failed on a stockout (the stockout zones are then cleared): a wait for capacity
        that succeeds in a later round."""
        self._edit("stockout_inserts_left", int(failed_inserts))

    def add_competition(self, slug: str, files: Mapping[str, int]) -> None:
        """Adds (or replaces) a competition with ``{file name: size}``."""
        s = self.state()
        s["competitions"][slug] = [{"name": n, "size": int(size)} for n, size in files.items()]
        self.set_state(s)

    def __repr__(self) -> str:
        return repr(self._world)


Backends = Union[Literal["real", "mock"], MockWorld]
