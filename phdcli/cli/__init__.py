"""The ``phd`` command line: flags -> validated config -> one library call.

One module per group of commands (``suggest``, ``history``, ``model``,
``training``, ``cache``) registers them on the app in ``_app``; this module maps
failures to exit codes in ``main``: 1 for a failed input or run, 2 for
usage errors; ``PHD_DEBUG=1`` re-raises with the traceback. Nothing heavy
is imported at module level (``phd --help`` must not import torch, PyAV,
OpenCV or yt-dlp).
"""

from __future__ import annotations

import os
import sys

import typer

try:  # typer >= 0.26 vendors its own click
    from typer._click.exceptions import UsageError as _ClickUsageError
except ImportError:  # pragma: no cover - older typer on real click
    from click.exceptions import UsageError as _ClickUsageError

# The command modules register their commands on import, and the help lists
# them in that order: the everyday ones first.
# isort: off
from phdcli.cli import suggest, model, training, history, cache  # noqa: F401
# isort: on
from phdcli.cli._app import app, log, setup_output
from phdcli.cli._help import BadParameter, bad_value_message
from phdcli.errors import Interrupted, PhdError

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and map failures to one line and an exit code."""
    from phdcli import fsutil, procs

    debug = os.environ.get("PHD_DEBUG", "") not in ("", "0")
    if not log.handlers:
        setup_output(quiet=False)
    try:
        with procs.handle_signals():
            code = app(args=argv, prog_name="phd", standalone_mode=False)
    except Interrupted as exc:
        # The handler has killed the children; temp files still open go now.
        procs.stop_all()
        fsutil.remove_live_temps()
        name = {1: "SIGHUP", 2: None, 15: "SIGTERM"}.get(exc.signum)
        print(f"phd: interrupted{f' ({name})' if name else ''}", file=sys.stderr)
        code = exc.exit_code
    except _ClickUsageError as exc:
        code = _usage_error(exc)
    except typer.Abort as exc:
        interrupted = isinstance(exc.__context__, KeyboardInterrupt)
        print("phd: interrupted" if interrupted else "phd: aborted", file=sys.stderr)
        code = 130
    except PhdError as exc:
        if debug:
            raise
        print(f"phd: error: {_one_line(exc)}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        print("phd: interrupted", file=sys.stderr)
        code = 130
    except OSError as exc:  # disk full, permissions, a file that is a folder
        if debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"phd: error: {where}{exc.strerror or _one_line(exc)}", file=sys.stderr)
        code = 1
    except Exception as exc:  # the last net: one line, never a traceback
        if debug:
            raise
        print(
            f"phd: internal error: {type(exc).__name__}: {_one_line(exc)} "
            "(PHD_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        code = 1
    code = code if isinstance(code, int) else 0
    if argv is None:  # the process's own entry point (phd, python -m phdcli), not a caller's
        procs.end_process(code)
    sys.exit(code)


def _usage_error(exc: _ClickUsageError) -> int:
    """click's four-line usage error as our one line (help stays help)."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # `phd` or `phd history` alone
        exc.show()
        return exc.exit_code
    ctx = getattr(exc, "ctx", None)
    words = bad_value_message(exc) if isinstance(exc, BadParameter) else None
    if words is not None:  # the flag's own words: what it takes, what it got
        print(f"phd: error: {words}", file=sys.stderr)
        return exc.exit_code
    command = ctx.command_path if ctx is not None else "phd"
    print(f"phd: error: {_one_line(exc.format_message())} (see `{command} --help`)",
          file=sys.stderr)
    return exc.exit_code


def _one_line(exc: BaseException | str) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
