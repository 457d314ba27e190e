"""Scan regions and positions as flat frame indices: ``Session.run(..., roi=...)``,
:class:`~stem_explorer.analyses.RoiSum`'s region and :class:`~stem_explorer.analyses.PickFrame`'s positions.

A scan ROI is one of

* a boolean array of the scan's shape (True where frames are read);
* a mask shape of :mod:`stem_explorer.masks` drawn in scan coordinates (rows,
  columns of the scan; 2-D scans), clipped to the scan;
* a list of scan positions, each one index per scan axis (a plain integer for a
  1-D scan), without duplicates.
"""

from __future__ import annotations

import numpy as np

from .. import masks as mask_lib
from ..errors import AnalysisError, DataSetError, MaskError


def positions_to_frames(value, dataset, name: str = "positions") -> np.ndarray:
    """Flat frame indices of scan positions, in the order given: one position or a
    list of them, each with one integer per scan axis (a plain integer for 1-D
    scans). Errors name the parameter ``name``."""
    arr = np.asarray(value)
    n_axes = len(dataset.nav_shape)
    if arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise AnalysisError(f"{name} must be integer scan positions like (row, column), got {value!r}")
    arr = arr.reshape(-1, 1) if n_axes == 1 else arr.reshape(-1, arr.shape[-1])
    if arr.shape[1] != n_axes:
        raise AnalysisError(f"each position of {name} needs {n_axes} indices for a scan of shape {dataset.nav_shape}, got {value!r}")
    try:
        return np.array([dataset.flat_index(p) for p in arr], dtype=np.int64)
    except DataSetError as exc:
        raise AnalysisError(f"{name}: {exc}; positions are (row, column) indices into the scan") from None


def region_to_frames(value, dataset, name: str = "scan_roi") -> np.ndarray:
    """Sorted flat frame indices of a scan region: a boolean array of the scan's shape
    or a mask shape in scan coordinates (2-D scans). Errors name ``name``."""
    if isinstance(value, dict) and "kind" in value:
        value = mask_lib.from_dict(value)
    if isinstance(value, mask_lib.Mask):
        if len(dataset.nav_shape) != 2:
            raise AnalysisError(f"a shape as {name} needs a 2-D scan; pass a boolean array for a scan of shape {dataset.nav_shape}")
        try:
            value = value.rasterize(dataset.nav_shape) > 0
        except MaskError as exc:
            if "outside" not in str(exc):
                raise
            rows, cols = dataset.nav_shape
            raise AnalysisError(f"{name}: the shape {value!r} lies outside the scan of shape {dataset.nav_shape}; "
                                f"draw it on the scan (rows 0..{rows - 1}, columns 0..{cols - 1})") from None
    try:
        roi = np.asarray(value)
    except ValueError:  # ragged rows
        raise AnalysisError(f"{name} must be a boolean array of the scan's shape {dataset.nav_shape}, got ragged rows") from None
    if roi.shape != dataset.nav_shape:
        raise AnalysisError(f"{name} has shape {roi.shape} but the scan has shape {dataset.nav_shape}; pass a boolean array of the scan's shape")
    if roi.dtype != bool:
        raise AnalysisError(f"{name} must be a boolean array, got dtype {roi.dtype}; use roi > 0")
    indices = np.flatnonzero(roi.ravel())
    if indices.size == 0:
        raise AnalysisError(f"{name} selects no scan position (a shape outside the scan, or an all-False array); select at least one")
    return indices.astype(np.int64)


def roi_to_frames(value, dataset, name: str = "roi") -> np.ndarray:
    """Sorted flat frame indices of any scan ROI (see the module notes); a position
    list with a position twice, or anything that selects nothing, is an
    :class:`~stem_explorer.errors.AnalysisError` naming ``name``."""
    if isinstance(value, (mask_lib.Mask, dict)):
        return region_to_frames(value, dataset, name)
    try:
        arr = np.asarray(value)
    except ValueError:  # ragged
        raise AnalysisError(f"{name} must be a boolean array of the scan's shape, a mask shape or a list of positions; got ragged rows") from None
    if arr.dtype == bool:
        return region_to_frames(arr, dataset, name)
    if arr.size == 0:
        raise AnalysisError(f"{name} is empty: give at least one scan position")
    frames = positions_to_frames(arr, dataset, name)
    unique, counts = np.unique(frames, return_counts=True)
    if unique.size != frames.size:
        twice = np.unravel_index(int(unique[counts > 1][0]), dataset.nav_shape)
        raise AnalysisError(f"{name} lists scan position {tuple(int(i) for i in twice)} more than once; give each position once")
    return unique
