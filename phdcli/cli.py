"""The ``phd`` command line: flags -> validated config -> one library call.

Nothing heavy is imported at module level (``phd --help`` must not import
torch, PyAV, OpenCV or yt-dlp). Our exceptions map to exit codes in
``main``: 1 for a failed input or run, 2 for usage errors; ``PHD_DEBUG=1``
re-raises with the traceback.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

try:  # typer >= 0.26 vendors its own click
    from typer._click.exceptions import UsageError as _ClickUsageError
except ImportError:  # pragma: no cover - older typer on real click
    from click.exceptions import UsageError as _ClickUsageError

from phdcli import NOTICE, config, defaults
from phdcli.errors import Interrupted, PhdError, UsageError

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
app.add_typer(history_app, name="history")
app.add_typer(model_app, name="model")
app.add_typer(train_app, name="train")

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


def _setup_output(quiet: bool) -> None:
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


def _version(value: bool) -> None:
    if value:
        from phdcli.about import collect  # imports torch: only when asked

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
    _setup_output(quiet)
    # The config file's [suggest] table: below flags and PHD_* variables.
    ctx.default_map = {**config.default_map(), **(ctx.default_map or {})}


# -- suggest -----------------------------------------------------------------
UserOpt = Annotated[str, typer.Option("--user", "-u", help="History profile.")]
HistoryDirOpt = Annotated[
    Path | None, typer.Option("--history", help="Use this folder of GIFs as the history.")
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
WeightsOpt = Annotated[
    Path | None,
    typer.Option("--c3d-weights", help="C3D weights file (also PHD_C3D_WEIGHTS).", dir_okay=False),
]


def _env(name: str) -> str:
    return config.env_var(name)


@app.command()
def suggest(
    ctx: typer.Context,
    inputs: Annotated[
        list[str], typer.Argument(help="Videos, folders, URLs; - reads them from stdin.",
                                  metavar="VIDEO")
    ],
    k: Annotated[int, typer.Option("-k", envvar=_env("k"), help="GIFs per video.")] = defaults.K,
    out: Annotated[Path, typer.Option("--out", "-o", envvar=_env("out"),
                                      help="Output folder.")] = Path("."),
    segments: Annotated[str, typer.Option(envvar=_env("segments"),
                                          help="fixed or shots.")] = "fixed",
    length: Annotated[float, typer.Option(envvar=_env("length"),
                                          help="Segment length, s.")] = defaults.SEGMENT_LENGTH_S,
    gif_length: Annotated[float | None, typer.Option(
        envvar=_env("gif_length"), help="GIF length around the best clip, s.")] = None,
    fps: Annotated[float, typer.Option(envvar=_env("fps"), help="GIF frame rate.")] = (
        defaults.GIF_FPS),
    width: Annotated[int, typer.Option(envvar=_env("width"), help="GIF width, px.")] = (
        defaults.GIF_WIDTH),
    fmt: Annotated[str, typer.Option("--format", envvar=_env("format"),
                                     help="gif, mp4 or webp.")] = "gif",
    max_size: Annotated[float | None, typer.Option(
        envvar=_env("max_size"), help="Largest output file, MB.")] = None,
    name: Annotated[str, typer.Option(envvar=_env("name"), help="Output name template.")] = (
        defaults.NAME_TEMPLATE),
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
    as_jsonl: Annotated[bool, typer.Option("--jsonl", help="One JSON line per GIF.")] = False,
    explain: Annotated[bool, typer.Option(help="Show each model term and the nearest GIF.")] = (
        False),
    force: Annotated[bool, typer.Option(help="Overwrite existing files.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Rank only; write nothing.")] = False,
    report: Annotated[bool, typer.Option(
        envvar=_env("report"), help="Also write an HTML contact sheet (index.html) in --out.")] = (
        False),
    include_kept: Annotated[bool, typer.Option(
        help="Also suggest spans of this video you already kept.")] = False,
    heatmap_weight: Annotated[float, typer.Option(
        envvar=_env("heatmap_weight"),
        help="Add W x the site's replay heatmap to the score (hand-set, unmeasured).")] = 0.0,
    user: Annotated[str, typer.Option("--user", "-u", envvar=_env("user"),
                                      help="History profile.")] = "default",
    history: HistoryDirOpt = None,
    device: Annotated[str, typer.Option(envvar=_env("device"),
                                        help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    precision: Annotated[str, typer.Option(envvar=_env("precision"),
                                           help="auto, bf16, fp32 or int8.")] = "auto",
    exhaustive: Annotated[bool, typer.Option(
        envvar=_env("exhaustive"),
        help="Full C3D features for every segment (no coarse-to-fine pass).")] = False,
    max_height: Annotated[int, typer.Option(envvar=_env("max_height"),
                                            help="Largest video height to download.")] = 720,
    max_filesize: Annotated[float, typer.Option(
        envvar=_env("max_filesize"), help="Largest video download, MB.")] = 4000.0,
    stall_timeout: Annotated[float, typer.Option(
        envvar=_env("stall_timeout"),
        help="Give up a download after this many seconds without 1 KiB.")] = 60.0,
    download_timeout: Annotated[float, typer.Option(
        envvar=_env("download_timeout"),
        help="Give up a download after this many seconds in all.")] = 3600.0,
    refresh: Annotated[bool, typer.Option(
        help="Download URLs again even if they are cached.")] = False,
    max_megapixels: Annotated[float, typer.Option(
        envvar=_env("max_megapixels"),
        help="Largest frame or GIF canvas, megapixels (frames x area scale with it).")] = 36.0,
    c3d_weights: Annotated[Path | None, typer.Option(
        envvar=_env("c3d_weights"), dir_okay=False, help="C3D weights file.")] = None,
    model: Annotated[Path | None, typer.Option(envvar=_env("model"),
                                               help="Ranking model file.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr.")] = False,
) -> None:
    """Rank each video's segments for this user and write the top k as GIFs."""
    if quiet:  # also accepted after the command, where scripts put it
        _setup_output(quiet=True)
    from phdcli.gifs import GifOptions
    from phdcli.source import DownloadOptions
    from phdcli.suggest import SuggestConfig, suggest_batch

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
        with _Progress() as progress:
            batch = suggest_batch(inputs, cfg, progress=progress.update,
                                  on_suggestion=print_line if as_jsonl else None)
    except PhdError as exc:  # the whole run stopped: --json still gets its document
        if as_json and exc.partial is not None:
            typer.echo(json.dumps(exc.partial.to_dict(explain), indent=1,  # type: ignore[attr-defined]
                                  allow_nan=False))
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


