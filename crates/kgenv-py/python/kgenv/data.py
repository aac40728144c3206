"""Competition data without an environment: :func:`list_files` lists a competition's
files, :func:`download` fetches them (selected by glob, optionally unpacked) through the
Kaggle backend to a destination, skipping the files that are already complete there —
``kgenv data list`` and ``kgenv data pull``.

Inside an environment use ``data=[kgenv.Data(...)]`` and ``env.up()``: the files then land
where the container sees them (``/kaggle/input/<competition>``).
"""

from __future__ import annotations

from typing import Any, Sequence

from . import _kgenv
from ._results import DataFile, DownloadResult
from ._runner import Dispatch, OnEvent, run_async, run_sync
from .testing import Backends, MockWorld

__all__ = ["list_files", "list_files_async", "download", "download_async", "DataFile", "DownloadResult"]


def _world(backends: Backends) -> Any:
    if backends == "mock":
        backends = MockWorld()
    if isinstance(backends, MockWorld):
        return backends._world
    if backends == "real":
        return None
    raise TypeError(f"backends={backends!r}: use \"real\", \"mock\" or a kgenv.testing.MockWorld")


def _start(competition: str, dest: str, files: Sequence[str] | None, extract: bool, backends: Backends) -> Any:
    world = _world(backends)
    globs = None if files is None else ([files] if isinstance(files, str) else list(files))
    # Validate now (raises kgenv.ValidationError naming the argument), start later.
    _kgenv.validate_section(
        "data", {"competition": competition, "dest": dest, "extract": bool(extract), **({"files": globs} if globs else {})}
    )
    return lambda notify: _kgenv.start_download(competition, dest, files=globs, extract=bool(extract), world=world, notify=notify)


def _result(r: dict[str, Any]) -> DownloadResult:
    return DownloadResult(
        r["competition"], r["dest"], tuple((n, int(b)) for n, b in r["fetched"]), tuple(r["skipped"]), int(r.get("elapsed_ms", 0))
    )


def _list_start(competition: str, backends: Backends) -> Any:
    world = _world(backends)
    return lambda notify: _kgenv.start_list(competition, world=world, notify=notify)


def _files(r: list[dict[str, Any]]) -> list[DataFile]:
    return [DataFile(f["name"], int(f["size"])) for f in r]


def list_files(competition: str, *, backends: Backends = "real") -> list[DataFile]:
    """The files of ``competition`` (its slug, e.g. ``titanic``) with their sizes."""
    return _files(run_sync(_list_start(competition, backends), Dispatch("data list", competition, None, False)))


async def list_files_async(competition: str, *, backends: Backends = "real") -> list[DataFile]:
    """:func:`list_files` as a coroutine."""
    return _files(await run_async(_list_start(competition, backends), Dispatch("data list", competition, None, False)))


def download(
    competition: str,
    dest: str,
    *,
    files: Sequence[str] | None = None,
    extract: bool = False,
    backends: Backends = "real",
    on_event: OnEvent | None = None,
    progress: bool | None = None,
) -> DownloadResult:
    """Downloads ``competition``'s files to ``dest``.

    Args:
        competition: The slug, e.g. ``titanic``.
        dest: An absolute directory or ``gs://bucket/prefix``.
        files: Globs of the files to fetch (default: all).
        extract: Unpack the ``.zip`` files Kaggle serves (directory destinations).
        backends: ``"real"`` (Kaggle), ``"mock"`` or a :class:`kgenv.testing.MockWorld`.
        on_event: Called with each :class:`kgenv.events.ProgressEvent` and friends.
        progress: Show progress (default: when ``on_event`` is not given).

    Blocks with the GIL released; Ctrl-C stops it (a partial file is resumed next time).
    """
    d = Dispatch("download", competition, on_event, progress)
    return _result(run_sync(_start(competition, dest, files, extract, backends), d))


async def download_async(
    competition: str,
    dest: str,
    *,
    files: Sequence[str] | None = None,
    extract: bool = False,
    backends: Backends = "real",
    on_event: OnEvent | None = None,
    progress: bool | None = None,
) -> DownloadResult:
    """:func:`download` as a coroutine."""
    d = Dispatch("download", competition, on_event, progress)
    return _result(await run_async(_start(competition, dest, files, extract, backends), d))
