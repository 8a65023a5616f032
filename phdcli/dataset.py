"""Training data for PHD-CA + SVM-D: C3D features of PHD^2 users (paper section 5, "Data Setup").

For every user of a PHD^2 annotation file whose last video is on disk, one
file holds:

- the last video's detected shots (shots over 15 s cut into 5 s chunks, the
  paper's training segments) with their features and labels (``segment_labels``);
- its fixed 5 s segments (the test protocol's), for validation metrics;
- the user's GIFs on that video (the metrics' ground truth);
- the history: one feature per GIF span of the 20 most recent history
  videos, overlapping GIFs of a video merged into their union (the paper's
  G); a span's feature is the mean of the clips inside it.

Layout of a dataset folder::

    dataset.json          manifest: annotations, feature spec, backbone, counts
    annotations.csv       a copy of the annotations (the temporal prior is fitted on them)
    users/<user>.npz      one file per user, written atomically

A re-run skips users whose file exists, so an interrupted build resumes
where it stopped; a folder built with other features or annotations is
refused rather than mixed. ``load_dataset`` turns the files into
``UserSample`` values, the in-memory type ``phdcli.train`` learns from.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from phdcli.errors import DownloadError, InputError, PhdError, UsageError
from phdcli.evaluate import fixed_segment_bounds
from phdcli.features import FeatureSpec
from phdcli.fsutil import atomic_path, atomic_write_text, sha256_file
from phdcli.phd2 import User, UserVideo, load_annotations
from phdcli.segments import Segment

if TYPE_CHECKING:
    from phdcli.features import FeatureExtractor
    from phdcli.video import VideoInfo

log = logging.getLogger("phd")

DATASET_FORMAT = "phd-dataset/1"
MANIFEST = "dataset.json"
ARCHIVE = "download-archive.txt"  # yt-dlp's download archive, inside videos_dir
ANNOTATIONS_COPY = "annotations.csv"
USERS_DIR = "users"
YOUTUBE_URL = "https://www.youtube.com/watch?v={id}"
HISTORY_VIDEOS = 20
POSITIVE, NEGATIVE, AMBIGUOUS = 1, 0, -1
LABEL_RULE = (
    "positive: more than 50% of the segment lies in the union of the user's GIFs on the video, "
    "or more than 50% of one GIF lies in the segment; negative: overlaps no GIF; "
    "otherwise ambiguous (-1, left out of training pairs)"
)
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".m4v", ".avi", ".flv")
_YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PLAIN_USER = re.compile(r"^[A-Za-z0-9_-]{1,80}$")

# progress(users_done, users_total)
DatasetProgress = Callable[[int, int], None]


@dataclass
class UserSample:
    """One user's example, features only: no video is needed to train on it.

    history (m, D), m >= 0; segments (n, D) the last video's training
    segments with labels (n,) in {1, 0, -1} and bounds_s (n, 2) in seconds;
    gifs_s (g, 2) the user's GIFs on that video (None: the positive
    segments' spans); test_* the fixed 5 s segments the metrics use (None:
    the training segments).
    """

    history: np.ndarray
    segments: np.ndarray
    labels: np.ndarray
    bounds_s: np.ndarray
    duration_s: float
    gifs_s: np.ndarray | None = None
    user_id: str = ""
    test_segments: np.ndarray | None = None
    test_bounds_s: np.ndarray | None = None

    def ground_truth_s(self) -> np.ndarray:
        if self.gifs_s is not None:
            return self.gifs_s
        return self.bounds_s[self.labels == POSITIVE]

    def eval_segments(self) -> tuple[np.ndarray, np.ndarray]:
        """(features (t, D), bounds (t, 2)) of the segments the metrics score."""
        if self.test_segments is not None and self.test_bounds_s is not None:
            return self.test_segments, self.test_bounds_s
        return self.segments, self.bounds_s


@dataclass
class Dataset:
    spec: FeatureSpec
    backbone: str
    samples: list[UserSample]
    manifest: dict[str, Any]
    annotations: Path | None  # the copy inside the dataset, if there is one


@dataclass
class DatasetSummary:
    out: Path
    n_users: int  # users in the annotations
    n_built: int  # user files written by this run
    n_already_done: int  # user files found from an earlier run, skipped
    n_skipped: int  # users left out: last video missing or unreadable
    missing_videos: list[str] = field(default_factory=list)  # ids not found (any role)
    n_history_spans_missing: int = 0  # history GIF spans whose video is missing
    n_downloaded: int = 0
    n_download_failed: int = 0
    clips_forwarded: int = 0  # C3D forward passes this run (0 on a fully resumed run)


# -- labels and spans ---------------------------------------------------------
def merge_spans(spans: np.ndarray) -> np.ndarray:
    """Union of [start, end] intervals, sorted and non-overlapping; (g, 2) -> (u, 2)."""
    spans = np.asarray(spans, dtype=float).reshape(-1, 2)
    spans = spans[spans[:, 1] > spans[:, 0]]
    if len(spans) == 0:
        return spans
    spans = spans[np.argsort(spans[:, 0], kind="stable")]
    merged = [list(spans[0])]
    for a, b in spans[1:]:
        if a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return np.asarray(merged)


def _overlap(bounds: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """(n, g) overlap in seconds between each segment and each span."""
    lo = np.maximum(bounds[:, None, 0], spans[None, :, 0])
    hi = np.minimum(bounds[:, None, 1], spans[None, :, 1])
    return np.clip(hi - lo, 0.0, None)


def segment_labels(bounds_s: np.ndarray, gifs_s: np.ndarray) -> np.ndarray:
    """Labels (n,) int8 of segments against the user's GIFs on the video; see LABEL_RULE.

    Why both fractions: a 3 s GIF inside a 15 s shot covers 20% of the shot,
    yet the shot is what the user picked; a long GIF over several short
    shots makes each of them mostly GIF.
    """
    bounds = np.asarray(bounds_s, dtype=float).reshape(-1, 2)
    gifs = np.asarray(gifs_s, dtype=float).reshape(-1, 2)
    labels = np.full(len(bounds), NEGATIVE, dtype=np.int8)
    if len(gifs) == 0 or len(bounds) == 0:
        return labels
    union = merge_spans(gifs)
    seg_len = np.maximum(bounds[:, 1] - bounds[:, 0], 1e-9)
    in_union = _overlap(bounds, union).sum(axis=1) / seg_len
    per_gif = _overlap(bounds, gifs)
    gif_share = per_gif / np.maximum(gifs[:, 1] - gifs[:, 0], 1e-9)[None, :]
    touches = per_gif.max(axis=1) > 0
    positive = (in_union > 0.5) | (gif_share > 0.5).any(axis=1)
    labels[touches] = AMBIGUOUS
    labels[positive] = POSITIVE
    return labels


def history_spans(video: UserVideo, duration_s: float) -> np.ndarray:
    """The union of a history video's GIFs, clipped to the file's duration; (u, 2)."""
    gifs = np.array([(g.start_s, g.end_s) for g in video.gifs], dtype=float).reshape(-1, 2)
    gifs = np.clip(gifs, 0.0, duration_s)
    # Under 0.1 s is a GIF that lies past the end of the file we have.
    return merge_spans(gifs[gifs[:, 1] - gifs[:, 0] >= 0.1])


def recent_history(user: User, n_videos: int = HISTORY_VIDEOS) -> list[UserVideo]:
    """The ``n_videos`` most recent history videos.

    PHD^2 files carry no timestamps; their rows are newest first (every
    user's is_last video comes first), and phd2 keeps file order, so the
    first ``n_videos`` history videos are the most recent.
    """
    return user.history[:n_videos]


# -- files --------------------------------------------------------------------
def find_video(videos_dir: Path, youtube_id: str) -> Path | None:
    """``<videos_dir>/<youtube_id>.<ext>`` for a video suffix, if there is one."""
    pattern = str(Path(videos_dir) / f"{glob.escape(youtube_id)}.*")
    found = sorted(Path(p) for p in glob.glob(pattern))
    found = [p for p in found if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()]
    return found[0] if found else None


def user_file_name(user_id: str) -> str:
    """A file name per user id: the id itself when it is plain, else a safe stem plus a hash."""
    if _PLAIN_USER.match(user_id):
        return f"{user_id}.npz"
    digest = hashlib.sha256(user_id.encode("utf-8")).hexdigest()[:10]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", user_id)[:40].strip("_") or "user"
    return f"{stem}-{digest}.npz"


def save_user_sample(
    path: Path, sample: UserSample, extra: dict[str, np.ndarray] | None = None
) -> None:
    """Write one user's file atomically (``extra``: provenance arrays load_dataset ignores)."""
    feats, bounds = sample.eval_segments()
    arrays = {
        "user_id": np.array(sample.user_id),
        "duration_s": np.array(float(sample.duration_s)),
        "history": np.asarray(sample.history, dtype=np.float32),
        "segments": np.asarray(sample.segments, dtype=np.float32),
        "labels": np.asarray(sample.labels, dtype=np.int8),
        "bounds_s": np.asarray(sample.bounds_s, dtype=float),
        "gifs_s": np.asarray(sample.ground_truth_s(), dtype=float).reshape(-1, 2),
        "test_segments": np.asarray(feats, dtype=np.float32),
        "test_bounds_s": np.asarray(bounds, dtype=float),
        **(extra or {}),
    }
    with atomic_path(path, suffix=".part.npz") as tmp:
        np.savez(tmp, **arrays)  # type: ignore[arg-type]


def _load_user(path: Path) -> UserSample:
    try:
        with np.load(path, allow_pickle=False) as z:
            return UserSample(
                history=z["history"],
                segments=z["segments"],
                labels=z["labels"],
                bounds_s=z["bounds_s"],
                duration_s=float(z["duration_s"]),
                gifs_s=z["gifs_s"],
                user_id=str(z["user_id"]),
                test_segments=z["test_segments"],
                test_bounds_s=z["test_bounds_s"],
            )
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: not a readable dataset user file ({exc})") from None


def load_dataset(path: Path) -> Dataset:
    """Read a folder written by ``build_dataset``; users in file-name order."""
    path = Path(path)
    manifest_path = path / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: not a dataset folder (no {MANIFEST})") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{manifest_path}: unreadable ({exc})") from None
    if manifest.get("format") != DATASET_FORMAT:
        raise InputError(f"{manifest_path}: unsupported dataset format {manifest.get('format')!r}")
    samples = [_load_user(f) for f in sorted((path / USERS_DIR).glob("*.npz"))]
    if not samples:
        raise InputError(f"{path}: the dataset holds no user")
    copy = path / ANNOTATIONS_COPY
    return Dataset(
        spec=FeatureSpec.from_dict(manifest["features"]),
        backbone=str(manifest["backbone"]),
        samples=samples,
        manifest=manifest,
        annotations=copy if copy.is_file() else None,
    )