# Flags that change what is printed, not what is made.
_NOT_REPRODUCED = {"inputs", "as_json", "as_jsonl", "quiet", "explain"}


def _reproduce_command(ctx: typer.Context) -> str:
    """``phd suggest {input} ...`` with every setting not at its built-in default.

    Values from PHD_* variables and the config file become flags too, so the
    command gives the same result on a machine without them.
    """
    import shlex

    try:  # typer >= 0.26 vendors its own click
        from typer._click.core import ParameterSource
    except ImportError:  # pragma: no cover - older typer on real click
        from click.core import ParameterSource

    words = ["phd", "suggest", "{input}"]
    for param in ctx.command.params:
        name = param.name or ""
        if name in _NOT_REPRODUCED or ctx.get_parameter_source(name) in (
            None, ParameterSource.DEFAULT
        ):
            continue
        value = ctx.params.get(name)
        flag = next((o for o in param.opts if o.startswith("--")), param.opts[0])
        if isinstance(value, bool):
            off = next((o for o in getattr(param, "secondary_opts", []) if o.startswith("--")),
                       None)
            if value or off:
                words.append(flag if value else str(off))
        elif value is not None:
            words += [flag, str(value)]
    return " ".join(w if w == "{input}" else shlex.quote(w) for w in words)


def _print_suggestions(batch: Any, explain: bool) -> None:
    from rich.console import Console
    from rich.table import Table

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
            row = [str(s.rank), f"{_clock(s.start_s)}-{_clock(s.end_s)}", f"{s.score:.3f}"]
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


