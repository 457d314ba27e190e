"""Parameter declarations: one per analysis parameter, driving every front end.

An analysis declares its parameters as class attributes::

    class CenterOfMass(Analysis):
        radius = Number(None, minimum=0, exclusive_minimum=True, unit="px", help="...")

Each declaration gives the parameter's JSON Schema (:meth:`Param.schema`), its check of
a value (:meth:`Param.check`, run whenever the attribute is set; it also turns a JSON
value into the Python one, e.g. a mask dict into a mask), its JSON form
(:meth:`Param.to_json`), its command-line parsing
(:meth:`Param.parse_cli`) and the words every error message uses to describe it
(:meth:`Param.describe`: type, allowed range and unit). The Explorer's controls and the
``stem-explorer analyses`` listing read the same attributes. Parameters that say where
(masks, scan positions and regions) are in :mod:`.region_params`.
"""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import AnalysisError


class _Required:
    """The type of :data:`REQUIRED`: one object, which pickles as a reference to it (a
    notebook's analysis class travels by value and must keep telling it apart)."""

    def __reduce__(self):
        return "REQUIRED"

    def __repr__(self) -> str:
        return "REQUIRED"


#: The ``default`` of a parameter that must be given.
REQUIRED = _Required()


class Param:
    """One declared parameter of an analysis (a data descriptor on its class).

    Parameters
    ----------
    default
        The value when not given; :data:`REQUIRED` (the default) makes the parameter
        required. ``None`` makes ``None`` an allowed value ("not set").
    help
        One sentence for ``stem-explorer analyses``, the Explorer's tooltips and the
        schema's ``description``.
    unit
        Unit of the value (``"px"``, ``"degrees"``, ...), or None when it has none.
    examples
        Typical values: the schema's ``examples``; the first is what the Explorer's
        control starts from when the default is None.
    cli_aliases
        Further command-line option names (without ``--``), e.g. ``("rotation",)``.
    """

    #: What kind of value this is; the Explorer and the CLI choose controls by it.
    kind = "value"
    #: JSON Schema of a value (without ``null``, added for nullable parameters).
    _schema: dict = {}

    def __init__(self, default: Any = REQUIRED, *, help: str = "", unit: Optional[str] = None,
                 examples: Sequence = (), cli_aliases: Sequence[str] = ()):
        self.default = default
        self.help = help
        self.unit = unit
        self.examples = tuple(examples)
        self.cli_aliases = tuple(cli_aliases)
        self.name = ""  # set by __set_name__
        self.owner = ""

    # -- descriptor: every assignment is checked ---------------------------------------
    def __set_name__(self, owner, name: str) -> None:
        self.name = name
        self.owner = owner.__name__

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        try:
            return instance.__dict__["_values"][self.name]
        except KeyError:
            raise AttributeError(f"{self.owner}.{self.name} is not set") from None

    def __set__(self, instance, value) -> None:
        instance.__dict__.setdefault("_values", {})[self.name] = self.check(value)

    # -- the declaration ---------------------------------------------------------------
    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def nullable(self) -> bool:
        return self.default is None

    def schema(self) -> dict:
        """JSON Schema of the parameter's JSON form."""
        schema = dict(self._schema)
        if self.nullable:
            schema = {"anyOf": [schema, {"type": "null"}]}
        text = " ".join(filter(None, [self.help, f"Unit: {self.unit}." if self.unit else ""]))
        if text:
            schema["description"] = text
        if not self.required:
            schema["default"] = self.to_json(self.default)
        if self.examples:
            schema["examples"] = [self.to_json(self.check(e)) for e in self.examples]
        return schema

    def describe(self) -> str:
        """What a valid value is, in words: type, range and unit."""
        text = self._describe()
        if self.unit:
            text += f" in {self.unit}"
        return text + (", or None" if self.nullable else "")

    def _describe(self) -> str:
        return "a value"

    def error(self, value, problem: str = "") -> AnalysisError:
        """The error for an invalid ``value`` of this parameter."""
        detail = f" ({problem})" if problem else ""
        return AnalysisError(f"{self.owner} {self.name} must be {self.describe()}, got {_short(value)}{detail}")

    # -- values ------------------------------------------------------------------------
    def check(self, value):
        """The value to store, or :class:`AnalysisError` naming the parameter."""
        if value is None and self.nullable:
            return None
        return self._check(value)

    def _check(self, value):
        return value

    def to_json(self, value):
        """The value as plain JSON."""
        return None if value is None else self._to_json(value)

    def _to_json(self, value):
        return value

    def code(self, value) -> str:
        """A Python expression rebuilding ``value`` with the public API."""
        return repr(value)

    def parse_cli(self, occurrences: list[list[str]], option: str):
        """The value from a command-line option given ``occurrences`` times, each
        with its list of words."""
        if len(occurrences) != 1:
            raise AnalysisError(f"{option} was given {len(occurrences)} times; give it once")
        words = occurrences[0]
        if self.nullable and [w.lower() for w in words] == ["none"]:
            return None
        return self._parse_words(words, option)

    def _parse_words(self, words: list[str], option: str):
        return _one_word(words, option)

    def cli_metavar(self) -> str:
        return self.kind.upper()


