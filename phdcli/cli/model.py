"""``phd model`` (fetch the C3D weights, describe a ranking model) and ``phd doctor``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from phdcli.cli._app import DeviceOpt, Progress, UserOpt, WeightsOpt, app, model_app


@model_app.command("fetch")
def model_fetch(
    name: Annotated[str | None, typer.Argument(
        metavar="[NAME]",
        help="mmaction2 (default) or davidea; with --url or --from: which file it is.")] = None,
    url: Annotated[str | None, typer.Option(
        metavar="URL", help="Fetch from this http(s):// or file:// URL instead.")] = None,
    from_file: Annotated[Path | None, typer.Option(
        "--from", metavar="FILE", dir_okay=False,
        help="Install a file you downloaded yourself (no network).")] = None,
    sha256: Annotated[str | None, typer.Option(
        metavar="HEX",
        help="Expected sha256 of --url or --from (registry files carry their own).")] = None,
    force: Annotated[bool, typer.Option(help="Download again even if cached.")] = False,
) -> None:
    """Fetch the C3D Sports-1M weights into the cache (the first run that needs them
    does it by itself): sha256 checked, converted once, used by later runs.

    PHD_MODEL_MIRROR=URL fetches the registry's files from a mirror with the same file
    names (still checked against the registry's sha256).
    """
    from phdcli.features.registry import fetch_weights

    with Progress() as progress:
        path = fetch_weights(name, url=url, sha256=sha256, force=force, from_file=from_file,
                             progress=lambda done, total: progress.update("weights", done,
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

    from phdcli.cli._app import narrow_table

    table = narrow_table(["check", "", "detail", "fix"], folded={"check", "detail", "fix"})
    for c in checks:
        table.add_row(c.name, c.status, c.detail, c.fix)
    Console().print(table)
    if not ok:
        raise typer.Exit(1)