def _clock(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)}:{secs:04.1f}"


class _Progress:
    """A rich bar on stderr when it is a terminal; nothing otherwise."""

    def __enter__(self) -> _Progress:
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}
        if _show_progress():
            from rich.progress import Progress

            self._bar = Progress(console=_stderr_console(), transient=True)
            self._bar.start()
        return self

    def update(self, stage: str, done: int, total: int) -> None:
        if self._bar is None:
            return
        if stage not in self._tasks:
            self._tasks[stage] = self._bar.add_task(stage, total=total or None)
        self._bar.update(self._tasks[stage], completed=done, total=total or None)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


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


# -- history -----------------------------------------------------------------
def _history(user: str, folder: Path | None) -> Any:
    from phdcli.history import History

    return History.from_folder(folder) if folder is not None else History.for_user(user)


@history_app.command("add")
def history_add(
    files: Annotated[list[Path], typer.Argument(help="GIFs or short clips.")],
    user: UserOpt = "default",
    device: DeviceOpt = "auto",
    c3d_weights: WeightsOpt = None,
    model: Annotated[Path | None, typer.Option(help="Ranking model (sets the features).")] = None,
    max_megapixels: Annotated[float, typer.Option(
        help="Largest frame or GIF canvas, megapixels (frames x area scale with it).")] = 36.0,
) -> None:
    """Copy GIFs into the history and compute their features once."""
    from phdcli.history import add_to_history

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


# -- model -------------------------------------------------------------------
@model_app.command("fetch")
def model_fetch(
    name: Annotated[str | None, typer.Argument(help="Registry name (default: mmaction2).")] = None,
    url: Annotated[str | None, typer.Option(help="Download from this URL instead.")] = None,
    sha256: Annotated[str | None, typer.Option(help="Expected sha256 of --url.")] = None,
    force: Annotated[bool, typer.Option(help="Download again even if cached.")] = False,
) -> None:
    """Download the published C3D Sports-1M weights into the cache."""
    from phdcli.weights import fetch_weights

    with _Progress() as progress:
        path = fetch_weights(name, url=url, sha256=sha256, force=force,
                             progress=lambda done, total: progress.update("download", done,
                                                                          total or 0))
    typer.echo(str(path))


@model_app.command("info")
def model_info(
    file: Annotated[Path | None, typer.Argument(help="Model file (default: bundled).")] = None,
) -> None:
    """Print a ranking model file's metadata as JSON."""
    from phdcli.model import default_model_path, load_model

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
    """Check ffmpeg, packages, device, C3D weights, the model and the history."""
    from rich.console import Console
    from rich.table import Table

    from phdcli.doctor import run_checks

    checks = run_checks(user=user, device=device, weights=c3d_weights, model=model)
    ok = all(c.ok for c in checks)
    if as_json:
        from dataclasses import asdict

        from phdcli.about import collect

        about = collect(device=device, weights=c3d_weights, model=model)
        typer.echo(json.dumps({"version": 1, "ok": ok, **about.to_dict(),
                               "checks": [asdict(c) for c in checks]}, indent=1))
        if not ok:
            raise typer.Exit(1)
        return
    table = Table()
    for column in ("check", "", "detail", "fix"):
        table.add_column(column)
    for c in checks:
        table.add_row(c.name, "ok" if c.ok else "MISSING", c.detail, c.fix)
    Console().print(table)
    if not ok:
        raise typer.Exit(1)


