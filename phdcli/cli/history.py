"""``phd history``: add (or keep phd's own outputs), list, remove, path."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from phdcli.cli._app import DeviceOpt, HistoryDirOpt, UserOpt, WeightsOpt, history_app, log
from phdcli.errors import UsageError


def _history(user: str, folder: Path | None) -> Any:
    from phdcli.history.store import History

    return History.from_folder(folder) if folder is not None else History.for_user(user)


@history_app.command("add")
def history_add(
    files: Annotated[list[Path], typer.Argument(help="GIFs or short clips.", metavar="GIF")],
    user: UserOpt = "default",
    device: DeviceOpt = "auto",
    c3d_weights: WeightsOpt = None,
    model: Annotated[Path | None, typer.Option(help="Ranking model (sets the features).")] = None,
    max_megapixels: Annotated[float, typer.Option(
        help="Largest frame or GIF canvas, megapixels (frames x area scale with it).")] = 36.0,
) -> None:
    """Copy GIFs into the history and compute their features once."""
    from phdcli.history.adding import add_to_history

    if not (math.isfinite(max_megapixels) and max_megapixels > 0):
        raise UsageError(f"--max-megapixels must be positive, got {max_megapixels}")
    added = add_to_history(files, user=user, device=device, c3d_weights=c3d_weights, model=model,
                           max_megapixels=max_megapixels)
    for item in added:
        if item.source is not None:
            how = ("its features from phd suggest, no C3D" if item.feature is not None
                   else "features from the GIF")
            log.info("kept %s: %s %.1f-%.1f s (%s)", item.name, item.source.video,
                     item.source.start_s, item.source.end_s, how)
        else:
            log.info("added %s (%d frames, %.1f s)", item.name, item.frames, item.duration_s)
    if not added:
        log.info("nothing new: every file is already in the history")


@history_app.command("list")
def history_list(
    user: UserOpt = "default",
    history: HistoryDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """List the GIFs in the history."""
    store = _history(user, history)
    items = store.items()
    # A file deleted behind phd's back: said here, skipped by `suggest`.
    missing = {it.name for it in store.missing(items)}
    for name in sorted(missing):
        log.warning("warning: %s is listed but missing from %s (`phd history remove %s` "
                    "drops it)", name, store.folder, name)
    if as_json:
        from dataclasses import asdict

        typer.echo(json.dumps([{**asdict(it), "missing": it.name in missing} for it in items],
                              indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for column in ("name", "frames", "duration", "added", "kept from"):
        table.add_column(column)
    for it in items:
        name = f"{it.name} (missing)" if it.name in missing else it.name
        origin = ("-" if it.source is None else
                  f"{it.source.video} {it.source.start_s:.1f}-{it.source.end_s:.1f} s")
        table.add_row(name, str(it.frames), f"{it.duration_s:.1f} s", it.added, origin)
    Console().print(table)


@history_app.command("remove")
def history_remove(name: str, user: UserOpt = "default") -> None:
    """Remove one GIF from the history."""
    removed = _history(user, None).remove(name)
    log.info("removed %s", removed.name)


@history_app.command("path")
def history_path(user: UserOpt = "default") -> None:
    """Print the history folder of the profile."""
    typer.echo(str(_history(user, None).folder))
