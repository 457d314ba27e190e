"""What the explorer's controls mean: UI state -> an analysis, results -> the image to show.

Pure functions of plain values, so they are tested without a browser and the same
choices produce the "copy code" lines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..analyses import FEM, Analysis, CenterOfMass, RadialProfile, StdFrame, VirtualDetector
from ..masks import Disk, Mask, Ring

#: (label shown, key) of the analysis selector.
ANALYSES = (
    ("virtual detector", "vd"),
    ("ADF (annulus)", "adf"),
    ("centre of mass", "com"),
    ("radial profile", "radial"),
    ("FEM", "fem"),
    ("std frame", "std"),
)
#: Components a centre-of-mass result can show.
COM_COMPONENTS = ("magnitude", "shift_x", "shift_y", "divergence", "curl", "total")
#: Images an FEM result can show.
FEM_COMPONENTS = ("normalized_variance", "variance", "mean")
#: Analyses whose result is a detector-shaped frame, shown in the detector view.
DETECTOR_ANALYSES = ("std",)


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
    """The explorer's analysis settings."""

    kind: str = "vd"
    com_rotation: float = 0.0
    com_flip_y: bool = False
    com_component: str = "magnitude"
    radial_bins: int = 16
    radial_bin: int = 0
    fem_component: str = "normalized_variance"


def build_analysis(choice: Choice, mask: Optional[Mask], beam: Beam) -> Analysis:
    """The analysis the settings ask for; ``mask`` is the editor's combined mask."""
    kind = choice.kind
    if kind in ("vd", "adf"):
        if mask is None:
            raise NeedsMask("draw a mask on the detector (disk, ring, rectangle, polygon...)")
        return VirtualDetector({"image": mask}, name=kind)
    if kind == "com":
        if not math.isfinite(choice.com_rotation):
            raise ValueError(f"CoM rotation must be a finite angle, got {choice.com_rotation!r}")
        centre, radius = _com_support(mask, beam)
        return CenterOfMass(center=centre, radius=radius, scan_rotation=float(choice.com_rotation), flip_y=bool(choice.com_flip_y))
    if kind == "radial":
        centre = _centre_of(mask) or (round(beam.cy, 2), round(beam.cx, 2))
        return RadialProfile(center=centre, n_bins=int(choice.radial_bins))
    if kind == "fem":
        if mask is None:
            raise NeedsMask("draw the FEM ring on the detector (ADF selects a default annulus)")
        return FEM(ring=mask)
    if kind == "std":
        return StdFrame()
    raise ValueError(f"unknown analysis {kind!r}; choose one of {[k for _, k in ANALYSES]}")


def _centre_of(mask: Optional[Mask]) -> Optional[tuple]:
    if isinstance(mask, (Disk, Ring)):
        return (mask.cy, mask.cx)
    return None


def _com_support(mask: Optional[Mask], beam: Beam) -> tuple:
    """CoM counts the pixels of a drawn disk; with none, the whole frame about the beam."""
    if isinstance(mask, Disk):
        return (mask.cy, mask.cx), mask.radius
    return (round(beam.cy, 2), round(beam.cx, 2)), None


def result_key(choice: Choice, analysis: Analysis) -> str:
    """The key of the results array the view shows for these settings."""
    label = getattr(analysis, "name", None) or analysis.label
    if choice.kind in ("vd", "adf"):
        return f"{label}/image"
    if choice.kind == "com":
        return f"{label}/{choice.com_component}"
    if choice.kind == "radial":
        return f"{label}/profile"
    if choice.kind == "fem":
        return f"{label}/{choice.fem_component}"
    return f"{label}/frame"


def navigation_image(choice: Choice, results, key: str, progress=None) -> np.ndarray:
    """The scan-shaped image to show while ``progress`` (a running job's snapshot, or
    None when final) fills in: positions not computed yet show the job's coarse
    preview where it has one, else NaN (transparent)."""
    values = np.asarray(results[key].data, dtype=np.float32)
    if choice.kind == "radial":
        values = values[..., min(max(0, choice.radial_bin), values.shape[-1] - 1)]
    if progress is not None and not progress.filled.all():
        values = progress.fill_preview(np.where(progress.filled, values, np.nan)).astype(np.float32)
    return values


def analysis_code(analysis: Analysis, key: str, source: str) -> str:
    """Notebook lines that reproduce the result ``key`` with the public API."""
    analysis_class = type(analysis).__name__
    return "\n".join(
        [
            "import stem_explorer as se",
            f"from stem_explorer.analyses import {analysis_class}",
            "from stem_explorer import masks",
            "",
            f"session = se.Session({source})",
            f"results = session.compute({analysis.code()})",
            f"image = results[{key!r}].data",
        ]
    )
