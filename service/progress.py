"""Progress bars of the ``contacts`` command: rich, on standard error, and only on a terminal.

A bar redraws itself with carriage returns and escape codes: written into a file or a
CI log, that is noise (``[######....] 1/6 events[####…`` once filled the logs). So a
bar is shown only when standard error is a terminal, unless ``--progress`` or
``--no-progress`` says otherwise. Standard output never carries one: it is a command's
data (NDJSON, a CSV export, a token).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text


def add_progress_flag(parser: argparse.ArgumentParser) -> None:
    """``--progress`` / ``--no-progress``; neither: a bar only when standard error is a terminal."""
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="show a progress bar on standard error (default: only when it is a terminal)")


def wanted(choice: bool | None) -> bool:
    """Whether to draw a bar: the flag if given, else whether standard error is a terminal."""
    return sys.stderr.isatty() if choice is None else choice


class RateColumn(ProgressColumn):
    """Items per second, from rich's own speed estimate."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} {self.unit}/s" if speed else f"- {self.unit}/s", style="progress.data.speed")


@contextlib.contextmanager
def bar(enabled: bool, *fields: str, unit: str = "rows") -> Iterator[Progress | None]:
    """A rich Progress on standard error (None when disabled): count / total, ``fields``, rate, time left."""
    if not enabled:
        yield None
        return
    columns: list[ProgressColumn] = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=24),
                                     MofNCompleteColumn(), TextColumn(unit)]
    columns += [TextColumn(f"{name} {{task.fields[{name}]:,}}") for name in fields]
    columns += [RateColumn(unit), TextColumn("left"), TimeRemainingColumn()]
    # force_terminal: --progress into a file or pipe draws the bar there, as asked (120
    # columns wide there: rich's 80 for a non-terminal cut the counts off).
    console = Console(file=sys.stderr, force_terminal=True, width=None if sys.stderr.isatty() else 120)
    with Progress(*columns, console=console, transient=False) as progress:
        yield progress
