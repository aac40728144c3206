"""The parts of an environment, one class per section of ``kgenv.toml``.

Keyword arguments have the same names as the TOML keys, and every argument left out
(``None``) takes the default the TOML file would. Each part is checked as soon as it is
made, so a bad value fails on the line that wrote it::

    kgenv.Instance(project="my-project", zones=["us-central1-a"], gpu_count=3)
    # kgenv.ValidationError: kgenv.Instance(gpu_count=3): GPU count 3 is not 1, 2, 4 or 8 ...

Rules that need the whole environment (a container needs an image, autostop only on
``gce``) are checked by :class:`kgenv.Env`.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing
from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar, Literal, Mapping, Sequence, Union

from . import _kgenv
from ._errors import ValidationError

__all__ = [
    "Instance",
    "Firewall",
    "BucketMount",
    "GithubKey",
    "Image",
    "Container",
    "Publish",
    "Mount",
    "Jupyter",
    "Data",
    "Autostop",
    "Budget",
    "Ssh",
]

_HINTS: dict[type, dict[str, Any]] = {}


def _type_ok(value: Any, tp: Any) -> bool:
    """Whether `value` fits the annotation `tp` (the subset the sections use)."""
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, t) for t in typing.get_args(tp))
    if origin is Literal:
        # Only the type here: the core checks the value and says what the choices mean.
        return any(type(value) is type(a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (collections.abc.Sequence, tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            return False
        (item,) = typing.get_args(tp)[:1] or (Any,)
        return all(_type_ok(v, item) for v in value)
    if origin in (collections.abc.Mapping, dict):
        if not isinstance(value, collections.abc.Mapping):
            return False
        k, v = typing.get_args(tp) or (Any, Any)
        return all(_type_ok(a, k) and _type_ok(b, v) for a, b in value.items())
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def _describe(tp: Any) -> str:
    text = str(tp).replace("typing.", "").replace("collections.abc.", "")
    return text.replace("kgenv._specs.", "")


def _plain(value: Any) -> Any:
    """A section value as TOML-shaped plain data."""
    if isinstance(value, _Section):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


class _Section:
    """Common behaviour: type checks, early validation, TOML-shaped dictionaries."""

    _section: ClassVar[str] = ""
    # Values that stand in for what the environment fills in (instance name, project...)
    # so a section can be validated on its own; only the user's values can then fail.
    _placeholders: ClassVar[dict[str, Any]] = {}

    def __post_init__(self) -> None:
        cls = type(self)
        hints = _HINTS.get(cls)
        if hints is None:
            hints = _HINTS[cls] = typing.get_type_hints(cls, globalns=globals())
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if not _type_ok(value, hints[f.name]):
                raise TypeError(
                    f"kgenv.{cls.__name__}({f.name}={value!r}): expected {_describe(hints[f.name])}, "
                    f"got {type(value).__name__}"
                )
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
            elif isinstance(value, Mapping) and not isinstance(value, dict):
                object.__setattr__(self, f.name, dict(value))
        if cls._section:
            self._validate()

    def to_dict(self) -> dict[str, Any]:
        """The section as the TOML table it mirrors (arguments left out are omitted)."""
        return {
            f.name: _plain(getattr(self, f.name))
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if getattr(self, f.name) is not None
        }

    def _validate(self) -> None:
        doc = self.to_dict()
        for key, value in self._placeholders.items():
            if doc.get(key) in (None, [], ()):
                doc[key] = value
        try:
            _kgenv.validate_section(self._section, doc)
        except ValidationError as e:
            field = e.field or ""
            shown = f"{field}={getattr(self, field)!r}" if hasattr(self, field) else field
            raise ValidationError(
                f"kgenv.{type(self).__name__}({shown}): {e.rule}", field=field, rule=e.rule
            ) from None


@dataclass(frozen=True)
class Publish(_Section):
    """A port the container publishes on the host (``ports`` of :class:`Container`).

    Args:
        container: Port inside the container.
        host: Port on the host (default: the container port).
        bind: Host address (default ``127.0.0.1``: reached through the SSH tunnel, never
            public).
    """

    container: int
    _: KW_ONLY
    host: int | None = None
    bind: str | None = None


@dataclass(frozen=True)
class Mount(_Section):
    """A bind mount into the container (``mounts`` of :class:`Container`).

    Args:
        source: Absolute path on the host.
        target: Absolute path in the container.
        read_only: Mount read-only.
    """

    source: str
    target: str
    _: KW_ONLY
    read_only: bool = False


@dataclass(frozen=True, kw_only=True)
class Instance(_Section):
    """The GCE VM (guide step 1); only for ``target="gce"``.

    Args:
        project: GCP project id (default: ``CLOUDSDK_CORE_PROJECT``, or ``Env(project=)``).
        zones: Zones to try in order; a GPU stockout moves on to the next (default:
            ``CLOUDSDK_COMPUTE_ZONE``, or ``Env(zone=)``). Regions (``"europe-west4"``)
            stand for each of their zones that offer the GPU; ``"auto"`` for every zone
            that does.
        name: Instance name (default: the environment's name).
        machine_type: Default ``n1-standard-8``.
        gpu_type: Default ``nvidia-tesla-t4``; ``"none"`` for a CPU-only VM.
        gpu_count: 1, 2, 4 or 8 (default 1; fixed by g2/a2/a3 machine types).
        gpu: Several acceptable GPUs, tried in order, instead of ``machine_type``,
            ``gpu_type`` and ``gpu_count``: ``[{"type": "nvidia-l4", "machine_type":
            "g2-standard-8"}, {"type": "nvidia-tesla-t4", "machine_type":
            "n1-standard-8", "count": 1}]``.
        image_project: Boot image project (default ``deeplearning-platform-release``).
        image_family: Boot image family (default: a Deep Learning VM with CUDA 12.9).
        disk_size_gb: Boot disk size (default 200; the Kaggle GPU image is ~60 GB).
        disk_type: ``pd-standard``, ``pd-balanced`` (default), ``pd-ssd``, ...
        spot: Spot VM: cheaper, may be stopped by Google (default False); the older
            spelling of ``provisioning="spot"``.
        provisioning: ``"standard"`` (default), ``"spot"`` (preempted VMs stop with their
            disks; ``start``/``up`` brings them back) or ``"flex-start"`` (needs
            ``max_run_duration``; a2/a3/a4/g2/h4d machine types).
        max_run_duration: Flex-start only: how long the VM may run before GCE stops it,
            disks and data kept (``"8h"``; 10m to 7d).
        service_account: The service account email the VM runs as (default: the project's
            Compute Engine default account).
        scopes: Service-account scopes. Default: least privilege — ``devstorage.read_write``
            with a bucket (``read_only`` without), ``logging.write``, ``monitoring.write``.
            ``cloud-platform`` works, and ``plan`` warns.
        tags: Network tags (default: kgenv's tag for this environment).
        labels: Extra labels (kgenv adds its ownership label).
    """

    _section: ClassVar[str] = "instance"
    _placeholders: ClassVar[dict[str, Any]] = {
        "name": "placeholder",
        "project": "placeholder-project",
        "zones": ["us-central1-a"],
    }

    project: str | None = None
    zones: Literal["auto"] | Sequence[str] | None = None
    name: str | None = None
    machine_type: str | None = None
    gpu_type: str | None = None
    gpu_count: int | None = None
    gpu: Sequence[Mapping[str, str | int]] | None = None
    image_project: str | None = None
    image_family: str | None = None
    disk_size_gb: int | None = None
    disk_type: str | None = None
    spot: bool | None = None
    provisioning: str | None = None
    max_run_duration: str | None = None
    service_account: str | None = None
    scopes: Sequence[str] | None = None
    tags: Sequence[str] | None = None
    labels: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Firewall(_Section):
    """A firewall rule (guide step 2); only for ``target="gce"``.

    Without any rule kgenv opens SSH (22) to your current public IP only, and Jupyter is
    reached through the SSH tunnel. Giving rules replaces that default.

    Args:
        name: Rule name.
        ports: Ports (``22``) or ranges (``"8000-8100"``).
        source_ranges: Allowed sources (CIDR). Default: your public IP /32, detected at
            run time. ``"0.0.0.0/0"`` works, but ``plan`` warns loudly.
        protocol: ``tcp`` (default) or ``udp``.
        target_tags: Network tags the rule applies to (default: kgenv's instance tag).
    """

    _section: ClassVar[str] = "firewall"
    _placeholders: ClassVar[dict[str, Any]] = {"target_tags": ["placeholder"]}

    name: str
    _: KW_ONLY
    ports: Sequence[int | str] | None = None
    source_ranges: Sequence[str] | None = None
    protocol: str | None = None
    target_tags: Sequence[str] | None = None


@dataclass(frozen=True)
class BucketMount(_Section):
    """A GCS bucket mounted on the host with gcsfuse (guide step 3); ``gce`` and ``ssh``.

    Args:
        bucket: Bucket name (``gs://`` is accepted and stripped).
        mount_point: Where on the host (default ``/mnt/gcs``); also visible in the container.
        options: Extra mount(8) options of the fstab entry (``ro``, ``noatime``).
        gcsfuse: gcsfuse config-file options by documented dotted name, e.g.
            ``{"file-cache.max-size-mb": 20480}``; each overrides kgenv's tuned default (a
            file cache under the data root sized at a fifth of the data disk, parallel
            downloads, a 5-minute metadata TTL). A misspelt name is refused with the nearest
            documented one.
        create: Create the bucket when missing (default True). ``down`` keeps it.
        location: Location for a created bucket (default: the instance's region).
    """

    _section: ClassVar[str] = "bucket"

    bucket: str
    _: KW_ONLY
    mount_point: str | None = None
    options: Sequence[str] | None = None
    gcsfuse: Mapping[str, Any] | None = None
    create: bool | None = None
    location: str | None = None


@dataclass(frozen=True, kw_only=True)
class GithubKey(_Section):
    """An SSH key made on the host and registered on GitHub (guide step 3).

    Args:
        repo: ``owner/name`` for a deploy key; None for a key on your account.
        read_only: Read-only deploy key (default True when ``repo`` is given).
        title: Title shown on GitHub (default ``kgenv-<env>``).
    """

    _section: ClassVar[str] = "github_key"

    repo: str | None = None
    read_only: bool | None = None
    title: str | None = None


@dataclass(frozen=True, kw_only=True)
class Image(_Section):
    """Kaggle's docker image, optionally with a thin layer of extras (guide step 3).

    Args:
        base: Base image (default ``gcr.io/kaggle-gpu-images/python:latest``).
        apt: Extra Debian packages, e.g. ``["cmake"]``.
        pip: Extra pip requirements, e.g. ``["dlib"]``.
    """

    _section: ClassVar[str] = "image"

    base: str | None = None
    apt: Sequence[str] | None = None
    pip: Sequence[str] | None = None


@dataclass(frozen=True, kw_only=True)
class Container(_Section):
    """The container, with the GPU visible (guide step 3).

    Args:
        name: Container name (default ``kgenv-<env>``).
        gpus: ``"all"`` (default), ``"none"`` or a count.
        ports: Published ports: ints (container port, same host port, on 127.0.0.1) or
            :class:`Publish`. Default: Jupyter's 8888 on 127.0.0.1.
        mounts: Bind mounts (:class:`Mount`).
        shm_size: ``/dev/shm`` size like ``"16g"`` (default 16g: PyTorch data loaders need it).
        env: Environment variables.
        workdir: Working directory inside (default ``/kaggle/working``).
    """

    _section: ClassVar[str] = "container"

    name: str | None = None
    gpus: int | Literal["all", "none"] | None = None
    ports: Sequence[int | Publish] | None = None
    mounts: Sequence[Mount] | None = None
    shm_size: str | None = None
    env: Mapping[str, str] | None = None
    workdir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        if "ports" in d:
            d["ports"] = [{"container": p} if isinstance(p, int) else p for p in d["ports"]]
        return d


@dataclass(frozen=True, kw_only=True)
class Jupyter(_Section):
    """Jupyter in the container (guide step 4); never without authentication.

    Args:
        auth: ``"password"`` (default) or ``"token"``.
        password_env: Variable holding the password on this machine (default
            ``KGENV_JUPYTER_PASSWORD``); it is hashed here and never leaves.
        tls: ``"self-signed"`` (default), ``"off"`` (only behind the tunnel) or ``"files"``.
        cert: PEM certificate for ``tls="files"``.
        key: PEM key for ``tls="files"``.
        port: Port inside the container (default 8888).
        root_dir: Notebook root inside the container (default ``/kaggle``).
    """

    _section: ClassVar[str] = "jupyter"

    auth: Literal["password", "token"] | None = None
    password_env: str | None = None
    tls: Literal["off", "self-signed", "files"] | None = None
    cert: str | None = None
    key: str | None = None
    port: int | None = None
    root_dir: str | None = None


@dataclass(frozen=True)
class Data(_Section):
    """A competition's data (guide step 5). ``down`` keeps it.

    Args:
        competition: The slug, e.g. ``titanic`` (the part after ``/competitions/``).
        files: Globs of the files to fetch (default: all).
        dest: An absolute directory on the host or ``gs://bucket/prefix`` (default: the
            directory the container sees as ``/kaggle/input/<competition>``).
        extract: Unpack the ``.zip`` files Kaggle serves.
    """

    _section: ClassVar[str] = "data"
    _placeholders: ClassVar[dict[str, Any]] = {"dest": "/placeholder"}

    competition: str
    _: KW_ONLY
    files: Sequence[str] | None = None
    dest: str | None = None
    extract: bool | None = None


@dataclass(frozen=True)
class Autostop(_Section):
    """Stop (not delete) an idle VM so a forgotten environment stops billing; ``gce`` only.

    Idle means, for ``idle_minutes``: no SSH session, no Jupyter activity, no busy kernel
    (a running cell counts even when it prints nothing), every GPU under
    ``gpu_util_percent`` and every container process under ``cpu_percent``.

    Args:
        idle_minutes: Minutes without activity, 5 to 10080 (default 60).
        gpu_util_percent: A GPU at or above this utilisation is working, 1 to 100
            (default 10).
        cpu_percent: A container process at or above this percent of one core is working,
            1 to 100 (default 20).
        warn_minutes: Logged-in users and open Jupyter terminals are warned this many
            minutes before a stop (idle or budget); less than ``idle_minutes``, 0 for no
            warning (default 5, or half ``idle_minutes`` when shorter).
    """

    _section: ClassVar[str] = "autostop"

    idle_minutes: int | None = None
    _: KW_ONLY
    gpu_util_percent: int | None = None
    cpu_percent: int | None = None
    warn_minutes: int | None = None


@dataclass(frozen=True)
class Budget(_Section):
    """A budget the VM enforces itself (so it holds while your laptop is closed): it
    powers off once it has run ``max_hours`` (stopped time never counts) or cost
    ``max_cost`` US dollars at its hourly price, whichever comes first; ``gce`` only.
    :meth:`kgenv.Env.autostop` with None does not lift it.

    Args:
        max_hours: Running hours, more than 0.
        max_cost: US dollars, more than 0; needs the VM's price (no price: ``up`` refuses
            rather than guess).
    """

    _section: ClassVar[str] = "budget"

    _: KW_ONLY
    max_hours: float | None = None
    max_cost: float | None = None


@dataclass(frozen=True)
class Ssh(_Section):
    """An existing host for ``target="ssh"``.

    Args:
        host: ``user@host[:port]``.
        identity_file: Private key (default: kgenv's key for this environment).
        trust_on_first_use: Record an unknown host key on first connection (default
            False: the key must already be in known_hosts).
    """

    _section: ClassVar[str] = "ssh"

    host: str
    _: KW_ONLY
    identity_file: str | None = None
    trust_on_first_use: bool | None = None
