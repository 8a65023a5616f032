"""PHD^2 annotations: one CSV row per GIF, grouped into users and videos.

The file format is the public dataset's (gyglim/personalized-highlights-dataset):
``youtubeId,start,duration,user_id,video_duration,is_last``. Times are seconds;
``video_duration`` is -1 when unknown. For each user the rows with
``is_last=True`` are the video to predict (exactly one video), all other rows
are the user's history.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from phdcli.errors import InputError

COLUMNS = ("youtubeId", "start", "duration", "user_id", "video_duration", "is_last")
_TRUE = {"true", "1"}
_FALSE = {"false", "0"}


@dataclass(frozen=True)
class Gif:
    """One user-made GIF on a video, in seconds from the video's start."""

    start_s: float
    duration_s: float

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


@dataclass
class UserVideo:
    """A video and the GIFs one user made from it (``duration_s`` -1: unknown)."""

    youtube_id: str
    duration_s: float
    gifs: list[Gif] = field(default_factory=list)

    @property
    def known_duration(self) -> bool:
        return self.duration_s > 0


@dataclass
class User:
    """A user's video to predict (``last``) and earlier videos (``history``)."""

    user_id: str
    last: UserVideo
    history: list[UserVideo] = field(default_factory=list)


def _parse_row(row: dict[str, str], where: str) -> tuple[str, str, float, float, float, bool]:
    try:
        start_s = float(row["start"])
        duration_s = float(row["duration"])
        video_s = float(row["video_duration"])
    except (TypeError, ValueError):
        raise InputError(f"{where}: start, duration and video_duration must be numbers") from None
    youtube_id = (row["youtubeId"] or "").strip()
    user_id = (row["user_id"] or "").strip()
    if not youtube_id or not user_id:
        raise InputError(f"{where}: empty youtubeId or user_id")
    # NaN fails every comparison, so these checks also reject "nan".
    if not start_s >= 0 or not duration_s > 0:
        raise InputError(f"{where}: start must be >= 0 and duration > 0")
    if not (video_s > 0 or video_s == -1):
        raise InputError(f"{where}: video_duration must be > 0, or -1 for unknown")
    flag = (row["is_last"] or "").strip().lower()
    if flag not in _TRUE | _FALSE:
        raise InputError(f"{where}: is_last must be True or False, got {row['is_last']!r}")
    return user_id, youtube_id, start_s, duration_s, video_s, flag in _TRUE


def load_annotations(path: Path) -> list[User]:
    """Read a PHD^2 CSV into users, in the order users first appear.

    Videos keep the order of their first row; a video's GIFs keep row order.
    Raises InputError (one line, naming the file line) for a missing file,
    wrong columns, a malformed row, a video whose rows disagree on its
    duration, or a user without exactly one ``is_last=True`` video.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"annotation file not found: {path}")
    # user_id -> youtube_id -> (video, is_last); dicts keep first-seen order.
    videos: dict[str, dict[str, tuple[UserVideo, bool]]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                raise InputError(
                    f"{path}: line 1: missing column(s) {', '.join(missing)}; "
                    f"expected {','.join(COLUMNS)}"
                )
            reader.fieldnames = header
            for row in reader:
                where = f"{path}: line {reader.line_num}"
                if None in row or any(row.get(c) is None for c in COLUMNS):
                    raise InputError(f"{where}: expected {len(header)} fields")
                user_id, youtube_id, start_s, dur_s, video_s, is_last = _parse_row(row, where)
                per_user = videos.setdefault(user_id, {})
                if youtube_id not in per_user:
                    per_user[youtube_id] = (UserVideo(youtube_id, video_s), is_last)
                video, was_last = per_user[youtube_id]
                if video.duration_s != video_s or was_last != is_last:
                    raise InputError(
                        f"{where}: video {youtube_id} of user {user_id} disagrees with its "
                        "earlier rows on video_duration or is_last"
                    )
                video.gifs.append(Gif(start_s, dur_s))
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file") from None
    except csv.Error as exc:
        raise InputError(f"{path}: not a readable CSV file ({exc})") from None

    users: list[User] = []
    for user_id, per_user in videos.items():
        last = [v for v, is_last in per_user.values() if is_last]
        if len(last) != 1:
            raise InputError(
                f"{path}: user {user_id} has {len(last)} videos marked is_last=True, expected 1"
            )
        history = [v for v, is_last in per_user.values() if not is_last]
        users.append(User(user_id, last[0], history))
    if not users:
        raise InputError(f"{path}: no annotation rows")
    return users
