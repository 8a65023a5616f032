"""History thumbnails (phdcli.media.thumbs): real ffmpeg on real-size GIFs."""

from __future__ import annotations

from pathlib import Path

import pytest

from phdcli.media.thumbs import MAX_BYTES, MAX_HEIGHT, MAX_WIDTH, thumbnail
from tests import media

pytestmark = pytest.mark.usefixtures("phd_home")  # the hash index lives in the cache


@pytest.fixture(scope="module")
def big_gifs(real_size_gifs: list[Path], tmp_path_factory: pytest.TempPathFactory
             ) -> dict[str, Path]:
    """A real-footage GIF at 480 px and one of pure noise (the worst case for a
    still's size), each hundreds of KB to MBs, as users' history GIFs are."""
    noise = tmp_path_factory.mktemp("noise-gif") / "noise.gif"
    media.run_ffmpeg("-f", "lavfi", "-i", "nullsrc=s=480x270:r=10:d=2,geq=random(1)*255:128:128",
                     "-vf", "format=rgb24", str(noise))
    return {"real": real_size_gifs[0], "noise": noise}


def frame_size(data: bytes, tmp_path: Path) -> tuple[int, int]:
    import av

    still = tmp_path / "still.jpg"
    still.write_bytes(data)
    with av.open(str(still)) as container:
        frame = next(container.decode(video=0))
    return frame.width, frame.height


def test_a_thumbnail_is_a_small_still_of_a_real_size_gif(
    big_gifs: dict[str, Path], tmp_path: Path
) -> None:
    for gif in big_gifs.values():
        assert gif.stat().st_size > 300_000
        data = thumbnail(gif, cache=tmp_path / "thumbs")
        assert data is not None and data[:3] == b"\xff\xd8\xff"
        assert len(data) <= MAX_BYTES
        width, height = frame_size(data, tmp_path)
        assert width <= MAX_WIDTH and height <= MAX_HEIGHT and max(width, height) > 100


def test_a_thumbnail_that_cannot_fit_is_none(big_gifs: dict[str, Path], tmp_path: Path) -> None:
    assert thumbnail(big_gifs["noise"], max_bytes=500, cache=tmp_path) is None


def test_thumbnails_are_cached_by_content_and_checked_before_use(
    big_gifs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "thumbs"
    made = thumbnail(big_gifs["real"], cache=cache)
    [cached] = cache.glob("*.jpg")
    monkeypatch.setenv("PHD_FFMPEG", str(tmp_path / "no-ffmpeg"))  # ffmpeg cannot run now
    assert thumbnail(big_gifs["real"], cache=cache) == made  # from the cache

    cached.write_bytes(made[: len(made) // 2])  # truncated: not trusted, made again
    monkeypatch.delenv("PHD_FFMPEG")
    assert thumbnail(big_gifs["real"], cache=cache) == made
    assert cached.read_bytes() == made


def test_an_unreadable_history_file_has_no_thumbnail(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gif"
    broken.write_bytes(b"GIF89a not really")
    assert thumbnail(broken, cache=tmp_path / "thumbs") is None
    assert thumbnail(tmp_path / "missing.gif", cache=tmp_path / "thumbs") is None