# -- building -----------------------------------------------------------------
class _Videos:
    """Probes each local video once; remembers which ids are missing."""

    def __init__(self, videos_dir: Path) -> None:
        self.videos_dir = videos_dir
        self.missing: set[str] = set()
        self._infos: dict[str, VideoInfo | None] = {}

    def get(self, youtube_id: str) -> VideoInfo | None:
        from phdcli.video import probe

        if youtube_id in self._infos:
            return self._infos[youtube_id]
        path = find_video(self.videos_dir, youtube_id)
        info = None
        if path is None:
            self.missing.add(youtube_id)
        else:
            try:
                info = probe(path)
            except InputError as exc:  # a broken download counts as missing, not as fatal
                log.warning("skipping %s: %s", youtube_id, exc)
                self.missing.add(youtube_id)
        self._infos[youtube_id] = info
        return info


def _features(extractor: FeatureExtractor, video: VideoInfo, segments: list[Segment]
              ) -> np.ndarray:
    """(n, D) segment rows; ``segment_features`` returns them bare or in a SegmentFeatures."""
    out = extractor.segment_features(video, segments)
    return np.asarray(getattr(out, "segments", out), dtype=np.float32)


def _user_sample(
    user: User, videos: _Videos, extractor: FeatureExtractor
) -> tuple[UserSample | None, dict[str, np.ndarray], int]:
    """The user's sample (None: last video missing), provenance arrays, history spans missing."""
    from phdcli.segments import shot_segments

    last = videos.get(user.last.youtube_id)
    if last is None:
        return None, {}, 0
    shots = shot_segments(last.path, last.duration_s)
    train_bounds = np.array([[s.start_s, s.end_s] for s in shots], dtype=float)
    test_bounds = fixed_segment_bounds(last.duration_s)
    gifs = np.array([(g.start_s, g.end_s) for g in user.last.gifs], dtype=float).reshape(-1, 2)
    segments = _features(extractor, last, shots)
    test_segments = _features(extractor, last, [Segment(a, b) for a, b in test_bounds])

    hist_feats: list[np.ndarray] = [np.zeros((0, segments.shape[1]), np.float32)]
    hist_bounds: list[np.ndarray] = [np.zeros((0, 2))]
    hist_ids: list[str] = []
    n_missing = 0
    for video in recent_history(user):
        info = videos.get(video.youtube_id)
        if info is None:
            n_missing += len(merge_spans([(g.start_s, g.end_s) for g in video.gifs]))
            continue
        spans = history_spans(video, info.duration_s)
        if len(spans) == 0:
            continue
        # One call per video: its spans are decoded in one pass and batched on the device.
        hist_feats.append(_features(extractor, info, [Segment(a, b) for a, b in spans]))
        hist_bounds.append(spans)
        hist_ids += [video.youtube_id] * len(spans)
    sample = UserSample(
        history=np.concatenate(hist_feats),
        segments=segments,
        labels=segment_labels(train_bounds, gifs),
        bounds_s=train_bounds,
        duration_s=last.duration_s,
        gifs_s=gifs,
        user_id=user.user_id,
        test_segments=test_segments,
        test_bounds_s=test_bounds,
    )
    extra = {
        "youtube_id": np.array(user.last.youtube_id),
        "history_bounds_s": np.concatenate(hist_bounds),
        "history_ids": np.array(hist_ids, dtype=str),
    }
    return sample, extra, n_missing


