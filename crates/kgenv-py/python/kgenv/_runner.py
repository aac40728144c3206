"""Waiting for runs: blocking (in Rust, GIL released, Ctrl-C cancels cleanly) or from an
asyncio event loop (``await``; cancelling the task cancels the run cleanly)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Callable, Optional

from . import _kgenv
from ._progress import Display, default_display
from .events import Event, FailedEvent, PlannedEvent, WarningEvent, from_dict

if TYPE_CHECKING:
    import asyncio

__all__ = ["Dispatch", "run_sync", "run_async", "OnEvent"]

OnEvent = Callable[[Event], object]
Start = Callable[[Optional[Callable[[], None]]], _kgenv.Run]


class Dispatch:
    """Turns the compiled module's event dictionaries into :class:`Event` objects, keeps
    the ones results are built from, and hands each to the progress display and to the
    user's ``on_event``."""

    def __init__(self, operation: str, env: str, on_event: OnEvent | None, progress: bool | None) -> None:
        self.events: list[Event] = []
        self._on_event = on_event
        show = (on_event is None) if progress is None else progress
        self._display: Display | None = default_display(operation, env) if show else None

    def __call__(self, d: dict[str, Any]) -> None:
        ev = from_dict(d)
        if isinstance(ev, (PlannedEvent, WarningEvent, FailedEvent)):
            self.events.append(ev)
        if self._display is not None:
            try:
                self._display.event(ev)
            except Exception as e:  # a display bug must not stop a run
                warnings.warn(f"kgenv progress display failed and was turned off: {e!r}", RuntimeWarning, stacklevel=2)
                self._display = None
        if self._on_event is not None:
            self._on_event(ev)

    def close(self, error: BaseException | None) -> None:
        """The run ended."""
        if self._display is not None:
            try:
                self._display.close(error)
            except Exception:  # pragma: no cover - see __call__
                pass


def run_sync(start: Start, dispatch: Dispatch) -> Any:
    """Starts a run and blocks until it ends (see ``_kgenv.Run.wait``)."""
    run = start(None)
    try:
        result = run.wait(dispatch)
    except BaseException as e:
        dispatch.close(e)
        raise
    dispatch.close(None)
    return result


def _consume(fut: asyncio.Future[Any]) -> None:
    # Marks an exception as seen when nobody awaits the future any more.
    if not fut.cancelled():
        fut.exception()


async def run_async(start: Start, dispatch: Dispatch) -> Any:
    """Starts a run and awaits it on the running event loop.

    Messages are drained on the loop's thread when the runtime calls ``notify``, so
    ``on_event`` runs there too. Cancelling the awaiting task cancels the run, waits for
    it to stop at a safe point (state file consistent), then re-raises
    :class:`asyncio.CancelledError`; a second cancellation stops waiting.
    """
    import asyncio  # here, not at import time: `import kgenv` stays quick for scripts
    import contextvars

    loop = asyncio.get_running_loop()
    # Callbacks run in the awaiting task's context, so a notebook routes their output
    # (print, display) to the cell that awaited.
    context = contextvars.copy_context()
    done: asyncio.Future[Any] = loop.create_future()
    done.add_done_callback(_consume)
    failure: list[BaseException] = []
    holder: list[_kgenv.Run] = []

    def drain() -> None:
        if not holder:
            return
        run = holder[0]
        while not done.done():
            msg = run.poll()
            if msg is None:
                return
            kind, payload = msg
            if kind == "event":
                if failure:
                    continue
                try:
                    dispatch(payload)
                except BaseException as e:  # the callback failed: stop the run, then raise it
                    failure.append(e)
                    run.cancel()
            elif kind == "ok":
                done.set_result(payload)
            else:
                done.set_exception(payload)

    def notify() -> None:
        try:
            loop.call_soon_threadsafe(drain, context=context)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    holder.append(start(notify))
    loop.call_soon(drain, context=context)
    try:
        result = await asyncio.shield(done)
    except asyncio.CancelledError as cancelled:
        holder[0].cancel()
        try:
            await asyncio.shield(done)
        except BaseException:  # the run's own outcome (cancelled) is expected here
            pass
        dispatch.close(cancelled)
        raise
    except BaseException as e:
        if failure:
            dispatch.close(failure[0])
            raise failure[0] from None
        dispatch.close(e)
        raise
    if failure:
        dispatch.close(failure[0])
        raise failure[0]
    dispatch.close(None)
    return result
