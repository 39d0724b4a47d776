"""Progress of long first-use work (training the default model, dequantising a GGUF file, assembling chunks).

rich draws live bars only on an interactive terminal: when stderr is a pipe or a CI log, a rich ``Progress``
renders once, at the end, so a minute of work looks like a hang. :func:`task` therefore draws a rich bar (or
spinner) on a terminal and otherwise writes plain lines to stderr: one at the start, one every
``PLAIN_EVERY_S`` seconds (from a background thread, so that a long opaque call such as transformers' GGUF
conversion still shows signs of life), and one at the end with the elapsed time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

PLAIN_EVERY_S = 10.0
"""Seconds between plain progress lines when stderr is not a terminal."""


class Task:
    """Handle passed to the body of :func:`task`: report how far the work has come."""

    def __init__(self, description: str, total: int | None, bar: Progress | None, console: Console) -> None:
        self.description = description
        self.total = total
        self.completed = 0
        self.note = ""
        self._bar = bar
        self._id = bar.add_task(description, total=total, note="") if bar is not None else None
        self._console = console
        self._start = time.perf_counter()

    @property
    def elapsed(self) -> float:
        """Seconds since the task started."""
        return time.perf_counter() - self._start

    def update(self, advance: int = 0, note: str | None = None) -> None:
        """Advance by ``advance`` steps; ``note`` is a short status shown next to the bar (e.g. ``loss 3.12``)."""
        self.completed += advance
        if note is not None:
            self.note = note
        if self._bar is not None:
            self._bar.update(self._id, advance=advance, note=self.note)

    def _status(self) -> str:
        parts = []
        if self.total:
            parts.append(f"{self.completed}/{self.total} ({100 * self.completed / self.total:.0f}%)")
        if self.note:
            parts.append(self.note)
        parts.append(f"{self.elapsed:.0f} s")
        return ", ".join(parts)

    def _plain(self, text: str) -> None:
        self._console.print(f"mechscope: {self.description}: {text}", highlight=False, markup=False, soft_wrap=True)

    def _heartbeat(self, stop: threading.Event) -> None:
        while not stop.wait(PLAIN_EVERY_S):
            self._plain(self._status())


@contextmanager
def task(description: str, total: int | None = None, *, enabled: bool = True) -> Iterator[Task]:
    """Show ``description`` with a bar (``total`` steps) or a spinner (``total=None``) while the body runs.

    ``enabled=False`` shows nothing (the body still gets a :class:`Task` to update).
    """
    console = Console(stderr=True)
    live = enabled and console.is_terminal and not console.is_dumb_terminal
    bar = None
    if live:
        columns = [SpinnerColumn(), TextColumn("{task.description}")]
        if total is not None:
            columns += [BarColumn(), MofNCompleteColumn()]
        columns += [TextColumn("{task.fields[note]}"), TimeElapsedColumn()]
        bar = Progress(*columns, console=console, transient=False)
    t = Task(description, total, bar, console)
    stop = threading.Event()
    if enabled and not live:
        t._plain("started" + (f", {total} steps" if total else ""))
        threading.Thread(target=t._heartbeat, args=(stop,), daemon=True).start()
    try:
        if bar is not None:
            with bar:
                yield t
        else:
            yield t
    except BaseException:
        if enabled and not live:
            t._plain(f"failed after {t.elapsed:.0f} s")
        raise
    finally:
        stop.set()
    if enabled and not live:
        t._plain(f"done in {t.elapsed:.0f} s" + (f" ({t.note})" if t.note else ""))
