"""Hostile media: pixel bombs, damaged GIFs, rotated phone videos (issue rows 7, 12, 18).

Real files throughout: bombs are written byte by byte (a GIF header is a
few fields), damaged GIFs are real ffmpeg GIFs with bytes flipped, rotated
videos carry ffmpeg's own display matrix. C3D weights are RANDOM.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from runphd import one_error
from runphd import run_cli as run

from phdcli.errors import InputError
from phdcli.media.decode import decode_clips
from phdcli.media.gif_layout import read_gif_layout
from phdcli.media.probe import check_decodes, probe
from tests import media


def gif_bomb(path: Path, width: int, height: int, frames: int = 1) -> Path:
    """A tiny GIF whose header declares a huge canvas; each frame draws one pixel."""
    data = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    for _ in range(frames):
        data += b"\x21\xf9\x04\x00\x0a\x00\x00\x00"  # graphic control: 0.1 s
        data += b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    path.write_bytes(data + b"\x3b")
    return path


@pytest.fixture(scope="module")
def clean_gif(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gifs")
    video = media.lavfi_video(root / "src.mp4", duration_s=3.0, size="160x120")
    return media.gif_from(video, root / "clean.gif", 0.0, 3.0, fps=10, width=120)


def _image_payloads(data: bytes) -> list[list[tuple[int, int]]]:
    """(offset, length) of each frame's LZW sub-blocks, by walking the GIF blocks."""
    i = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    frames: list[list[tuple[int, int]]] = []
    while data[i] != 0x3B:
        if data[i] == 0x21:
            i += 2
            while data[i]:
                i += data[i] + 1
            i += 1
        else:  # 0x2C, an image
            local = data[i + 9]
            i += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0) + 1
            subs = []
            while data[i]:
                subs.append((i + 1, data[i]))
                i += data[i] + 1
            i += 1
            frames.append(subs)
    return frames


def test_gif_bombs_are_refused_from_the_header_in_bounded_memory(
    tmp_path: Path, phd_home: Path
) -> None:
    canvas = gif_bomb(tmp_path / "canvas.gif", 16000, 16000)  # 256 MP: 1 GB a frame
    many = gif_bomb(tmp_path / "many.gif", 5000, 5000, frames=200)  # 25 MP x 200 frames
    assert canvas.stat().st_size < 100 and many.stat().st_size < 5000
    for bomb, words in ((canvas, "16000x16000"), (many, "200 frames")):
        started = time.monotonic()
        with pytest.raises(InputError, match="pixel budget") as info:
            probe(bomb)
        assert words in str(info.value) and "--max-megapixels" in str(info.value)
        assert time.monotonic() - started < 1.0
    # The whole CLI, measured: refused before a frame is decoded (a decoded
    # 16000x16000 canvas alone is 1 GB of RSS; the unfixed run peaked at 2.8 GB).
    measure = ("import resource, subprocess, sys\n"
               "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
               "sys.stderr.write(r.stderr)\n"
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)\n"
               "sys.exit(r.returncode)\n")
    result = subprocess.run(
        [sys.executable, "-c", measure, sys.executable, "-m", "phdcli", "history", "add",
         str(canvas), "--device", "cpu"], capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "PHD_HOME": str(phd_home)})
    peak_mb = int(result.stdout.strip())
    assert "pixel budget" in one_error(result)
    assert peak_mb < 400, peak_mb
    assert not (phd_home / "data").exists() or not list((phd_home / "data").rglob("*.gif"))


