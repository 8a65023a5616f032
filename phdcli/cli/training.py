"""``phd eval``, ``phd train prior|content`` and ``phd dataset build``: the training side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from phdcli import NOTICE
from phdcli.cli._app import DeviceOpt, Progress, WeightsOpt, app, dataset_app, log, train_app
from phdcli.errors import Stopped, UsageError


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
    force: Annotated[bool, typer.Option(help="Replace an existing --scores-out file.")] = False,
) -> None:
    """Evaluate on PHD^2 annotations: mAP, nMSD, Recall@5 (the paper's protocol)."""
    from phdcli.training.evaluate import evaluate

    if dataset is not None:
        from phdcli.training.train import evaluate_dataset

        if model in ("random", "prior"):
            raise UsageError("--dataset needs --model FILE (a ranking model file)")
        if scores_out is not None:
            raise UsageError("--scores-out is not written with --dataset")
        metrics = evaluate_dataset(dataset, Path(model))
        typer.echo(json.dumps(metrics, indent=1) if as_json else
                   f"model {model}: mAP {metrics['map']:.2f}  nMSD {metrics['nmsd']:.2f}  "
                   f"R@5 {metrics['recall5']:.2f}  ({metrics['n_videos']:.0f} videos; "
                   f"random mAP {metrics['random']:.2f})")
        return

    seeds = n_seeds if model == "random" else 1
    result = evaluate(annotations, model, seed=seed, n_seeds=seeds, scores_out=scores_out,
                      force=force)
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
    force: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False,
) -> None:
    """Fit the temporal prior (where in a video people make GIFs)."""
    from phdcli.training.crossval import validate_prior
    from phdcli.training.evaluate import train_prior

    train_prior(annotations, out, seed=seed, force=force)
    log.log(NOTICE, "wrote %s", out)
    if validate:
        typer.echo(json.dumps(validate_prior(annotations, seed=seed, n_folds=5), indent=1))


@dataset_app.command("build")
def dataset_build(
    annotations: Annotated[Path, typer.Argument(help="PHD^2-format annotations CSV.")],
    videos: Annotated[Path, typer.Option(help="Folder of videos named <youtubeId>.<ext>.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Dataset folder to write.")],
    download: Annotated[bool, typer.Option(help="Fetch missing videos with yt-dlp (360p).")] = (
        False),
    device: DeviceOpt = "auto",
    precision: Annotated[Literal["auto", "bf16", "fp32"], typer.Option(
        metavar="PRECISION", help="auto, bf16 or fp32.")] = "auto",
    c3d_weights: WeightsOpt = None,
    store: Annotated[Path | None, typer.Option(
        help="Feature store folder (default OUT/store); may be shared by builds.")] = None,
    engine: Annotated[Literal["local", "ray"], typer.Option(
        metavar="ENGINE", help="local, or ray (pip install 'phdcli[ray]').")] = "local",
    address: Annotated[str | None, typer.Option(
        help="Ray cluster to join (with --engine ray; default: start one here).")] = None,
    max_history_videos: Annotated[int | None, typer.Option(
        help="Keep only the N most recent history videos per user (default: all).")] = None,
    retry_failed: Annotated[bool, typer.Option(
        help="Try again the videos an earlier run recorded as failed.")] = True,
    batch_clips: Annotated[int, typer.Option(help="Clips per C3D batch.")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    force: Annotated[bool, typer.Option(
        help="Build in a folder holding other files, or rebuild one built from other "
             "annotations, features or weights.")] = False,
) -> None:
    """Fill the per-video feature store, then assemble the training samples (resumable)."""
    from phdcli.training.dataset import BuildConfig, build_dataset

    cfg = BuildConfig(annotations=annotations, videos_dir=videos, out=out, store=store,
                      c3d_weights=c3d_weights, device=device, precision=precision,
                      batch_clips=batch_clips, download=download,
                      history_cap=max_history_videos, retry_failed=retry_failed, engine=engine,
                      address=address, force=force)
    stopped: Stopped | None = None
    with Progress() as progress:
        try:
            summary = build_dataset(cfg, progress=progress.update)
        except Stopped as exc:
            stopped = exc
    if stopped is not None:  # what was done still goes to a --json reader; then the error
        if as_json:
            typer.echo(json.dumps(stopped.done, indent=1))
        raise stopped
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
    force: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False,
) -> None:
    """Train PHD-CA and SVM-D, fit the fusion weights on validation users."""
    from phdcli.training.train import train_content

    with Progress() as progress:
        summary = train_content(dataset, out, seed=seed, epochs=epochs, base_model=base_model,
                                progress=progress.update, force=force)
    typer.echo(json.dumps(summary.to_dict(), indent=1))
