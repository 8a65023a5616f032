"""Keeping suggestions: `phd history add` on phd's own outputs (RANDOM C3D weights).

Known by construction: a kept GIF's feature is its segment's own feature, so
with --include-kept that segment is a perfect match for the history (cosine
1) and must rank first; by default it must not be suggested at all.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from runphd import run_cli as run

from phdcli.cli.history import added_summary
from phdcli.features.extractor import FeatureExtractor
from phdcli.fsutil import sha256_file
from phdcli.history.adding import add_to_history, recognise_outputs
from phdcli.history.kept import same_span
from phdcli.history.records import (
    Provenance,
    SpanFeature,
    lookup,
    orphaned_records,
    record_path,
    remember,
)
from phdcli.history.store import History
from phdcli.ranking.model import default_model_path, load_model
from phdcli.suggest.config import SuggestConfig
from phdcli.suggest.pipeline import Suggester
from tests import media


@pytest.fixture
def home(footage_home: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.setenv("PHD_HOME", str(footage_home["home"]))
    monkeypatch.setenv("PHD_C3D_WEIGHTS", str(footage_home["weights"]))
    return footage_home


def test_keep_two_picks_then_suggest_leaves_them_out(
    home: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video, user = home["video"], "keeper"
    # A history to compare with (so the run computes features for `history add`
    # to reuse); no gap or shot rule: ranks 2 and 3 are whole segments.
    code, out, err = run(["suggest", str(video), "-k", "3", "--out", str(tmp_path / "picks"),
                          "--width", "96", "--json", "--user", user, "--device", "cpu",
                          "--history", str(home["history"]), "--min-gap", "0", "--no-one-shot"],
                         capsys)
    assert code == 0, err
    picks = json.loads(out)["results"][0]["suggestions"]
    chosen = picks[1:3]  # keep ranks 2 and 3

    spec = load_model(default_model_path()).spec
    extractor = FeatureExtractor(spec, home["weights"], "cpu")
    files = [Path(p["path"]) for p in chosen]
    # Records follow content, not names: a renamed, moved GIF is still recognised.
    files[1] = files[1].rename(tmp_path / "renamed.gif")
    added = add_to_history(files, user=user, extractor=extractor)
    # The features came from what `phd suggest` computed: C3D never ran.
    assert extractor.stats.c3d_loads == 0 and extractor.stats.clips_forwarded == 0
    assert extractor.stats.cache_hits == extractor.stats.cache_misses == 0
    video_sha = sha256_file(video)
    assert [it.source for it in added] == [
        Provenance(str(video.resolve()), video_sha, p["start"], p["end"]) for p in chosen
    ]
    # What `phd history add` says of it, in one line.
    assert added_summary(added, 2, user).startswith(
        f"added 2 GIFs to profile 'keeper' (2 kept from {video.name} ")

    code, out, _ = run(["history", "list", "--json", "--user", user], capsys)
    listed = json.loads(out)
    assert [(it["source"]["start_s"], it["source"]["end_s"]) for it in listed] == [
        (p["start"], p["end"]) for p in chosen
    ]
    assert all(it["source"]["video_sha256"] == video_sha for it in listed)
    folder = History.for_user(user).folder
    assert all((folder / it["feature"]["file"]).is_file() for it in listed)

    kept = {p["start"] for p in chosen}
    config = SuggestConfig(k=4, user=user, c3d_weights=home["weights"], device="cpu",
                           dry_run=True, min_gap_s=0, one_shot=False)
    default = Suggester(config)
    again = default.run(video)
    assert not kept & {s.start_s for s in again.suggestions}  # never suggested again
    assert len(again.suggestions) == 2  # 4 segments, 2 kept
    # Neither the video (feature cache) nor the kept GIFs (their stored feature)
    # went through C3D.
    assert default.extractor.stats.c3d_loads == 0

    included = Suggester(SuggestConfig(k=4, user=user, c3d_weights=home["weights"],
                                       device="cpu", dry_run=True, include_kept=True,
                                       min_gap_s=0, one_shot=False)).run(video)
    first = included.suggestions[0]
    assert first.start_s in kept
    assert first.explanation.similarity == pytest.approx(1.0, abs=1e-3)  # float32
    assert first.explanation.nearest_gif in {f.name for f in files}


def test_a_gif_phd_did_not_write_is_decoded_without_a_warning(
    home: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gif = media.gif_from(home["video"], tmp_path / "mine.gif", 2.0, 2.0, width=120)
    extractor = FeatureExtractor(load_model(default_model_path()).spec, home["weights"], "cpu")
    with caplog.at_level("DEBUG", logger="phd"):
        assert recognise_outputs([gif], extractor) == {}  # so add() decodes it
    # An ordinary GIF is the common case: said for debugging only, never as a warning.
    said = [r for r in caplog.records if "mine.gif" in r.getMessage()]
    assert said and all(r.levelno < logging.INFO for r in said)
    assert "not a file phd suggest wrote here (no record)" in said[0].getMessage()


def test_records_are_checked_before_they_are_trusted(
    home: dict[str, Path], tmp_path: Path
) -> None:
    gif = media.gif_from(home["video"], tmp_path / "out.gif", 0.0, 1.0, width=64)
    digest = sha256_file(gif)
    vector = np.full(8, 0.5, dtype=np.float32)
    provenance = Provenance(str(home["video"]), "a" * 64, 1.0, 6.0)
    remember(gif, provenance, SpanFeature(vector, "c3d-sports1m@000000000000", {"layer": "fc6"}))
    record, why = lookup(digest)
    assert record is not None and why == ""
    assert record.provenance == provenance and record.feature.vector.tolist() == [0.5] * 8

    # 0.5 becomes 1.0 in the first value: the checksum no longer matches.
    path = record_path(digest)
    doc = json.loads(path.read_text())
    blob = bytearray(base64.b64decode(doc["feature"]["npy_base64"]))
    blob[-32:-28] = np.float32(1.0).tobytes()
    doc["feature"]["npy_base64"] = base64.b64encode(bytes(blob)).decode()
    path.write_text(json.dumps(doc))
    record, why = lookup(digest)
    assert record is None and "damaged" in why and "checksum" in why

    # A record an older phd wrote (format 1: raw little-endian floats) is still read,
    # checked as a current one is, and pruned only when it cannot be used.
    raw = np.full(8, 0.25, dtype="<f4").tobytes()
    older = {k: v for k, v in doc["feature"].items() if k != "npy_base64"}
    older.update(sha256=hashlib.sha256(raw).hexdigest(),
                 float32_le_base64=base64.b64encode(raw).decode())
    path.write_text(json.dumps({**doc, "format": "phd-output/1", "feature": older}))
    record, why = lookup(digest)
    assert record is not None and why == "", why
    assert record.provenance == provenance and record.feature.vector.tolist() == [0.25] * 8
    assert path not in list(orphaned_records())
    older["sha256"] = "0" * 64
    path.write_text(json.dumps({**doc, "format": "phd-output/1", "feature": older}))
    record, why = lookup(digest)
    assert record is None and "checksum" in why
    assert path in list(orphaned_records())

    # A format this phd does not know is not read either.
    path.write_text(json.dumps({**doc, "format": "phd-output/9"}))
    record, why = lookup(digest)
    assert record is None and "phd-output/9" in why and path in list(orphaned_records())

    # A record copied under another file's hash says it is for another file.
    record_path("b" * 64).parent.mkdir(parents=True, exist_ok=True)
    record_path("b" * 64).write_text(path.read_text())
    assert lookup("b" * 64)[0] is None

    # An edited GIF has another hash: no record at all.
    gif.write_bytes(gif.read_bytes() + b"\0")
    assert lookup(sha256_file(gif)) == (None, "not a file phd suggest wrote here (no record)")


def test_a_record_from_other_weights_keeps_provenance_but_not_the_feature(
    home: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gif = media.gif_from(home["video"], tmp_path / "old.gif", 0.0, 1.0, width=64)
    provenance = Provenance(str(home["video"]), "c" * 64, 0.0, 5.0)
    spec = load_model(default_model_path()).spec
    remember(gif, provenance, SpanFeature(np.ones(4096, np.float32) / 64,
                                          "c3d-sports1m@0123456789ab", spec.to_dict()))
    extractor = FeatureExtractor(spec, home["weights"], "cpu")  # another backbone id
    with caplog.at_level("INFO", logger="phd"):
        found = recognise_outputs([gif], extractor)
    assert found[gif].provenance == provenance and found[gif].feature is None
    assert "other C3D weights" in caplog.text


def test_same_span_rule() -> None:
    starts, ends = [0.0, 5.0, 10.0], [5.0, 10.0, 15.0]
    # A whole segment; a 3 s window inside another; a sliver that only grazes one.
    assert same_span(starts, ends, [(5.0, 10.0)]).tolist() == [False, True, False]
    assert same_span(starts, ends, [(11.0, 14.0)]).tolist() == [False, False, True]
    assert same_span(starts, ends, [(4.5, 6.0)]).tolist() == [False, True, False]
    assert same_span(starts, ends, [(4.0, 5.5)]).tolist() == [True, False, False]
    assert same_span(starts, ends, []).tolist() == [False, False, False]
