"""Bad input: one line on stderr, a non-zero exit, no traceback, nothing lost.

Most runs are in-process (``run_cli`` with ``capfd``: what ffmpeg's libraries or
a child write to the file descriptors is seen too); the usage and missing
weights errors run as real processes, the way a shell sees them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from runphd import NO_MIRROR, run_cli

from tests import media


def phd(*args: str, env_home: Path, weights: Path | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PHD_HOME": str(env_home), "PHD_INT8": "0",
           "PHD_MODEL_MIRROR": NO_MIRROR}
    if weights is not None:
        env["PHD_C3D_WEIGHTS"] = str(weights)
    return subprocess.run(
        [sys.executable, "-m", "phdcli", *args], capture_output=True, text=True, env=env,
        timeout=300,
    )


def assert_one_line_error(result: subprocess.CompletedProcess | tuple[int, str, str],
                          code: int = 1) -> str:
    """The one error line of a run (a process, or ``run_cli``'s (code, stdout, stderr))."""
    if isinstance(result, tuple):
        returncode, stdout, stderr = result
    else:
        returncode, stdout, stderr = result.returncode, result.stdout, result.stderr
    assert returncode == code, (returncode, stderr)
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    assert len(errors) == 1, stderr
    assert stdout == ""
    return errors[0]


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    good = media.lavfi_video(root / "good.mp4", duration_s=3.0, size="160x120")
    corrupt = root / "corrupt.mp4"
    corrupt.write_bytes(good.read_bytes()[:1500])
    empty = root / "empty.mp4"
    empty.write_bytes(b"")
    text = root / "notes.mp4"
    text.write_text("this is not a video\n")
    return {
        "missing": root / "nope.mp4",
        "corrupt": corrupt,
        "zero-length": empty,
        "text": text,
        "audio-only": media.audio_only(root / "tone.m4a"),
        "too-short": media.lavfi_video(root / "blink.mp4", duration_s=0.3, size="160x120"),
    }


@pytest.mark.parametrize(
    "case", ["missing", "corrupt", "zero-length", "text", "audio-only", "too-short"]
)
def test_bad_video_is_one_line_and_exit_1(
    case: str, bad_inputs: dict[str, Path], tmp_path: Path, c3d_home: Path,
    mmaction2_weights: Path, capfd: pytest.CaptureFixture[str],
) -> None:
    result = run_cli(["suggest", str(bad_inputs[case]), "--out", str(tmp_path / "o"),
                      "--device", "cpu", "--c3d-weights", str(mmaction2_weights)], capfd)
    line = assert_one_line_error(result)
    assert bad_inputs[case].name in line
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_missing_weights_name_the_fetch_command(bad_inputs: dict[str, Path], tmp_path: Path,
                                                one_gif_history: Path):
    video = media.lavfi_video(tmp_path / "v.mp4", duration_s=2.0, size="160x120")
    result = phd("suggest", str(video), "--device", "cpu", "--history", str(one_gif_history),
                 env_home=tmp_path / "home")
    assert "phd model fetch" in assert_one_line_error(result)


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    result = phd("suggest", "x.mp4", "-k", "0", env_home=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    result = phd("suggest", "--no-such-flag", env_home=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_explicit_cuda_without_a_gpu_is_an_error(
    tmp_path: Path, c3d_home: Path, mmaction2_weights: Path, one_gif_history: Path,
    capfd: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    video = media.lavfi_video(tmp_path / "v.mp4", duration_s=2.0, size="160x120")
    # A history, so C3D (and so the device) is needed: a cold start runs no C3D.
    result = run_cli(["suggest", str(video), "--device", "cuda", "--c3d-weights",
                      str(mmaction2_weights), "--history", str(one_gif_history),
                      "--out", str(tmp_path / "out")], capfd)
    assert "cuda" in assert_one_line_error(result).lower()


def test_failed_history_add_leaves_history_byte_identical(
    bad_inputs: dict[str, Path], tmp_path: Path, c3d_home: Path, mmaction2_weights: Path,
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PHD_C3D_WEIGHTS", str(mmaction2_weights))
    video = media.lavfi_video(tmp_path / "v.mp4", duration_s=4.0, size="160x120")
    first = media.gif_from(video, tmp_path / "first.gif", 0.5, 1.5, width=120)
    second = media.gif_from(video, tmp_path / "second.gif", 2.0, 1.5, width=120)
    code, _, err = run_cli(["history", "add", str(first), "--device", "cpu"], capfd)
    assert code == 0, err
    folder = Path(run_cli(["history", "path"], capfd)[1].strip())
    assert folder.is_relative_to(c3d_home)

    def snapshot() -> dict[str, bytes]:
        return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*")
                if p.is_file()}

    before = snapshot()
    assert "first.gif" in before
    for case in ("corrupt", "zero-length", "audio-only", "missing"):
        # a good file next to a bad one: all or nothing
        result = run_cli(["history", "add", str(second), str(bad_inputs[case]), "--device",
                          "cpu"], capfd)
        assert_one_line_error(result)
        assert snapshot() == before


def test_help_does_not_import_heavy_modules() -> None:
    code = (
        "import sys\n"
        "from phdcli.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = {'torch', 'av', 'cv2', 'yt_dlp', 'scenedetect', 'numpy', 'safetensors',\n"
        "         'ffmpeg', 'imageio_ffmpeg'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"