def _check_or_start_manifest(out: Path, base: dict[str, Any]) -> None:
    """Refuse to mix features or annotations in one folder; mark a build as started."""
    path = out / MANIFEST
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: unreadable ({exc})") from None
        what = {"features": "feature spec", "backbone": "C3D backbone",
                "annotations_sha256": "annotation file"}
        for key, name in what.items():
            if old.get(key) != base[key]:
                raise UsageError(
                    f"{out} was built with another {name} ({old.get(key)!r}); "
                    "use a new output folder"
                )
        return
    atomic_write_text(path, json.dumps({**base, "status": "building"}, indent=1) + "\n")


def build_dataset(
    annotations: Path,
    videos_dir: Path,
    out: Path,
    runtime_device: str = "auto",
    c3d_weights: Path | None = None,
    download: bool = False,
    progress: DatasetProgress | None = None,
    spec: FeatureSpec = FeatureSpec(),  # noqa: B008 (frozen)
    url_template: str = YOUTUBE_URL,
) -> DatasetSummary:
    """Extract a training set from PHD^2 annotations and local videos; see the module docstring.

    ``download`` first fetches missing videos with yt-dlp (``url_template``
    with ``{id}``) into ``videos_dir``, recorded in a download archive so
    nothing is fetched twice. Users whose last video is missing are skipped
    and counted; missing history videos only shorten the history.
    """
    from phdcli.features import FeatureExtractor

    annotations, videos_dir, out = Path(annotations), Path(videos_dir), Path(out)
    users = load_annotations(annotations)
    videos_dir.mkdir(parents=True, exist_ok=True)
    n_downloaded = n_failed = 0
    if download:
        todo = [u for u in users if not (out / USERS_DIR / user_file_name(u.user_id)).is_file()]
        n_downloaded, n_failed = download_videos(_needed_ids(todo), videos_dir, url_template)

    extractor = FeatureExtractor(spec, c3d_weights, runtime_device)
    base = {
        "format": DATASET_FORMAT,
        "annotations": annotations.name,
        "annotations_sha256": sha256_file(annotations),
        "features": spec.to_dict(),
        "backbone": extractor.backbone_id,
        "segments": {
            "train": "detected shots (PySceneDetect), shots over 15 s cut into 5 s chunks",
            "test": "fixed 5 s segments (evaluate.fixed_segment_bounds)",
        },
        "labels": LABEL_RULE,
        "history": f"union of the user's GIFs per video, {HISTORY_VIDEOS} most recent videos",
    }
    out.mkdir(parents=True, exist_ok=True)
    _check_or_start_manifest(out, base)
    copy = out / ANNOTATIONS_COPY
    if not copy.is_file():
        with atomic_path(copy, suffix=".part.csv") as tmp:
            shutil.copyfile(annotations, tmp)

    videos = _Videos(videos_dir)
    summary = DatasetSummary(out=out, n_users=len(users), n_built=0, n_already_done=0,
                             n_skipped=0, n_downloaded=n_downloaded, n_download_failed=n_failed)
    log.info("building features for %d users", len(users))
    for done, user in enumerate(users, start=1):
        file = out / USERS_DIR / user_file_name(user.user_id)
        if file.is_file():
            summary.n_already_done += 1
        else:
            try:
                sample, extra, n_missing = _user_sample(user, videos, extractor)
            except PhdError as exc:  # one bad video must not end a long build
                log.warning("skipping user %s: %s", user.user_id, exc)
                sample, extra, n_missing = None, {}, 0
            summary.n_history_spans_missing += n_missing
            if sample is None:
                summary.n_skipped += 1
            else:
                save_user_sample(file, sample, extra)
                summary.n_built += 1
        if progress is not None:
            progress(done, len(users))
    summary.missing_videos = sorted(videos.missing)
    summary.clips_forwarded = extractor.stats.clips_forwarded
    n_files = len(list((out / USERS_DIR).glob("*.npz"))) if (out / USERS_DIR).is_dir() else 0
    manifest = {
        **base,
        "status": "complete",
        "counts": {
            "users_in_annotations": len(users),
            "user_files": n_files,
            "users_skipped_last_video_missing": summary.n_skipped,
            "history_spans_missing": summary.n_history_spans_missing,
            "videos_missing": len(summary.missing_videos),
        },
        "missing_videos": summary.missing_videos,
    }
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return summary


