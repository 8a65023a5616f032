"""Where the Ray cluster is, and whether it still answers; plain sockets, no ``ray`` import.

Ray itself is patient to a fault: it retries a GCS that never answers for
minutes on end (an address where nothing listens), and when the head dies
mid-run it waits 60 s, then ends the driver process from C++ with its own
log lines only. So phd checks the address's form before any work, checks
that something listens there before ``ray.init`` (a TCP connect with a
short timeout), and while a build runs connects to the GCS port every few
seconds: a head that stays silent for ``lost_after_s`` ends the build with
one error line, well before Ray's own deadline.
"""

from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass

from phdcli.errors import ClusterError, UsageError

CONNECT_TIMEOUT_S = 5.0  # one TCP connect to the head; an unreachable address fails in this
WATCH_EVERY_S = 2.0  # a connect to the GCS port at most this often while a build runs
LOST_AFTER_S = 15.0  # a head silent this long is lost (Ray's own deadline is 60 s)
RAY_CLIENT_PORT = 10001  # ray://HOST without a port: Ray Client's default
# Ray ends a driver whose GCS stayed silent this long (its name is case-sensitive).
RAY_DEADLINE_VAR = "RAY_gcs_rpc_server_reconnect_timeout_s"
ENGINES = ("local", "ray")  # --engine of phd dataset build and phd suggest
FORMS = "HOST:PORT (the head's GCS port, e.g. 10.0.0.5:6379), ray://HOST[:PORT], auto or local"


@dataclass(frozen=True)
class RayAddress:
    """A cluster address as the user gave it, and the endpoint phd can check.

    ``host`` is None for ``auto`` (Ray finds the running cluster itself) and
    ``local`` (start one here): nothing to connect to beforehand.
    """

    text: str
    host: str | None = None
    port: int = 0

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_address(text: str, source: str = "--address") -> RayAddress:
    """``text`` as a Ray address, or a UsageError naming ``source`` (the flag or variable)."""
    value = text.strip()
    if value in ("auto", "local"):
        return RayAddress(value)
    rest, default_port = value, None
    if "://" in value:
        scheme, rest = value.split("://", 1)
        if scheme != "ray":
            raise UsageError(f"{source} {text!r}: Ray joins {FORMS}; not a {scheme}:// address")
        rest, default_port = rest.rstrip("/"), RAY_CLIENT_PORT
    match = re.fullmatch(r"\[(?P<v6>[0-9A-Fa-f:.]+)\](?::(?P<p6>[^:]*))?"
                         r"|(?P<host>[A-Za-z0-9_.-]+)(?::(?P<port>[^:]*))?", rest)
    if match is None:
        raise UsageError(f"{source} must be {FORMS}; got {text!r}")
    host = match["v6"] or match["host"]
    port_text = match["p6"] if match["v6"] else match["port"]
    if port_text is None:
        if default_port is None:
            raise UsageError(f"{source} {text!r} names no port: give HOST:PORT, the head's "
                             "GCS port (6379 unless `ray start --head --port` said otherwise)")
        return RayAddress(value, host, default_port)
    if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
        raise UsageError(f"{source} {text!r}: the port must be a number from 1 to 65535")
    return RayAddress(value, host, int(port_text))


def check_reachable(address: RayAddress, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """A TCP connect to the address's endpoint, or ClusterError naming it and why."""
    if address.host is None:
        return
    why = _connect_error(address.host, address.port, timeout_s)
    if why is not None:
        raise ClusterError(f"cannot reach the Ray cluster at {address.text} ({why}); is its "
                           "head running (`ray start --head`)? Leave --address out to start "
                           "Ray on this machine")


def _connect_error(host: str, port: int, timeout_s: float) -> str | None:
    """None if something accepts a TCP connection at host:port, else the reason in words."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except socket.gaierror as exc:
        return f"unknown host: {exc.strerror}"
    except TimeoutError:
        return f"no answer in {timeout_s:g} s"
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()


def lost_after_s() -> float:
    """How long a silent head is waited for: ours, or less if Ray's own deadline is shorter."""
    try:
        ray_deadline_s = float(os.environ.get(RAY_DEADLINE_VAR, "60"))
    except ValueError:
        ray_deadline_s = 60.0
    return max(1.0, min(LOST_AFTER_S, ray_deadline_s / 2))


class HeadWatch:
    """Connects to the head's GCS port now and then; ``check`` raises once it has been silent
    for ``lost_after_s``. ``name`` names the cluster in the error line ("the Ray cluster at
    HOST:PORT")."""

    def __init__(self, gcs: RayAddress, name: str, lost_after: float | None = None) -> None:
        self.gcs, self.name = gcs, name
        self.lost_after_s = lost_after_s() if lost_after is None else lost_after
        self.last_check = time.monotonic()
        self.silent_since: float | None = None

    def answers(self) -> bool:
        """Whether the head accepts a connection now: asked at once, without grace, when a call
        has already failed (an actor lost with its head is the cluster lost, not the video)."""
        return self.gcs.host is None or _connect_error(self.gcs.host, self.gcs.port,
                                                       WATCH_EVERY_S) is None

    def check(self) -> None:
        now = time.monotonic()
        if self.gcs.host is None or now - self.last_check < WATCH_EVERY_S:
            return
        self.last_check = now
        why = _connect_error(self.gcs.host, self.gcs.port, WATCH_EVERY_S)
        if why is None:
            self.silent_since = None
            return
        if self.silent_since is None:
            self.silent_since = now
        if now - self.silent_since >= self.lost_after_s:
            raise ClusterError(
                f"lost {self.name}: its head has not answered for {self.lost_after_s:.0f} s "
                f"({why}); the finished videos are in the store and a re-run does the rest")


def check_engine_options(name: str, address: str | None) -> None:
    """The engine and the cluster address as given, checked before any work (UsageError)."""
    if name not in ENGINES:
        raise UsageError(f"--engine must be one of {', '.join(ENGINES)}, not {name!r}")
    if address is not None:
        if name != "ray":
            raise UsageError("--address needs --engine ray")
        parse_address(address)  # its form and its port's range
