"""What the explorer's controls mean: the analysis selector generated from the
registry, UI state -> an analysis, results -> the image to show.

Pure functions of plain values, so they are tested without a browser and the same
choices produce the "copy code" lines. What is specific to one analysis's display
lives here and nowhere else: the ADF preset, the centre of mass counting the pixels
of a drawn disk, and the result an analysis shows first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..analyses import REGISTRY, Analysis
from ..masks import Disk, Mask, Ring

#: Selector entries that are an analysis with preset parameters: key -> (title shown,
#: analysis name, parameters). ADF is a virtual detector that starts with an annulus.
PRESETS = {"adf": ("ADF (annulus)", "VirtualDetector", {"name": "adf"})}
#: Keys at the top of the selector, in this order; the other analyses follow.
FIRST = ("vd", "adf")
#: The result an analysis shows first, where it is not its first scan image.
PREFERRED_RESULT = {"CenterOfMass": "magnitude", "FEM": "normalized_variance"}
#: Kinds of parameters the detector view provides (the editor's mask, a drawn point).
FROM_DETECTOR = ("mask", "masks", "point")
#: Kinds of parameters that have a control (widgets/controls.py).
WITH_CONTROLS = ("number", "integer", "boolean", "choice")
#: Names of the scan's dimensions in results.
SCAN_DIMS = ("scan_y", "scan_x", "scan")


class NeedsMask(ValueError):
    """The analysis needs a mask drawn on the detector first."""


@dataclass(frozen=True)
class Beam:
    """The direct beam's disk on the detector (pixel units, row first)."""

    cy: float
    cx: float
    radius: float

    def disk(self) -> Disk:
        return Disk(round(self.cy, 2), round(self.cx, 2), round(self.radius, 2))

    def annulus(self, sig_shape: tuple) -> Ring:
        """A dark-field annulus: from just outside the beam to the nearest detector edge."""
        sy, sx = sig_shape
        edge = min(self.cy, self.cx, sy - 1 - self.cy, sx - 1 - self.cx)
        inner = 1.25 * self.radius
        outer = max(edge, inner + 2.0)
        return Ring(round(self.cy, 2), round(self.cx, 2), round(inner, 2), round(outer, 2))


def estimate_beam(frame: np.ndarray) -> Beam:
    """The bright-field disk of a (sum) frame: the pixels above half way between the
    median and the 99.9th percentile, their centre (weighted by intensity clipped at that
    percentile) and the radius of a disk of the same area. Falls back to a disk at the centre with 1/8 of the smaller
    detector side when the frame has no clear disk."""
    frame = np.asarray(frame, dtype=np.float64)
    sy, sx = frame.shape
    fallback = Beam((sy - 1) / 2, (sx - 1) / 2, max(1.0, min(sy, sx) / 8))
    finite = np.where(np.isfinite(frame), frame, 0.0)
    low, high = np.percentile(finite, [50, 99.9])
    if not high > low:
        return fallback
    bright = finite > (low + high) / 2
    count = int(bright.sum())
    if count == 0 or count > 0.5 * frame.size:
        return fallback
    weights = np.where(bright, np.minimum(finite, high) - low, 0.0)  # a hot pixel weighs like a disk pixel
    total = weights.sum()
    ys, xs = np.indices(frame.shape)
    radius = math.sqrt(count / math.pi)
    return Beam(float((weights * ys).sum() / total), float((weights * xs).sum() / total), max(1.0, radius))


@dataclass(frozen=True)
class Choice:
    """The explorer's analysis settings: the selector's key, the controls' values,
    the result shown (None: the analysis's preferred one) and, for results with an
    axis beyond the scan (the radial profile's rings), the index shown on it."""

    kind: str = "vd"
    params: dict = field(default_factory=dict)
    component: Optional[str] = None
    index: int = 0


def selector(registry=REGISTRY) -> list:
    """``(title, key)`` of the selector: every registered analysis whose parameters
    the Explorer can all provide (controls, the detector view, defaults), plus the
    presets. Analyses of scan positions (picked frames, ROI sums) come from clicks
    on the navigation view instead."""
    entries = [(title, key) for key, (title, _, _) in PRESETS.items()]
    for cls in registry.classes():
        if all(p.kind in FROM_DETECTOR + WITH_CONTROLS or not p.required for p in cls.parameters()):
            entries.append((cls.title or cls.__name__, cls.label))
    rank = {key: i for i, key in enumerate(FIRST)}
    return sorted(entries, key=lambda e: rank.get(e[1], len(rank)))


def analysis_class(key: str, registry=REGISTRY) -> type:
    """The analysis class behind a selector key."""
    return registry.get(PRESETS[key][1] if key in PRESETS else key)


