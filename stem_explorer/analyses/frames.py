"""Detector-shaped results: sum, mean, std and max over frames, picked frames, and the
sum of the frames inside a scan-space region."""

from __future__ import annotations

import numpy as np

from ..engine import FrameMax, FrameMoments, FrameSum, NavMaskedSum, PickFrames
from ..results import ResultArray
from .base import SIG_DIMS, Analysis, sig_axes, sig_result
from .region_params import Positions, ScanRoi
from .registry import register
from .scan_roi import positions_to_frames, region_to_frames


@register
class SumFrame(Analysis):
    """Sum of all frames (float64; exact for integer data)."""

    label = "sum"
    title = "sum frame"
    result_space = "detector"

    def requests(self, dataset):
        return [FrameSum()]

    def compute(self, inputs, dataset):
        return {"frame": sig_result("frame", inputs[0], dataset)}


@register
class MeanFrame(Analysis):
    """Mean of the frames read so far (all frames once the job is done)."""

    label = "mean"
    title = "mean frame"
    result_space = "detector"

    def requests(self, dataset):
        return [FrameMoments()]

    def compute(self, inputs, dataset):
        n, mean, _ = inputs[0]
        values = mean if n else np.full(mean.shape, np.nan)
        return {"frame": sig_result("frame", values, dataset, n_frames=int(n))}


@register
class StdFrame(Analysis):
    """Per-pixel standard deviation over frames (population, ``ddof=0``).

    Tiles and partitions are merged with the pairwise (Chan) update, so the result
    stays accurate for data with a large mean and small spread.
    """

    label = "std"
    title = "std frame"
    result_space = "detector"

    def requests(self, dataset):
        return [FrameMoments()]

    def compute(self, inputs, dataset):
        n, _, m2 = inputs[0]
        values = np.sqrt(m2 / n) if n else np.full(m2.shape, np.nan)
        return {"frame": sig_result("frame", values, dataset, n_frames=int(n))}


@register
class MaxFrame(Analysis):
    """Per-pixel maximum over frames, in the data's dtype."""

    label = "max"
    title = "max frame"
    result_space = "detector"

    def requests(self, dataset):
        return [FrameMax()]

    def compute(self, inputs, dataset):
        values = inputs[0]
        if values is None:
            values = np.zeros(np.prod(dataset.sig_shape), dataset.dtype.newbyteorder("="))
        return {"frame": sig_result("frame", values, dataset)}


@register
class PickFrame(Analysis):
    """The frames at the given scan positions, in native dtype.

    ``positions`` is one position or a list; a position has one index per scan axis.
    The result ``frames`` stacks them in the order given.
    """

    label = "pick"
    title = "picked frames"
    result_space = "detector"

    positions = Positions(cli_aliases=("position",), examples=([[3, 4], [5, 6]],), help="Scan positions to read.")

    def validate(self, dataset):
        positions_to_frames(self.positions, dataset)

    def requests(self, dataset):
        return [PickFrames(positions_to_frames(self.positions, dataset))]

    def compute(self, inputs, dataset):
        indices = positions_to_frames(self.positions, dataset)
        dtype = dataset.dtype.newbyteorder("=")
        empty = np.zeros(np.prod(dataset.sig_shape), dtype)
        frames = np.stack([inputs[0].get(int(i), empty) for i in indices]).reshape((len(indices),) + dataset.sig_shape)
        positions = np.array([np.unravel_index(i, dataset.nav_shape) for i in indices])
        coords, units = sig_axes(dataset)
        coords = dict(coords, position=np.arange(len(indices)))
        attrs = {"positions": positions.tolist(), "read": [int(i) in inputs[0] for i in indices]}
        return {"frames": ResultArray("frames", frames, ("position",) + SIG_DIMS, coords, attrs, units)}


@register
class RoiSum(Analysis):
    """Sum of the frames inside a scan-space region of interest.

    ``scan_roi`` is a boolean array of the scan's shape, or a mask shape from
    :mod:`stem_explorer.masks` drawn in scan coordinates (rows, columns of the scan).
    """

    label = "roi"
    title = "ROI sum"
    result_space = "detector"

    scan_roi = ScanRoi(cli_aliases=("roi-rect",), help="The scan positions whose frames are summed.",
                       examples=({"kind": "rectangle", "y0": 0, "x0": 0, "height": 8, "width": 8},))

    def _indices(self, dataset) -> np.ndarray:
        return region_to_frames(self.scan_roi, dataset, "scan_roi")

    def validate(self, dataset):
        self._indices(dataset)

    def requests(self, dataset):
        return [NavMaskedSum(self._indices(dataset))]

    def compute(self, inputs, dataset):
        total, count = inputs[0]
        return {"frame": sig_result("frame", total, dataset, n_frames=int(count))}
