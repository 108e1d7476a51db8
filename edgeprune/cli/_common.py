"""Shared pieces of the command line: consoles, the error-to-exit-code rule, progress bars.

No ``from __future__ import annotations`` in the CLI: typer reads the annotations at run time.
"""

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from edgeprune.errors import EdgepruneError

# Piped output (CI logs, `| tee`) gets a fixed, wide layout instead of rich's 80-column default,
# so tables are not folded into unreadable cells.
console = Console(width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 140)

MODEL_HELP = "digits-resnet, torchvision:NAME, package.module:factory, or a pruned-model folder."


def fail(message: str) -> typer.Exit:
    """Print one red line and return the exit to raise (code 2)."""
    # Text, not markup: messages quote things like 'edgeprune[nvml]' that markup would swallow.
    err_console.print(Text.assemble(("error: ", "red"), message), highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn library errors into one line and exit code 2, never a traceback."""
    try:
        yield
    except EdgepruneError as err:
        raise fail(str(err)) from err


@contextmanager
def progress_steps() -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress display driven by ``step(label, done, total)`` calls."""
    with Progress(
        TextColumn("{task.description:<34}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    ) as progress:
        tasks: dict[str, TaskID] = {}

        def step(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=max(total, 1))
            progress.update(tasks[label], completed=done, total=max(total, 1))

        yield step
        for task in tasks.values():
            progress.update(task, completed=progress.tasks[task].total)


def fmt(value: float | None, spec: str) -> str:
    """Format a number, or an en dash for a figure that does not exist."""
    return "–" if value is None else format(value, spec)


MODEL_HELP = "digits-resnet, torchvision:NAME, package.module:factory, or a pruned-model folder."
