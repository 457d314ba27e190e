"""Batch recipes: the analyses to run on every input and how to open the inputs.

A recipe file is JSON::

    {"analyses": [{"analysis": "VirtualDetector", "masks": {...}}, {"analysis": "SumFrame"}],
     "open": {"format": "raw", "nav_shape": [64, 64], "sig_shape": [128, 128], "dtype": "uint16"}}

``analyses`` holds ``Analysis.to_dict()`` descriptions (validated by each analysis's
own schema, as ``stem-explorer run --recipe`` does); ``open`` holds options of
:func:`~stem_explorer.io.open_dataset`. A bare list of descriptions (a ``run``
recipe) is read as ``{"analyses": [...]}``. Every error names the file and the JSON
pointer of the problem.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..analyses import REGISTRY
from ..analyses.params import strict_json
from ..analyses.schema import json_pointer
from ..errors import AnalysisError, FormatError
from ..io import get_reader

_SHAPE = {"type": "array", "items": {"type": "integer", "minimum": 1}}

#: The schema of a recipe's envelope; each analysis is checked by its own schema.
RECIPE_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "stem_explorer batch recipe",
    "type": "object",
    "properties": {
        "analyses": {"type": "array", "minItems": 1, "items": {"type": "object"}},
        "open": {
            "type": "object",
            "properties": {
                "format": {"type": "string"},
                "dataset": {"type": "string"},
                "nav_shape": dict(_SHAPE, minItems=1, maxItems=2),
                "sig_shape": dict(_SHAPE, minItems=2, maxItems=2),
                "dtype": {"type": "string"},
                "offset": {"type": "integer", "minimum": 0},
                "channel": {"type": "integer", "minimum": 0},
                "calibration": {"type": "object"},
            },
        },
    },
    "required": ["analyses"],
    "additionalProperties": False,
}


@dataclass
class BatchRecipe:
    """What a batch does to each input.

    Attributes
    ----------
    analyses : list of dict
        ``Analysis.to_dict()`` descriptions, run in one pass per input.
    open : dict
        Options of :func:`~stem_explorer.io.open_dataset` for every input.
    """

    analyses: list
    open: dict = field(default_factory=dict)
    # the analyses built once (validating a description against its schema costs
    # milliseconds, a batch builds them for every input), keyed by the descriptions
    # they were built from, so a recipe changed after its first build is rebuilt
    # (threads building at once may each build: the same result, no lock needed)
    _built: tuple = field(default=(None, None), init=False, repr=False, compare=False)

    def to_dict(self) -> dict:
        """The recipe as JSON-able data (what a results file records)."""
        return {"analyses": [dict(a) for a in self.analyses], "open": dict(self.open)}

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the recipe's canonical JSON: equal recipes, equal prints."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def build(self) -> list:
        """Fresh analysis objects (one set per input: jobs run in several threads),
        copies of a set validated and built once."""
        key = json.dumps(self.analyses, sort_keys=True)
        built_key, prototypes = self._built
        if built_key != key:
            prototypes = [REGISTRY.from_dict(d) for d in self.analyses]
            self._built = (key, prototypes)
        return copy.deepcopy(prototypes)


def as_recipe(analyses, open_options=None) -> BatchRecipe:
    """A :class:`BatchRecipe` from analysis objects or descriptions (checked now)."""
    if isinstance(analyses, BatchRecipe):
        if open_options:
            raise AnalysisError("pass open options inside the BatchRecipe, not beside it")
        return analyses
    if isinstance(analyses, (str, Path)):
        recipe = load_batch_recipe(analyses)
        return BatchRecipe(recipe.analyses, {**recipe.open, **(open_options or {})})
    if not isinstance(analyses, (list, tuple)):
        analyses = [analyses]
    if not analyses:
        raise AnalysisError("batch() needs at least one analysis, e.g. [SumFrame()]")
    described = [a if isinstance(a, dict) else _described(a) for a in analyses]
    return parse_recipe({"analyses": described, "open": dict(open_options or {})}, "analyses")


def _described(analysis) -> dict:
    to_dict = getattr(analysis, "to_dict", None)
    if to_dict is None:
        raise AnalysisError(f"{analysis!r} is not an analysis; use the classes in stem_explorer.analyses")
    return to_dict()


def load_batch_recipe(path) -> BatchRecipe:
    """The recipe in the JSON file ``path``.

    Raises
    ------
    AnalysisError
        The file cannot be read, is not JSON, or fails the recipe's schema; the message
        names the file and the JSON pointer of the problem.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise AnalysisError(f"cannot read the recipe {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        described = strict_json(text)
    except (ValueError, RecursionError) as exc:
        raise AnalysisError(
            f"{path}: not valid JSON ({exc}); a batch recipe is "
            '{"analyses": [{"analysis": "SumFrame"}], "open": {}}'
        ) from None
    if isinstance(described, list):  # the recipe form of `stem-explorer run`
        described = {"analyses": described}
    return parse_recipe(described, str(path))


@functools.lru_cache(maxsize=1)
def _validator():
    import jsonschema

    return jsonschema.Draft202012Validator(RECIPE_SCHEMA)


def parse_recipe(described, where: str) -> BatchRecipe:
    """Check ``described`` (parsed JSON) and return it as a :class:`BatchRecipe`."""
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator().iter_errors(described))
    if error is not None:
        pointer = json_pointer(error.absolute_path) or "/"
        raise AnalysisError(
            f"{where}: {pointer}: {error.message}; a batch recipe is "
            '{"analyses": [<analysis descriptions>], "open": {<open_dataset options>}}'
        )
    analyses = [
        REGISTRY.from_dict(d, where=f"{where}: /analyses/{i}").to_dict() for i, d in enumerate(described["analyses"])
    ]
    options = dict(described.get("open", {}))
    if "format" in options:
        try:
            get_reader(options["format"])
        except FormatError as exc:
            raise AnalysisError(f"{where}: /open/format: {exc}") from None
    return BatchRecipe(analyses, options)
