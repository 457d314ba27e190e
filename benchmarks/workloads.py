"""The workloads of issue 4's target table and their targets.

Mask geometry follows the sample's known answers (``sample_truth``): the bright-field
disk is 1.2 x the central beam's radius (room for the beam shift), the annular dark
field runs from 1.5 x that radius to the detector edge, the radial profile has 16
equal rings from the centre to the farthest detector corner, and the centre of mass
uses every pixel of the frame (no radius), as LiberTEM's default does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

#: Relative target of the chunked HDF5 disk: this fraction of the raw uint16 figure.
HDF5_FRACTION = 0.7


@dataclass(frozen=True)
class Workload:
    """One row of the benchmark: analyses on one data set, with the issue's target."""

    key: str  # short id: "disk", "annulus", "rings16", "com", "sum", "std"
    name: str  # as in the table
    data: str  # key of the BenchData it reads
    build: Callable  # (sig_shape) -> list of analyses
    target_gbps: Optional[float]  # absolute target, or None when relative
    relative_to: Optional[str] = None  # "disk/raw-uint16": target is HDF5_FRACTION of its GB/s

    @property
    def id(self) -> str:
        """Unique name of the row, e.g. ``disk/raw-uint16``."""
        return f"{self.key}/{self.data}"


def geometry(sig_shape) -> tuple[float, float, float]:
    """``(cy, cx, r)``: the sample's pattern centre and central-disk radius."""
    from stem_explorer.sample import sample_truth

    truth = sample_truth((1, 1), tuple(sig_shape))
    cy, cx = truth.centre
    return float(cy), float(cx), float(truth.central_radius)


def disk_mask(sig_shape):
    """The virtual bright-field disk."""
    from stem_explorer.masks import Disk

    cy, cx, r = geometry(sig_shape)
    return Disk(cy, cx, 1.2 * r)


def annulus_mask(sig_shape):
    """The annular dark-field ring, out to the detector edge."""
    from stem_explorer.masks import Ring

    cy, cx, r = geometry(sig_shape)
    return Ring(cy, cx, 1.5 * r, min(sig_shape) / 2 - 1)


def _disk(sig_shape):
    import stem_explorer as se

    return [se.VirtualDetector({"bf": disk_mask(sig_shape)})]


def _annulus(sig_shape):
    import stem_explorer as se

    return [se.VirtualDetector({"adf": annulus_mask(sig_shape)})]


def _rings(sig_shape):
    import stem_explorer as se

    cy, cx, _ = geometry(sig_shape)
    return [se.RadialProfile(center=(cy, cx), n_bins=16)]


def _com(sig_shape):
    import stem_explorer as se

    cy, cx, _ = geometry(sig_shape)
    return [se.CenterOfMass(center=(cy, cx))]


def _sum(sig_shape):
    import stem_explorer as se

    return [se.SumFrame()]


def _std(sig_shape):
    import stem_explorer as se

    return [se.StdFrame()]


#: ``(key, name in the issue's table, builder, uint16 target, float32 target)``.
_KINDS = [
    ("disk", "one disk (virtual bright field)", _disk, 10.0, 20.0),
    ("annulus", "one annulus (ADF)", _annulus, 8.0, 14.0),
    ("rings16", "16 rings (radial profile)", _rings, 4.0, 8.0),
    ("com", "centre of mass", _com, 7.0, 10.0),
    ("sum", "sum frame", _sum, 7.0, 10.0),
    ("std", "std frame", _std, 7.0, 10.0),
]


def all_workloads() -> list[Workload]:
    """Every workload in run order: six on raw uint16, six on raw float32, then the
    chunked HDF5 disk (whose target is relative to the raw uint16 disk)."""
    rows = []
    for data, column in (("raw-uint16", 3), ("raw-float32", 4)):
        rows += [Workload(k[0], k[1], data, k[2], k[column]) for k in _KINDS]
    rows.append(Workload("disk", _KINDS[0][1], "hdf5-uint16", _disk, None, relative_to="disk/raw-uint16"))
    return rows
