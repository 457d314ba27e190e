"""JSON Schemas of analysis descriptions, generated from the parameter declarations,
and validation of descriptions with clear errors (the JSON pointer of the problem,
the parameter's allowed values and unit).

jsonschema is imported on first use: importing it takes about a second, which a
session that never reads a JSON description should not pay.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping

from .. import masks as mask_lib
from ..errors import AnalysisError, MaskError

DRAFT = "https://json-schema.org/draft/2020-12/schema"
MASK_KINDS = ("mask", "masks", "scan_roi")


def analysis_schema(cls) -> dict:
    """The JSON Schema of ``cls``'s ``to_dict()`` descriptions (a new dict)."""
    params = cls.parameters()
    doc = (cls.__doc__ or "").strip().split("\n\n")[0]
    schema = {
        "$schema": DRAFT,
        "$id": f"urn:stem-explorer:analyses:{cls.__name__}",
        "title": cls.__name__,
        "description": " ".join(doc.split()),
        "type": "object",
        "properties": {"analysis": {"const": cls.__name__}, **{p.name: p.schema() for p in params}},
        "required": ["analysis", *(p.name for p in params if p.required)],
        "additionalProperties": False,
    }
    if any(p.kind in MASK_KINDS for p in params):
        # the mask schema travels inside (an embedded resource, found by its $id), so
        # the analysis schema stands alone
        schema["$defs"] = {"mask": mask_lib.load_schema()}
    return schema


@functools.lru_cache(maxsize=None)
def _validator(cls):
    import jsonschema

    return jsonschema.Draft202012Validator(analysis_schema(cls))


def location(where: str, pointer: str = "") -> str:
    """Where a problem is: ``where`` (a file name, the description's own pointer)
    followed by the JSON pointer inside the description."""
    text = where + pointer
    return text + "/" if not text or text.endswith(" ") else text


def json_pointer(path) -> str:
    """RFC 6901 pointer of a jsonschema error path ("" is the whole document)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def require_object(description, where: str = "") -> None:
    """AnalysisError unless ``description`` is a JSON object (a mapping)."""
    if not isinstance(description, Mapping):
        raise AnalysisError(
            f"{location(where)}: an analysis description must be a JSON object like "
            f"{{\"analysis\": \"SumFrame\"}}, got {_short(description)}"
        )


def validate_description(cls, description, where: str = "") -> None:
    """Check ``description`` against ``cls``'s schema and parameter checks.

    Raises :class:`AnalysisError` (MaskError for a bad mask) whose message starts with
    ``where`` (e.g. a file name and the description's own pointer in it) and the JSON
    pointer of the offending value.
    """
    require_object(description, where)
    import jsonschema

    description = dict(description)
    error = jsonschema.exceptions.best_match(_validator(cls).iter_errors(description))
    if error is None:
        # the schema cannot say "finite" (Python's JSON reads NaN and Infinity), nor
        # check what only the masks layer knows: run the parameters' own checks too
        for param in cls.parameters():
            if param.name in description:
                _check_value(cls, param, description[param.name], where)
        return
    path = list(error.absolute_path)
    if path and path[0] in {p.name for p in cls.parameters()}:
        param = next(p for p in cls.parameters() if p.name == path[0])
        _check_value(cls, param, description[param.name], where)  # raises its own message
        raise AnalysisError(f"{location(where, json_pointer(path))}: {param.error(description[param.name]).args[0]}")
    raise AnalysisError(f"{location(where, json_pointer(path))}: {_top_level_problem(cls, error, description)}")


def _check_value(cls, param, value, where: str) -> None:
    try:
        param.check(value)
    except MaskError as exc:
        raise MaskError(f"{location(where, json_pointer([param.name]))}: {exc}") from None
    except AnalysisError as exc:
        raise AnalysisError(f"{location(where, json_pointer([param.name]))}: {exc}") from None


def _top_level_problem(cls, error, description: dict) -> str:
    names = [p.name for p in cls.parameters()]
    listing = ", ".join(names) or "none"
    if error.validator == "required":
        missing = [p for p in cls.parameters() if p.required and p.name not in description]
        if missing:
            return f"{cls.__name__} needs {missing[0].name}: {missing[0].describe()}"
    if error.validator == "additionalProperties":
        extra = sorted(set(description) - set(names) - {"analysis"})
        return f"{cls.__name__} has no parameter {', '.join(map(repr, extra))}; its parameters: {listing}"
    if error.validator == "const":
        return f"this description is of {description.get('analysis')!r}, not {cls.__name__!r}"
    return error.message


def _short(value, limit: int = 120) -> str:
    text = json.dumps(value, default=repr) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
