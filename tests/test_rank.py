"""The coarse-to-fine pass against the exhaustive one, on real footage.

RANDOM C3D weights (the test says so); the right answer is known by
construction: the history GIF was cut from the segment at 10 s. Each test
counts the clips it forwards, so each has a feature cache of its own (the
weights come converted).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from phdcli.features.extractor import FeatureExtractor
from phdcli.history.store import History
from phdcli.media.probe import probe
from phdcli.media.segments import fixed_segments
from phdcli.ranking.model import default_model_path, load_model
from phdcli.ranking.rank import rank_segments
from phdcli.suggest.config import SuggestConfig
from phdcli.suggest.pipeline import suggest_batch


# Heavy (8-11 s): the default suite keeps the CLI-level coarse-to-fine test below,
# and `make bench-quick` (R12) compares the default top k with fp32 exhaustive.
@pytest.mark.heavy
def test_coarse_to_fine_gives_the_exhaustive_top_k_and_counts_skipped_clips(
    footage: dict[str, Path], c3d_home: Path
) -> None:
    model = load_model(default_model_path())
    ext = FeatureExtractor(model.spec, footage["weights"], "cpu", "fp32")
    history = History.from_folder(footage["history"]).features(ext)
    info = probe(footage["video"])
    segments = fixed_segments(info.duration_s, 2.5)  # 8 segments, 2 clips each
    assert len(segments) == 8
    before = ext.stats.clips_forwarded

    fine = rank_segments(ext, model, info, segments, history, k=2, margin=2)
    # 8 coarse clips + the second clip of 2 x 2 candidates, of 16.
    assert (fine.clips_used, fine.clips_exhaustive, fine.clips_skipped) == (12, 16, 4)
    assert ext.stats.clips_forwarded - before == 12

    full = rank_segments(ext, model, info, segments, history, k=2, exhaustive=True)
    assert ext.stats.clips_forwarded - before == 16  # only the 4 skipped clips were new
    assert full.clips_skipped == 0
    assert fine.order.tolist() == full.order.tolist()
    assert segments[int(fine.order[0])].start_s == pytest.approx(10.0)
    # The chosen segments' features are the exhaustive ones, exactly.
    for i in fine.order:
        np.testing.assert_array_equal(fine.feats.segments[i], full.feats.segments[i])
    # Their scores differ only through the video-mean centring (rank.py).
    np.testing.assert_allclose(fine.terms.total[fine.order], full.terms.total[full.order],
                               atol=0.05)


def test_suggest_defaults_to_coarse_to_fine_and_exhaustive_turns_it_off(
    footage: dict[str, Path], c3d_home: Path, tmp_path: Path
) -> None:
    base = SuggestConfig(k=1, length_s=2.5, out_dir=tmp_path, history_dir=footage["history"],
                         c3d_weights=footage["weights"], device="cpu", dry_run=True)
    default = suggest_batch([str(footage["video"])], base)
    assert default.stats.clips_skipped == 16 - (8 + 4)  # margin 4 x k 1 candidates
    from dataclasses import replace

    full = suggest_batch([str(footage["video"])], replace(base, exhaustive=True))
    assert full.stats.clips_skipped == 0
    assert full.stats.clips_forwarded == 4  # the rest came from the cache
    picks = [r.suggestions[0].segment_start_s for r in (default.results[0], full.results[0])]
    assert picks == [10.0, 10.0]


@pytest.mark.parametrize("centre", ["video_mean", "none"])
def test_rescoring_some_rows_gives_their_terms_from_a_full_scoring(centre: str) -> None:
    # The fine pass rescores only its candidates: their terms must be those a
    # scoring of every segment gives (centred on all of them), to float32 noise.
    from dataclasses import replace

    model = replace(load_model(default_model_path()), centre=centre)
    rng = np.random.default_rng(3)
    dim = 4096  # fc6
    segs = np.abs(rng.standard_normal((40, dim))).astype(np.float32)
    history = np.abs(rng.standard_normal((300, dim))).astype(np.float32)
    starts = np.arange(40) * 5.0
    full = model.score(segs, history, starts, starts + 5, 200.0)
    rows = np.array([31, 2, 17, 8])
    part = model.score(segs, history, starts, starts + 5, 200.0, rows=rows)
    np.testing.assert_allclose(part.total, full.total[rows], rtol=0, atol=1e-6)
    assert (part.nearest_index == full.nearest_index[rows]).all()
    merged = full.with_rows(rows, part)
    np.testing.assert_allclose(merged.total, full.total, rtol=0, atol=1e-6)
