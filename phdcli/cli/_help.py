"""Help pages in panels with readable metavars, and bad values said in the flag's words.

typer's plain (non-rich) help lists every option in one flat "Options" list
with its annotation as metavar (``<str>``, ``<int>``, ``VIDEO <list[str]>``);
its rich help ignores the terminal width budget of long flag names. Commands
made with ``PhdTyper`` keep the plain, compact layout but group options
under their ``rich_help_panel`` (one section per panel, in the order the
panels first appear) and show a word for each value (``N``, ``SECONDS``,
``PATH``; ``[gif|mp4|webp]`` for declared choices).
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperCommand

try:  # typer >= 0.26 vendors its own click
    from typer._click import Context, HelpFormatter, Parameter
    from typer._click.core import ParameterSource
    from typer._click.exceptions import BadParameter
except ImportError:  # pragma: no cover - older typer on real click
    from click import Context, HelpFormatter, Parameter
    from click.core import ParameterSource
    from click.exceptions import BadParameter

# Panel names of `phd suggest` (and the other commands where they fit). A new
# option joins one with rich_help_panel=PANEL_...; options without a panel
# come last, under "Other options".
PANEL_INPUT = "Input"
PANEL_OUTPUT = "Output"
PANEL_RANKING = "Ranking"
PANEL_SPEED = "Speed"
PANEL_SCRIPTING = "Scripting"
PANEL_DOWNLOAD = "Downloads"
PANEL_OTHER = "Other options"
# The order panels are shown in; a panel not named here follows them.
PANEL_ORDER = (PANEL_INPUT, PANEL_OUTPUT, PANEL_RANKING, PANEL_SPEED, PANEL_DOWNLOAD,
               PANEL_SCRIPTING)

# typer's type labels -> the word a user reads (an option may set its own).
_METAVARS = {"int": "N", "float": "NUMBER", "str": "TEXT", "path": "PATH", "file": "FILE",
             "directory": "DIR"}


def _type_label(param: Any, ctx: Context) -> str:
    return str(param.display_type(ctx)).strip("<>")


def default_metavar(param: Any, ctx: Context) -> str:
    """``N``, ``PATH``... or ``[a|b|c]`` for declared choices."""
    desc = getattr(param, "type_descriptor", None)
    label = _type_label(param, ctx)
    if desc is not None and desc.is_choice:
        return f"[{label}]"
    return _METAVARS.get(label.removeprefix("list[").removesuffix("]"), label.upper())


class PhdCommand(TyperCommand):
    """A typer command whose plain help has panels and readable metavars."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["rich_markup_mode"] = None  # the compact plain layout, no rich import
        super().__init__(*args, **kwargs)

    def _metavar(self, param: Any, ctx: Context) -> str:
        if param.metavar is not None:
            return str(param.metavar)
        if param.param_type_name == "argument":  # its name says more than its type
            return str(param.name).upper()
        return default_metavar(param, ctx)

    def _record(self, param: Any, ctx: Context) -> tuple[str, str] | None:
        if param.param_type_name == "argument":
            record = param.get_help_record(ctx)
            if record is None:
                return None
            many = "..." if param.nargs != 1 else ""
            return f"{self._metavar(param, ctx)}{many}", record[1]
        if param.param_type_name != "option" or param.hidden:
            return None
        if param.is_flag or param.count:
            return param.get_help_record(ctx)
        saved = param.metavar
        param.metavar = self._metavar(param, ctx)
        try:
            return param.get_help_record(ctx)
        finally:
            param.metavar = saved

    def collect_usage_pieces(self, ctx: Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = self._metavar(param, ctx) + ("..." if param.nargs != 1 else "")
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx: Context, formatter: HelpFormatter) -> None:
        args: list[tuple[str, str]] = []
        panels: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = self._record(param, ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                args.append(record)
            else:
                panel = getattr(param, "rich_help_panel", None) or PANEL_OTHER
                panels.setdefault(panel, []).append(record)
        if args:
            with formatter.section("Arguments"):
                formatter.write_dl(args)
        # "Other options" (--help among them) after the named panels.
        other = panels.pop(PANEL_OTHER, [])
        single = not panels  # a command without panels: the usual "Options"
        order = sorted(panels.items(), key=lambda kv: (
            PANEL_ORDER.index(kv[0]) if kv[0] in PANEL_ORDER else len(PANEL_ORDER)))
        for title, records in [*order, (PANEL_OTHER, other)]:
            if records:
                with formatter.section("Options" if single else title):
                    formatter.write_dl(records)


class PhdTyper(typer.Typer):
    """typer.Typer whose commands are PhdCommand unless they say otherwise."""

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", PhdCommand)
        return super().command(*args, **kwargs)


def _expected(param: Any) -> str | None:
    """What a value of ``param`` must be, in words; None: click's words are clearer."""
    desc = getattr(param, "type_descriptor", None)
    if desc is None:
        return None
    if desc.is_choice and desc.choices:
        words = [str(getattr(c, "value", c)) for c in desc.choices]
        return ", ".join(words[:-1]) + f" or {words[-1]}" if len(words) > 1 else words[0]
    annotation = desc.annotation
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "a whole number"
    if annotation is float:
        return "a number"
    return None


def bad_value_message(exc: BadParameter) -> str | None:
    """``--format: expected gif, mp4 or webp, got 'jpg'``, or None for other errors.

    click's own line names the flag in quotes, adds the environment variable
    whatever the value's origin, and says what the validation library saw;
    this one says what the flag takes, the value given, and where it came from
    when not from the command line.
    """
    param: Parameter | None = exc.param
    if param is None or type(exc) is not BadParameter:  # missing values say it well
        return None
    expected = _expected(param)
    errors = getattr(exc.__cause__, "errors", None)
    if expected is None or not callable(errors):
        return None
    found = errors()
    if not found or "input" not in found[0]:
        return None
    value = found[0]["input"]
    if param.param_type_name == "option":
        opts = list(param.opts)
        flag = next((o for o in opts if o.startswith("--")), opts[0] if opts else param.name)
    else:
        flag = str(param.metavar or param.name)
    origin = ""
    ctx = exc.ctx
    source = ctx.get_parameter_source(param.name) if ctx is not None and param.name else None
    if source == ParameterSource.ENVIRONMENT:
        origin = f" (from {param.envvar})"
    elif source == ParameterSource.DEFAULT_MAP:
        origin = " (from the config file)"
    return f"{flag}: expected {expected}, got {str(value)!r}{origin}"
