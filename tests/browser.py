"""Headless Chromium driven over the DevTools protocol on a pipe (no extra package).

With ``--remote-debugging-pipe`` Chromium reads protocol commands on fd 3 and
writes replies and events on fd 4, each message a JSON document ending in a
NUL byte (the transport Playwright uses). That is all a test needs to open a
``file://`` page, wait for it to load, read the DOM after layout, collect
console errors and take a screenshot, with Debian's ``chromium`` package and
nothing else.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# stack.md and the machine notes: without the background-networking flags
# Chromium tries to reach Google at start-up and this closed network refuses it.
FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
    "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-extensions",
    "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    return None


@dataclass
class Rendered:
    dom: Any  # what the page's check expression returned, after load and image decoding
    console_errors: list[str]
    png: bytes


class DevTools:
    """One Chromium process and one page session over the pipe."""

    def __init__(self, exe: str, workdir: Path, timeout_s: float = 60.0) -> None:
        self.timeout_s = timeout_s
        self.events: list[dict[str, Any]] = []
        self._next_id = 0
        self._buffer = b""
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # The child's ends, moved to fds >= 10 so that a fresh Python can make
        # them fds 3 and 4 without one dup2 clobbering the other, then exec
        # Chromium (no preexec_fn: the test process has threads, e.g. the
        # HTTP server; dash's redirections stop at fd 9).
        child_r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)
        child_w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
        os.close(to_child_r)
        os.close(from_child_w)
        self._log = open(workdir / "chromium.log", "wb")  # noqa: SIM115 - closed in close()
        args = [exe, *FLAGS, "--remote-debugging-pipe",
                f"--user-data-dir={workdir / 'profile'}", "about:blank"]
        trampoline = (f"import os, sys; os.dup2({child_r}, 3); os.dup2({child_w}, 4); "
                      f"os.close({child_r}); os.close({child_w}); "
                      "os.execv(sys.argv[1], sys.argv[1:])")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", trampoline, *args], stdin=subprocess.DEVNULL,
                stdout=self._log, stderr=self._log, pass_fds=(child_r, child_w),
            )
        finally:
            os.close(child_r)
            os.close(child_w)
        self.session: str | None = None

    # -- the wire ------------------------------------------------------------
    def send(self, method: str, params: dict[str, Any] | None = None,
             session: bool = True) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session is not None:
            message["sessionId"] = self.session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        reply = self._wait(lambda m: m.get("id") == self._next_id)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait_event(self, method: str) -> dict[str, Any]:
        for event in self.events:
            if event.get("method") == method:
                return event
        return self._wait(lambda m: m.get("method") == method)

    def _wait(self, wanted: Any) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout_s
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "method" in message:
                    self.events.append(message)
                if wanted(message):
                    return message
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise TimeoutError(f"chromium did not answer (exit {self.proc.poll()}); "
                                   "see chromium.log")
            ready, _, _ = select.select([self._from_child], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise TimeoutError("chromium closed the pipe; see chromium.log")
                self._buffer += chunk

    # -- a page --------------------------------------------------------------
    def attach(self) -> None:
        targets = self.send("Target.getTargets", session=False)["targetInfos"]
        page = next((t for t in targets if t["type"] == "page"), None)
        target_id = (page["targetId"] if page else
                     self.send("Target.createTarget", {"url": "about:blank"},
                               session=False)["targetId"])
        self.session = self.send("Target.attachToTarget",
                                 {"targetId": target_id, "flatten": True},
                                 session=False)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.send("Browser.close", session=False)
                self.proc.wait(timeout=10)
        except (OSError, TimeoutError, RuntimeError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(timeout=10)
        finally:
            os.close(self._to_child)
            os.close(self._from_child)
            self._log.close()


def console_errors(events: list[dict[str, Any]]) -> list[str]:
    """Console errors, uncaught exceptions and failed loads (a broken <img> is one)."""
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(" ".join(str(a.get("value", a.get("description", "")))
                                   for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            errors.append(str(params.get("exceptionDetails", {}).get("text", "exception")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            errors.append(f"{entry.get('text', '')} {entry.get('url', '')}".strip())
    return errors


def render(page: Path, check_js: str, workdir: Path, exe: str, width: int = 1100,
           timeout_s: float = 60.0) -> Rendered:
    """Open ``page`` over file://, let it load, evaluate ``check_js``, screenshot the page."""
    workdir.mkdir(parents=True, exist_ok=True)
    tools = DevTools(exe, workdir, timeout_s)
    try:
        tools.attach()
        tools.send("Emulation.setDeviceMetricsOverride",
                   {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False})
        tools.send("Page.navigate", {"url": page.resolve().as_uri()})
        tools.wait_event("Page.loadEventFired")
        # Every image decoded (or failed) before anything is measured.
        tools.send("Runtime.evaluate", {
            "expression": "Promise.all(Array.from(document.images, i => i.decode()"
                          ".catch(() => null))).then(() => true)",
            "awaitPromise": True})
        dom = tools.send("Runtime.evaluate", {"expression": check_js, "returnByValue": True,
                                              "awaitPromise": True})
        if "exceptionDetails" in dom:
            raise RuntimeError(f"check failed in the page: {dom['exceptionDetails']}")
        height = int(tools.send("Page.getLayoutMetrics")["cssContentSize"]["height"])
        tools.send("Emulation.setDeviceMetricsOverride",
                   {"width": width, "height": max(height, 100), "deviceScaleFactor": 1,
                    "mobile": False})
        shot = tools.send("Page.captureScreenshot", {"format": "png"})
        return Rendered(dom["result"].get("value"), console_errors(tools.events),
                        base64.b64decode(shot["data"]))
    finally:
        tools.close()
