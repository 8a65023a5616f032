"""``phd model`` (fetch the C3D weights, describe a ranking model) and ``phd doctor``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from phdcli.cli._app import DeviceOpt, Progress, UserOpt, WeightsOpt, app, model_app


@model_app.command("fetch")
def model_fetch(
    name: Annotated[str | None, typer.Argument(help="Registry name (default: mmaction2).")] = None,
    url: Annotated[str | None, typer.Option(help="Download from this URL instead.")] = None,
    sha256: Annotated[str | None, typer.Option(help="Expected sha256 of --url.")] = None,
    force: Annotated[bool, typer.Option(help="Download again even if cached.")] = False,
) -> None:
    """Download the published C3D Sports-1M weights into the cache."""
    from phdcli.features.registry import fetch_weights

    with Progress() as progress:
        path = fetch_weights(name, url=url, sha256=sha256, force=force,
                             progress=lambda done, total: progress.update("download", done,
                                                                          total or 0))
    typer.echo(str(path))


@model_app.command("info")
def model_info(
    file: Annotated[Path | None, typer.Argument(help="Model file (default: bundled).")] = None,
) -> None:
    """Print a ranking model file's metadata as JSON."""
    from phdcli.ranking.model import default_model_path, load_model

    typer.echo(json.dumps(load_model(file or default_model_path()).metadata(), indent=1))


@app.command()
def doctor(
    user: UserOpt = "default",
    device: DeviceOpt = "auto",
    c3d_weights: WeightsOpt = None,
    model: Annotated[Path | None, typer.Option(help="Ranking model file.")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON document on stdout: the checks and what phd runs with.")] = False,
) -> None:
    """Check ffmpeg, packages, the torch build, device, C3D weights, the model and the history."""
    from phdcli.doctor.checks import run_checks

    checks = run_checks(user=user, device=device, weights=c3d_weights, model=model)
    ok = all(c.ok for c in checks)
    if as_json:
        from dataclasses import asdict

        from phdcli.doctor.about import collect

        about = collect(device=device, weights=c3d_weights, model=model)
        typer.echo(json.dumps({"version": 1, "ok": ok, **about.to_dict(),
                               "checks": [asdict(c) for c in checks]}, indent=1))
        if not ok:
            raise typer.Exit(1)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for column in ("check", "", "detail", "fix"):
        table.add_column(column)
    for c in checks:
        table.add_row(c.name, c.status, c.detail, c.fix)
    Console().print(table)
    if not ok:
        raise typer.Exit(1)
