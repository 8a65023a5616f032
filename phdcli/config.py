"""User defaults for ``phd suggest``: flag > environment (PHD_*) > config file > built-in.

The config file is TOML in the platformdirs config folder (``PHD_HOME/config``
when PHD_HOME is set), e.g.::

    [suggest]
    k = 3
    out = "~/gifs"
    device = "cuda"

Click does the layering: each option names its environment variable, and
the file's table becomes the command's ``default_map``. ``phd config`` shows
the value in force for each setting and where it came from.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phdcli import defaults, paths
from phdcli.errors import UsageError

CONFIG_NAME = "config.toml"


@dataclass(frozen=True)
class Setting:
    name: str  # the option's parameter name in `phd suggest`
    default: Any
    help: str
    kind: type = str  # what the config file must hold: int, float, bool or str (text)

    @property
    def env(self) -> str:
        return f"PHD_{self.name.upper()}"


# The settings a user may default; one line each, the single source for the
# CLI's envvar names, the config file's keys and `phd config`.
SETTINGS: tuple[Setting, ...] = (
    Setting("k", defaults.K, "GIFs per video", int),
    Setting("out", ".", "output folder"),
    Setting("segments", "fixed", "fixed or shots"),
    Setting("length", defaults.SEGMENT_LENGTH_S, "segment length, seconds", float),
    Setting("gif_length", None, "GIF length around the best clip, seconds", float),
    Setting("min_gap", None, "least time between two picks, seconds (one segment)", float),
    Setting("one_shot", True, "keep each GIF inside one shot", bool),
    Setting("fps", defaults.GIF_FPS, "GIF frame rate", float),
    Setting("width", defaults.GIF_WIDTH, "GIF width, pixels", int),
    Setting("format", "gif", "gif, mp4 or webp"),
    Setting("max_size", None, "largest output file, MB", float),
    Setting("name", defaults.NAME_TEMPLATE, "output name template"),
    Setting("user", "default", "history profile"),
    Setting("device", "auto", "auto, cpu, cuda, cuda:N or mps"),
    Setting("precision", "auto", "auto, bf16, fp32 or int8"),
    Setting("exhaustive", False, "full C3D features for every segment", bool),
    Setting("engine", "local", "local, or ray (the features on a Ray cluster)"),
    Setting("max_height", 720, "largest video height to download", int),
    Setting("max_filesize", 4000.0, "largest video download, MB", float),
    Setting("stall_timeout", 60.0, "give up a download after this many seconds without 1 KiB",
            float),
    Setting("download_timeout", 3600.0, "give up a download after this many seconds in all", float),
    Setting("max_megapixels", 36.0, "largest frame or GIF canvas, megapixels", float),
    Setting("c3d_weights", None, "C3D weights file"),
    Setting("offline", False, "never download: C3D weights, URLs not in the cache", bool),
    Setting("model", None, "ranking model file"),
    Setting("report", False, "write an HTML contact sheet", bool),
    Setting("heatmap_weight", 0.0, "weight of the site's replay heatmap (hand-set)", float),
)
SETTING_NAMES = {s.name for s in SETTINGS}


def env_var(name: str) -> str:
    """The environment variable of a setting (KeyError for an unknown name)."""
    return next(s.env for s in SETTINGS if s.name == name)


def config_path() -> Path:
    return paths.config_dir() / CONFIG_NAME


def load_file(path: Path | None = None) -> dict[str, Any]:
    """The ``[suggest]`` table of the config file ({} when there is none)."""
    path = path or config_path()
    if not path.is_file():
        return {}
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"config file {path}: {exc}") from None
    table = doc.get("suggest", {})
    if not isinstance(table, dict):
        raise UsageError(f"config file {path}: [suggest] must be a table")
    unknown = sorted(set(table) - SETTING_NAMES)
    if unknown:
        raise UsageError(f"config file {path}: unknown setting(s) {', '.join(unknown)}")
    for setting in SETTINGS:  # typed once, here: nothing later sees a date or a list
        if setting.name in table and not _is_kind(table[setting.name], setting.kind):
            value = table[setting.name]
            shown = repr(value) if isinstance(value, str) else str(value)
            raise UsageError(f"config file {path}: {setting.name} must be "
                             f"{_KIND_WORDS[setting.kind]}, got {shown} "
                             f"(a TOML {_toml_type(value)})")
    return dict(table)


_KIND_WORDS = {int: "a whole number", float: "a number", bool: "true or false",
               str: "a quoted string"}


def _is_kind(value: Any, kind: type) -> bool:
    if isinstance(value, bool) or kind is bool:  # TOML's true is no number, 1 no boolean
        return isinstance(value, bool) and kind is bool
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


def _toml_type(value: Any) -> str:
    import datetime

    for kind, word in ((bool, "boolean"), (int, "integer"), (float, "float"), (str, "string"),
                       (datetime.datetime, "date-time"), (datetime.date, "date"),
                       (datetime.time, "time"), (list, "array"), (dict, "table")):
        if isinstance(value, kind):
            return word
    return type(value).__name__


def default_map() -> dict[str, Any]:
    """Click's default_map for the app: the file's values for `phd suggest`
    (and its ``offline`` for `phd history add`, which may fetch weights too)."""
    values = load_file()
    found: dict[str, Any] = {"suggest": values} if values else {}
    if "offline" in values:
        found["history"] = {"add": {"offline": values["offline"]}}
    return found


@dataclass(frozen=True)
class Effective:
    name: str
    value: Any
    origin: str  # "env PHD_K", "file" (config_path()), "default"


def effective_settings() -> list[Effective]:
    """What `phd suggest` would use with no flags given, and why."""
    file_values = load_file()
    rows = []
    for s in SETTINGS:
        if s.env in os.environ:
            rows.append(Effective(s.name, os.environ[s.env], f"env {s.env}"))
        elif s.name in file_values:
            rows.append(Effective(s.name, file_values[s.name], "file"))
        else:
            rows.append(Effective(s.name, s.default, "default"))
    return rows
