"""Your own analyses: per-frame or per-tile work, or a reduction with a merge.

Subclass :class:`FrameAnalysis` to compute a few numbers per frame (one scan image
each), or :class:`ReductionAnalysis` to fold every frame into a state that partitions
merge (a detector-shaped image, a histogram...). Declare parameters like the built-in
analyses do (:mod:`.params`); the framework reads the frames on the cluster where
they lie, tile by tile in bounded memory, streams partial results, cancels superseded
jobs and, for per-frame analyses, computes the coarse preview first. What you write
gets plain numpy arrays, so its inner loop can be a ``numba.njit`` function::

    @register
    class PixelsAbove(FrameAnalysis):
        threshold = Number(100.0, minimum=0, unit="counts", help="...")

        def process_tile(self, frames, out):
            out[:, 0] = (frames > self.threshold).sum(axis=(1, 2))

The analysis object travels to the workers (pickled with cloudpickle, so a class
defined in a notebook works): keep its state to its parameters.
"""

from __future__ import annotations

import json

import numpy as np

from ..engine import Op, PerFrameOp
from ..errors import AnalysisError
from ..results import ResultArray
from .base import Analysis, nav_result, sig_result


class FrameAnalysis(Analysis):
    """Numbers per frame, one scan image per name in :attr:`outputs`.

    Override :meth:`process_frame` (simple: one frame in, its numbers out) or
    :meth:`process_tile` (fast: a block of frames at once, e.g. with numba).
    """

    #: names of the numbers computed per frame; each is a scan image ``<label>/<name>``
    outputs: tuple = ("value",)
    #: units of the outputs, by name (shown with the results)
    units: dict = {}

    def __init__(self, *args, **kwargs):
        # checked here, not when the class is made: cloudpickle rebuilds a class
        # defined in a notebook on the workers from an empty one, then fills it in
        cls = type(self)
        if cls.process_frame is FrameAnalysis.process_frame and cls.process_tile is FrameAnalysis.process_tile:
            raise TypeError(f"{cls.__name__} must define process_frame(self, frame) or process_tile(self, frames, out)")
        super().__init__(*args, **kwargs)

    def process_frame(self, frame: np.ndarray):
        """The numbers of one frame ``(sig_y, sig_x)``: one per name in :attr:`outputs`
        (a number when there is one output). The frame may be read-only."""
        raise NotImplementedError

    def process_tile(self, frames: np.ndarray, out: np.ndarray) -> None:
        """Write ``out[i, k]``, output ``k`` of ``frames[i]``.

        ``frames`` is ``(n, sig_y, sig_x)`` in the data's dtype (C-contiguous, possibly
        read-only); ``out`` is ``(n, len(outputs))`` float64 zeros. The default calls
        :meth:`process_frame` per frame.
        """
        for i, frame in enumerate(frames):
            value = self.process_frame(frame)
            try:
                out[i] = value
            except (TypeError, ValueError):
                raise AnalysisError(
                    f"{type(self).__name__}.process_frame returned {value!r}; it must return "
                    f"{len(self.outputs)} number(s), one per output {tuple(self.outputs)}"
                ) from None

    def requests(self, dataset):
        return [FrameAnalysisOp(self, dataset.sig_shape)]

    def compute(self, inputs, dataset):
        values = inputs[0]
        return {
            name: nav_result(name, values[:, i], dataset, **({"units": self.units[name]} if name in self.units else {}))
            for i, name in enumerate(self.outputs)
        }


class ReductionAnalysis(Analysis):
    """A state built from every frame: each partition folds its tiles into a fresh
    state (:meth:`new`, :meth:`process_tile`), and states merge (:meth:`merge`) as
    partitions finish; :meth:`results` turns the merged state into named arrays."""

    result_space = "detector"

    def new(self, sig_shape: tuple, dtype: np.dtype):
        """The state before any frame (e.g. ``np.zeros(sig_shape)``)."""
        raise NotImplementedError(f"{type(self).__name__} must define new(self, sig_shape, dtype)")

    def process_tile(self, state, frames: np.ndarray):
        """Fold ``frames`` (``(n, sig_y, sig_x)``, the data's dtype, possibly read-only)
        into ``state``; return the state (it may be updated in place)."""
        raise NotImplementedError(f"{type(self).__name__} must define process_tile(self, state, frames)")

    def merge(self, state, other):
        """Two partitions' states as one; return it (``state`` may be updated in place)."""
        raise NotImplementedError(f"{type(self).__name__} must define merge(self, state, other)")

    def results(self, state, dataset) -> dict:
        """``{name: array}`` from the merged state; the default is ``{"result": state}``.
        Arrays of the detector's or the scan's shape get those axes."""
        return {"result": state}

    def requests(self, dataset):
        return [ReductionAnalysisOp(self, dataset.sig_shape)]

    def compute(self, inputs, dataset):
        state = inputs[0] if inputs[0] is not None else self.new(dataset.sig_shape, dataset.dtype.newbyteorder("="))
        # copies: later merges may update the state in place, and a partial result
        # already delivered must not change
        return {name: _result(name, np.array(value), dataset) for name, value in self.results(state, dataset).items()}


def _result(name: str, value: np.ndarray, dataset) -> ResultArray:
    if value.shape == tuple(dataset.sig_shape):
        return sig_result(name, value, dataset)
    if value.shape == tuple(dataset.nav_shape):
        return nav_result(name, value, dataset)
    return ResultArray(name, value, tuple(f"{name}_{i}" for i in range(value.ndim)))


class _AnalysisOp:
    """What both ops share: the analysis they run, frames shaped as the detector, and
    an identity from the analysis's class and parameters."""

    def __init__(self, analysis: Analysis, sig_shape):
        self.analysis = analysis
        self.sig_shape = tuple(int(n) for n in sig_shape)

    @property
    def key(self):
        cls = type(self.analysis)
        return (type(self).__name__, cls.__module__, cls.__qualname__, json.dumps(self.analysis.params(), sort_keys=True))

    def _frames(self, frames: np.ndarray) -> np.ndarray:
        return frames.reshape((frames.shape[0],) + self.sig_shape)


class FrameAnalysisOp(_AnalysisOp, PerFrameOp):
    """The engine op of a :class:`FrameAnalysis`."""

    def __init__(self, analysis: FrameAnalysis, sig_shape):
        super().__init__(analysis, sig_shape)
        self.width = len(analysis.outputs)

    def compute(self, frames, out):
        self.analysis.process_tile(self._frames(frames), out)


class ReductionAnalysisOp(_AnalysisOp, Op):
    """The engine op of a :class:`ReductionAnalysis`."""

    def start(self, start, stop, n_pixels, dtype):
        return [self.analysis.new(self.sig_shape, dtype)]

    def feed(self, state, start, frames):
        state[0] = self.analysis.process_tile(state[0], self._frames(frames))

    def finish(self, state):
        return state[0]

    def empty(self, n_frames, n_pixels, dtype):
        return None

    def merge(self, acc, partial, start, stop):
        return partial if acc is None else self.analysis.merge(acc, partial)
