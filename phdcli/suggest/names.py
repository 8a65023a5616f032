"""The ``--name`` template: parsed and checked once, then rendered the same way.

A template is literal text and the documented fields (``{stem}``, ``{rank}``,
``{start}``, ``{end}``, ``{score}``), each with at most a plain format spec
(``{rank:02d}``, ``{start:.0f}``). No attribute or index access, no
conversion, no nested field, no width or precision over NAME_MAX_SPEC: the
spec is read as text before anything is rendered, so a width of 8e9 is a
usage error, never an 8 GB string.

The checks made before any work render the template with the values each
field can take at its widest and narrowest (the longest stem, rank ``-k``,
floats with the longest repr and the largest magnitude in their domain, a
negative score), so a name that passes never turns out too long, hidden,
option-like or full of control characters once the real values are known.
A real value outside its domain (a score beyond +-1e9) fails that input,
before anything is encoded.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass
from typing import Any

from phdcli.errors import InputError, UsageError

FIELDS = ("stem", "rank", "start", "end", "score")
NAME_MAX_SPEC = 255  # no file name is longer: a wider width or precision cannot fit
# Domains of the numeric fields: what the early check renders, what a real
# value must stay within (a start past 31 years, a score past 1e9, is a broken input).
MAX_SECONDS = 1e9
MAX_SCORE = 1e9
_TOP = math.nextafter(1e9, 0.0)  # the largest value below both bounds: the most digits
# Floats with the longest repr (23 chars), the longest fixed form, and none.
_FLOAT_EDGES = (0.0, 2.2250738585072014e-308, 0.00012345678901234567, 1.0, _TOP)
_TYPES = {  # the format types each field may use ('c' and locale-dependent 'n' not)
    "stem": frozenset("s"),
    "rank": frozenset("bdoxXeEfFgG%"),
    "start": frozenset("eEfFgG%"), "end": frozenset("eEfFgG%"), "score": frozenset("eEfFgG%"),
}
_SPEC = re.compile(r"(?:(?P<fill>.)?[<>=^])?[-+ ]?z?#?0?(?P<width>\d*)[,_]?"
                   r"(?:\.(?P<precision>\d*))?(?P<type>[A-Za-z%]?)", re.DOTALL)
FIELDS_WORDS = "{stem}, {rank}, {start}, {end} or {score}"


@dataclass(frozen=True)
class NameValues:
    """What one output file's name is made of."""

    stem: str
    rank: int
    start: float
    end: float
    score: float


@dataclass(frozen=True)
class NameTemplate:
    """A parsed ``--name``: (literal text, field, format spec) pieces."""

    text: str
    pieces: tuple[tuple[str, str | None, str], ...]

    @classmethod
    def parse(cls, text: str) -> NameTemplate:
        """Read ``text`` as a template; a UsageError naming --name if it is not one."""
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise UsageError(f"--name {text!r}: {_visible(str(exc))}") from None
        pieces = []
        for literal, field, spec, conversion in parsed:
            if field is None:
                pieces.append((literal, None, ""))
                continue
            shown = _visible("{" + field + (f"!{conversion}" if conversion else "") +
                             (f":{spec}" if spec else "") + "}")
            if field not in FIELDS:
                raise UsageError(f"--name {text!r}: {shown} is not a field (use "
                                 f"{FIELDS_WORDS}, with no attribute or index)")
            if conversion is not None:
                raise UsageError(f"--name {text!r}: {shown}: no conversion (!{conversion}) "
                                 "is allowed, only a format spec such as {rank:02d}")
            _check_spec(text, shown, field, spec or "")
            pieces.append((literal, field, spec or ""))
        template = cls(text, tuple(pieces))
        try:  # a spec that does not suit its field's type ({start:d}, {stem:+})
            template.render(NameValues("clip", 1, 0.0, 1.0, 0.0))
        except (ValueError, TypeError) as exc:
            raise UsageError(f"--name {text!r}: {_visible(str(exc))}") from None
        return template

    def render(self, values: NameValues) -> str:
        """The name (without suffix) for ``values``; only the parsed fields are read."""
        return "".join(literal + ("" if field is None else format(getattr(values, field), spec))
                       for literal, field, spec in self.pieces)

    def widest_bytes(self, stems: tuple[str, ...], k: int) -> int:
        """The most bytes a name can take: each field at its longest rendering
        (a padded field is longest for the shortest value when its fill is wider)."""
        total = 0
        for literal, field, spec in self.pieces:
            total += len(literal.encode("utf-8", "surrogateescape"))
            if field is not None:
                total += max(len(format(v, spec).encode("utf-8", "surrogateescape"))
                             for v in _candidates(field, stems, k))
        return total

    def samples(self, stems: tuple[str, ...], k: int) -> list[str]:
        """Names from each field's narrowest, widest and negative values (the
        leading character, padding and signs all show in one of them)."""
        lists = {field: _candidates(field, stems, k) for field in FIELDS}
        n = max(len(values) for values in lists.values())
        return [self.render(NameValues(*(lists[f][i % len(lists[f])] for f in FIELDS)))
                for i in range(n)]


def _visible(text: str) -> str:
    """``text`` with control characters escaped: a message stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _candidates(field: str, stems: tuple[str, ...], k: int) -> tuple[Any, ...]:
    if field == "stem":
        return stems
    if field == "rank":
        return (1, k)
    if field == "score":
        return (*_FLOAT_EDGES, *(-v for v in _FLOAT_EDGES if v))
    return _FLOAT_EDGES


def _check_spec(text: str, shown: str, field: str, spec: str) -> None:
    """A plain format spec with bounded numbers, read before anything is rendered."""
    match = _SPEC.fullmatch(spec)
    if match is None or "{" in spec or "}" in spec:
        raise UsageError(f"--name {text!r}: {shown} has a format spec phd does not take "
                         "(plain specs only, such as {rank:02d} or {start:.1f})")
    for what in ("width", "precision"):
        digits = match.group(what) or ""
        # Compared as text first: a spec of a million digits is never made an int.
        if len(digits) > 3 or int(digits or 0) > NAME_MAX_SPEC:
            raise UsageError(f"--name {text!r}: {shown}: a {what} of {digits[:12]}"
                             f"{'...' if len(digits) > 12 else ''} is too long for a file "
                             f"name (at most {NAME_MAX_SPEC})")
    kind = match.group("type")
    if kind and kind not in _TYPES[field]:
        raise UsageError(f"--name {text!r}: {shown}: format type {kind!r} does not suit "
                         f"{{{field}}}")


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an output file's name in --out, or None."""
    if not name.strip():
        return "an empty or blank name"
    if any(c in name for c in "/\\") or name.startswith("."):
        return "a name that would leave --out or be hidden"
    bad = next((c for c in name if not c.isprintable()), None)
    if bad is not None:
        return f"a control or invisible character ({bad!r})"
    if name.startswith("-"):
        return "a name starting with '-' (read as an option by other programs)"
    if name != name.strip():
        return "a name starting or ending with a space"
    return None


def check_in_domain(values: NameValues) -> None:
    """A real value beyond what the early check rendered fails this input."""
    for field, value, bound in (("start", values.start, MAX_SECONDS),
                                ("end", values.end, MAX_SECONDS),
                                ("score", values.score, MAX_SCORE)):
        if not (math.isfinite(value) and abs(value) < bound):
            raise InputError(f"{{{field}}} = {value!r} is beyond what --name was checked "
                             f"for (+-{bound:g}); nothing written")