def build_analysis(choice: Choice, mask: Optional[Mask], beam: Beam, point: Optional[tuple] = None,
                   registry=REGISTRY) -> Analysis:
    """The analysis the settings ask for; ``mask`` is the editor's combined mask,
    ``point`` the ``(y, x)`` of a point drawn on the detector, if any.

    Mask parameters take the editor's mask (``{"image": mask}`` where it names its
    results), points the drawn point, else the centre of a drawn disk or ring, else
    the beam's centre; the controls give the rest.
    """
    cls = analysis_class(choice.kind, registry)
    values = dict(PRESETS[choice.kind][2]) if choice.kind in PRESETS else {}
    for param in cls.parameters():
        if param.kind in ("mask", "masks") and param.name not in choice.params:
            if mask is None:
                raise NeedsMask(f"draw a mask on the detector (disk, ring, rectangle, polygon...) for the {param.name} of {cls.title or cls.__name__}")
            values[param.name] = {"image": mask} if param.kind == "masks" else mask
        elif param.kind == "point":
            values[param.name] = point or _centre_of(mask) or (round(beam.cy, 2), round(beam.cx, 2))
    values.update(choice.params)
    if cls.__name__ == "CenterOfMass":
        values.update(_com_support(mask, beam))
    return cls(**values)


def _centre_of(mask: Optional[Mask]) -> Optional[tuple]:
    if isinstance(mask, (Disk, Ring)):
        return (mask.cy, mask.cx)
    return None


def _com_support(mask: Optional[Mask], beam: Beam) -> dict:
    """CoM counts the pixels of a drawn disk; with none, the whole frame about the beam."""
    if isinstance(mask, Disk):
        return {"center": (mask.cy, mask.cx), "radius": mask.radius}
    return {"center": (round(beam.cy, 2), round(beam.cx, 2)), "radius": None}


def label_of(analysis: Analysis) -> str:
    """The prefix of the analysis's result keys."""
    return getattr(analysis, "name", None) or analysis.label


def scan_images(results, label: str) -> list:
    """Short names of the results of ``label`` that are images over the scan (the
    scan's axes first, perhaps an axis more, like the radial profile's rings)."""
    return [name for name, array in results.group(label).items() if array.dims and array.dims[0] in SCAN_DIMS]


def result_key(choice: Choice, analysis: Analysis, results) -> Optional[str]:
    """The key of the results array the view shows for these settings (None while
    the results have none to show)."""
    label = label_of(analysis)
    if analysis.result_space == "detector":
        names = list(results.group(label))
    else:
        names = scan_images(results, label)
    for name in (choice.component, PREFERRED_RESULT.get(type(analysis).__name__)):
        if name in names:
            return f"{label}/{name}"
    return f"{label}/{names[0]}" if names else None


def extra_length(results, key: str) -> int:
    """Positions along the result's axes beyond the scan (1 when it has none)."""
    array = results[key]
    scan = sum(1 for d in array.dims if d in SCAN_DIMS)
    return int(np.prod(array.shape[scan:], dtype=np.int64))


def navigation_image(choice: Choice, results, key: str, progress=None) -> np.ndarray:
    """The scan-shaped image to show while ``progress`` (a running job's snapshot, or
    None when final) fills in: positions not computed yet show the job's coarse
    preview where it has one, else NaN (transparent). A result with axes beyond the
    scan shows position ``choice.index`` along them."""
    array = results[key]
    scan = sum(1 for d in array.dims if d in SCAN_DIMS)
    values = np.asarray(array.data, dtype=np.float32)
    if values.ndim > scan:
        flat = values.reshape(values.shape[:scan] + (-1,))
        values = flat[..., min(max(0, choice.index), flat.shape[-1] - 1)]
    if progress is not None and not progress.filled.all():
        values = progress.fill_preview(np.where(progress.filled, values, np.nan)).astype(np.float32)
    return values


def analysis_code(analysis: Analysis, key: str, source: str) -> str:
    """Notebook lines that reproduce the result ``key`` with the public API."""
    return "\n".join(
        [
            "import stem_explorer as se",
            import_line(type(analysis)),
            "from stem_explorer import masks",
            "",
            f"session = se.Session({source})",
            f"results = session.compute({analysis.code()})",
            f"image = results[{key!r}].data",
        ]
    )


def import_line(cls: type) -> str:
    """The line of copied code that imports the analysis class ``cls``."""
    if cls.__module__.startswith("stem_explorer."):
        return f"from stem_explorer.analyses import {cls.__name__}"
    if cls.__module__ == "__main__":
        return f"# {cls.__name__}: the analysis defined in this notebook"
    return f"from {cls.__module__} import {cls.__name__}"


def drawn_point(shapes: list) -> Optional[tuple]:
    """``(y, x)`` of the last point added among the editor's ``shapes``, if any."""
    points = [s for s in shapes if s.get("kind") == "point" and s.get("op", "add") == "add"]
    return (points[-1]["y"], points[-1]["x"]) if points else None
