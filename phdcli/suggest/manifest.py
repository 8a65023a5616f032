"""What ``phd suggest`` wrote in an ``--out`` folder: running twice is running once.

``--out`` holds ``.phd/outputs.json``: for each input (the video: its local
path or URL, its content hash, and the stem its files are named after) the
files phd wrote for it (GIFs, its report page) with their sha256 and size.
A later run on the same input replaces them and removes those it no longer
writes; a file whose new bytes equal those on disk is left as it is, so the
same command run twice leaves the folder as one run leaves it. A file at a
target name that is not recorded, whose bytes changed since phd wrote it, or
that phd wrote for another input is not this run's: refused without
``--force`` and never touched. ``index.html`` is the folder's page: any run
that writes a report may replace it while it holds what phd wrote.

Two runs into one folder take turns (an OS lock on ``.phd/outputs.lock``,
released when its process dies: never stale). The record is replaced
atomically, and before any file is replaced it already accepts both the old
and the new bytes (``pending``): a run killed half-way leaves files that the
next run still knows as phd's.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phdcli import NOTICE, fsutil
from phdcli.errors import PhdError
from phdcli.fsutil.cachefile import MIB, read_entry_text

log = logging.getLogger("phd")

MANIFEST_DIR = ".phd"  # in --out
MANIFEST = "outputs.json"
LOCK = "outputs.lock"
FORMAT = "phd-outputs/1"
INDEX = "index.html"  # --report's page of a lone video, or the index of a batch's pages


@dataclass(frozen=True)
class Version:
    """One content a file had when phd wrote it."""

    sha256: str
    size_bytes: int

    def to_dict(self) -> dict[str, object]:
        return {"sha256": self.sha256, "size_bytes": self.size_bytes}

    @classmethod
    def of(cls, path: Path) -> Version:
        return cls(fsutil.sha256_file(path), os.stat(path).st_size)


@dataclass(frozen=True)
class Owner:
    """Whose files: one input (``video``: the local file's absolute path or the URL),
    or, with everything empty, the batch's index page."""

    input: str  # as given: for people reading the record
    video: str
    video_sha256: str
    stem: str

    def owns(self, entry: Entry) -> bool:
        """The same input: the same stem, and the same path or URL (a video edited in
        place) or the same content (a video moved)."""
        o = entry.owner
        if (o.video, o.video_sha256, o.stem) == (self.video, self.video_sha256, self.stem):
            return True
        return o.stem == self.stem and (
            (self.video != "" and o.video == self.video)
            or (self.video_sha256 != "" and o.video_sha256 == self.video_sha256))


INDEX_OWNER = Owner("the index of a batch's pages", "", "", "")


@dataclass
class Entry:
    owner: Owner
    files: dict[str, Version] = field(default_factory=dict)
    # Names being replaced or removed by a run now (or a run that was killed):
    # their old bytes, still phd's until the run records what it left.
    pending: dict[str, list[Version]] = field(default_factory=dict)

    def versions(self, name: str) -> list[Version]:
        return ([self.files[name]] if name in self.files else []) + self.pending.get(name, [])

    def names(self) -> set[str]:
        return set(self.files) | set(self.pending)

    def to_dict(self) -> dict[str, object]:
        o = self.owner
        doc: dict[str, object] = {
            "input": o.input, "video": o.video, "video_sha256": o.video_sha256, "stem": o.stem,
            "files": {n: v.to_dict() for n, v in sorted(self.files.items())}}
        if self.pending:
            doc["pending"] = {n: [v.to_dict() for v in vs]
                              for n, vs in sorted(self.pending.items())}
        return doc

    @classmethod
    def from_dict(cls, doc: Any) -> Entry:
        def version(v: Any) -> Version:
            if not isinstance(v["sha256"], str) or not isinstance(v["size_bytes"], int):
                raise ValueError("a file without its sha256 and size")
            return Version(v["sha256"], v["size_bytes"])

        owner = Owner(*(str(doc[k]) for k in ("input", "video", "video_sha256", "stem")))
        files = {_name(n): version(v) for n, v in doc["files"].items()}
        pending = {_name(n): [version(v) for v in vs]
                   for n, vs in doc.get("pending", {}).items()}
        return cls(owner, files, pending)


def _name(name: Any) -> str:
    """A recorded name is a plain file name in --out: a damaged record never leads elsewhere."""
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name
            or "\\" in name or "\0" in name or name == MANIFEST_DIR):
        raise ValueError(f"bad file name {name!r}")
    return name