def _short(value, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _one_word(words: list[str], option: str) -> str:
    if len(words) != 1:
        raise AnalysisError(f"{option} takes one value, got {len(words)}: {' '.join(words) or 'none'}")
    return words[0]


def cli_number(text: str, option: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise AnalysisError(f"{option} takes a number, got {text!r}") from None


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def is_whole(value) -> bool:
    """An integer, or a float with an integer value (JSON Schema's "integer")."""
    return _is_real(value) and math.isfinite(value) and int(value) == value


class Number(Param):
    """A finite real number, optionally bounded."""

    kind = "number"

    def __init__(self, default: Any = REQUIRED, *, minimum: Optional[float] = None, maximum: Optional[float] = None,
                 exclusive_minimum: bool = False, exclusive_maximum: bool = False, **options):
        self.minimum, self.maximum = minimum, maximum
        self.exclusive_minimum, self.exclusive_maximum = exclusive_minimum, exclusive_maximum
        super().__init__(default, **options)

    @property
    def _schema(self) -> dict:
        schema = {"type": self._json_type}
        if self.minimum is not None:
            schema["exclusiveMinimum" if self.exclusive_minimum else "minimum"] = self.minimum
        if self.maximum is not None:
            schema["exclusiveMaximum" if self.exclusive_maximum else "maximum"] = self.maximum
        return schema

    _json_type = "number"
    _noun = "finite number"

    def _describe(self) -> str:
        low, high = self.minimum, self.maximum
        if low == 0 and high is None:
            return f"a {'positive' if self.exclusive_minimum else 'non-negative'} {self._noun}"
        article = "an" if self._noun[0] in "aeiou" else "a"
        if low is not None and high is not None and not (self.exclusive_minimum or self.exclusive_maximum):
            return f"{article} {self._noun} from {low:g} to {high:g}"
        parts = []
        if low is not None:
            parts.append(f"{'>' if self.exclusive_minimum else '>='} {low:g}")
        if high is not None:
            parts.append(f"{'<' if self.exclusive_maximum else '<='} {high:g}")
        return f"{article} {self._noun}" + (f" {' and '.join(parts)}" if parts else "")

    def _in_range(self, value: float) -> bool:
        low, high = self.minimum, self.maximum
        if low is not None and (value <= low if self.exclusive_minimum else value < low):
            return False
        return not (high is not None and (value >= high if self.exclusive_maximum else value > high))

    def _check(self, value):
        if not _is_real(value) or not math.isfinite(float(value)) or not self._in_range(float(value)):
            raise self.error(value)
        return float(value)

    def _parse_words(self, words, option):
        return cli_number(_one_word(words, option), option)


class Integer(Number):
    """A whole number, optionally bounded."""

    kind = "integer"
    _json_type = "integer"
    _noun = "integer"

    def _check(self, value):
        if not is_whole(value) or not self._in_range(value):
            raise self.error(value)
        return int(value)

    def _parse_words(self, words, option):
        text = _one_word(words, option)
        try:
            return int(text)
        except ValueError:
            raise AnalysisError(f"{option} takes an integer, got {text!r}") from None


class Boolean(Param):
    """True or False."""

    kind = "boolean"
    _schema = {"type": "boolean"}
    _WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}

    def _describe(self) -> str:
        return "True or False"

    def _check(self, value):
        if not isinstance(value, (bool, np.bool_)):
            raise self.error(value)
        return bool(value)

    def _parse_words(self, words, option):
        if not words:  # a bare flag
            return True
        text = _one_word(words, option)
        try:
            return self._WORDS[text.lower()]
        except KeyError:
            raise AnalysisError(f"{option} takes true or false (or nothing, meaning true), got {text!r}") from None

    def cli_metavar(self) -> str:
        return "[true|false]"


class Label(Param):
    """A name for the results (letters, digits, ``_`` and ``-``), or None."""

    kind = "label"
    _schema = {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"}

    def _describe(self) -> str:
        return "a name of letters, digits, _ and -"

    def _check(self, value):
        if not isinstance(value, str) or not value or not all(c.isalnum() or c in "_-" for c in value):
            raise self.error(value)
        return value


class Choice(Param):
    """One of a fixed set of strings."""

    kind = "choice"

    def __init__(self, options: Sequence[str], default: Any = REQUIRED, **kwargs):
        self.options = tuple(options)
        super().__init__(default, **kwargs)

    @property
    def _schema(self) -> dict:
        return {"enum": list(self.options)}

    def _describe(self) -> str:
        return "one of " + ", ".join(map(repr, self.options))

    def _check(self, value):
        if value not in self.options:
            raise self.error(value)
        return value

    def cli_metavar(self) -> str:
        return "{" + ",".join(self.options) + "}"


class Point(Param):
    """A detector position ``(y, x)`` in pixels (row first); the Explorer takes it from
    the detector view (a drawn point, or the centre of a drawn disk or ring)."""

    kind = "point"
    _schema = {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}

    def __init__(self, default: Any = REQUIRED, **options):
        options.setdefault("unit", "px")
        super().__init__(default, **options)

    def _describe(self) -> str:
        return "a (y, x) pair of finite numbers (detector row, column)"

    def _check(self, value):
        try:
            y, x = (float(v) for v in value)
        except (TypeError, ValueError):
            raise self.error(value) from None
        if not (math.isfinite(y) and math.isfinite(x)):
            raise self.error(value)
        return (y, x)

    def _to_json(self, value):
        return list(value)

    def _parse_words(self, words, option):
        if len(words) != 2:
            raise AnalysisError(f"{option} takes two numbers, Y X (detector row, column), got {' '.join(words) or 'none'}")
        return tuple(cli_number(w, option) for w in words)

    def cli_metavar(self) -> str:
        return "Y X"


class Numbers(Param):
    """A list of finite numbers (e.g. the radii of ring edges)."""

    kind = "numbers"

    def __init__(self, default: Any = REQUIRED, *, minimum: Optional[float] = None, min_items: int = 1, **options):
        self.minimum, self.min_items = minimum, min_items
        super().__init__(default, **options)

    @property
    def _schema(self) -> dict:
        items = {"type": "number"} if self.minimum is None else {"type": "number", "minimum": self.minimum}
        return {"type": "array", "items": items, "minItems": self.min_items}

    def _describe(self) -> str:
        bound = "" if self.minimum is None else f" >= {self.minimum:g}"
        return f"a list of at least {self.min_items} finite numbers{bound}"

    def _check(self, value):
        try:
            values = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise self.error(value) from None
        if values.ndim != 1 or values.size < self.min_items or not np.all(np.isfinite(values)):
            raise self.error(value)
        if self.minimum is not None and np.any(values < self.minimum):
            raise self.error(value)
        return tuple(values.tolist())

    def _to_json(self, value):
        return list(value)

    def _parse_words(self, words, option):
        return [cli_number(w, option) for w in words]

    def cli_metavar(self) -> str:
        return "N"


def json_words(words: list[str], option: str):
    """A JSON value from an option's words: JSON text, or the path of a JSON file."""
    text = " ".join(words)
    source = text
    # text longer than a path may be is JSON (Path.is_file raises on such names)
    if len(words) == 1 and len(text) < 4096 and not text.lstrip().startswith(("{", "[")) and Path(text).is_file():
        source = Path(text).read_text()
    try:
        return strict_json(source)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested beyond Python's limit
        raise AnalysisError(f"{option} {_short(text)} is neither a JSON file nor valid JSON ({exc})") from None


def strict_json(text: str):
    """``json.loads`` refusing NaN and Infinity, which Python accepts and JSON has not."""
    return json.loads(text, parse_constant=_reject_constant)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")
