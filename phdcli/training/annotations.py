"""PHD^2 annotations: one CSV row per GIF, grouped into users and videos.

The file format is the public dataset's (gyglim/personalized-highlights-dataset):
``youtubeId,start,duration,user_id,video_duration,is_last``. Times are seconds;
``video_duration`` is -1 when unknown. For each user the rows with
``is_last=True`` are the video to predict (exactly one video), all other rows
are the user's history.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from phdcli.errors import InputError

COLUMNS = ("youtubeId", "start", "duration", "user_id", "video_duration", "is_last")
_TRUE = {"true", "1"}
_FALSE = {"false", "0"}
# An id names files (<videos>/<id>.<ext>, the store's shards) on every path, downloads or
# not: a plain name, never a path ("../x", "/etc/x") or a hidden file.
PLAIN_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")
MAX_DURATION_S = 48 * 3600.0  # no video or GIF is longer: inf or 1e308 is a typo or an attack
# PHD^2's video_duration is whole seconds: a GIF may end a little past it (4 of the
# 12,063 dev rows do, by up to 0.22 s).
END_SLACK_S = 1.0


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


def _shown(text: str) -> str:
    """A field as an error message shows it: quoted, one line, not too long."""
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _number(row: dict[str, str], column: str, where: str) -> float:
    text = (row[column] or "").strip()
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{where}: column {column}: not a number: {_shown(text)}") from None
    if not math.isfinite(value):  # inf, nan: never a time
        raise InputError(f"{where}: column {column}: not a finite number: {_shown(text)}")
    return value


def _parse_row(row: dict[str, str], where: str) -> tuple[str, str, float, float, float, bool]:
    """One row, checked once for every command: ids are plain names, times finite and in range."""
    youtube_id = (row["youtubeId"] or "").strip()
    user_id = (row["user_id"] or "").strip()
    if not youtube_id or not user_id:
        raise InputError(f"{where}: empty youtubeId or user_id")
    if not PLAIN_ID.fullmatch(youtube_id):
        raise InputError(f"{where}: column youtubeId: {_shown(youtube_id)} is not a plain name "
                         "(letters, digits, _ - and . not first; at most 128)")
    if len(user_id) > 128 or not user_id.isprintable():
        raise InputError(f"{where}: column user_id: {_shown(user_id)} is not a printable id "
                         "of at most 128 characters")
    start_s = _number(row, "start", where)
    duration_s = _number(row, "duration", where)
    video_s = _number(row, "video_duration", where)
    if not 0 <= start_s < MAX_DURATION_S:
        raise InputError(f"{where}: column start: must be from 0 to {MAX_DURATION_S:g} s, "
                         f"got {start_s:g}")
    if not 0 < duration_s <= MAX_DURATION_S:
        raise InputError(f"{where}: column duration: must be > 0 and at most "
                         f"{MAX_DURATION_S:g} s, got {duration_s:g}")
    if not (0 < video_s <= MAX_DURATION_S or video_s == -1):
        raise InputError(f"{where}: column video_duration: must be > 0 and at most "
                         f"{MAX_DURATION_S:g} s, or -1 for unknown; got {video_s:g}")
    if video_s > 0 and not (start_s < video_s and start_s + duration_s <= video_s + END_SLACK_S):
        raise InputError(f"{where}: columns start, duration: the GIF [{start_s:g}, "
                         f"{start_s + duration_s:g}] s is not inside the video "
                         f"(video_duration {video_s:g} s)")
    flag = (row["is_last"] or "").strip().lower()
    if flag not in _TRUE | _FALSE:
        raise InputError(f"{where}: column is_last: must be True or False, "
                         f"got {_shown(row['is_last'] or '')}")
    return user_id, youtube_id, start_s, duration_s, video_s, flag in _TRUE


def load_annotations(path: Path) -> list[User]:
    """Read a PHD^2 CSV into users, in the order users first appear.

    Videos keep the order of their first row; a video's GIFs keep row order.
    Every row is checked here, once for every command (``_parse_row``): ids
    are plain names, times finite and in range. Raises InputError (one line,
    naming the file, line and column) for a missing file, wrong columns, a
    malformed row, a video whose rows disagree on its duration, or a user
    without exactly one ``is_last=True`` video.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"annotation file not found: {path}")
    # user_id -> youtube_id -> (video, is_last); dicts keep first-seen order.
    videos: dict[str, dict[str, tuple[UserVideo, bool]]] = {}
    try:
        # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is not part of the first column's name.
        with open(path, newline="", encoding="utf-8-sig") as fh:
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