class Record:
    """The entries of one --out folder's manifest."""

    def __init__(self, out_dir: Path, entries: list[Entry] | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.entries = entries or []

    @property
    def path(self) -> Path:
        return self.out_dir / MANIFEST_DIR / MANIFEST

    @classmethod
    def read(cls, out_dir: Path) -> Record:
        """The folder's record; none yet, or a damaged one, is an empty record (every
        file in the folder is then someone else's: the safe direction)."""
        record = cls(out_dir)
        try:
            doc = json.loads(read_entry_text(record.path, 64 * MIB))
            if doc.get("format") != FORMAT:
                raise ValueError(f"format {doc.get('format')!r} is not one this phd reads")
            record.entries = [Entry.from_dict(e) for e in doc["inputs"]]
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("warning: %s is unreadable (%s): phd treats every file in %s as "
                        "someone else's", record.path, exc, out_dir)
            record.entries = []
        return record

    def save(self) -> None:
        self.entries = [e for e in self.entries if e.files or e.pending]
        self.entries.sort(key=lambda e: (e.owner.video, e.owner.video_sha256, e.owner.stem))
        doc = {"format": FORMAT,
               "about": "the files phd suggest wrote here: a rerun replaces them, "
                        "and touches no other file",
               "inputs": [e.to_dict() for e in self.entries]}
        fsutil.atomic_write_text(self.path, json.dumps(doc, indent=1) + "\n")

    def holder(self, name: str) -> Entry | None:
        return next((e for e in self.entries if name in e.names()), None)

    def check(self, target: Path, owner: Owner, force: bool) -> str:
        """What ``target`` is to ``owner``'s run: "free", "ours" (phd wrote it for this
        input, or it is the folder's index.html, and it is unchanged) or "forced";
        anything else raises PhdError saying whose it is."""
        if not os.path.lexists(target):
            return "free"
        if target.is_dir():
            raise PhdError(f"{target} already exists and is a folder")
        entry = self.holder(target.name)
        why = ""
        if entry is not None:
            mine = owner.owns(entry) or target.name == INDEX
            if _matches(target, entry.versions(target.name)):
                if mine:
                    return "ours"
                why = f": phd wrote it for {entry.owner.input}"
            else:
                why = " and was changed since phd wrote it"
        if force:
            return "forced"
        raise PhdError(f"{target} already exists{why} (use --force to overwrite)")


def _matches(path: Path, versions: list[Version]) -> bool:
    """``path`` is a plain file holding one of ``versions`` (size first: cheap)."""
    try:
        st = os.stat(path, follow_symlinks=False)
        if not path.is_file() or path.is_symlink():
            return False
        sizes = {v.size_bytes for v in versions}
        return st.st_size in sizes and fsutil.sha256_file(path) in {v.sha256 for v in versions}
    except OSError:
        return False


@contextlib.contextmanager
def locked_record(out_dir: Path) -> Iterator[Record]:
    """The folder's record, read under its lock: one run at a time changes the folder."""
    folder = Path(out_dir) / MANIFEST_DIR
    folder.mkdir(parents=True, exist_ok=True)
    fsutil.clean_stale_temps(folder)  # a record half-written by a killed run
    with fsutil.locked(folder / LOCK, f"the record of what phd wrote in {out_dir}",
                       timeout_s=600.0):
        yield Record.read(out_dir)


def check_targets(out_dir: Path, owner: Owner, targets: list[Path], force: bool) -> None:
    """Refuse, before any work, a target that is not this input's (checked again,
    under the lock, when the files are placed)."""
    record = Record.read(out_dir)
    for target in targets:
        record.check(target, owner, force)


def place(out_dir: Path, owner: Owner, staged: dict[Path, Path], force: bool) -> None:
    """Put each staged file (``target -> staged path`` in ``out_dir``'s file system)
    under its name, all or none; record them as ``owner``'s; remove ``owner``'s
    earlier files that this run does not write.

    A file already holding the staged bytes is left as it is. A target that
    is not this input's raises PhdError and nothing changes (with ``force``
    it is overwritten, a folder excepted).
    """
    new = {target.name: Version.of(path) for target, path in staged.items()}
    with locked_record(out_dir) as record:
        states = {t: record.check(t, owner, force) for t in staged}
        before = copy.deepcopy(record.entries)
        mine = [e for e in record.entries if owner.owns(e)]
        others = [e for e in record.entries if not owner.owns(e)]
        # 1. Record the new files, the old ones still accepted (this input's, and
        # those taken from another entry: index.html, or overwritten with --force):
        # a kill from here on leaves only files the record knows.
        pending: dict[str, list[Version]] = {}
        for entry in mine:
            for name in entry.names():
                pending.setdefault(name, []).extend(entry.versions(name))
        stale = [Path(out_dir) / name for name in pending if name not in new]
        for entry in others:
            for name in entry.names() & new.keys():
                pending.setdefault(name, []).extend(entry.versions(name))
                entry.files.pop(name, None)
                entry.pending.pop(name, None)
        this = Entry(owner, dict(new), pending)
        record.entries = [*others, this]
        record.save()
        # 2. New names first (claimed exclusively: all undone if one is taken
        # meanwhile), then replacements, then what this run no longer writes.
        claimed: list[tuple[Path, tuple[int, int]]] = []
        current = Path(out_dir)
        try:
            for current, path in staged.items():
                if states[current] == "free":
                    claimed.append((current, fsutil.claim(path, current)))
        except BaseException as exc:
            for target, identity in claimed:
                fsutil.unclaim(target, identity)
            record.entries = before
            record.save()
            if isinstance(exc, FileExistsError):
                raise PhdError(f"{current} already exists: it appeared while phd was writing "
                               "(use --force to overwrite)") from None
            raise
        for target, path in staged.items():
            if states[target] != "free" and not _matches(target, [new[target.name]]):
                os.replace(path, target)
        removed = []
        for path in stale:
            if _matches(path, pending[path.name]):
                path.unlink()
                removed.append(path.name)
            elif path.exists():  # edited since: the user's file now
                log.info("%s was changed since phd wrote it: left as it is", path)
        if removed:  # a rerun whose picks changed: said, never silent
            log.log(NOTICE, "%s: replaced this input's earlier picks (removed %s)",
                    owner.input or "the batch index", ", ".join(sorted(removed)))
        # 3. What the folder holds now.
        this.pending = {}
        record.save()


def place_text(out_dir: Path, owner: Owner, target: Path, text: str, force: bool) -> None:
    """:func:`place` for one page rendered in memory."""
    with fsutil.temp_dir(out_dir, "page") as staging:
        staged = staging / target.name
        staged.write_text(text, encoding="utf-8")
        place(out_dir, owner, {target: staged}, force)
