"""Where phd keeps things: the one place that knows the directory layout.

``PHD_HOME`` moves everything (data, cache, config) under one folder, which is
what tests and portable installs want; otherwise platformdirs decides.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from pathlib import Path

from phdcli.errors import UsageError

APP_NAME = "phd"


def _home() -> Path | None:
    home = os.environ.get("PHD_HOME")
    return Path(home).expanduser() if home else None


def _home_for_writing() -> Path | None:
    """PHD_HOME, refused at once when it is something other than a folder."""
    home = _home()
    if home is not None and home.exists() and not home.is_dir():
        raise UsageError(f"PHD_HOME={home} is not a folder")
    return home


def data_dir() -> Path:
    """User data: histories (one folder per profile)."""
    home = _home_for_writing()
    if home is not None:
        return home / "data"
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def cache_dir() -> Path:
    """Re-creatable files: weights, converted weights, features, downloads."""
    home = _home_for_writing()
    if home is not None:
        return home / "cache"
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def config_dir() -> Path:
    home = _home()
    if home is not None:
        return home / "config"
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def weights_cache_dir() -> Path:
    return cache_dir() / "weights"


def features_cache_dir() -> Path:
    return cache_dir() / "features"


def downloads_cache_dir() -> Path:
    return cache_dir() / "downloads"


def profile_dir(user: str = "default") -> Path:
    """The history folder of one profile (``--user NAME``)."""
    return data_dir() / "profiles" / user / "history"


BUNDLED_PACKAGE = "phdcli.bundled"  # the repository's weights/, as pyproject.toml maps it


def bundled_file(name: str) -> Path:
    """A file shipped inside phd (the ranking model, its card), as a filesystem path.

    Read through importlib.resources, so it is found in a wheel, a pipx
    venv or an editable checkout alike. Installed packages are plain files
    and this is their own path; a zipped install would extract a copy that
    lives until the process exits.
    """
    from importlib.resources import as_file, files

    from phdcli.errors import WeightsError

    try:
        resource = files(BUNDLED_PACKAGE) / name
    except ModuleNotFoundError:
        resource = None
    if resource is None or not resource.is_file():
        raise WeightsError(f"{name} is missing from this phd install (package "
                           f"{BUNDLED_PACKAGE}): reinstall phd, or pass the file explicitly")
    return _resource_paths.enter_context(as_file(resource))


_resource_paths = contextlib.ExitStack()
atexit.register(_resource_paths.close)


# -- showing paths --------------------------------------------------------------
def tilde(path: str | Path) -> str:
    """``path`` with the user's home written ``~``: what a page or a message shows.

    Only an absolute path at or under ``$HOME`` changes; a relative path, a URL
    or a path elsewhere is returned as given (it says nothing about the user).
    """
    text = str(path)
    home = str(Path.home())
    if home in ("", os.sep) or not text.startswith(home):
        return text
    rest = text[len(home):]
    if rest == "":
        return "~"
    return "~" + rest if rest.startswith(os.sep) else text  # /home/ann2 is not under /home/ann


def tilde_text(text: str) -> str:
    """Every path under ``$HOME`` in ``text`` (a message) written from ``~``."""
    home = str(Path.home())
    if home in ("", os.sep):
        return text
    return text.replace(home + os.sep, "~" + os.sep)


def shell_path(path: str | Path) -> str:
    """``path`` as one POSIX shell word, a path under ``$HOME`` as ``~/...``.

    The ``~`` stays unquoted so that the shell expands it (``~/'my videos'/a.mp4``
    is the user's file on any machine); the rest is quoted as needed.
    """
    import shlex

    path = os.path.expanduser(str(path))  # "~/x" from a config file is the home's too
    shown = tilde(path)
    if shown == "~":
        return "~"
    if shown.startswith("~" + os.sep):
        return "~/" + shlex.quote(shown[2:])
    return shlex.quote(path)
