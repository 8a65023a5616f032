"""The ``phd`` application object, its output setup and the options commands share.

Each command module of this package registers its commands on these apps;
``phdcli.cli`` imports them all and maps failures to exit codes.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from phdcli import NOTICE, config
from phdcli.cli._help import PhdTyper

app = PhdTyper(
    name="phd",
    help="Personalized highlight detection: the GIFs this user would make from a video.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    rich_markup_mode=None,
)
history_app = PhdTyper(help="Manage the GIFs a profile made before.", no_args_is_help=True)
model_app = PhdTyper(help="C3D weights and ranking models.", no_args_is_help=True)
train_app = PhdTyper(help="Train model parts.", no_args_is_help=True)
dataset_app = PhdTyper(help="Training data from PHD^2 annotations.", no_args_is_help=True)
cache_app = PhdTyper(help="Look after phd's cache folder.", no_args_is_help=True)
app.add_typer(history_app, name="history")
app.add_typer(model_app, name="model")
app.add_typer(train_app, name="train")
app.add_typer(dataset_app, name="dataset")
app.add_typer(cache_app, name="cache")

log = logging.getLogger("phd")


class _State:
    quiet = False


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (tests swap it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def setup_output(quiet: bool) -> None:
    _State.quiet = quiet
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("phd: %(message)s"))
    log.handlers[:] = [handler]
    # Progress and chatter only on a terminal; --quiet leaves errors alone.
    if quiet:
        log.setLevel(logging.ERROR)
    else:
        log.setLevel(logging.INFO if sys.stderr.isatty() else NOTICE)
    log.propagate = False


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _show_progress() -> bool:
    return not _State.quiet and sys.stderr.isatty()


# Stages whose counts are bytes: their bars also show the size and the rate.
_BYTE_STAGES = ("download", "weights")


def _bytes_column() -> Any:
    """A rich column: done/total size and rate for byte stages, blank for the others."""
    from rich.progress import DownloadColumn, ProgressColumn, TransferSpeedColumn
    from rich.text import Text

    class BytesColumn(ProgressColumn):
        size, rate = DownloadColumn(), TransferSpeedColumn()

        def render(self, task: Any) -> Any:
            if not task.fields.get("bytes"):
                return Text("")
            return Text.assemble(self.size.render(task), " ", self.rate.render(task))

    return BytesColumn()


# What a stage is called while it runs (a library stage name not here is shown as is).
STAGE_WORDS = {"download": "downloading", "clips": "C3D features", "gifs": "writing GIFs"}


class Progress:
    """Bars and a spinner on stderr when it is a terminal; nothing otherwise.

    ``update(stage, done, total)`` is the library's progress callback: a
    counted stage gets a bar; ``done == total == 0`` says a stage started whose
    length is unknown (loading C3D, probing...): one spinner line names it
    until the next stage says something, so no stage is silent.
    """

    def __enter__(self) -> Progress:
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}
        self._spinner: Any = None
        if _show_progress():
            from rich.progress import Progress as RichProgress
            from rich.progress import SpinnerColumn

            self._bar = RichProgress(SpinnerColumn(), *RichProgress.get_default_columns(),
                                     _bytes_column(),
                                     console=_stderr_console(), transient=True)
            self._bar.start()
        return self

    def update(self, stage: str, done: int, total: int) -> None:
        if self._bar is None:
            return
        words = STAGE_WORDS.get(stage, stage)
        if done == 0 and total == 0:  # started, length unknown
            if self._spinner is None:
                self._spinner = self._bar.add_task(words, total=None)
            self._bar.update(self._spinner, description=words, visible=True)
            return
        if self._spinner is not None:  # a counted stage took over
            self._bar.update(self._spinner, visible=False)
        if stage not in self._tasks:
            self._tasks[stage] = self._bar.add_task(words, total=total or None,
                                                    bytes=stage in _BYTE_STAGES)
        self._bar.update(self._tasks[stage], completed=done, total=total or None)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def narrow_table(columns: list[str], folded: set[str], title: str | None = None,
                 leading: int = 0) -> Any:
    """A rich table readable at 80 columns: no frame, the ``folded`` columns (names,
    paths) break anywhere rather than end in an ellipsis, the others never break
    (spans, numbers: short, and wrong when cut)."""
    from rich.table import Table

    # No frame: at 80 columns the borders would take the width names need.
    table = Table(title=title, box=None, pad_edge=False, title_justify="left",
                  header_style="bold underline", leading=leading)
    for column in columns:
        fold = column in folded
        table.add_column(column, overflow="fold", no_wrap=not fold,
                         min_width=12 if fold else None)
    return table


def _version(value: bool) -> None:
    if value:
        from phdcli.doctor.about import collect  # imports torch: only when asked

        for line in collect().lines():
            typer.echo(line)
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True,
                           help="Show the versions, model, device and weights phd uses.")
    ] = False,
) -> None:
    setup_output(quiet)
    # The config file's [suggest] table: below flags and PHD_* variables.
    ctx.default_map = {**config.default_map(), **(ctx.default_map or {})}


# Options several commands share.
DEVICES = ("auto", "cpu", "cuda", "cuda:0", "cuda:1", "mps")


def complete_device(incomplete: str) -> list[str]:
    """--device <Tab>: the usual names (cuda:N stays open: any N is accepted)."""
    return [d for d in DEVICES if d.startswith(incomplete)]


UserOpt = Annotated[str, typer.Option("--user", "-u", metavar="NAME", help="History profile.")]
HistoryDirOpt = Annotated[
    Path | None, typer.Option("--history", metavar="DIR",
                              help="Use this folder of GIFs as the history.")
]
DeviceOpt = Annotated[str, typer.Option("--device", metavar="DEVICE",
                                        autocompletion=complete_device,
                                        help="auto, cpu, cuda, cuda:N or mps.")]
WeightsOpt = Annotated[
    Path | None,
    typer.Option("--c3d-weights", metavar="FILE", dir_okay=False,
                 help="C3D weights file (also PHD_C3D_WEIGHTS)."),
]


def env(name: str) -> str:
    """The PHD_* variable of a `phd suggest` setting (config.SETTINGS names them)."""
    return config.env_var(name)
