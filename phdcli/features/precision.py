"""The precision C3D runs in for one run: resolved on first use, settled once, said once.

The device and the precision asked for are resolved when C3D first runs
(``phdcli.features.device``), so a warm run, whose features are all cached,
never imports torch. An int8 candidate (``auto`` on a CPU without native
bf16) becomes the precision only when the self-check on the user's own
video passes, now or in a cached verdict (``phdcli.features.int8``); until
then, and when it fails, the run is fp32. The line on stderr waits for the
verdict, so it says what really runs.
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
    from phdcli.features.c3d_spec import C3DInput
    from phdcli.features.device import Runtime
    from phdcli.features.int8 import Int8C3D
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

    @property
    def runtime(self) -> Runtime:
        """Resolved on first use; an int8 candidate is only said once it is settled."""
        if self._runtime is None:
            from phdcli.features.device import resolve_runtime

            self._runtime = resolve_runtime(self.device, self.requested, self.auto_int8)
            if not self._runtime.needs_self_check:
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

    def _settled(self, runtime: Runtime) -> None:
        self._runtime = runtime
        log.log(NOTICE, "%s", runtime.describe())

    def settle_int8(self, video: VideoInfo | None, spec: FeatureSpec, weights_sha256: str,
                    input_spec: Callable[[], C3DInput], reference: Callable[[], LoadedC3D]
                    ) -> Int8C3D | None:
        """The int8 network, or None when the run goes on in fp32 (said on stderr).

        ``auto`` chose int8 only as a candidate: the self-check on ``video``
        (or its cached verdict for these weights on this CPU) decides.
        ``--precision int8`` skips the check. ``reference()`` loads the fp32
        network, only when the int8 model must be built or checked.
        """
        rt = self.runtime
        if video is None and not rt.needs_self_check:
            raise WeightsError("int8 C3D is built on clips of a video: run phd suggest once "
                               "with --precision int8, or use fp32 here")
        if video is None:  # clips decoded elsewhere (training): nothing to check int8 on
            self._settled(replace(rt, precision="fp32", needs_self_check=False,
                                  reason="no video to run the int8 self-check on"))
            return None
        from phdcli.features import int8

        try:
            engine, final = int8.prepare(rt, video, spec, weights_sha256, input_spec(),
                                         reference)
        except PhdError:
            raise
        except Exception as exc:  # an OpenVINO/NNCF install that does not work
            if not rt.needs_self_check:
                raise WeightsError(f"int8 C3D failed ({type(exc).__name__}: {exc}); "
                                   "use --precision fp32") from None
            log.warning("warning: int8 C3D failed (%s: %s): using fp32", type(exc).__name__,
                        " ".join(str(exc).split())[:200])
            engine, final = None, replace(rt, precision="fp32", needs_self_check=False,
                                          reason=f"int8 failed ({type(exc).__name__})")
        self._settled(final)
        return engine
