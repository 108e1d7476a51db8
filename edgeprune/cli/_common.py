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
def progress_steps() -> Iterator[Callable[..., None]]:
    """A rich progress display driven by ``step(label, done, total, note="")`` calls.

    ``note`` is shown after the bar (the running loss and accuracy of a training loop). Where
    stderr is not a terminal (a pipe, a CI log) a bar cannot redraw, so each step prints plain
    lines instead: when it starts and at every quarter, with the note.
    """
    if not err_console.is_terminal:
        yield _plain_steps()
        return
    with Progress(
        TextColumn("{task.description:<34}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"),
        console=err_console,
        transient=False,
    ) as progress:
        tasks: dict[str, TaskID] = {}

        def step(label: str, done: int, total: int, note: str = "") -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=max(total, 1), note=note)
            progress.update(tasks[label], completed=done, total=max(total, 1), note=note)

        yield step
        for task in tasks.values():
            progress.update(task, completed=progress.tasks[task].total)


def _plain_steps() -> Callable[..., None]:
    reached: dict[str, int] = {}

    def step(label: str, done: int, total: int, note: str = "") -> None:
        quarter = 4 * done // max(total, 1)
        if reached.get(label, -1) >= quarter:
            return
        reached[label] = quarter
        err_console.print(f"{label}: {25 * quarter}%{'  ' + note if note else ''}", highlight=False, soft_wrap=True)

    return step


def fmt(value: float | None, spec: str) -> str:
    """Format a number, or an en dash for a figure that does not exist."""
    return "–" if value is None else format(value, spec)


MODEL_HELP = "digits-resnet, torchvision:NAME, package.module:factory, or a pruned-model folder."


DATA_OPTION_HELP = (
    "digits, fashion-mnist[:DIR], imagefolder:TRAIN[,VAL], npz:FILE or package.module:factory "
    "(default: the data the model was made with, or a built-in model's own)."
)
NORM_HELP = "Per-channel normalization for image data, comma-separated (give --mean and --std together)."
SHAPE_HELP = "One sample's shape C,H,W, for a package.module:factory model that declares none."


def parse_floats(text: str | None, label: str) -> list[float] | None:
    """``0.5,0.5,0.5`` as floats (None stays None); one-line error otherwise."""
    if text is None:
        return None
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise fail(f"{label} takes comma-separated numbers, got '{text}'") from None
    return values


def resolve_task(
    loaded: object,
    data: str | None,
    mean: str | None = None,
    std: str | None = None,
    required: str | None = None,
) -> object | None:
    """The task for ``--data`` (or the model's default data), its shape checked against the model.

    Args:
        loaded: the :class:`~edgeprune.models.spec.LoadedModel`.
        data: the ``--data`` spec, or None for the default.
        mean, std: ``--mean``/``--std`` as typed.
        required: when set, what needs the data (the error says so if there is none).

    Returns:
        A task, or None where no data is named and the model has no default.
    """
    from edgeprune.data import resolve_data
    from edgeprune.models.spec import LoadedModel, default_data

    assert isinstance(loaded, LoadedModel)
    spec = data or default_data(loaded)
    if spec is None:
        if required:
            raise fail(f"{required} needs data: give --data (digits, fashion-mnist, imagefolder:DIR, npz:FILE, ...)")
        return None
    task = resolve_data(spec, loaded.input_shape, parse_floats(mean, "--mean"), parse_floats(std, "--std"))
    task.check_shape(loaded.input_shape)
    return task
