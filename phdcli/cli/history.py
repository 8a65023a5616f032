"""``phd history``: add (or keep phd's own outputs), list, remove, path."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from phdcli import NOTICE, config
from phdcli.cli._app import (
    DeviceOpt,
    HistoryDirOpt,
    Progress,
    UserOpt,
    WeightsOpt,
    history_app,
    log,
    narrow_table,
)
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
    offline: Annotated[bool, typer.Option(
        envvar=config.env_var("offline"),
        help="Never download the C3D weights (else fetched once, ~312 MB, when first "
        "needed).")] = False,
) -> None:
    """Copy GIFs into the history and compute their features once."""
    from phdcli.history.adding import add_to_history

    if not (math.isfinite(max_megapixels) and max_megapixels > 0):
        raise UsageError(f"--max-megapixels must be positive, got {max_megapixels}")
    with Progress() as progress:
        added = add_to_history(
            files, user=user, device=device, c3d_weights=c3d_weights, model=model,
            max_megapixels=max_megapixels, offline=offline, progress=progress.update)
    log.log(NOTICE, "%s", added_summary(added, len(set(files)), user))


def _span(start_s: float, end_s: float) -> str:
    from phdcli.suggest.results import clock

    return f"{clock(start_s, tenths=False)}-{clock(end_s, tenths=False)}"


def _video_name(video: str) -> str:
    """A file by its name, a URL whole (its last part can be ``watch?v=...``)."""
    return video if "://" in video else Path(video).name


def added_summary(added: list[Any], n_files: int, user: str) -> str:
    """One line for the whole `history add`: ``added 2 GIFs to profile 'default'
    (1 kept from talk.mp4 0:15-0:20)``, and how many were there already."""
    from phdcli.suggest.results import count

    if not added:
        return (f"nothing new: {'the file is' if n_files == 1 else 'every file is'} already "
                f"in profile {user!r}")
    kept = [it for it in added if it.source is not None]
    spans = [f"{_video_name(it.source.video)} {_span(it.source.start_s, it.source.end_s)}"
             for it in kept[:3]]
    more = f" and {len(kept) - 3} more" if len(kept) > 3 else ""
    line = f"added {count(len(added), 'GIF')} to profile {user!r}"
    if kept:
        line += f" ({len(kept)} kept from {', '.join(spans)}{more})"
    if n_files > len(added):
        line += f"; {n_files - len(added)} already there"
    return line


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

    table = narrow_table(["name", "frames", "duration", "added", "kept from"],
                         folded={"name", "added", "kept from"})
    for it in items:
        name = f"{it.name} (missing)" if it.name in missing else it.name
        origin = ("-" if it.source is None else
                  f"{it.source.video} {_span(it.source.start_s, it.source.end_s)}")
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
