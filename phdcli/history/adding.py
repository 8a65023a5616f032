"""``phd history add``: GIFs in, features once; phd's own outputs kept with their provenance.

A file that ``phd suggest`` wrote is recognised by its content hash
(``phdcli.history.records``) and *kept*: its provenance and its feature from
the original video go into the history with no decoding and no C3D. Any
other file is decoded and goes through C3D once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from phdcli import NOTICE
from phdcli.fsutil.contenthash import cached_sha256
from phdcli.history.store import History, HistoryItem, Precomputed

if TYPE_CHECKING:
    from phdcli.features.extractor import FeatureExtractor

log = logging.getLogger("phd")


def add_to_history(
    files: Sequence[Path],
    user: str = "default",
    device: str = "auto",
    c3d_weights: Path | None = None,
    model: Path | None = None,
    extractor: FeatureExtractor | None = None,
    max_megapixels: float | None = None,
    offline: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[HistoryItem]:
    """Add ``files`` to ``user``'s history; the features follow the ranking model's spec.

    With no C3D weights, the default ones are fetched when a file first needs
    C3D, or refused when ``offline``. ``progress`` is ``phd suggest``'s: the
    stage "weights" counts the fetched bytes; ``progress(stage, 0, 0)`` hears
    of each slow step as it starts (reading the files, loading C3D).
    """
    from phdcli.features.extractor import FeatureExtractor
    from phdcli.features.registry import AutoFetch
    from phdcli.media.budget import DEFAULT_MAX_MEGAPIXELS, PixelBudget, using_pixel_budget
    from phdcli.ranking.model import default_model_path, load_model

    history = History.for_user(user)
    if extractor is None:
        spec = load_model(model or default_model_path()).spec
        weights_progress = (None if progress is None else
                            lambda done, total: progress("weights", done, total or 0))
        extractor = FeatureExtractor(spec, c3d_weights, device,
                                     auto_fetch=AutoFetch(offline, weights_progress))
    if progress is not None:
        extractor.on_stage = lambda stage: progress(stage, 0, 0)
        progress("reading the GIFs", 0, 0)
    budget = PixelBudget.from_megapixels(max_megapixels or DEFAULT_MAX_MEGAPIXELS)
    with using_pixel_budget(budget):
        return history.add(files, extractor, recognise_outputs(files, extractor))


def recognise_outputs(files: Sequence[Path], extractor: FeatureExtractor
                      ) -> dict[Path, Precomputed]:
    """What ``phd suggest`` recorded about each of ``files``, checked."""
    from phdcli.history.records import lookup

    found: dict[Path, Precomputed] = {}
    for file in files:
        file = Path(file)
        if not file.is_file():
            continue  # add() reports it
        record, why = lookup(cached_sha256(file))
        if record is None:
            # An ordinary GIF is the common case, nothing to warn about.
            level = logging.DEBUG if "no record" in why else NOTICE
            log.log(level, "%s: %s; computing its features from the file", file.name, why)
            continue
        vector = None if record.feature is None else record.feature.vector
        if record.feature is not None and not record.feature.fits(extractor):
            log.log(NOTICE, "%s: phd suggest computed its features with other C3D weights "
                    "or sampling; decoding the GIF instead", file.name)
            vector = None
        found[file] = Precomputed(record.provenance, vector)
    return found
