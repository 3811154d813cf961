"""Progress reporting for pulls: a plain callback protocol, and a rich progress bar for the CLI.

The store and the sources only ever call `progress(desc, done, total)`; they know nothing
about terminals. `desc` names one step (a download, an unpack, a checksum); a new `desc`
starts a new bar. `total` is None when the size is not known up front.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rich.console import Console


class ProgressCallback(Protocol):
    """Told how far one step of a pull has come, in bytes."""

    def __call__(self, desc: str, done: int, total: int | None) -> None: ...


def no_progress(desc: str, done: int, total: int | None) -> None:
    """The callback used when the caller passes none."""


@contextmanager
def rich_progress(console: Console | None = None) -> Iterator[ProgressCallback]:
    """Show a rich progress bar per step for as long as the block runs.

    Usage: `with rich_progress() as cb: pull("smollm2", store, cb)`.
    """
    # rich is imported here so that importing the store stays cheap for `corral run`.
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as bar:
        tasks: dict[str, TaskID] = {}

        def callback(desc: str, done: int, total: int | None) -> None:
            task = tasks.get(desc)
            if task is None:
                task = tasks[desc] = bar.add_task(desc, total=total)
            bar.update(task, completed=done, total=total)

        yield callback
