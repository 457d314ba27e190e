"""The Analysis protocol: what a user asks for, expressed as engine work.

An analysis says what it needs from one pass over the data (:meth:`Analysis.requests`:
mask columns for the shared GEMM, or partition-local engine ops) and how to turn those
inputs into named result arrays (:meth:`Analysis.compute`). ``compute`` runs on every
partial snapshot, so it must accept inputs with NaN rows for frames not yet read.
"""

from __future__ import annotations

import abc
import math

import numpy as np
import scipy.sparse

from ..errors import AnalysisError
from ..io.base import DataSet
from ..results import ResultArray
from .params import Param
from .schema import analysis_schema, validate_description


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
    """Base class of every analysis, built-in or user-defined.

    Parameters are declared once, as class attributes (:mod:`.params`)::

        class CenterOfMass(Analysis):
            label = "com"
            radius = Number(None, minimum=0, exclusive_minimum=True, unit="px", help="...")

    and that declaration gives the constructor (positional in declaration order, or by
    keyword), the checks run whenever a parameter is set, :meth:`to_dict` /
    :meth:`from_dict`, the JSON Schema (:meth:`schema`), the command-line options and
    the Explorer's controls. Two analyses are equal when their descriptions are.
    Register a subclass with :func:`stem_explorer.analyses.register` to make it
    available by name (``from_dict``, the CLI, the Explorer).
    """

    #: short name: results are keyed ``"<label>/<name>"``; the CLI and the Explorer's
    #: selector also accept it for the analysis (default: the class name in lower case)
    label = "analysis"
    #: what the analysis is called in listings and the Explorer's selector
    title = ""
    #: "scan" when its results are images over the scan (the Explorer's navigation
    #: view), "detector" when they are detector-shaped (the detector view)
    result_space = "scan"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        declared: dict = {}
        for klass in reversed(cls.__mro__):
            declared.update((k, v) for k, v in vars(klass).items() if isinstance(v, Param))
        if "label" not in vars(cls):
            cls.label = cls.__name__.lower()
        if "analysis" in declared:
            raise TypeError(f"{cls.__name__}: 'analysis' names the analysis in to_dict(); call the parameter otherwise")
        cls._params = tuple(declared.values())

    def __init__(self, *args, **kwargs):
        params = self.parameters()
        names = [p.name for p in params]
        cls = type(self).__name__
        if len(args) > len(params):
            raise AnalysisError(f"{cls} takes at most {len(params)} positional parameters ({', '.join(names) or 'none'}), got {len(args)}")
        given = dict(zip(names, args))
        for key, value in kwargs.items():
            if key not in names:
                raise AnalysisError(f"{cls} has no parameter {key!r}; its parameters: {', '.join(names) or 'none'}")
            if key in given:
                raise AnalysisError(f"{cls} got {key!r} both by position and by keyword")
            given[key] = value
        for param in params:
            if param.name in given:
                setattr(self, param.name, given[param.name])
            elif param.required:
                raise AnalysisError(f"{cls} needs {param.name}: {param.describe()}")
            else:
                setattr(self, param.name, param.default)

    @classmethod
    def example(cls) -> "Analysis":
        """An instance built from the declared examples of the required parameters
        (the defaults for the others): for documentation, forms and generic tests."""
        missing = [p.name for p in cls.parameters() if p.required and not p.examples]
        if missing:
            raise AnalysisError(f"{cls.__name__} declares no example of {', '.join(missing)}; add examples=(...) to it")
        return cls(**{p.name: p.examples[0] for p in cls.parameters() if p.required})

    @classmethod
    def parameters(cls) -> tuple:
        """The declared parameters (:class:`~.params.Param`), in declaration order."""
        return cls._params

    def validate(self, dataset: DataSet) -> None:
        """Raise :class:`AnalysisError` (or MaskError) if unusable on ``dataset``.

        Checks of a parameter on its own (type, range) run when it is set; this is
        for what depends on the data set (a point inside the detector, say).
        """

    @abc.abstractmethod
    def requests(self, dataset: DataSet) -> list:
        """What to compute in the pass: :class:`MaskColumns` and engine ops."""

    @abc.abstractmethod
    def compute(self, inputs: list, dataset: DataSet) -> dict:
        """``{name: ResultArray}`` from the merged inputs, one per request, in order.

        A :class:`MaskColumns` input is ``(n_frames, k)`` float64 with NaN rows for
        frames not computed yet; an op's input is its accumulator.
        """

    def requests_with_descan(self, dataset: DataSet, shifts: np.ndarray) -> list:
        """:meth:`requests` for a run with a descan correction (``shifts``: ``(n_frames,
        2)`` detector pixels per scan position, see :class:`~.descan.Descan`).

        The engine moves every :class:`MaskColumns` request with the shift whatever
        this returns; an analysis whose other requests depend on where the pattern
        lies (the centre of mass's support) overrides it.
        """
        return self.requests(dataset)

    def compute_with_descan(self, inputs: list, dataset: DataSet, shifts: np.ndarray) -> dict:
        """:meth:`compute` for a run with a descan correction (``shifts`` as in
        :meth:`requests_with_descan`); an analysis whose results are positions on the
        detector (the centre of mass) overrides it to subtract the shift."""
        return self.compute(inputs, dataset)

    def params(self) -> dict:
        """Parameters as plain JSON (masks as their descriptions)."""
        return {p.name: p.to_json(getattr(self, p.name)) for p in self.parameters()}

    def to_dict(self) -> dict:
        """``{"analysis": class name, **params}``: provenance and reproduction;
        :func:`stem_explorer.analyses.from_dict` is the inverse."""
        return {"analysis": type(self).__name__, **self.params()}

    @classmethod
    def from_dict(cls, description: dict, *, where: str = "") -> "Analysis":
        """The analysis a :meth:`to_dict` description stands for, validated against
        :meth:`schema`: AnalysisError (MaskError for a mask) starting with ``where``
        and the JSON pointer of the problem."""
        validate_description(cls, description, where)
        return cls(**{k: v for k, v in description.items() if k != "analysis"})

    @classmethod
    def schema(cls) -> dict:
        """JSON Schema (draft 2020-12) of this analysis's :meth:`to_dict` descriptions."""
        return analysis_schema(cls)

    def code(self) -> str:
        """A Python expression that rebuilds this analysis with the public API."""
        args = ", ".join(f"{p.name}={p.code(getattr(self, p.name))}" for p in self.parameters())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # parameters can change

    def __repr__(self) -> str:
        args = ", ".join(f"{p.name}={getattr(self, p.name)!r}" for p in self.parameters())
        return f"{type(self).__name__}({args})"


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


def detector_center(dataset: DataSet) -> tuple[float, float]:
    """The geometric centre of the detector in pixel coordinates."""
    sy, sx = dataset.sig_shape
    return (sy - 1) / 2, (sx - 1) / 2


def pixel_grid(dataset: DataSet) -> tuple[np.ndarray, np.ndarray]:
    """Flattened (y, x) coordinates of every detector pixel, C order."""
    sy, sx = dataset.sig_shape
    y, x = np.indices((sy, sx), dtype=np.float64)
    return y.ravel(), x.ravel()
