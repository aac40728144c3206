"""Competition data without an environment: :func:`download` fetches a competition's
files (selected by glob) through the Kaggle backend to a destination, skipping the files
that are already complete there.

Inside an environment use ``data=[kgenv.Data(...)]`` and ``env.up()``: the files then land
where the container sees them (``/kaggle/input/<competition>``).
"""

from __future__ import annotations

from typing import Any, Sequence

from . import _kgenv
from ._results import DownloadResult
from ._runner import Dispatch, OnEvent, run_async, run_sync
from .testing import Backends, MockWorld

__all__ = ["download", "download_async", "DownloadResult"]


def _start(competition: str, dest: str, files: Sequence[str] | None, backends: Backends) -> Any:
    if backends == "mock":
        backends = MockWorld()
    if isinstance(backends, MockWorld):
        world: Any = backends._world
    elif backends == "real":
        world = None
    else:
        raise TypeError(f"backends={backends!r}: use \"real\", \"mock\" or a kgenv.testing.MockWorld")
    globs = None if files is None else ([files] if isinstance(files, str) else list(files))
    # Validate now (raises kgenv.ValidationError naming the argument), start later.
    _kgenv.validate_section("data", {"competition": competition, "dest": dest, **({"files": globs} if globs else {})})
    return lambda notify: _kgenv.start_download(competition, dest, files=globs, world=world, notify=notify)


def _result(r: dict[str, Any]) -> DownloadResult:
    return DownloadResult(r["competition"], r["dest"], tuple((n, int(b)) for n, b in r["fetched"]), tuple(r["skipped"]))


def download(
    competition: str,
    dest: str,
    *,
    files: Sequence[str] | None = None,
    backends: Backends = "real",
    on_event: OnEvent | None = None,
    progress: bool | None = None,
) -> DownloadResult:
    """Downloads ``competition``'s files to ``dest``.

    Args:
        competition: The slug, e.g. ``titanic``.
        dest: An absolute directory or ``gs://bucket/prefix``.
        files: Globs of the files to fetch (default: all).
        backends: ``"real"`` (Kaggle), ``"mock"`` or a :class:`kgenv.testing.MockWorld`.
        on_event: Called with each :class:`kgenv.events.ProgressEvent` and friends.
        progress: Show progress (default: when ``on_event`` is not given).

    Blocks with the GIL released; Ctrl-C stops it (a partial file is resumed next time).
    """
    d = Dispatch("download", competition, on_event, progress)
    return _result(run_sync(_start(competition, dest, files, backends), d))


async def download_async(
    competition: str,
    dest: str,
    *,
    files: Sequence[str] | None = None,
    backends: Backends = "real",
    on_event: OnEvent | None = None,
    progress: bool | None = None,
) -> DownloadResult:
    """:func:`download` as a coroutine."""
    d = Dispatch("download", competition, on_event, progress)
    return _result(await run_async(_start(competition, dest, files, backends), d))