def _needed_ids(users: Sequence[User]) -> list[str]:
    """Every video the dataset reads, last videos first, each once."""
    ids = [u.last.youtube_id for u in users]
    ids += [v.youtube_id for u in users for v in recent_history(u)]
    return list(dict.fromkeys(ids))


# -- downloading --------------------------------------------------------------
def archived_ids(archive: Path) -> set[str]:
    """Video ids in a yt-dlp download archive (lines ``<extractor> <id>``)."""
    try:
        lines = Path(archive).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return set()
    return {parts[1] for line in lines if len(parts := line.split()) >= 2}


def download_videos(ids: Sequence[str], videos_dir: Path, url_template: str) -> tuple[int, int]:
    """Fetch every id that is neither on disk nor in the archive; (downloaded, failed).

    The archive is checked here, before yt-dlp runs, as well as by yt-dlp:
    its own check comes after the extractor has already requested the page.
    A failure is logged and counted (the video is then missing), never fatal.
    """
    videos_dir = Path(videos_dir)
    archive = videos_dir / ARCHIVE
    recorded = archived_ids(archive)
    todo = [i for i in ids if i not in recorded and find_video(videos_dir, i) is None]
    n_ok = n_failed = 0
    for youtube_id in todo:
        if not _YOUTUBE_ID.match(youtube_id):  # it becomes a file name and a URL part
            log.warning("not downloading %r: not a YouTube video id", youtube_id)
            n_failed += 1
            continue
        url = url_template.format(id=youtube_id)
        try:
            _fetch_video(youtube_id, url, videos_dir, archive)
            n_ok += 1
        except DownloadError as exc:
            log.warning("%s", exc)
            n_failed += 1
    return n_ok, n_failed


