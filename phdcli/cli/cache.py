"""``phd cache``: prune what the cache holds that no phd reads any more."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from phdcli.cli._app import cache_app
from phdcli.errors import PhdError


@cache_app.command("prune")
def cache_prune(
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Only say what would be removed, and how much.")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON document on stdout: every path and its bytes.")] = False,
) -> None:
    """Remove the cache entries no phd reads any more.

    Old feature-cache entries and output records, hash memos of changed or
    deleted files, temp files of runs that died, unfinished downloads. Clip
    tables, weights and finished downloads stay; histories and config are
    not in the cache.
    """
    from phdcli.doctor.prune import prune

    report = prune(dry_run=dry_run)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=1))
    else:
        for line in report.lines():
            typer.echo(line)
    if report.failed:
        path, why = report.failed[0]
        more = f" and {len(report.failed) - 1} more" if len(report.failed) > 1 else ""
        raise PhdError(f"could not remove {path} ({why}){more}")
