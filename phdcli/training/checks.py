"""What the training commands check before any work: seeds, and the files they write.

Every file ``phd train prior``, ``phd train content`` and ``phd eval
--scores-out`` write goes through :class:`OutputFile`, as ``phd suggest``'s
outputs go through their claim: checked before the work starts (never the
command's own input, even with ``--force``; never a folder; an existing file
only with ``--force``), written to an owner-named temp folder beside it, and
claimed at the end without replacing anything unless ``--force`` (a file that
appeared while the command ran is refused then). ``phd dataset build``'s
folder has its own check (:func:`phdcli.training.folder.check_build_out`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from phdcli import fsutil
from phdcli.errors import PhdError, UsageError

# numpy's generators take seeds from 0; torch's manual_seed takes at most 64 bits; the
# bound every consumer of a seed (seed + i included) accepts.
SEED_MAX = 2**63 - 1


def check_seed(seed: int, flag: str = "--seed", last: int | None = None) -> None:
    """Refuse a seed (and ``last``, the highest seed a run derives from it) out of range."""
    for value in (seed, seed if last is None else last):
        if not 0 <= value <= SEED_MAX:
            raise UsageError(f"{flag} must be from 0 to 2**63-1 ({SEED_MAX}), got {seed}"
                             + ("" if value == seed else f" (its last seed is {value})"))


def same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` are one file (through links and ``..``); False if one is absent."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def is_part_of(path: Path, source: Path) -> bool:
    """True when the existing ``path`` is ``source`` or lies in the folder ``source``."""
    if not os.path.lexists(path):
        return False
    if same_file(path, source):
        return True
    where = Path(path).parent.resolve() / Path(path).name  # a link in the folder counts
    return source.is_dir() and where.is_relative_to(source.resolve())


@dataclass(frozen=True)
class OutputFile:
    """A file a training command writes: its path, the flag that named it, ``--force``."""

    path: Path
    flag: str = "--out"
    force: bool = False

    def check(self, inputs: Iterable[Path | None] = ()) -> None:
        """Everything about the output that can be known before the work (one UsageError line)."""
        path, flag = Path(self.path), self.flag
        for source in inputs:
            if source is not None and is_part_of(path, Path(source)):
                raise UsageError(f"{flag} {path} is this command's input {source}"
                                 f"{'' if same_file(path, source) else ' (a file in it)'}: "
                                 "write somewhere else")
        if path.is_dir():
            raise UsageError(f"{flag} {path} is a folder: give a file name")
        if os.path.lexists(path) and not self.force:
            raise UsageError(f"{flag} {path} already exists: use --force to replace it")
        if path.name in ("", ".", ".."):
            raise UsageError(f"{flag} {path} is not a file name")
        fsutil.writable_folder(path.parent, flag)
        fsutil.clean_stale_temps(path.parent)  # what a killed run of ours left there

    @contextlib.contextmanager
    def writing(self) -> Iterator[Path]:
        """A path to write the file at; claimed under :attr:`path` when the body succeeds.

        The file is made in an owner-named temp folder beside the target (removed
        on any failure, by a later run if this one is killed) and then linked in
        (``fsutil.claim``): never over a file that appeared meanwhile without ``--force``.
        """
        path = Path(self.path)
        with fsutil.temp_dir(path.parent, path.stem) as staging:
            tmp = staging / path.name
            yield tmp
            try:
                fsutil.claim(tmp, path, overwrite=self.force)
            except FileExistsError:
                raise PhdError(f"{self.flag} {path} appeared while phd ran: left as it is "
                               "(--force replaces it)") from None
            except IsADirectoryError:
                raise PhdError(f"{self.flag} {path} became a folder while phd ran") from None
