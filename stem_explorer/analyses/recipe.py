"""Recipes: JSON files listing analysis descriptions (``to_dict()`` forms), the same
form a results file keeps in its provenance."""

from __future__ import annotations

from pathlib import Path

from ..errors import AnalysisError
from .params import strict_json
from .registry import REGISTRY


def load_recipe(path) -> list:
    """The analyses of the recipe file at ``path``: a JSON list of descriptions
    (``[{"analysis": "CenterOfMass", "radius": 12}, ...]``) or one description.

    Errors name the file and the JSON pointer of the problem
    (``recipe.json: /1/radius: ...``); a file that is not JSON gives its line and
    column.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise AnalysisError(f"cannot read the recipe {path}: {exc.strerror or exc}") from None
    try:
        described = strict_json(text)
    except ValueError as exc:
        raise AnalysisError(
            f"{path}: not valid JSON ({exc}); a recipe is a list of analysis descriptions like "
            '[{"analysis": "SumFrame"}]'
        ) from None
    if isinstance(described, dict):
        return [REGISTRY.from_dict(described, where=f"{path}: ")]
    if not isinstance(described, list) or not described:
        raise AnalysisError(
            f"{path}: /: a recipe is a non-empty list of analysis descriptions like "
            f'[{{"analysis": "SumFrame"}}], got {type(described).__name__}'
        )
    return [REGISTRY.from_dict(d, where=f"{path}: /{i}") for i, d in enumerate(described)]

