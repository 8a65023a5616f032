"""One-shot GPU check: device choice, bf16 vs fp32 C3D, and `phd suggest` on CUDA.

    python scripts/gpu_check.py VIDEO [--json OUT]

Runs on a machine with CUDA (the lent H100/H200 here). C3D weights are
RANDOM (speed and bf16/fp32 agreement do not depend on their values). The
end-to-end run is `phd suggest --dry-run` (no ffmpeg binary needed), cold
cache then warm, against a baseline of PyAV decoding every frame of the
same video in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def clips_per_s(model, clips, runtime, reps: int = 5) -> float:  # noqa: ANN001
    import torch

    with torch.inference_mode(), runtime.autocast():
        model(clips)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(reps):
            model(clips)
        torch.cuda.synchronize()
    return reps * len(clips) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("video", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import av
    import numpy as np
    import torch

    from phdcli.features.c3d import preprocess
    from phdcli.features.device import resolve_runtime
    from phdcli.features.weights import load_c3d
    from phdcli.media.decode import decode_clips
    from phdcli.media.probe import probe
    from tests.c3d_files import write_mmaction2_pth

    results: dict[str, object] = {"gpu": torch.cuda.get_device_name(0)}
    work = Path(tempfile.mkdtemp())
    weights = write_mmaction2_pth(work / "c3d_random.pth")
    os.environ["PHD_HOME"] = str(work / "home")

    auto = resolve_runtime("auto")
    results["auto_runtime"] = auto.describe()
    fp32 = resolve_runtime("cuda", "fp32")
    net = load_c3d(weights, auto)

    info = probe(args.video)
    starts = list(np.linspace(0, info.duration_s - 1, 32))
    clips = np.stack(list(decode_clips(args.video, starts, 25.0)))
    x = preprocess(torch.from_numpy(clips).to(auto.device), net.input_spec)
    x = x.contiguous(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        ref = net.model(x, layer="fc6").float()
        with auto.autocast():
            low = net.model(x, layer="fc6").float()
    cos = torch.nn.functional.cosine_similarity(ref, low, dim=1)
    results["bf16_vs_fp32_cosine_min"] = float(cos.min())
    results["clips_per_s_fp32_strict"] = clips_per_s(net.model, x, fp32)
    torch.backends.cudnn.allow_tf32 = True
    results["clips_per_s_auto"] = clips_per_s(net.model, x, auto)

    start = time.perf_counter()
    with av.open(str(args.video)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        n_frames = sum(1 for _ in container.decode(stream))
    decode_s = time.perf_counter() - start
    results["baseline_pyav_decode_all_s"] = decode_s
    results["video_s"] = info.duration_s
    results["video_frames"] = n_frames

    env = {**os.environ, "PHD_C3D_WEIGHTS": str(weights)}
    cmd = [sys.executable, "-m", "phdcli", "suggest", str(args.video), "--dry-run", "--json",
           "--device", "auto"]
    for label in ("cold", "warm"):
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
        results[f"suggest_{label}_s"] = time.perf_counter() - start
        results[f"suggest_{label}_rc"] = done.returncode
        results[f"suggest_{label}_stderr"] = done.stderr.strip().splitlines()[-3:]
    results["R1_gpu_vs_pyav_decode"] = results["suggest_cold_s"] / decode_s
    results["R6_gpu_warm_vs_cold"] = results["suggest_warm_s"] / results["suggest_cold_s"]
    results["realtime_factor_cold"] = info.duration_s / results["suggest_cold_s"]
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
