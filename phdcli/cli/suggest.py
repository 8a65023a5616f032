"""``phd suggest`` and ``phd config``: flags -> SuggestConfig -> suggest_batch."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from phdcli import NOTICE, config, defaults
from phdcli.cli._app import Progress, app, complete_device, env, log, setup_output
from phdcli.cli._help import (
    PANEL_DOWNLOAD,
    PANEL_INPUT,
    PANEL_OUTPUT,
    PANEL_RANKING,
    PANEL_SCRIPTING,
    PANEL_SPEED,
)
from phdcli.errors import UsageError


@app.command()
def suggest(
    ctx: typer.Context,
    inputs: Annotated[
        list[str], typer.Argument(help="Videos, folders, URLs; - reads them from stdin.",
                                  metavar="VIDEO")
    ],
    k: Annotated[int, typer.Option("-k", envvar=env("k"), metavar="N", rich_help_panel=PANEL_OUTPUT,
                                   help="GIFs per video.")] = defaults.K,
    out: Annotated[Path, typer.Option(
        "--out", "-o", envvar=env("out"), metavar="DIR", rich_help_panel=PANEL_OUTPUT,
        help="Output folder.")] = Path("."),
    segments: Annotated[Literal["fixed", "shots"], typer.Option(
        envvar=env("segments"), metavar="KIND", rich_help_panel=PANEL_RANKING,
        help="fixed (every --length s) or shots (cut at shot changes).")] = "fixed",
    length: Annotated[float, typer.Option(
        envvar=env("length"), metavar="SECONDS", rich_help_panel=PANEL_RANKING,
        help="Segment length.")] = defaults.SEGMENT_LENGTH_S,
    gif_length: Annotated[float | None, typer.Option(
        envvar=env("gif_length"), metavar="SECONDS", rich_help_panel=PANEL_OUTPUT,
        help="GIF length around the best clip (default: the segment).")] = None,
    min_gap: Annotated[float | None, typer.Option(
        envvar=env("min_gap"), metavar="SECONDS", rich_help_panel=PANEL_RANKING,
        help="Least time between two picks (default: one segment; 0: none).")] = None,
    one_shot: Annotated[bool, typer.Option(
        envvar=env("one_shot"), rich_help_panel=PANEL_OUTPUT,
        help="Trim each GIF to one shot (no cut inside a GIF).")] = True,
    fps: Annotated[float, typer.Option(
        envvar=env("fps"), metavar="FPS", rich_help_panel=PANEL_OUTPUT,
        help="GIF frame rate.")] = defaults.GIF_FPS,
    width: Annotated[int, typer.Option(
        envvar=env("width"), metavar="PX", rich_help_panel=PANEL_OUTPUT,
        help="GIF width.")] = defaults.GIF_WIDTH,
    fmt: Annotated[Literal["gif", "mp4", "webp"], typer.Option(
        "--format", envvar=env("format"), metavar="FORMAT", rich_help_panel=PANEL_OUTPUT,
        help="gif, mp4 or webp.")] = "gif",
    max_size: Annotated[float | None, typer.Option(
        envvar=env("max_size"), metavar="MB", rich_help_panel=PANEL_OUTPUT,
        help="Largest output file.")] = None,
    name: Annotated[str, typer.Option(
        envvar=env("name"), metavar="TEMPLATE", rich_help_panel=PANEL_OUTPUT,
        help="Output name template.")] = defaults.NAME_TEMPLATE,
    as_json: Annotated[bool, typer.Option("--json", rich_help_panel=PANEL_SCRIPTING,
                                          help="One JSON document on stdout.")] = False,
    as_jsonl: Annotated[bool, typer.Option(
        "--jsonl", rich_help_panel=PANEL_SCRIPTING,
        help="One JSON line per GIF and per failed input.")] = False,
    explain: Annotated[bool, typer.Option(rich_help_panel=PANEL_RANKING,
                                          help="Show each model term and the nearest GIF.")] = (
        False),
    force: Annotated[bool, typer.Option(rich_help_panel=PANEL_OUTPUT,
                                        help="Overwrite existing files.")] = False,
    dry_run: Annotated[bool, typer.Option(rich_help_panel=PANEL_OUTPUT,
                                          help="Rank only; write nothing.")] = False,
    report: Annotated[bool, typer.Option(
        envvar=env("report"), rich_help_panel=PANEL_OUTPUT,
        help="Also write an HTML contact sheet (index.html) in --out.")] = False,
    include_kept: Annotated[bool, typer.Option(
        rich_help_panel=PANEL_RANKING,
        help="Also suggest spans of this video you already kept.")] = False,
    heatmap_weight: Annotated[float, typer.Option(
        envvar=env("heatmap_weight"), metavar="W", rich_help_panel=PANEL_RANKING,
        help="Add W x the site's replay heatmap to the score (hand-set, unmeasured).")] = 0.0,
    user: Annotated[str, typer.Option("--user", "-u", envvar=env("user"), metavar="NAME",
                                      rich_help_panel=PANEL_INPUT, help="History profile.")] = (
        "default"),
    history: Annotated[Path | None, typer.Option(
        "--history", metavar="DIR", rich_help_panel=PANEL_INPUT,
        help="Use this folder of GIFs as the history.")] = None,
    device: Annotated[str, typer.Option(
        envvar=env("device"), metavar="DEVICE", rich_help_panel=PANEL_SPEED,
        autocompletion=complete_device, help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    precision: Annotated[Literal["auto", "bf16", "fp32", "int8"], typer.Option(
        envvar=env("precision"), metavar="PRECISION", rich_help_panel=PANEL_SPEED,
        help="auto, bf16, fp32 or int8.")] = "auto",
    exhaustive: Annotated[bool, typer.Option(
        envvar=env("exhaustive"), rich_help_panel=PANEL_SPEED,
        help="Full C3D features for every segment (no coarse-to-fine pass).")] = False,
    engine: Annotated[Literal["local", "ray"], typer.Option(
        envvar=env("engine"), metavar="ENGINE", rich_help_panel=PANEL_SPEED,
        help="local, or ray: C3D on a Ray cluster (pip install 'phdcli[ray]').")] = "local",
    address: Annotated[str | None, typer.Option(
        metavar="HOST:PORT", rich_help_panel=PANEL_SPEED,
        help="Ray cluster to join (with --engine ray; default: RAY_ADDRESS, else start one "
        "here).")] = None,
    max_height: Annotated[int, typer.Option(
        envvar=env("max_height"), metavar="PX", rich_help_panel=PANEL_DOWNLOAD,
        help="Largest video height to download.")] = 720,
    max_filesize: Annotated[float, typer.Option(
        envvar=env("max_filesize"), metavar="MB", rich_help_panel=PANEL_DOWNLOAD,
        help="Largest video download.")] = 4000.0,
    stall_timeout: Annotated[float, typer.Option(
        envvar=env("stall_timeout"), metavar="SECONDS", rich_help_panel=PANEL_DOWNLOAD,
        help="Give up a download after this long without 1 KiB.")] = 60.0,
    download_timeout: Annotated[float, typer.Option(
        envvar=env("download_timeout"), metavar="SECONDS", rich_help_panel=PANEL_DOWNLOAD,
        help="Give up a download after this long in all.")] = 3600.0,
    refresh: Annotated[bool, typer.Option(
        rich_help_panel=PANEL_DOWNLOAD,
        help="Download URLs again even if they are cached.")] = False,
    max_megapixels: Annotated[float, typer.Option(
        envvar=env("max_megapixels"), metavar="MP", rich_help_panel=PANEL_INPUT,
        help="Largest frame or GIF canvas, megapixels (frames x area scale with it).")] = 36.0,
    c3d_weights: Annotated[Path | None, typer.Option(
        envvar=env("c3d_weights"), dir_okay=False, metavar="FILE", rich_help_panel=PANEL_RANKING,
        help="C3D weights file.")] = None,
    offline: Annotated[bool, typer.Option(
        envvar=env("offline"), rich_help_panel=PANEL_DOWNLOAD,
        help="Never download: no C3D weights (else fetched once, ~312 MB, when first "
        "needed), no URL not already in the cache.")] = False,
    model: Annotated[Path | None, typer.Option(envvar=env("model"), metavar="FILE",
                                               rich_help_panel=PANEL_RANKING,
                                               help="Ranking model file.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", rich_help_panel=PANEL_SCRIPTING,
                                        help="Only errors on stderr.")] = False,
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
    with _blaming_the_source(ctx):  # a bad value names its env var or config key
        cfg = SuggestConfig(
            k=k, out_dir=out.expanduser(), segments=segments, length_s=length,
            gif=GifOptions(fps=fps, width=width, format=fmt,
                           max_size_bytes=_megabytes("--max-size", max_size)),
            gif_length_s=gif_length, min_gap_s=min_gap, one_shot=one_shot, name_template=name,
            download=DownloadOptions(max_height=max_height,
                                     max_filesize_bytes=_megabytes("--max-filesize", max_filesize),
                                     stall_timeout_s=stall_timeout, timeout_s=download_timeout,
                                     refresh=refresh, offline=offline),
            device=device, precision=precision, c3d_weights=c3d_weights, model_path=model,
            user=user, history_dir=history, force=force, dry_run=dry_run, report=report,
            exhaustive=exhaustive,
            include_kept=include_kept, heatmap_weight=heatmap_weight,
            command=_reproduce_command(ctx) if report else "",
            max_megapixels=max_megapixels, engine=engine, address=address,
        )

    def print_line(source: str, suggestion: Any) -> None:
        doc = {"type": "pick", "input": source, **suggestion.to_dict(explain)}
        typer.echo(json.dumps(doc, allow_nan=False))  # NaN is not JSON: never print it
        sys.stdout.flush()

    def print_failure(failure: Any) -> None:  # a script sees every input's fate
        doc = {"type": "failure", "input": failure.input, "error": failure.message}
        typer.echo(json.dumps(doc))
        sys.stdout.flush()

    try:
        with _blaming_the_source(ctx), Progress() as progress:
            batch = suggest_batch(inputs, cfg, progress=progress.update,
                                  on_suggestion=print_line if as_jsonl else None,
                                  on_failure=print_failure if as_jsonl else None)
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


@contextmanager
def _blaming_the_source(ctx: typer.Context) -> Iterator[None]:
    """A UsageError about a flag says where its value came from when not the
    command line: ``(from PHD_FPS)``, ``(from fps in the config file PATH)``."""
    try:
        yield
    except UsageError as exc:
        flag = str(exc).split(" ", 1)[0].rstrip(":")
        param = next((p for p in ctx.command.params if flag in p.opts and p.name), None)
        if param is None or param.name is None:
            raise
        source = getattr(ctx.get_parameter_source(param.name), "name", None)
        if source == "ENVIRONMENT":
            raise UsageError(f"{exc} (from {param.envvar})") from None
        if source == "DEFAULT_MAP":
            raise UsageError(f"{exc} (from {param.name} in the config file "
                             f"{config.config_path()})") from None
        raise


MAX_MB = 1e9  # a petabyte; 1e308 MB would overflow the conversion to bytes


def _megabytes(flag: str, value: float | None) -> int | None:
    """MB (10**6 bytes) to bytes; inf, nan, non-positive and absurd sizes are usage errors."""
    if value is None:
        return None
    if not 0 < value <= MAX_MB:  # False for NaN too
        raise UsageError(f"{flag} must be a positive number of MB, at most {MAX_MB:g}, "
                         f"got {value}")
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

    from phdcli.cli._app import narrow_table
    from phdcli.suggest.results import clock

    console = Console()
    for result in batch.results:
        heat = explain and result.heatmap is not None
        # Spans and numbers never break; names and paths fold rather than end in "...".
        columns = ["rank", "start-end", "score"]
        if explain:
            columns += ["fnn", "svm-d", "prior", *(["heat (replay)"] if heat else []),
                        "nearest GIF (sim.), file"]
        else:
            columns.append("file")
        table = narrow_table(columns, folded={"nearest GIF (sim.), file", "file"},
                             title=f"{result.input} ({result.duration_s:.0f} s)",
                             leading=1 if explain else 0)  # rows of two names apart
        for s in result.suggestions:
            row = [str(s.rank), f"{clock(s.start_s)}-{clock(s.end_s)}", f"{s.score:.3f}"]
            if explain:
                e = s.explanation
                near = "-" if e.nearest_gif is None else f"{e.nearest_gif} ({e.similarity:.2f})"
                row += [f"{e.fnn:.3f}", f"{e.svm:.3f}", f"{e.time:.3f}"]
                if heat:
                    row.append(f"{e.heatmap_term:.3f} ({e.heatmap_value:.2f})")
                # Under the nearest GIF: the two names need the width the terms leave.
                row.append(f"{near}\n{s.path or '-'}")
            else:
                row.append(str(s.path or "-"))
            table.add_row(*row)
        console.print(table)


@app.command("config")
def show_config(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Show the defaults `phd suggest` uses and where each comes from."""
    from rich.console import Console

    from phdcli.cli._app import narrow_table

    if as_json:
        rows = [{"setting": r.name, "value": r.value, "from": r.origin,
                 "env": config.env_var(r.name)} for r in config.effective_settings()]
        typer.echo(json.dumps({"file": str(config.config_path()), "settings": rows}, indent=1))
        return

    table = narrow_table(["setting", "value", "from", "env var"], folded={"value"},
                         title=f"config file: {config.config_path()}")
    for row in config.effective_settings():
        origin = "env" if row.origin.startswith("env ") else row.origin  # named beside it
        table.add_row(row.name, repr(row.value), origin, config.env_var(row.name))
    Console().print(table)