def test_max_megapixels_moves_the_budget(clean_gif: Path, tmp_path: Path, phd_home: Path,
                                         mmaction2_weights: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    args = ["suggest", str(clean_gif), "--dry-run", "--json", "--device", "cpu",
            "--c3d-weights", str(mmaction2_weights)]
    code, out, err = run([*args, "--max-megapixels", "0.005"], capsys)  # 120x90 is 0.0108
    assert code == 1 and "pixel budget" in err and "Traceback" not in err
    assert json.loads(out)["errors"][0]["input"] == str(clean_gif)
    code, out, err = run([*args, "--max-megapixels", "0"], capsys)
    assert code == 2 and "--max-megapixels" in err


@pytest.mark.parametrize("damage", ["lzw-payload", "block-structure"])
def test_a_damaged_gif_is_refused_for_the_history(
    damage: str, clean_gif: Path, tmp_path: Path, phd_home: Path, mmaction2_weights: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = bytearray(clean_gif.read_bytes())
    frames = _image_payloads(bytes(data))
    assert len(frames) == 30
    if damage == "lzw-payload":  # block lengths intact, codes garbage: FFmpeg only logs
        for offset, length in frames[10][:3]:
            for j in range(offset, offset + length):
                data[j] ^= 0xA5
    else:  # 200 bytes of garbage mid-file: FFmpeg silently decodes half the frames
        middle = len(data) // 2
        data[middle:middle + 200] = bytes(b ^ 0x5A for b in data[middle:middle + 200])
    bad = tmp_path / "damaged.gif"
    bad.write_bytes(bytes(data))
    with pytest.raises(InputError, match="damaged"):
        check_decodes(bad)
    check_decodes(clean_gif)  # the undamaged file passes the same check

    monkeypatch.setenv("PHD_C3D_WEIGHTS", str(mmaction2_weights))
    folder = Path(run(["history", "path"], capsys)[1].strip())
    code, _, err = run(["history", "add", str(bad), "--device", "cpu"], capsys)
    assert code == 1 and "damaged" in err and "Traceback" not in err
    assert not folder.exists() or not any(folder.iterdir())  # nothing added, nothing written
    assert json.loads(run(["history", "list", "--json"], capsys)[1]) == []


def test_gif_layout_reads_blocks_without_decoding(clean_gif: Path, tmp_path: Path) -> None:
    layout = read_gif_layout(clean_gif)
    assert layout is not None and (layout.width, layout.height, layout.n_frames) == (120, 90, 30)
    assert layout.damage is None
    cut = tmp_path / "cut.gif"
    cut.write_bytes(clean_gif.read_bytes()[: clean_gif.stat().st_size // 2])
    cut_layout = read_gif_layout(cut)
    assert cut_layout is not None and cut_layout.damage is not None
    assert read_gif_layout(media.lavfi_video(tmp_path / "v.mp4", 1.0, "64x48")) is None


@pytest.fixture(scope="module")
def rotated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Left half black, right half white, stored 160x90 with a 90-degree display matrix."""
    root = tmp_path_factory.mktemp("rotated")
    plain = root / "plain.mp4"
    media.run_ffmpeg("-f", "lavfi", "-i",
                     "color=c=white:size=160x90:rate=25:duration=2,"
                     "drawbox=x=0:y=0:w=80:h=90:color=black:t=fill",
                     "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(plain))
    phone = root / "phone.mp4"
    media.run_ffmpeg("-display_rotation", "90", "-i", str(plain), "-c", "copy", str(phone))
    upright = root / "upright.mp4"  # what a viewer sees, pixels really turned (ffmpeg autorotate)
    media.run_ffmpeg("-i", str(phone), "-c:v", "libx264", "-preset", "ultrafast",
                     "-pix_fmt", "yuv420p", str(upright))
    return {"plain": plain, "phone": phone, "upright": upright}


def test_rotation_is_honoured_for_c3d_frames(rotated: dict[str, Path]) -> None:
    info = probe(rotated["phone"])
    assert (info.width, info.height, info.rotation_deg) == (160, 90, 90)
    assert (info.display_width, info.display_height) == (90, 160)
    (phone,) = decode_clips(rotated["phone"], [0.0], clip_fps=25.0)
    (upright,) = decode_clips(rotated["upright"], [0.0], clip_fps=25.0)
    (plain,) = decode_clips(rotated["plain"], [0.0], clip_fps=25.0)
    diff = np.abs(phone.astype(np.int16) - upright.astype(np.int16)).mean()
    control = np.abs(plain.astype(np.int16) - upright.astype(np.int16)).mean()
    assert diff < 8 and control > 60, (diff, control)
    gray = phone[0].mean(axis=2)
    assert gray[:50].mean() > 200 and gray[-50:].mean() < 50  # white turned to the top


def test_a_rotated_video_gives_an_upright_gif_not_upscaled(
    rotated: dict[str, Path], tmp_path: Path, c3d_home: Path, mmaction2_weights: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(["suggest", str(rotated["phone"]), "-k", "1", "--width", "480",
                          "--out", str(tmp_path / "o"), "--json", "--device", "cpu",
                          "--c3d-weights", str(mmaction2_weights)], capsys)
    assert code == 0, err
    gif = Path(json.loads(out)["results"][0]["suggestions"][0]["path"])
    info = probe(gif)
    assert (info.width, info.height) == (90, 160)  # the displayed width, never upscaled
    (frame,) = decode_clips(gif, [0.0], clip_fps=10.0)
    assert frame[0].mean(axis=2)[:50].mean() > 200  # upright: white on top


# -- headers that lie about the duration (issue 18, row 4) -----------------------------------
def lying_mkv(path: Path, size: str, claimed_s: float) -> Path:
    """2 s of real footage in Matroska whose header claims ``claimed_s``: both the
    Segment's Duration (an EBML float, in ms) and the track's DURATION tag are forged."""
    honest = path.with_name(f"honest-{path.name}")
    media.run_ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25:duration=2",
                     "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(honest))
    data = bytearray(honest.read_bytes())
    at = data.index(b"\x44\x89\x88")  # Duration, 8-byte float
    data[at + 3:at + 11] = struct.pack(">d", claimed_s * 1000.0)
    hours, rest = divmod(claimed_s, 3600)
    tag = f"{int(hours)}:{int(rest // 60):02d}:{rest % 60:09.6f}".encode()
    at = data.index(b"00:00:02.000000000")
    data[at:at + 18] = tag[:18].ljust(18, b"0")
    path.write_bytes(bytes(data))
    return path


def test_a_duration_the_file_cannot_hold_is_measured_from_its_packets_before_planning(
    tmp_path: Path, phd_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 20 KB file claiming 10 h planned 7200 segments; a 2.7 KB 16x16 one
    claiming 1e8 s grew memory until killed. The packets say 2 s: that is planned."""
    ten_hours = lying_mkv(tmp_path / "ten-hours.mkv", "64x48", 36_000.0)
    forever = lying_mkv(tmp_path / "forever.mkv", "16x16", 1e8)
    assert forever.stat().st_size < 4000
    for lie in (ten_hours, forever):
        assert probe(lie).duration_s == pytest.approx(2.0, abs=0.1)
    capsys.readouterr()  # what those probes said (where an earlier CLI test left a handler)
    code, out, err = run(["suggest", str(ten_hours), "--dry-run", "--json", "-k", "1"], capsys)
    assert code == 0, err
    (result,) = json.loads(out)["results"]
    assert result["duration"] == pytest.approx(2.0, abs=0.1) and result["segments"] == 1
    (warning,) = [line for line in err.splitlines() if "header says" in line]
    assert "36000 s" in warning and "ends at 2.0 s" in warning


def test_decoding_stops_at_the_end_of_the_data_instead_of_repeating_frames(
    tmp_path: Path
) -> None:
    """Whatever planned the clips, one that starts past the last frame is refused
    in one line, not decoded as the last frame 16 times (then C3D on it)."""
    lie = lying_mkv(tmp_path / "ten-hours.mkv", "64x48", 36_000.0)
    clips = decode_clips(lie, [0.0, 1.5, 600.0, 1200.0], clip_fps=8.0)
    assert len([next(clips), next(clips)]) == 2  # inside the data: decoded as ever
    with pytest.raises(InputError, match="claims more than it holds") as info:
        next(clips)
    assert "\n" not in str(info.value) and "ends at 2.0 s" in str(info.value)
