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

app = typer.Typer(
    name="phd",
    help="Personalized highlight detection: the GIFs this user would make from a video.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    rich_markup_mode=None,
)
history_app = typer.Typer(help="Manage the GIFs a profile made before.", no_args_is_help=True)
model_app = typer.Typer(help="C3D weights and ranking models.", no_args_is_help=True)
train_app = typer.Typer(help="Train model parts.", no_args_is_help=True)
dataset_app = typer.Typer(help="Training data from PHD^2 annotations.", no_args_is_help=True)
cache_app = typer.Typer(help="Look after phd's cache folder.", no_args_is_help=True)
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


class Progress:
    """A rich bar on stderr when it is a terminal; nothing otherwise."""

    def __enter__(self) -> Progress:
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}
        if _show_progress():
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(*RichProgress.get_default_columns(), _bytes_column(),
                                     console=_stderr_console(), transient=True)
            self._bar.start()
        return self

    def update(self, stage: str, done: int, total: int) -> None:
        if self._bar is None:
            return
        if stage not in self._tasks:
            self._tasks[stage] = self._bar.add_task(stage, total=total or None,
                                                    bytes=stage in _BYTE_STAGES)
        self._bar.update(self._tasks[stage], completed=done, total=total or None)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


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
UserOpt = Annotated[str, typer.Option("--user", "-u", help="History profile.")]
HistoryDirOpt = Annotated[
    Path | None, typer.Option("--history", help="Use this folder of GIFs as the history.")
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
WeightsOpt = Annotated[
    Path | None,
    typer.Option("--c3d-weights", help="C3D weights file (also PHD_C3D_WEIGHTS).", dir_okay=False),
]


def env(name: str) -> str:
    """The PHD_* variable of a `phd suggest` setting (config.SETTINGS names them)."""
    return config.env_var(name)
