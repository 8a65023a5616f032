"""Caches that lie (issue 18, rows 3 and 5): other bytes under a file's name, and
cache entries that are not files at all.

Real files, real FIFOs, real links to ``/dev/zero``; the content-identity test
runs C3D (RANDOM weights) on two real videos of the same size.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from phdcli.features.cache import cache_key
from phdcli.features.clips import ClipTable, plan_clips
from phdcli.features.extractor import FeatureExtractor
from phdcli.fsutil import contenthash, sha256_file
from phdcli.media.probe import probe
from phdcli.media.segments import Segment
from tests import media


def _same_size_videos(folder: Path) -> tuple[Path, Path]:
    """Two different 2 s videos of exactly the same size (raw frames in AVI)."""
    made = []
    for name, source in (("a.avi", "testsrc2"), ("b.avi", "smptebars")):
        out = folder / name
        media.run_ffmpeg("-f", "lavfi", "-i", f"{source}=size=64x48:rate=8:duration=2",
                         "-c:v", "rawvideo", "-pix_fmt", "yuv420p", str(out))
        made.append(out)
    a, b = made
    assert a.stat().st_size == b.stat().st_size and a.read_bytes() != b.read_bytes()
    return a, b


def _replace_keeping_mtime(target: Path, new: Path, in_place: bool) -> None:
    """``cp -p new target``: in place (same inode, as cp does onto an existing file),
    or a new file renamed over it (as rsync does); the old mtime either way."""
    before = target.stat()
    if in_place:
        with open(target, "r+b") as fh:
            fh.write(new.read_bytes())
    else:
        tmp = target.with_name(".incoming")
        shutil.copyfile(new, tmp)
        os.replace(tmp, target)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = target.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


@pytest.mark.parametrize("in_place", [True, False], ids=["cp-p", "rsync-t"])
def test_a_file_replaced_with_the_same_size_and_mtime_is_hashed_anew(
    tmp_path: Path, in_place: bool
) -> None:
    big = contenthash.FULL_HASH_MAX_BYTES * 2  # large enough to be remembered
    old, new = tmp_path / "old.bin", tmp_path / "new.bin"
    old.write_bytes(b"o" * big)
    new.write_bytes(b"o" * (big // 3) + b"n" + b"o" * (big - big // 3 - 1))  # one byte differs
    index = tmp_path / "index"
    assert contenthash.cached_sha256(old, index) == sha256_file(old)
    assert list(index.glob("*.json"))  # remembered: the next lookup is a memo's answer
    _replace_keeping_mtime(old, new, in_place)
    assert contenthash.cached_sha256(old, index) == sha256_file(new)


def test_a_video_replaced_with_the_same_size_and_mtime_gets_its_own_features(
    tmp_path: Path, phd_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was: the memo keyed on (path, size, mtime) served the old video's features.

    Each video's clips are in the clip cache already (known values, so no C3D
    runs): the extractor must read the table of the bytes now under the name."""
    monkeypatch.setattr(contenthash, "FULL_HASH_MAX_BYTES", 0)  # the memo path, even for 80 KB
    a, b = _same_size_videos(tmp_path)
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"never loaded: every clip is cached")
    extractor = FeatureExtractor(c3d_weights=weights, device="cpu")
    info = probe(a)
    _, ticks = plan_clips(extractor.spec, info.duration_s, [Segment(0.0, info.duration_s)])
    ticks = np.unique(ticks).astype(np.int64)
    rng = np.random.default_rng(0)
    for source in (a, b):
        extractor.cache.store(
            cache_key(sha256_file(source), extractor.backbone_id, extractor.spec),
            ClipTable(ticks, rng.random((len(ticks), extractor.cache.dim), "f4"),
                      np.zeros(len(ticks), bool)))
    a_feature, b_feature = (extractor.file_feature(probe(v)) for v in (a, b))
    assert not np.allclose(a_feature, b_feature)
    video = tmp_path / "video.avi"
    shutil.copyfile(a, video)
    np.testing.assert_array_equal(extractor.file_feature(probe(video)), a_feature)
    _replace_keeping_mtime(video, b, in_place=True)
    np.testing.assert_array_equal(extractor.file_feature(probe(video)), b_feature)
    assert extractor.stats.clips_forwarded == 0


