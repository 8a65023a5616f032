"""The precision C3D runs in for one run: resolved on first use, settled once, said once.

The device and the precision asked for are resolved when C3D first runs
(``phdcli.features.device``), so a warm run, whose features are all cached,
never imports torch. ``auto`` on the CPU names candidates; the precision
probe (``phdcli.features.precision_probe``) settles them on the user's own video, now
or from its cached verdict, to the fastest that passes the self-check. The
line on stderr waits for the settled precision, so it says what really runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from phdcli import NOTICE
from phdcli.errors import PhdError, WeightsError
from phdcli.features.device import check_spec

if TYPE_CHECKING:
    import numpy as np

    from phdcli.features.c3d_spec import C3DInput
    from phdcli.features.device import Runtime
    from phdcli.features.precision_probe import Engine, Forward
    from phdcli.features.spec import FeatureSpec
    from phdcli.features.weights import LoadedC3D
    from phdcli.media.probe import VideoInfo

log = logging.getLogger("phd")


class PrecisionChoice:
    """``--device`` / ``--precision`` as asked (checked at once, without torch) and
    the runtime they settle to. ``auto_int8=False`` keeps ``auto`` on a float
    precision (training features)."""

    def __init__(self, device: str = "auto", precision: str = "auto",
                 auto_int8: bool = True) -> None:
        check_spec(device, precision)
        self.device = device
        self.requested = precision.strip().lower()
        self.auto_int8 = auto_int8
        self._runtime: Runtime | None = None
        self._int8_ready = False  # the int8 network is set up (settle returned it)

    @property
    def runtime(self) -> Runtime:
        """Resolved on first use; said once settled (candidates probed, int8 built)."""
        if self._runtime is None:
            from phdcli.features.device import resolve_runtime

            self._runtime = resolve_runtime(self.device, self.requested, self.auto_int8)
            if not self.needs_settling:
                log.log(NOTICE, "%s", self._runtime.describe())
        return self._runtime

    @property
    def in_use(self) -> Runtime | None:
        """The runtime if C3D was set up in this process; None: all features came from the cache."""
        return self._runtime

    @property
    def accepts_int8_rows(self) -> bool:
        """Cached clip rows computed in int8 serve only a run that may itself use int8."""
        return self.requested == "int8" or (self.requested == "auto" and self.auto_int8)

    @property
    def needs_settling(self) -> bool:
        """True until the probe chose among auto's candidates, or the forced int8
        network is ready: ``settle`` must run before the first forward."""
        rt = self.runtime
        return rt.needs_probe or (rt.precision == "int8" and not self._int8_ready)

    def _settled(self, runtime: Runtime) -> None:
        self._runtime = runtime
        log.log(NOTICE, "%s", runtime.describe())

    def settle(self, video: VideoInfo | None, spec: FeatureSpec, weights_sha256: str,
               input_spec: Callable[[], C3DInput], reference: Callable[[], LoadedC3D],
               batch_clips: int) -> Engine | None:
        """The int8 network when the run uses int8, else None; the runtime settled
        and said on stderr.

        ``auto``'s candidates: the probe on ``video`` (or its cached verdict)
        decides. ``--precision int8``: the int8 network, no self-check.
        ``reference()`` loads the torch network, only when it is needed.
        """
        rt = self.runtime
        if rt.needs_probe:
            if video is None:  # clips decoded elsewhere: nothing to probe on
                self._settled(rt.unprobed("no video to probe the precision on"))
                return None
            from phdcli.features import precision_probe

            source = NetworkCandidates(rt, video, spec, weights_sha256, input_spec, reference)
            engine, final = precision_probe.settle(rt, video.path.name, weights_sha256,
                                                   spec.layer, source, batch_clips)
            self._int8_ready = final.precision == "int8"
            self._settled(final)
            return engine
        if rt.precision != "int8" or self._int8_ready:
            return None
        return self._forced_int8(rt, video, spec, weights_sha256, input_spec, reference)

    def _forced_int8(self, rt: Runtime, video: VideoInfo | None, spec: FeatureSpec,
                     weights_sha256: str, input_spec: Callable[[], C3DInput],
                     reference: Callable[[], LoadedC3D]) -> Engine:
        from phdcli.features import int8, precision_probe
        from phdcli.features.device import cpu_id

        if video is None:
            raise WeightsError("int8 C3D is built on clips of a video: run phd suggest once "
                               "with --precision int8, or use fp32 here")
        path = precision_probe.verdict_file(weights_sha256, spec.layer, cpu_id())
        verdict = precision_probe.read_verdict(path)
        refused = verdict.trials.get("int8") if verdict is not None else None
        if refused is not None and not refused.ok:
            log.warning("warning: int8 forced although the self-check refused it for these "
                        "weights on this CPU (%s)", refused.grade())
        try:
            engine = int8.forced_engine(video, spec, weights_sha256, input_spec(), reference)
        except PhdError:
            raise
        except Exception as exc:  # an OpenVINO/NNCF install that does not work
            raise WeightsError(f"int8 C3D failed ({type(exc).__name__}: "
                               f"{' '.join(str(exc).split())[:200]}); "
                               "use --precision fp32") from None
        self._int8_ready = True
        self._settled(replace(rt, reason=f"{rt.reason}; self-check not run"))
        return engine


class NetworkCandidates:
    """The probe's real candidates (``precision_probe.Candidates``): the torch network in fp32
    and bf16 (autocast), and the int8 one.

    ``reference()`` loads the torch network once (the extractor's own), only
    when a candidate needs it.
    """

    def __init__(self, runtime: Runtime, video: VideoInfo, spec: FeatureSpec,
                 weights_sha256: str, input_spec: Callable[[], C3DInput],
                 reference: Callable[[], LoadedC3D]) -> None:
        self.runtime, self.video, self.spec = runtime, video, spec
        self.weights_sha256, self.input_spec = weights_sha256, input_spec
        self.reference = reference

    def clips(self, count: int) -> np.ndarray:
        from phdcli.features.int8 import user_clips

        return user_clips(self.video, self.spec, count, self.input_spec())

    def torch_forward(self, precision: str) -> Forward:
        import torch

        net, layer = self.reference(), self.spec.layer
        rt = replace(self.runtime, precision=precision, candidates=())

        def forward(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode(), rt.autocast():
                out = net.model(torch.from_numpy(x).to(rt.device), layer=layer)
            return out.float().cpu().numpy()

        return forward

    def int8(self, calibration: np.ndarray | None) -> tuple[Engine, str] | None:
        from phdcli.features import int8

        if calibration is None:
            return int8.cached_engine(self.weights_sha256, self.spec.layer)
        return int8.built_engine(self.weights_sha256, self.spec.layer, self.reference(),
                                 calibration)
