"""``phd suggest`` and ``phd config``: flags -> SuggestConfig -> suggest_batch."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from phdcli import NOTICE, config, defaults
from phdcli.cli._app import HistoryDirOpt, Progress, app, env, log, setup_output
from phdcli.errors import UsageError


@app.command()
def suggest(
    ctx: typer.Context,
    inputs: Annotated[
        list[str], typer.Argument(help="Videos, folders, URLs; - reads them from stdin.",
                                  metavar="VIDEO")
    ],
    k: Annotated[int, typer.Option("-k", envvar=env("k"), help="GIFs per video.")] = defaults.K,
    out: Annotated[Path, typer.Option("--out", "-o", envvar=env("out"),
                                      help="Output folder.")] = Path("."),
    segments: Annotated[str, typer.Option(envvar=env("segments"),
                                          help="fixed or shots.")] = "fixed",
    length: Annotated[float, typer.Option(envvar=env("length"),
                                          help="Segment length, s.")] = defaults.SEGMENT_LENGTH_S,
    gif_length: Annotated[float | None, typer.Option(
        envvar=env("gif_length"), help="GIF length around the best clip, s.")] = None,
    fps: Annotated[float, typer.Option(envvar=env("fps"), help="GIF frame rate.")] = (
        defaults.GIF_FPS),
    width: Annotated[int, typer.Option(envvar=env("width"), help="GIF width, px.")] = (
        defaults.GIF_WIDTH),
    fmt: Annotated[str, typer.Option("--format", envvar=env("format"),
                                     help="gif, mp4 or webp.")] = "gif",
    max_size: Annotated[float | None, typer.Option(
        envvar=env("max_size"), help="Largest output file, MB.")] = None,
    name: Annotated[str, typer.Option(envvar=env("name"), help="Output name template.")] = (
        defaults.NAME_TEMPLATE),
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
    as_jsonl: Annotated[bool, typer.Option("--jsonl", help="One JSON line per GIF.")] = False,
    explain: Annotated[bool, typer.Option(help="Show each model term and the nearest GIF.")] = (
        False),
    force: Annotated[bool, typer.Option(help="Overwrite existing files.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Rank only; write nothing.")] = False,
    report: Annotated[bool, typer.Option(
        envvar=env("report"), help="Also write an HTML contact sheet (index.html) in --out.")] = (
        False),
    include_kept: Annotated[bool, typer.Option(
        help="Also suggest spans of this video you already kept.")] = False,
    heatmap_weight: Annotated[float, typer.Option(
        envvar=env("heatmap_weight"),
        help="Add W x the site's replay heatmap to the score (hand-set, unmeasured).")] = 0.0,
    user: Annotated[str, typer.Option("--user", "-u", envvar=env("user"),
                                      help="History profile.")] = "default",
    history: HistoryDirOpt = None,
    device: Annotated[str, typer.Option(envvar=env("device"),
                                        help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    precision: Annotated[str, typer.Option(envvar=env("precision"),
                                           help="auto, bf16, fp32 or int8.")] = "auto",
    exhaustive: Annotated[bool, typer.Option(
        envvar=env("exhaustive"),
        help="Full C3D features for every segment (no coarse-to-fine pass).")] = False,
    max_height: Annotated[int, typer.Option(envvar=env("max_height"),
                                            help="Largest video height to download.")] = 720,
    max_filesize: Annotated[float, typer.Option(
        envvar=env("max_filesize"), help="Largest video download, MB.")] = 4000.0,
    stall_timeout: Annotated[float, typer.Option(
        envvar=env("stall_timeout"),
        help="Give up a download after this many seconds without 1 KiB.")] = 60.0,
    download_timeout: Annotated[float, typer.Option(
        envvar=env("download_timeout"),
        help="Give up a download after this many seconds in all.")] = 3600.0,
    refresh: Annotated[bool, typer.Option(
        help="Download URLs again even if they are cached.")] = False,
    max_megapixels: Annotated[float, typer.Option(
        envvar=env("max_megapixels"),
        help="Largest frame or GIF canvas, megapixels (frames x area scale with it).")] = 36.0,
    c3d_weights: Annotated[Path | None, typer.Option(
        envvar=env("c3d_weights"), dir_okay=False, help="C3D weights file.")] = None,
    model: Annotated[Path | None, typer.Option(envvar=env("model"),
                                               help="Ranking model file.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr.")] = False,
) -> None:
    """Rank each video's segments for this user and write the top k as GIFs."""
    if quiet:  # also accepted after the command, where scripts put it
        setup_output(quiet=True)
    from phdcli.media.gifs import GifOptions
    from phdcli.sources.options import DownloadOptions
    from phdcli.suggest.config import SuggestConfig
    from phdcli.suggest.pipeline import suggest_batch
    from phdcli.suggest.results import BatchStopped

    if as_json and as_jsonl:
        raise UsageError("--json and --jsonl exclude each other")
    if "-" in inputs:
        if sys.stdin.isatty():
            raise UsageError("- reads inputs from stdin, but stdin is a terminal")
        piped = [line.strip() for line in sys.stdin if line.strip()]
        inputs = [x for item in inputs for x in (piped if item == "-" else [item])]
    cfg = SuggestConfig(
        k=k, out_dir=out.expanduser(), segments=segments, length_s=length,
        gif=GifOptions(fps=fps, width=width, format=fmt,
                       max_size_bytes=_megabytes("--max-size", max_size)),
        gif_length_s=gif_length, name_template=name,
        download=DownloadOptions(max_height=max_height,
                                 max_filesize_bytes=_megabytes("--max-filesize", max_filesize),
                                 stall_timeout_s=stall_timeout, timeout_s=download_timeout,
                                 refresh=refresh),
        device=device, precision=precision, c3d_weights=c3d_weights, model_path=model,
        user=user, history_dir=history, force=force, dry_run=dry_run, report=report,
        exhaustive=exhaustive,
        include_kept=include_kept, heatmap_weight=heatmap_weight,
        command=_reproduce_command(ctx) if report else "",
        max_megapixels=max_megapixels,
    )

    def print_line(source: str, suggestion: Any) -> None:
        doc = {"input": source, **suggestion.to_dict(explain)}
        typer.echo(json.dumps(doc, allow_nan=False))  # NaN is not JSON: never print it
        sys.stdout.flush()

    try:
        with Progress() as progress:
            batch = suggest_batch(inputs, cfg, progress=progress.update,
                                  on_suggestion=print_line if as_jsonl else None)
    except BatchStopped as stopped:  # the whole run stopped: --json still gets its document
        if as_json:
            typer.echo(json.dumps(stopped.batch.to_dict(explain), indent=1, allow_nan=False))
        raise
    if as_json:
        typer.echo(json.dumps(batch.to_dict(explain), indent=1, allow_nan=False))
    elif not as_jsonl:
        _print_suggestions(batch, explain)
    if batch.report is not None:
        log.log(NOTICE, "report: %s", batch.report)
    if batch.failures:
        raise typer.Exit(1)