@pytest.mark.heavy
def test_a_replaced_video_gets_the_features_c3d_computes_for_it(
    tmp_path: Path, c3d_home: Path, mmaction2_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same with C3D itself (RANDOM weights) computing both videos' features."""
    monkeypatch.setattr(contenthash, "FULL_HASH_MAX_BYTES", 0)
    a, b = _same_size_videos(tmp_path)
    extractor = FeatureExtractor(c3d_weights=mmaction2_weights, device="cpu")
    video = tmp_path / "video.avi"
    shutil.copyfile(a, video)
    old = extractor.file_feature(probe(video))
    want = extractor.file_feature(probe(b))
    assert not np.allclose(old, want)
    _replace_keeping_mtime(video, b, in_place=True)
    np.testing.assert_array_equal(extractor.file_feature(probe(video)), want)


# -- entries that are not files (row 5) ------------------------------------------------------
_EVERY_ENTRY = textwrap.dedent("""
    import json, logging, os, sys
    from pathlib import Path
    import numpy as np
    from phdcli import paths
    from phdcli.errors import HistoryError
    from phdcli.features import int8, precision_probe, weights
    from phdcli.features.cache import ClipCache, cache_key
    from phdcli.features.clips import TICKS_PER_S, ClipTable
    from phdcli.features.spec import FeatureSpec
    from phdcli.fsutil import contenthash, sha256_file
    from phdcli.history.store import History

    warnings = []
    class Keep(logging.Handler):
        def emit(self, record):
            warnings.append(record.getMessage())
    logging.getLogger("phd").addHandler(Keep())

    kind = sys.argv[1]
    def hostile(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(path):
            os.unlink(path)
        if kind == "fifo":
            os.mkfifo(path)
        else:
            os.symlink("/dev/zero", path)
    def gone(path):
        return not os.path.lexists(path)
    done = {}

    clips = ClipCache(paths.features_cache_dir(), 8)
    key = cache_key("a" * 64, "test-backbone", FeatureSpec())
    clips.store(key, ClipTable(np.array([0, TICKS_PER_S]), np.ones((2, 8), "f4"),
                               np.zeros(2, bool)))
    hostile(clips.file(key))
    done["clip cache"] = clips.load(key) is None and gone(clips.file(key))

    video = Path(sys.argv[2])
    digest = contenthash.cached_sha256(video)
    (memo,) = (paths.cache_dir() / contenthash.HASH_INDEX_DIR).glob("*.json")
    hostile(memo)
    done["hash memo"] = (contenthash.cached_sha256(video) == digest == sha256_file(video)
                         and memo.is_file() and not memo.is_symlink())

    converted = weights.converted_path("c" * 64)
    hostile(converted)
    done["converted weights"] = (isinstance(weights._read_converted(converted), str)
                                 and weights.converted_input_spec("c" * 64) is None)

    xml, bin_, manifest = int8.model_files("c" * 64, "fc6")
    xml.write_text("<net/>")
    manifest.write_text(json.dumps({"backend": int8.BACKEND,
                                    "sha256": {"xml": "0" * 64, "bin": "0" * 64}}))
    hostile(bin_)
    done["int8 model"] = (int8._load_model("c" * 64, "fc6") is None
                          and gone(bin_) and gone(xml) and gone(manifest))
    verdict = precision_probe.verdict_file("c" * 64, "fc6", "cpu")
    hostile(verdict)
    done["precision probe"] = precision_probe.read_verdict(verdict) is None and gone(verdict)

    history = History.for_user()
    hostile(history.folder / "history.json")
    try:
        history.items()
        done["history manifest"] = False
    except HistoryError as exc:
        done["history manifest"] = "\\n" not in str(exc) and "unreadable" in str(exc)
    print(json.dumps({"done": done, "warnings": warnings}))
""")


@pytest.mark.parametrize("kind", ["fifo", "devzero"])
def test_a_fifo_or_dev_zero_where_a_cache_entry_should_be_is_refused_not_read(
    tmp_path: Path, kind: str
) -> None:
    """Was: phd blocked in open() on a FIFO and hashed /dev/zero forever. Each
    entry is refused, removed where it is re-creatable, with one warning each."""
    video = tmp_path / "v.bin"
    video.write_bytes(b"v" * (contenthash.FULL_HASH_MAX_BYTES + 1))
    env = {"PATH": "/usr/bin:/bin", "PHD_HOME": str(tmp_path / "home"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    # A subprocess with a deadline: a regression fails here instead of hanging the suite.
    proc = subprocess.run([sys.executable, "-c", _EVERY_ENTRY, kind, str(video)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["done"] == dict.fromkeys(report["done"], True), report
    assert len(report["done"]) == 6
    warned = report["warnings"]
    assert all("\n" not in w for w in warned)
    for what in ("feature cache entry", "hash memo", "int8 C3D model", "precision probe"):
        assert len([w for w in warned if what in w]) == 1, (what, warned)
