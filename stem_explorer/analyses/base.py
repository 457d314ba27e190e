"""The Analysis protocol: what a user asks for, expressed as engine work.

An analysis says what it needs from one pass over the data (:meth:`Analysis.requests`:
mask columns for the shared GEMM, or partition-local engine ops) and how to turn those
inputs into named result arrays (:meth:`Analysis.compute`). ``compute`` runs on every
partial snapshot, so it must accept inputs with NaN rows for frames not yet read.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any

import numpy as np
import scipy.sparse

from ..errors import AnalysisError
from ..io.base import DataSet
from ..results import ResultArray


class MaskColumns:
    """A request for ``frames @ matrix`` with ``matrix`` of shape ``(pixels, k)``.

    All mask columns of one run are stacked into a single matrix, so every mask
    analysis of the run shares one pass and one kernel call per tile.
    """

    def __init__(self, matrix):
        self.matrix = scipy.sparse.csr_matrix(matrix, dtype=np.float32)

    @property
    def width(self) -> int:
        return self.matrix.shape[1]


class Analysis(abc.ABC):
    """Base class: subclasses are dataclasses whose fields are the parameters."""

    #: default label; results are keyed ``"<label>/<name>"``
    label = "analysis"

    def validate(self, dataset: DataSet) -> None:
        """Raise :class:`AnalysisError` (or MaskError) if unusable on ``dataset``."""

    @abc.abstractmethod
    def requests(self, dataset: DataSet) -> list:
        """What to compute in the pass: :class:`MaskColumns` and engine ops."""

    @abc.abstractmethod
    def compute(self, inputs: list, dataset: DataSet) -> dict:
        """``{name: ResultArray}`` from the merged inputs, one per request, in order.

        A :class:`MaskColumns` input is ``(n_frames, k)`` float64 with NaN rows for
        frames not computed yet; an op's input is its accumulator.
        """

    def params(self) -> dict:
        """Parameters as plain JSON (masks as their descriptions)."""
        return {f.name: _param_json(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_dict(self) -> dict:
        """``{"analysis": class name, **params}``: provenance and reproduction."""
        return {"analysis": type(self).__name__, **self.params()}

    def code(self) -> str:
        """A Python expression that rebuilds this analysis with the public API."""
        args = ", ".join(f"{f.name}={_param_code(getattr(self, f.name))}" for f in dataclasses.fields(self))
        return f"{type(self).__name__}({args})"


def _param_json(value: Any):
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, dict):
        return {str(k): _param_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_param_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _param_code(value: Any) -> str:
    if hasattr(value, "to_dict") and not isinstance(value, np.ndarray):
        return f"masks.from_dict({value.to_dict()!r})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_param_code(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(_param_code(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    if isinstance(value, np.ndarray):
        return f"np.array({value.tolist()!r})"
    return repr(value)


# -- helpers shared by the analyses ------------------------------------------------------
def nav_dims(dataset: DataSet) -> tuple[str, ...]:
    """Dimension names of the scan: ('scan_y', 'scan_x') or ('scan',)."""
    return ("scan_y", "scan_x") if len(dataset.nav_shape) == 2 else ("scan",)


SIG_DIMS = ("det_y", "det_x")


def nav_axes(dataset: DataSet) -> tuple[dict, dict]:
    """``(coords, units)`` of the scan dimensions: ``index * step`` in the scan step's
    unit where the data set's calibration has one (2-D scans), else the position
    index in ``"px"``."""
    axes = dataset.calibration.scan_axes(dataset.nav_shape)
    return _split(nav_dims(dataset), axes)


def sig_axes(dataset: DataSet) -> tuple[dict, dict]:
    """``(coords, units)`` of the detector dimensions: distances from the detector's
    centre in the pixel size's unit where the calibration has one, else the pixel
    index in ``"px"``."""
    return _split(SIG_DIMS, dataset.calibration.detector_axes(dataset.sig_shape))


def _split(dims, axes) -> tuple[dict, dict]:
    return {d: values for d, (values, _u) in zip(dims, axes)}, {d: unit for d, (_v, unit) in zip(dims, axes)}


def nav_result(name: str, values: np.ndarray, dataset: DataSet, **attrs) -> ResultArray:
    """A scan-shaped result from one value per frame, with calibrated coordinates."""
    coords, units = nav_axes(dataset)
    return ResultArray(name, np.asarray(values).reshape(dataset.nav_shape), nav_dims(dataset), coords, attrs, units)


def sig_result(name: str, values: np.ndarray, dataset: DataSet, **attrs) -> ResultArray:
    """A detector-shaped result from one value per pixel, with calibrated coordinates."""
    coords, units = sig_axes(dataset)
    return ResultArray(name, np.asarray(values).reshape(dataset.sig_shape), SIG_DIMS, coords, attrs, units)


def check_point(name: str, point, dataset: DataSet) -> tuple[float, float]:
    """A finite (y, x) detector coordinate inside the detector, or AnalysisError."""
    try:
        y, x = (float(v) for v in point)
    except (TypeError, ValueError):
        raise AnalysisError(f"{name} must be a (y, x) pair of numbers, got {point!r}") from None
    sy, sx = dataset.sig_shape
    if not (math.isfinite(y) and math.isfinite(x)):
        raise AnalysisError(f"{name} must be finite, got {(y, x)}; pass detector pixel coordinates (row, column)")
    if not (-0.5 <= y <= sy - 0.5 and -0.5 <= x <= sx - 0.5):
        raise AnalysisError(f"{name} {(y, x)} lies outside the detector of shape {dataset.sig_shape}")
    return y, x


def check_radius(name: str, radius, *, allow_none: bool = True):
    """A positive finite radius (or None when allowed), or AnalysisError."""
    if radius is None and allow_none:
        return None
    try:
        r = float(radius)
    except (TypeError, ValueError):
        raise AnalysisError(f"{name} must be a number, got {radius!r}") from None
    if not math.isfinite(r) or r <= 0:
        raise AnalysisError(f"{name} must be a positive finite number of pixels, got {radius!r}")
    return r


def detector_center(dataset: DataSet) -> tuple[float, float]:
    """The geometric centre of the detector in pixel coordinates."""
    sy, sx = dataset.sig_shape
    return (sy - 1) / 2, (sx - 1) / 2


def pixel_grid(dataset: DataSet) -> tuple[np.ndarray, np.ndarray]:
    """Flattened (y, x) coordinates of every detector pixel, C order."""
    sy, sx = dataset.sig_shape
    y, x = np.indices((sy, sx), dtype=np.float64)
    return y.ravel(), x.ravel()
