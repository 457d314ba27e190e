"""Optional side-by-side column: the same workloads through LiberTEM.

LiberTEM is not a dependency; when ``import libertem`` fails the column reads "not
installed". When it is present (install it yourself, e.g. ``pip install libertem``),
each workload runs on the same file through ``libertem.api.Context`` with its dask
executor and the same number of worker processes, with the same warm-up and
repeats, timed from ``run_udf`` to its return. The masks are the same rasters
stem_explorer uses (``stem_explorer.masks.raster.rasterize``), fed to
``ApplyMasksUDF``; centre of mass is ``CoMUDF``, the frames ``SumUDF`` and
``StdDevUDF``. Written against LiberTEM 0.16's API; not exercised by the test suite.
"""

from __future__ import annotations

import importlib.util
from typing import Callable, Optional

import numpy as np

NOT_INSTALLED = "not installed"


def available() -> bool:
    """Whether ``libertem`` can be imported here."""
    return importlib.util.find_spec("libertem") is not None


def _ring_rasters(sig_shape, cy, cx, n_bins=16) -> list[np.ndarray]:
    """The radial profile's rings: ``edges[i] <= d < edges[i+1]`` up to the far corner."""
    y, x = np.mgrid[: sig_shape[0], : sig_shape[1]]
    d = np.hypot(y - cy, x - cx)
    edges = np.linspace(0.0, d.max(), n_bins + 1)
    edges[-1] = np.nextafter(edges[-1], np.inf)
    return [((d >= a) & (d < b)).astype(np.float32) for a, b in zip(edges[:-1], edges[1:])]


def _udf(key: str, sig_shape):
    """The LiberTEM UDF equivalent to workload ``key``."""
    from libertem.udf.masks import ApplyMasksUDF

    from stem_explorer.masks.raster import rasterize

    from .workloads import annulus_mask, disk_mask, geometry

    cy, cx, _ = geometry(sig_shape)
    if key in ("disk", "annulus"):
        raster = rasterize((disk_mask if key == "disk" else annulus_mask)(sig_shape), sig_shape)
        return ApplyMasksUDF(mask_factories=[lambda: np.asarray(raster, np.float32)])
    if key == "rings16":
        rings = _ring_rasters(sig_shape, cy, cx)
        return ApplyMasksUDF(mask_factories=[(lambda m=m: m) for m in rings])
    if key == "com":
        from libertem.udf.com import CoMUDF

        return CoMUDF.with_params(cy=cy, cx=cx)
    if key == "sum":
        from libertem.udf.sum import SumUDF

        return SumUDF()
    from libertem.udf.stddev import StdDevUDF

    return StdDevUDF()


class LiberTEMColumn:
    """A LiberTEM context with a dask executor, kept for the whole run."""

    def __init__(self, workers: int):
        from libertem.api import Context

        self.ctx = Context.make_with("dask", cpus=workers)
        self._datasets: dict = {}

    def _load(self, data):
        if data.key not in self._datasets:
            if data.format == "raw":
                ds = self.ctx.load("raw", path=str(data.path), nav_shape=data.nav_shape,
                                   sig_shape=data.sig_shape, dtype=data.dtype)
            else:
                ds = self.ctx.load("hdf5", path=str(data.path), ds_path="/data/frames")
            self._datasets[data.key] = ds
        return self._datasets[data.key]

    def timer(self, key: str, data) -> Callable[[], float]:
        """A callable that runs workload ``key`` on ``data`` once and returns seconds."""
        import time

        ds = self._load(data)

        def once() -> float:
            udf = _udf(key, data.sig_shape)
            t0 = time.perf_counter()
            self.ctx.run_udf(dataset=ds, udf=udf)
            return time.perf_counter() - t0

        return once

    def close(self) -> None:
        """Shut the context's executor down."""
        self.ctx.close()


def open_column(workers: int, wanted: bool = True) -> Optional[LiberTEMColumn]:
    """The LiberTEM column, or None when not wanted or not installed."""
    return LiberTEMColumn(workers) if wanted and available() else None