def _fetch_video(youtube_id: str, url: str, videos_dir: Path, archive: Path) -> None:
    """yt-dlp into a private temp folder, then renamed to ``<id>.<ext>``: never half a file."""
    import yt_dlp

    from phdcli.source import DownloadOptions, error_line, single_video, ydl_options

    work = Path(tempfile.mkdtemp(prefix=".dl-", dir=videos_dir))
    try:
        # C3D sees 128x171 frames: 360p is plenty and keeps a 12k-user fetch small.
        opts = ydl_options(work, DownloadOptions(max_height=360), None)
        opts["outtmpl"] = {"default": f"{youtube_id}.%(ext)s"}
        opts["download_archive"] = str(archive)
        try:
            with yt_dlp.YoutubeDL(opts) as ydl:
                info = ydl.extract_info(url, download=True)
        except yt_dlp.utils.YoutubeDLError as exc:
            raise DownloadError(error_line(url, exc)) from exc
        requested = single_video(info).get("requested_downloads") or [{}]
        filepath = requested[0].get("filepath")
        if not filepath or not Path(filepath).is_file():
            if youtube_id in archived_ids(archive):
                return  # yt-dlp found it in the archive under this id: nothing to do
            raise DownloadError(f"{url}: download failed: no video file was written")
        Path(filepath).replace(videos_dir / f"{youtube_id}{Path(filepath).suffix}")
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(work)
