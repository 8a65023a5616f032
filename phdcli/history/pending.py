"""Names before files: an add that is killed half-way leaves no GIF that no manifest lists.

``History.commit`` writes the rows it is about to add to ``.history.pending.json``
(atomically) *before* it claims a single file name, and removes the record
once the manifest lists them. A ``phd history add`` killed in between (SIGKILL,
power loss) leaves GIFs that the pending record names; the next change to
the history (under its lock) settles them with :func:`settle`: a file that
is still the very bytes the record names is adopted into the manifest (or
removed, if the manifest already holds those bytes under another name);
anything else under such a name is left alone. So a re-add after a kill
finds its GIFs already there and never makes ``-2`` copies.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import asdict, replace
from pathlib import Path

from phdcli import NOTICE, fsutil
from phdcli.fsutil.cachefile import MIB, read_entry_text
from phdcli.history.items import PENDING, HistoryItem, check_item_name

log = logging.getLogger("phd")

PENDING_MAX = 64 * MIB  # the rows of one add; the manifest's bound


def record(folder: Path, rows: list[HistoryItem]) -> None:
    """Name the rows an add is about to claim (before the first claim)."""
    doc = {"version": 1, "items": [asdict(it) for it in rows]}
    fsutil.atomic_write_text(folder / PENDING, json.dumps(doc) + "\n")


def clear(folder: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(folder / PENDING)


def _read(folder: Path) -> list[HistoryItem]:
    """The rows a killed add named; none for an unreadable record (then nothing
    under those names can be proven ours: it is left alone)."""
    try:
        rows = json.loads(read_entry_text(folder / PENDING, PENDING_MAX))["items"]
        items = [HistoryItem.from_row(row) for row in rows]
        for it in items:
            check_item_name(it.name)
        return items
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("warning: %s is unreadable (%s): removed", folder / PENDING, exc)
        return []


def _is_ours(path: Path, sha256: str) -> bool:
    try:
        return (path.is_file() and not path.is_symlink()
                and fsutil.sha256_file(path) == sha256)
    except OSError:
        return False


def settle(folder: Path, existing: list[HistoryItem]) -> list[HistoryItem]:
    """Rows to append to the manifest for what a killed add left (under the lock).

    Removes the pending record's duplicates and the feature files of rows not
    adopted; the caller writes the manifest, then calls :func:`clear`.
    """
    listed = {it.name for it in existing}
    known = {it.sha256 for it in existing}
    used = {it.feature.file for it in existing if it.feature is not None}
    adopted: list[HistoryItem] = []
    for row in _read(folder):
        if row.name in listed:
            continue  # the manifest landed before the kill
        path = folder / row.name
        ours = _is_ours(path, row.sha256)
        if ours and row.sha256 in known:
            path.unlink(missing_ok=True)  # our copy of bytes the history already holds
        elif ours:
            feature = row.feature
            if feature is not None and not (folder / feature.file).is_file():
                feature = None  # killed before its feature landed: the GIF is decoded instead
            adopted.append(replace(row, feature=feature))
            known.add(row.sha256)
            listed.add(row.name)
            if feature is not None:
                used.add(feature.file)
        if row.feature is not None and row.feature.file not in used:
            (folder / row.feature.file).unlink(missing_ok=True)
    if adopted:
        log.log(NOTICE, "%s: kept %d GIF(s) that an interrupted `phd history add` had copied in",
                folder, len(adopted))
    return adopted
