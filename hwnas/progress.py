"""Rich progress bars for the library's progress events (`supernet.progress`): the CLI's side of the callback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from supernet.progress import ProgressCallback, ProgressEvent

__all__ = ["console_progress", "rich_progress"]


@contextmanager
def rich_progress(*, console: Console | None = None, transient: bool = False) -> Iterator[ProgressCallback]:
    """A callback drawing one bar (with elapsed time, ETA and the task's info line) per task name."""
    bars = Progress(
        TextColumn("[bold]{task.description:<12}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
        console=console, transient=transient,
    )
    ids: dict[str, TaskID] = {}

    def render(ev: ProgressEvent) -> None:
        if ev.task not in ids:
            ids[ev.task] = bars.add_task(ev.task, total=ev.total, completed=ev.completed, info=ev.info)
        else:
            bars.update(ids[ev.task], total=ev.total, completed=ev.completed, info=ev.info)

    with bars:
        yield render


@contextmanager
def console_progress(enabled: bool, *, console: Console | None = None) -> Iterator[ProgressCallback | None]:
    """`rich_progress` when ``enabled`` (e.g. stderr is a terminal), else None (the library reports nothing)."""
    if not enabled:
        yield None
        return
    with rich_progress(console=console) as cb:
        yield cb
