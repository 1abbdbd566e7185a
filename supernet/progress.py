"""Progress reporting from library code: plain events to a callback; rendering belongs to the application.

A long library function (training, a latency-table build) takes ``progress: bool | ProgressCallback``:

* a callable receives a `ProgressEvent` whenever a task starts, advances or changes its ``info`` line
  (`hwnas.progress.rich_progress` turns them into rich bars; a test can collect them in a list);
* ``True`` logs the events at INFO through the library's logger (at most every 10 % of a task, and its end);
* ``False`` / ``None`` reports nothing.

Events are sent from the calling process only, in order, never concurrently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self, Union

__all__ = ["ProgressArg", "ProgressCallback", "ProgressEvent", "ProgressTask", "Tasks", "as_callback"]


@dataclass(frozen=True, kw_only=True)
class ProgressEvent:
    """The state of one task after a change: ``completed`` of ``total`` steps (units are the task's own:
    training steps, measured models); ``info`` a short free-text status (loss, images/s) or ``""``."""

    task: str
    completed: int
    total: int
    info: str = ""


ProgressCallback = Callable[[ProgressEvent], None]
ProgressArg = Union[bool, ProgressCallback, None]  # noqa: UP007 - a runtime alias, kept readable on 3.11


def _logging_callback(logger: logging.Logger) -> ProgressCallback:
    last_decile: dict[str, int] = {}

    def log_event(ev: ProgressEvent) -> None:
        decile = (10 * ev.completed) // max(1, ev.total)
        if ev.completed >= ev.total or decile != last_decile.get(ev.task):
            last_decile[ev.task] = decile
            logger.info("%s: %d/%d %s", ev.task, ev.completed, ev.total, ev.info)

    return log_event


def as_callback(progress: ProgressArg, *, logger: logging.Logger | None = None) -> ProgressCallback | None:
    """The callback for a ``progress`` argument (see the module docstring); None means "report nothing"."""
    if progress is None or progress is False:
        return None
    if progress is True:
        return _logging_callback(logger or logging.getLogger("supernet.progress"))
    if callable(progress):
        return progress
    raise TypeError(f"progress: expected a bool or a callable taking a ProgressEvent, got {type(progress).__name__}")


class ProgressTask:
    """One task's counter; every change is sent to the callback (nothing when the callback is None)."""

    def __init__(self, callback: ProgressCallback | None, task: str, *, total: int, completed: int = 0) -> None:
        self._cb = callback
        self.task = task
        self.total = total
        self.completed = completed
        self.info = ""
        self._emit()

    def _emit(self) -> None:
        if self._cb is not None:
            self._cb(ProgressEvent(task=self.task, completed=self.completed, total=self.total, info=self.info))

    def advance(self, n: int = 1, *, info: str | None = None) -> None:
        """``n`` more steps done (and optionally a new ``info`` line)."""
        self.completed += n
        if info is not None:
            self.info = info
        self._emit()

    def update(self, *, info: str) -> None:
        """A new ``info`` line without progress."""
        self.info = info
        self._emit()

    def __call__(self, n: int = 1) -> None:
        self.advance(n)


class Tasks:
    """Factory of `ProgressTask` for one ``progress`` argument: ``tasks.task("measure", total=n)(1)``."""

    def __init__(self, progress: ProgressArg, *, logger: logging.Logger | None = None) -> None:
        self.callback = as_callback(progress, logger=logger)

    @property
    def enabled(self) -> bool:
        return self.callback is not None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def task(self, description: str, total: int, *, completed: int = 0) -> ProgressTask:
        return ProgressTask(self.callback, description, total=total, completed=completed)