# -- evaluation and training ------------------------------------------------
@app.command("eval")
def eval_command(
    annotations: Annotated[Path, typer.Argument(help="PHD^2-format annotations CSV.")],
    model: Annotated[str, typer.Option(
        help="random, prior (the bundled model's), a model file or a prior JSON.")] = "random",
    seed: Annotated[int, typer.Option(help="First random seed.")] = 0,
    n_seeds: Annotated[int, typer.Option(help="Seeds to average (random only).")] = 10,
    scores_out: Annotated[Path | None, typer.Option(help="Write every segment's score.")] = None,
    dataset: Annotated[Path | None, typer.Option(
        help="A dataset from `phd dataset build`: scores the model's content terms too.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Evaluate on PHD^2 annotations: mAP, nMSD, Recall@5 (the paper's protocol)."""
    from phdcli.training.evaluate import evaluate

    if dataset is not None:
        from phdcli.training.train import evaluate_dataset

        if model in ("random", "prior"):
            raise UsageError("--dataset needs --model FILE (a ranking model file)")
        metrics = evaluate_dataset(dataset, Path(model))
        typer.echo(json.dumps(metrics, indent=1) if as_json else
                   f"model {model}: mAP {metrics['map']:.2f}  nMSD {metrics['nmsd']:.2f}  "
                   f"R@5 {metrics['recall5']:.2f}  ({metrics['n_videos']:.0f} videos; "
                   f"random mAP {metrics['random']:.2f})")
        return

    seeds = n_seeds if model == "random" else 1
    result = evaluate(annotations, model, seed=seed, n_seeds=seeds, scores_out=scores_out)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=1))
        return
    typer.echo(f"model {result.model}: mAP {result.map:.2f}  nMSD {result.nmsd:.2f}  "
               f"R@5 {result.recall5:.2f}  ({result.n_videos} videos, "
               f"{result.n_skipped} skipped)")
    for note in result.notes:
        typer.echo(f"note: {note}")


@train_app.command("prior")
def train_prior_command(
    annotations: Annotated[Path, typer.Argument(help="PHD^2-format annotations CSV.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Prior JSON to write.")],
    validate: Annotated[bool, typer.Option(
        help="Also report 5-fold cross-validated metrics against random.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the folds.")] = 0,
) -> None:
    """Fit the temporal prior (where in a video people make GIFs)."""
    from phdcli.training.evaluate import train_prior, validate_prior

    train_prior(annotations, out, seed=seed)
    log.log(NOTICE, "wrote %s", out)
    if validate:
        typer.echo(json.dumps(validate_prior(annotations, seed=seed, n_folds=5), indent=1))


dataset_app = typer.Typer(help="Training data from PHD^2 annotations.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")


@dataset_app.command("build")
def dataset_build(
    annotations: Annotated[Path, typer.Argument(help="PHD^2-format annotations CSV.")],
    videos: Annotated[Path, typer.Option(help="Folder of videos named <youtubeId>.<ext>.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Dataset folder to write.")],
    download: Annotated[bool, typer.Option(help="Fetch missing videos with yt-dlp (360p).")] = (
        False),
    device: DeviceOpt = "auto",
    precision: Annotated[str, typer.Option(help="auto, bf16 or fp32.")] = "auto",
    c3d_weights: WeightsOpt = None,
    store: Annotated[Path | None, typer.Option(
        help="Feature store folder (default OUT/store); may be shared by builds.")] = None,
    engine: Annotated[str, typer.Option(help="local, or ray (pip install 'phdcli[ray]').")] = (
        "local"),
    address: Annotated[str | None, typer.Option(
        help="Ray cluster to join (with --engine ray; default: start one here).")] = None,
    max_history_videos: Annotated[int | None, typer.Option(
        help="Keep only the N most recent history videos per user (default: all).")] = None,
    retry_failed: Annotated[bool, typer.Option(
        help="Try again the videos an earlier run recorded as failed.")] = True,
    batch_clips: Annotated[int, typer.Option(help="Clips per C3D batch.")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Fill the per-video feature store, then assemble the training samples (resumable)."""
    from phdcli.training.dataset import BuildConfig, build_dataset

    cfg = BuildConfig(annotations=annotations, videos_dir=videos, out=out, store=store,
                      c3d_weights=c3d_weights, device=device, precision=precision,
                      batch_clips=batch_clips, download=download,
                      history_cap=max_history_videos, retry_failed=retry_failed, engine=engine,
                      address=address)
    with _Progress() as progress:
        summary = build_dataset(cfg, progress=progress.update)
    if as_json:
        typer.echo(json.dumps(summary.to_dict(), indent=1))
    log.log(NOTICE, "videos: %d done, %d already in the store, %d failed; %d clips, %.1f h of "
            "video in %.0f s; users: %d built, %d skipped", summary.videos_done,
            summary.videos_skipped, summary.videos_failed, summary.clips_forwarded,
            summary.hours_done, summary.wall_s, summary.n_users_built, summary.n_users_skipped)
    for failure in summary.failures[:10]:
        log.log(NOTICE, "failed: %s (%s): %s", failure["youtube_id"], failure["stage"],
                failure["reason"])
    if len(summary.failures) > 10:
        log.log(NOTICE, "... %d more failures in %s", len(summary.failures) - 10,
                summary.out / "dataset.json")
    if summary.videos_failed or summary.n_users_skipped:
        raise typer.Exit(1)


@train_app.command("content")
def train_content_command(
    dataset: Annotated[Path, typer.Argument(help="A folder from `phd dataset build`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model file to write.")],
    seed: Annotated[int, typer.Option(help="Seed (training is deterministic).")] = 0,
    epochs: Annotated[int, typer.Option(help="Epochs of the FNN.")] = 16,
    base_model: Annotated[Path | None, typer.Option(
        help="Take the temporal prior from this model file.")] = None,
) -> None:
    """Train PHD-CA and SVM-D, fit the fusion weights on validation users."""
    from phdcli.training.train import train_content

    with _Progress() as progress:
        summary = train_content(dataset, out, seed=seed, epochs=epochs, base_model=base_model,
                                progress=progress.update)
    typer.echo(json.dumps(summary.to_dict(), indent=1))


# -- main --------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and map failures to one line and an exit code."""
    from phdcli import fsutil, procs

    debug = os.environ.get("PHD_DEBUG", "") not in ("", "0")
    if not log.handlers:
        _setup_output(quiet=False)
    try:
        with procs.handle_signals():
            code = app(args=argv, prog_name="phd", standalone_mode=False)
    except Interrupted as exc:
        # The handler has killed the children; temp files still open go now.
        procs.stop_all()
        fsutil.remove_live_temps()
        name = {1: "SIGHUP", 2: None, 15: "SIGTERM"}.get(exc.signum)
        print(f"phd: interrupted{f' ({name})' if name else ''}", file=sys.stderr)
        code = exc.exit_code
    except _ClickUsageError as exc:
        code = _usage_error(exc)
    except typer.Abort as exc:
        interrupted = isinstance(exc.__context__, KeyboardInterrupt)
        print("phd: interrupted" if interrupted else "phd: aborted", file=sys.stderr)
        code = 130
    except PhdError as exc:
        if debug:
            raise
        print(f"phd: error: {_one_line(exc)}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        print("phd: interrupted", file=sys.stderr)
        code = 130
    except OSError as exc:  # disk full, permissions, a file that is a folder
        if debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"phd: error: {where}{exc.strerror or _one_line(exc)}", file=sys.stderr)
        code = 1
    except Exception as exc:  # the last net: one line, never a traceback
        if debug:
            raise
        print(
            f"phd: internal error: {type(exc).__name__}: {_one_line(exc)} "
            "(PHD_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        code = 1
    sys.exit(code if isinstance(code, int) else 0)


def _usage_error(exc: _ClickUsageError) -> int:
    """click's four-line usage error as our one line (help stays help)."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # `phd` or `phd history` alone
        exc.show()
        return exc.exit_code
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "phd"
    print(f"phd: error: {_one_line(exc.format_message())} (see `{command} --help`)",
          file=sys.stderr)
    return exc.exit_code


def _one_line(exc: BaseException | str) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
