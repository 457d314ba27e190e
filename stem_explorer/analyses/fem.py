"""Fluctuation electron microscopy (FEM): speckle variance inside a ring."""

from __future__ import annotations

import numpy as np

from ..engine import MaskedMoments
from ..errors import AnalysisError
from .base import Analysis, nav_result
from .region_params import MaskParam
from .registry import register


@register
class FEM(Analysis):
    """Per scan position, mean and variance of the pixels inside ``ring``.

    ``normalized_variance`` is ``variance / mean**2`` per position, the FEM signal
    whose average over positions, as a function of the ring's radius, is V(k).
    """

    label = "fem"
    title = "FEM"

    ring = MaskParam(help="The detector region whose speckle is measured (an annulus).",
                     examples=({"kind": "ring", "cy": 64, "cx": 64, "r_inner": 20, "r_outer": 24},))

    def _pixels(self, dataset) -> np.ndarray:
        raster = self.ring.rasterize(dataset.sig_shape)
        pixels = np.flatnonzero(raster.ravel() > 0)
        if pixels.size == 0:
            raise AnalysisError(f"the FEM ring {self.ring!r} covers no detector pixel")
        return pixels

    def validate(self, dataset):
        self._pixels(dataset)

    def requests(self, dataset):
        return [MaskedMoments(self._pixels(dataset))]

    def compute(self, inputs, dataset):
        mean, variance = inputs[0].T
        with np.errstate(invalid="ignore", divide="ignore"):
            normalized = np.where(mean != 0, variance / mean**2, np.nan)
        return {
            "mean": nav_result("mean", mean, dataset),
            "variance": nav_result("variance", variance, dataset),
            "normalized_variance": nav_result("normalized_variance", normalized, dataset, v_k=float(np.nanmean(normalized)) if np.isfinite(normalized).any() else None),
        }
