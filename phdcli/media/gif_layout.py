"""A GIF's canvas and frame count from its blocks, without decoding.

The pixel budget (``phdcli.media.budget``) needs both before a single frame
is decoded, and a damaged block structure tells a GIF that FFmpeg would
quietly conceal (``phdcli.media.probe.check_decodes``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GifLayout:
    width: int  # the logical screen (canvas) every frame is drawn on
    height: int
    n_frames: int
    damage: str | None  # why the block structure is broken, None when it is sound


def read_gif_layout(path: Path) -> GifLayout | None:
    """Canvas size and frame count of a GIF from its blocks, without decoding
    (None when the file is not a GIF). Streams through the file: bounded memory."""
    with open(path, "rb") as fh:
        head = fh.read(13)
        if len(head) < 13 or head[:6] not in (b"GIF87a", b"GIF89a"):
            return None
        width, height, flags = struct.unpack("<HHB", head[6:11])
        n_frames = 0

        def skip(n: int) -> bool:
            fh.seek(n, 1)
            return fh.tell() <= size

        def sub_blocks() -> bool:
            while True:
                length = fh.read(1)
                if not length:
                    return False
                if length[0] == 0:
                    return True
                if not skip(length[0]):
                    return False

        size = fh.seek(0, 2)
        fh.seek(13)
        if flags & 0x80 and not skip(3 << ((flags & 7) + 1)):
            return GifLayout(width, height, 0, "ends inside its colour table")
        while True:
            block = fh.read(1)
            if not block or block == b"\x3b":  # end of file (lenient) or trailer
                return GifLayout(width, height, n_frames, None)
            if block == b"\x21":  # extension: label, then sub-blocks
                if not fh.read(1) or not sub_blocks():
                    return GifLayout(width, height, n_frames, f"ends inside a block at "
                                                              f"byte {fh.tell()}")
            elif block == b"\x2c":  # image: descriptor, local table, LZW sub-blocks
                desc = fh.read(9)
                if len(desc) < 9:
                    return GifLayout(width, height, n_frames, "ends inside a frame header")
                local = desc[8]
                if local & 0x80 and not skip(3 << ((local & 7) + 1)):
                    return GifLayout(width, height, n_frames, "ends inside a colour table")
                if not fh.read(1) or not sub_blocks():
                    return GifLayout(width, height, n_frames,
                                     f"frame {n_frames + 1} is cut off")
                n_frames += 1
            else:
                return GifLayout(width, height, n_frames,
                                 f"damaged data at byte {fh.tell() - 1} (after frame {n_frames})")
