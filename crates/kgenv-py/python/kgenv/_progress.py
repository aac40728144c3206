"""The default progress display: a live table in Jupyter (one output that updates in
place), plain lines on stderr elsewhere. Used when an operation is called without
``on_event`` (or with ``progress=True``)."""

from __future__ import annotations

import html
import sys
import time
from typing import IO, Any

from .events import (
    DoneEvent,
    Event,
    FailedEvent,
    LogEvent,
    PlannedEvent,
    ProgressEvent,
    SatisfiedEvent,
    SkippedEvent,
    StartedEvent,
    WarningEvent,
)

__all__ = ["Display", "LineDisplay", "NotebookDisplay", "default_display", "in_notebook"]


def in_notebook() -> bool:
    """Whether code runs in a Jupyter kernel (not a terminal IPython or plain Python)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # pragma: no cover - a broken IPython is not our concern
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


class Display:
    """Receives every event of a run, then how it ended."""

    def event(self, ev: Event) -> None:
        """One event."""

    def close(self, error: BaseException | None) -> None:
        """The run ended (``error`` is None on success)."""


class LineDisplay(Display):
    """One line per event on a stream; byte progress at most once a second per item."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream
        self._last: dict[tuple[str, str], float] = {}

    def _print(self, text: str) -> None:
        print(text, file=self._stream or sys.stderr, flush=True)

    def event(self, ev: Event) -> None:
        if isinstance(ev, ProgressEvent):
            key = (ev.step, ev.item)
            now = time.monotonic()
            finished = ev.total is not None and ev.done >= ev.total
            if not finished and now - self._last.get(key, 0.0) < 1.0:
                return
            self._last[key] = now
        self._print(str(ev))

    def close(self, error: BaseException | None) -> None:
        if isinstance(error, KeyboardInterrupt):
            self._print("interrupted: running steps finished; the state file is consistent")


_STATE_STYLE = {
    "checking": "#6e7781",
    "applying": "#0969da",
    "removing": "#0969da",
    "done": "#1a7f37",
    "as specified": "#6e7781",
    "failed": "#cf222e",
    "skipped": "#9a6700",
    "planned": "#6e7781",
}


class _View:
    """What IPython shows: HTML in the notebook, text elsewhere."""

    def __init__(self, html_text: str, plain: str) -> None:
        self._html = html_text
        self._plain = plain

    def _repr_html_(self) -> str:
        return self._html

    def __repr__(self) -> str:
        return self._plain


class NotebookDisplay(Display):
    """A table of steps that updates in place in the notebook's output."""

    def __init__(self, title: str) -> None:
        import importlib

        display: Any = importlib.import_module("IPython.display").display
        self._title = title
        self._rows: dict[str, list[str]] = {}
        self._warnings: list[str] = []
        self._footer = "running…"
        self._t0 = time.monotonic()
        self._last_render = 0.0
        self._handle: Any = display(self._view(), display_id=True)

    def _set(self, step: str, state: str, detail: str | None = None) -> None:
        row = self._rows.setdefault(step, ["", ""])
        row[0] = state
        if detail is not None:
            row[1] = detail

    def event(self, ev: Event) -> None:
        if isinstance(ev, StartedEvent):
            self._set(ev.step, {"check": "checking", "apply": "applying", "destroy": "removing", "stop": "stopping"}[ev.phase])
        elif isinstance(ev, SatisfiedEvent):
            self._set(ev.step, "as specified")
        elif isinstance(ev, DoneEvent):
            self._set(ev.step, "done", f"{ev.elapsed_ms / 1000:.1f}s")
        elif isinstance(ev, FailedEvent):
            self._set(ev.step, "failed", ev.message)
        elif isinstance(ev, SkippedEvent):
            self._set(ev.step, "skipped", ev.reason)
        elif isinstance(ev, PlannedEvent):
            self._set(ev.step, "planned", ev.change)
        elif isinstance(ev, ProgressEvent):
            frac = ev.fraction
            pct = f" {frac:.0%}" if frac is not None else ""
            self._set(ev.step, self._rows.get(ev.step, ["applying"])[0] or "applying", f"{ev.item}{pct}")
        elif isinstance(ev, LogEvent):
            self._set(ev.step, self._rows.get(ev.step, ["applying"])[0] or "applying", ev.line)
        elif isinstance(ev, WarningEvent):
            self._warnings.append(f"{ev.step}: {ev.message}")
        important = not isinstance(ev, (ProgressEvent, LogEvent))
        now = time.monotonic()
        if important or now - self._last_render > 0.2:
            self._render(now)

    def _view(self) -> _View:
        rows = []
        plain = [f"{self._title}: {self._footer}"]
        for step, (state, detail) in self._rows.items():
            color = _STATE_STYLE.get(state, "#000")
            rows.append(
                f"<tr><td style='text-align:left'><code>{html.escape(step)}</code></td>"
                f"<td style='text-align:left;color:{color}'>{html.escape(state)}</td>"
                f"<td style='text-align:left'>{html.escape(detail)}</td></tr>"
            )
            plain.append(f"  {step}: {state} {detail}".rstrip())
        warn = "".join(f"<div style='color:#cf222e'>⚠ {html.escape(w)}</div>" for w in self._warnings)
        plain += [f"  warning: {w}" for w in self._warnings]
        body = (
            f"<div><b>{html.escape(self._title)}</b> — {html.escape(self._footer)}"
            f"<table><tbody>{''.join(rows)}</tbody></table>{warn}</div>"
        )
        return _View(body, "\n".join(plain))

    def _render(self, now: float) -> None:
        self._last_render = now
        self._handle.update(self._view())

    def close(self, error: BaseException | None) -> None:
        took = f"{time.monotonic() - self._t0:.1f}s"
        if error is None:
            self._footer = f"finished in {took}"
        elif isinstance(error, KeyboardInterrupt):
            self._footer = f"interrupted after {took}: running steps finished; the state file is consistent"
        else:
            self._footer = f"failed after {took}: {error}"
        self._render(time.monotonic())


def default_display(operation: str, env: str) -> Display:
    """A notebook table in Jupyter, plain lines on stderr elsewhere."""
    if in_notebook():
        return NotebookDisplay(f"kgenv {operation} {env}")
    return LineDisplay()
