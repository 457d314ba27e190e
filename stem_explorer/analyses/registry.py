"""The registry of analyses: built-ins and plugins, found by name.

Built-in analyses register themselves when :mod:`stem_explorer.analyses` is imported.
Other packages add theirs through the ``stem_explorer.analyses`` entry point group,
whose entries are :class:`~.base.Analysis` subclasses (the way readers are found)::

    [project.entry-points."stem_explorer.analyses"]
    BrightestPixel = "my_package.analyses:BrightestPixel"

and code in a notebook registers with the :func:`register` decorator. An analysis is
registered under its class name (the ``"analysis"`` of its ``to_dict()``); its
``label`` is a second name the command line and the Explorer accept.

Entry points are loaded on the first lookup. A plugin that fails to load, or that
claims a name already taken, is skipped with an :class:`AnalysisPluginWarning` naming
it; the analyses registered before it keep working.
"""

from __future__ import annotations

import inspect
import warnings
from importlib.metadata import entry_points
from typing import Optional

from ..errors import AnalysisError
from .base import Analysis
from .schema import location, require_object

ENTRY_POINT_GROUP = "stem_explorer.analyses"


class AnalysisPluginWarning(UserWarning):
    """An analysis plugin could not be loaded or registered; it is skipped."""


class AnalysisRegistry:
    """Analysis classes by name (and label), with where each came from.

    ``stem_explorer.analyses`` holds the one registry the package uses; its
    functions :func:`register`, :func:`available`, :func:`get` and :func:`from_dict`
    act on it.
    """

    def __init__(self, group: str = ENTRY_POINT_GROUP):
        self.group = group
        self._classes: dict[str, type] = {}
        self._origins: dict[str, str] = {}
        self._labels: dict[str, str] = {}  # label -> name
        self._entry_points_loaded = False

    def register(self, cls: type, origin: Optional[str] = None) -> type:
        """Make ``cls`` available by its class name and label; returns ``cls``.

        A class defined again under the same module and name (a notebook cell run
        twice) replaces the earlier one; any other class claiming a taken name is
        skipped with a warning.
        """
        if not (inspect.isclass(cls) and issubclass(cls, Analysis)) or inspect.isabstract(cls):
            raise AnalysisError(
                f"{cls!r} is not an analysis: register a concrete subclass of "
                "stem_explorer.analyses.Analysis (or FrameAnalysis, ReductionAnalysis)"
            )
        name = cls.__name__
        origin = origin or f"{cls.__module__}.{cls.__qualname__}"
        known = self._classes.get(name)
        if known is not None and known is not cls and _where(known) != _where(cls):
            warnings.warn(
                f"two analyses are called {name!r}: {self._origins[name]} and {origin}; "
                f"keeping the first, {self._origins[name]}",
                AnalysisPluginWarning,
                stacklevel=2,
            )
            return cls
        self._classes[name], self._origins[name] = cls, origin
        owner = self._labels.get(cls.label)
        if owner is not None and owner != name and cls.label not in self._classes:
            warnings.warn(
                f"the label {cls.label!r} of {origin} is already the label of {self._origins[owner]}; "
                f"{cls.label!r} keeps meaning {owner}: call the new analysis {name!r}",
                AnalysisPluginWarning,
                stacklevel=2,
            )
        elif cls.label not in self._classes:
            self._labels[cls.label] = name
        return cls

    def unregister(self, name: str) -> None:
        """Remove the analysis registered as ``name`` (e.g. one tried out in a notebook)."""
        cls = self.get(name)
        del self._classes[cls.__name__], self._origins[cls.__name__]
        if self._labels.get(cls.label) == cls.__name__:
            del self._labels[cls.label]

    def load_entry_points(self) -> None:
        """Register the analyses of the entry point group (once)."""
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=self.group):
            where = f"the plugin {ep.name!r} ({ep.value}" + (f", distribution {ep.dist.name})" if ep.dist else ")")
            try:
                cls = ep.load()
            except Exception as exc:  # a broken plugin must not break the others
                warnings.warn(
                    f"{where} failed to load and is skipped: {type(exc).__name__}: {exc}",
                    AnalysisPluginWarning,
                    stacklevel=3,
                )
                continue
            try:
                self.register(cls, origin=where)
            except AnalysisError as exc:
                warnings.warn(f"{where} is skipped: {exc}", AnalysisPluginWarning, stacklevel=3)

    def names(self) -> list[str]:
        """Names of the registered analyses, sorted."""
        self.load_entry_points()
        return sorted(self._classes)

    def classes(self) -> list[type]:
        """The registered analysis classes, in registration order."""
        self.load_entry_points()
        return list(self._classes.values())

    def origin(self, name: str) -> str:
        """Where the analysis registered as ``name`` came from."""
        return self._origins[self.get(name).__name__]

    def get(self, name: str) -> type:
        """The analysis class registered as ``name`` (or with that label)."""
        self.load_entry_points()
        if isinstance(name, str):
            found = self._classes.get(name) or self._classes.get(self._labels.get(name, ""))
            if found is not None:
                return found
        listing = ", ".join(f"{n} ({c.label})" for n, c in sorted(self._classes.items()))
        raise AnalysisError(
            f"unknown analysis {name!r}; available: {listing} (see `stem-explorer analyses`)"
        )

    def from_dict(self, description, where: str = "") -> Analysis:
        """The analysis of a ``to_dict()`` description (its ``"analysis"`` may also be
        a label); ``where`` starts error messages (e.g. ``"recipe.json: /2"``)."""
        require_object(description, where)
        if "analysis" not in description:
            raise AnalysisError(
                f"{location(where)}: an analysis description needs \"analysis\": the name of one "
                f"of {', '.join(self.names())}"
            )
        try:
            cls = self.get(description["analysis"])
        except AnalysisError as exc:
            raise AnalysisError(f"{location(where, '/analysis')}: {exc}") from None
        return cls.from_dict(dict(description, analysis=cls.__name__), where=where)


def _where(cls) -> tuple:
    return (cls.__module__, cls.__qualname__)


#: The registry the package uses.
REGISTRY = AnalysisRegistry()


def register(cls: type) -> type:
    """Class decorator: make an analysis available by name to :func:`from_dict`, the
    command line and the Explorer's selector."""
    return REGISTRY.register(cls)


def available() -> list[str]:
    """Names of the registered analyses (built-in and plugins), sorted."""
    return REGISTRY.names()


def get(name: str) -> type:
    """The analysis class registered as ``name`` (or with that label); AnalysisError
    listing the available ones otherwise."""
    return REGISTRY.get(name)


def from_dict(description: dict) -> Analysis:
    """The analysis described by ``description``, the inverse of ``Analysis.to_dict()``:
    ``from_dict(a.to_dict()) == a`` for every registered analysis."""
    return REGISTRY.from_dict(description)


def from_results(results) -> list:
    """The analyses that made ``results`` (a :class:`~stem_explorer.results.Results` or
    the path of a results file), rebuilt from its provenance, so that they can be run
    again, on another data set too."""
    from ..results import Results

    if not isinstance(results, Results):
        results = Results.load(results)
    described = results.provenance.get("analyses")
    if not isinstance(described, list):
        raise AnalysisError("these results have no analyses in their provenance (made by another program?)")
    return [
        REGISTRY.from_dict({k: v for k, v in d.items() if k != "label"}, where=f"provenance: /analyses/{i}")
        for i, d in enumerate(described)
    ]
