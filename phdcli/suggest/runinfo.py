"""What a batch ran with, in words: the report's "how these were made" and the cold-start line.

Functions of the batch's parts (config, history, ranking model), so that
``Suggester`` keeps to running videos through the stages.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from phdcli import NOTICE
from phdcli.suggest.config import SuggestConfig
from phdcli.suggest.report import RunInfo
from phdcli.suggest.results import Suggestion, count

if TYPE_CHECKING:
    from phdcli.history.store import History
    from phdcli.ranking.model import FusedModel

log = logging.getLogger("phd")


def describe_run(cfg: SuggestConfig, history: History, model: FusedModel, backbone_id: str,
                 names: list[str], picks: list[Suggestion] | None = None) -> RunInfo:
    """The features, model and history of this batch, in words for the report,
    and thumbnails of the history GIFs nearest to ``picks``."""
    from phdcli.media.thumbs import thumbnail
    from phdcli.paths import tilde
    from phdcli.suggest.report import model_terms

    # What the features are, not where they were computed this time: a
    # rerun reads them from the cache and must write the same page (the
    # device and precision are said on stderr when C3D runs).
    features = (f"C3D {backbone_id}, {model.spec.layer}"
                if model.needs_features(len(names)) else
                "none needed: no history to compare with and no content model")
    if history.managed:
        n_kept = sum(1 for it in history.items() if it.source is not None)
        where = (f"profile {cfg.user!r}: {count(len(names), 'GIF')} "
                 f"({n_kept} kept from phd's picks)")
    else:
        where = f"--history folder: {count(len(names), 'GIF')} (read-only)"
    terms, hand_set = model_terms(model, has_history=bool(names))
    nearest = {p.explanation.nearest_gif for p in picks or ()} - {None}
    thumbs = {name: thumbnail(history.folder / name) for name in sorted(nearest)}
    return RunInfo(features=features, history=f"{where} in {tilde(history.folder)}",
                   command=cfg.command or "phd suggest {input} --report",
                   terms=terms, hand_set=hand_set, heatmap_weight=cfg.heatmap_weight,
                   thumbnails={name: data for name, data in thumbs.items() if data})


def say_cold_start(cfg: SuggestConfig, history: History, model: FusedModel) -> None:
    """Once a batch: why the picks cannot follow this user's taste yet."""
    user = "" if cfg.user == "default" else f" -u {cfg.user}"
    if not history.managed:
        where = f"the --history folder {history.folder} holds no GIF"
        fix = "put GIFs you made in it"
    else:
        where = "your history is empty"
        fix = f"`phd history add{user} GIF...` adds GIFs you made"
    what = ("the content model and the position in the video"
            if model.needs_features(0) else "position in the video only (no C3D needed)")
    log.log(NOTICE, "%s: ranking by %s; %s, so that picks follow your taste", where, what, fix)