def _megabytes(flag: str, value: float | None) -> int | None:
    """MB (10**6 bytes) to bytes; inf, nan and non-positive sizes are usage errors."""
    if value is None:
        return None
    if not (math.isfinite(value) and value > 0):
        raise UsageError(f"{flag} must be a positive number of MB, got {value}")
    return max(1, int(value * 1_000_000))


def _reproduce_command(ctx: typer.Context) -> str:
    """``phd suggest {input} ...`` with every flag not at its built-in default.

    Every flag, those that only change what is printed (``--json``,
    ``--explain``, ``-q``) included: the command is the run as it was typed,
    and run again it prints what this run printed. Values from PHD_*
    variables and the config file become flags too, so the command gives the
    same result on a machine without them. Paths under the home folder are
    written ``~/...`` (the shell expands them; the page shows no home).
    ``{input}``, the third word, stands for the video; a value that contains
    ``{input}`` is quoted like any other.
    """
    import shlex

    from phdcli.paths import shell_path

    try:  # typer >= 0.26 vendors its own click
        from typer._click.core import ParameterSource
    except ImportError:  # pragma: no cover - older typer on real click
        from click.core import ParameterSource

    words = ["phd", "suggest", "{input}"]
    for param in ctx.command.params:
        name = param.name or ""
        if name == "inputs" or ctx.get_parameter_source(name) in (
            None, ParameterSource.DEFAULT
        ):
            continue
        value = ctx.params.get(name)
        flag = next((o for o in param.opts if o.startswith("--")), param.opts[0])
        if isinstance(value, bool):
            off = next((o for o in getattr(param, "secondary_opts", []) if o.startswith("--")),
                       None)
            if value or off:
                words.append(shlex.quote(flag if value else str(off)))
        elif isinstance(value, Path):
            words += [shlex.quote(flag), shell_path(value)]
        elif value is not None:
            words += [shlex.quote(flag), shlex.quote(str(value))]
    return " ".join(words)


def _print_suggestions(batch: Any, explain: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    from phdcli.suggest.results import clock

    console = Console()
    for result in batch.results:
        table = Table(title=f"{result.input} ({result.duration_s:.0f} s)")
        for column in ("rank", "start-end", "score"):
            table.add_column(column, justify="right")
        heat = explain and result.heatmap is not None
        if explain:
            for column in ("fnn", "svm-d", "prior", *(["heatmap (replay)"] if heat else []),
                           "nearest GIF (sim.)"):
                table.add_column(column, justify="right")
        table.add_column("file")
        for s in result.suggestions:
            row = [str(s.rank), f"{clock(s.start_s)}-{clock(s.end_s)}", f"{s.score:.3f}"]
            if explain:
                e = s.explanation
                near = "-" if e.nearest_gif is None else f"{e.nearest_gif} ({e.similarity:.2f})"
                row += [f"{e.fnn:.3f}", f"{e.svm:.3f}", f"{e.time:.3f}"]
                if heat:
                    row.append(f"{e.heatmap_term:.3f} ({e.heatmap_value:.2f})")
                row.append(near)
            row.append(str(s.path or "-"))
            table.add_row(*row)
        console.print(table)


@app.command("config")
def show_config(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Show the defaults `phd suggest` uses and where each comes from."""
    from rich.console import Console
    from rich.table import Table

    if as_json:
        rows = [{"setting": r.name, "value": r.value, "from": r.origin,
                 "env": config.env_var(r.name)} for r in config.effective_settings()]
        typer.echo(json.dumps({"file": str(config.config_path()), "settings": rows}, indent=1))
        return

    table = Table(title=f"config file: {config.config_path()}")
    for column in ("setting", "value", "from", "env var"):
        table.add_column(column)
    for row in config.effective_settings():
        table.add_row(row.name, repr(row.value), row.origin, config.env_var(row.name))
    Console().print(table)
