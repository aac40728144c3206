"""kgenv: a Kaggle GPU analysis environment — VM, firewall, bucket, GitHub key, Kaggle's
image with the GPU visible, Jupyter with a password and TLS, competition data — as one
idempotent, secure call, from a notebook.

::

    import kgenv

    env = kgenv.Env.from_toml("kgenv.toml")     # or kgenv.Env("name", instance=..., ...)
    env.plan()                                  # what would change, and how
    env.up()                                    # converge; a second call changes nothing
    env.gpu()                                   # what the container sees of the GPU
    env.exec(["python", "-V"]); env.logs(tail=20)
    env.jupyter_url()                           # through an SSH tunnel, no public port
    env.stop(); env.start()                     # stop paying for the GPU, keep the disks
    env.down_preview()                          # what down would delete, and what it keeps
    env.down(yes=True)                          # remove what kgenv made (data is kept)

Every blocking call has an ``*_async`` twin for ``await`` (Jupyter's running loop
included); Ctrl-C and task cancellation stop runs cleanly. ``kgenv.testing.MockWorld``
runs everything offline.
"""

from __future__ import annotations

from . import _kgenv, data, events, jupyter, testing
from ._env import Env
from ._errors import (
    AlreadyExistsError,
    AuthError,
    BackendError,
    CancelledError,
    CommandFailedError,
    CommandTimeoutError,
    ConfigError,
    ConfirmationRequiredError,
    ConnectionFailedError,
    EnvLockedError,
    HostKeyMismatchError,
    InvalidRequestError,
    KgenvError,
    LocalIOError,
    NotFoundError,
    OperationTimeoutError,
    QuotaError,
    RateLimitedError,
    RemoteError,
    StateError,
    StockoutError,
    TransientError,
    UnavailableError,
    UsageError,
    ValidationError,
)
from ._kgenv import JupyterTunnel
from ._results import (
    CommandResult,
    Cost,
    DataFile,
    DiskCost,
    DownloadResult,
    DownPreview,
    GpuInfo,
    GpuReport,
    KeptBucket,
    Plan,
    PlannedStep,
    Preempted,
    Report,
    RunningCost,
    Status,
    StepInfo,
    StepResult,
    StepTeardown,
)
from ._specs import (
    Autostop,
    BucketMount,
    Budget,
    Container,
    Data,
    Firewall,
    GithubKey,
    Image,
    Instance,
    Jupyter,
    Mount,
    Publish,
    Ssh,
)
from .events import Event

__version__: str = _kgenv.version()


__all__ = [
    "Env",
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
    "Plan",
    "PlannedStep",
    "Report",
    "StepResult",
    "Preempted",
    "KeptBucket",
    "Status",
    "Cost",
    "DiskCost",
    "RunningCost",
    "StepInfo",
    "DownPreview",
    "StepTeardown",
    "CommandResult",
    "GpuInfo",
    "GpuReport",
    "DataFile",
    "DownloadResult",
    "JupyterTunnel",
    "Event",
    "events",
    "data",
    "jupyter",
    "testing",
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

# Show public classes as `kgenv.X` (tracebacks, reprs, pickles), not by private module.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and _obj.__module__.startswith("kgenv._") and _obj.__module__ != "kgenv._kgenv":
        _obj.__module__ = __name__
del _name, _obj
