"""Synthetic 4D-STEM crystal data sets whose answers are known exactly.

:func:`make_sample` writes a data set (HDF5 or the raw partition format) that looks like
a thin crystal scanned by a slightly mis-aligned beam; :func:`sample_truth` returns the
answers an analysis should find in it (:class:`SampleTruth`). Both take the same
physics parameters (:class:`SampleParams`) and are deterministic: the same seed, shapes
and parameters give the same bytes (for a given numpy version).

The physics, kept simple on purpose
-----------------------------------
Lengths are detector pixels; ``m = min(sig_shape)``; ``c = ((sy - 1) / 2, (sx - 1) / 2)``
is the detector centre, about which the pixel grid is point-symmetric.

*Pattern.* Every frame is a *template* ``T`` drawn centred on ``c`` and then moved as a
whole by the beam shift of its scan position. The template has three parts, each
normalised to unit sum:

* the **central disk** (unscattered beam) of radius ``central_radius`` (``m / 10``);
* ``bragg_count`` (6) **Bragg disks** of radius ``bragg_radius`` (``0.6 *
  central_radius``) at distance ``bragg_distance`` (``m / 4``) from the centre, at angles
  ``bragg_rotation + 360 * k / bragg_count`` degrees measured from the +x axis towards
  +y. The count is even and the set is point-symmetric, so it does not move the centre
  of mass (CoM);
* a **diffuse ring** ``sin(pi * (d - diffuse_inner) / (diffuse_outer -
  diffuse_inner))**2`` for ``diffuse_inner < d < diffuse_outer`` (``1.5 *
  central_radius`` to ``0.4 * m``), zero elsewhere.

Disks are anti-aliased by pixel coverage ``clip(r + 0.5 - d, 0, 1)`` (``d``: distance of
the pixel centre from the disk centre). The template is
``dose * (f_central * disk + f_bragg * bragg + f_diffuse * ring)`` with the fractions
``thin_fractions`` (0.75, 0.15, 0.10) outside the thick region and ``thick_fractions``
(0.45, 0.25, 0.30) inside it: there the central disk is dimmer and the scattered
intensity brighter, so a virtual bright field is darker and an annular dark field
brighter. Both default fraction sets sum to one, so ``dose`` is the mean number of
counts per frame.

*Thick region.* Scan positions with ``((y + 0.5) / ny - thick_centre[0])**2 + ((x +
0.5) / nx - thick_centre[1])**2 < thick_radius**2``: an ellipse filling about 20 % of
a 2-D scan (``thick_centre = (0.55, 0.4)``, ``thick_radius = 0.25``).

*Beam shift.* With ``u = (y + 0.5) / ny - 0.5`` and ``v = (x + 0.5) / nx - 0.5`` (both
in ``(-0.5, 0.5)``; a 1-D scan is a single row, ``ny = 1``)::

    shift_y = A * sin(2 * pi * v) + D * u
    shift_x = A * cos(2 * pi * u) + D * v

``A = shift_amplitude`` and ``D = shift_gradient`` (a linear descan error), both ``min(1,
m / 64)`` px, so the shift reaches 1.5 px on a 64 px or larger detector. Its divergence
(``D / ny + D / nx`` per scan step) and its curl are both non-zero.

*Sub-pixel shifts.* The template is moved by linear interpolation: ``s = i + f`` with
integer ``i`` and ``0 <= f < 1`` gives ``(1 - f) * T[n - i] + f * T[n - i - 1]``, along
y and x. Interpolation keeps the total and moves the first moment by exactly ``s``, so
the CoM of every noise-free frame is ``c + shift`` to rounding error (~1e-12 px), as
long as nothing leaves the detector: the parameters are checked for that, with the
largest shift the formula allows. (The price: a frame shifted by half a pixel is a
little blurrier than one shifted by a whole pixel, so disk edges vary slightly over the
scan.)

*Noise.* Counts are Poisson with the noise-free frame as mean, drawn from
``numpy.random.default_rng(seed)`` block by block in scan order; integer dtypes are
clipped to their range (only reached at very high doses), float dtypes store the counts
as floats.
"""

from __future__ import annotations

import dataclasses
import json
import math
import operator
import os
import pathlib
import shutil
import uuid
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

import numpy as np

from .errors import DataSetError, DataSetNotFoundError, FormatError
from .io.write_errors import write_error

__all__ = [
    "DEFAULT_DOSE",
    "DiskSpaceError",
    "FORMATS",
    "HDF5_DATASET",
    "SAMPLE_ATTR",
    "SampleExistsError",
    "SampleParams",
    "SampleTruth",
    "check_free_space",
    "make_sample",
    "sample_truth",
]

#: Mean counts per frame of the default sample.
DEFAULT_DOSE = 2000.0
#: Output formats of :func:`make_sample`.
FORMATS = ("hdf5", "raw")
#: Where :func:`make_sample` puts the frames in an HDF5 file.
HDF5_DATASET = "/data/frames"
#: Name of the HDF5 attribute (and raw metadata key) holding the sample's JSON record.
SAMPLE_ATTR = "stem_explorer_sample"

_MIN_SIG = 16
# noise-free float64 elements per generated block: bounds memory (~32 MiB a buffer)
_BLOCK_ELEMENTS = 2**22


class SampleExistsError(DataSetError, FileExistsError):
    """The output path of :func:`make_sample` exists and ``overwrite`` is False."""


class DiskSpaceError(DataSetError, OSError):
    """The file system of :func:`make_sample`'s output has too little free space."""


# room left beside a sample for HDF5's own structures and the rest of the system
_SPACE_HEADROOM = 64 * 2**20


def check_free_space(path, nav_shape, sig_shape, dtype="uint16") -> int:
    """Refuse, before anything is written, a sample that does not fit its file system.

    Returns the bytes the sample's frames take. Raises :class:`DiskSpaceError` when
    the free space of the file system holding ``path`` (or its nearest existing
    folder) is less than that plus 64 MiB; the message names the largest square
    ``nav_shape`` that fits.
    """
    nav, sig, dt = _check_nav_shape(nav_shape), _check_sig_shape(sig_shape), _check_dtype(dtype)
    frame_bytes = sig[0] * sig[1] * dt.itemsize
    needed = math.prod(nav) * frame_bytes
    folder = pathlib.Path(path).absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if needed + _SPACE_HEADROOM <= free:
        return needed
    side = math.isqrt(max(0, free - _SPACE_HEADROOM) // frame_bytes)
    fits = (
        f"a scan of {side}x{side} fits (nav_shape=({side}, {side}); on the command line "
        f"--nav-shape {side} {side})" if side else "not even one frame fits"
    )
    raise DiskSpaceError(
        f"the sample {str(path)!r} needs {_gib(needed)} but {str(folder)!r} has "
        f"{_gib(free)} free; {fits}: pass a smaller nav_shape, free some space or "
        f"write it elsewhere"
    )


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


# --------------------------------------------------------------------------------------
# parameters
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleParams:
    """Physics of a synthetic sample; see the module docstring for the model.

    Build it with :meth:`for_detector`, which fills in defaults scaled to the detector.
    Lengths are in detector pixels, ``thick_centre`` and ``thick_radius`` in fractions
    of the scan, ``bragg_rotation`` in degrees, ``dose`` in counts per frame.
    """

    central_radius: float
    bragg_count: int
    bragg_distance: float
    bragg_radius: float
    bragg_rotation: float
    diffuse_inner: float
    diffuse_outer: float
    shift_amplitude: float
    shift_gradient: float
    thin_fractions: tuple[float, float, float]
    thick_fractions: tuple[float, float, float]
    thick_centre: tuple[float, float]
    thick_radius: float
    dose: float

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The parameter names, as accepted by :func:`make_sample` and friends."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def for_detector(cls, sig_shape: Sequence[int], **overrides) -> "SampleParams":
        """Default parameters for a detector of ``sig_shape``, with ``overrides``.

        Unknown names raise :class:`TypeError`; bad values or a pattern that does not
        fit the detector raise :class:`~stem_explorer.errors.DataSetError`.
        """
        sig_shape = _check_sig_shape(sig_shape)
        unknown = sorted(set(overrides) - set(cls.names()))
        if unknown:
            raise TypeError(
                f"unknown sample parameter(s) {', '.join(unknown)}; the parameters are "
                f"{', '.join(cls.names())}"
            )
        m = min(sig_shape)
        shift_scale = min(1.0, m / 64)
        central = overrides.get("central_radius")
        central = m / 10 if central is None else central
        defaults = dict(
            central_radius=central,
            bragg_count=6,
            bragg_distance=m / 4,
            bragg_radius=0.6 * _as_float("central_radius", central),
            bragg_rotation=0.0,
            diffuse_inner=1.5 * _as_float("central_radius", central),
            diffuse_outer=0.4 * m,
            shift_amplitude=shift_scale,
            shift_gradient=shift_scale,
            thin_fractions=(0.75, 0.15, 0.10),
            thick_fractions=(0.45, 0.25, 0.30),
            thick_centre=(0.55, 0.4),
            thick_radius=0.25,
            dose=DEFAULT_DOSE,
        )
        defaults.update({k: v for k, v in overrides.items() if v is not None})
        params = cls(**defaults)._validated()
        params.check_fits(sig_shape)
        return params

    def _validated(self) -> "SampleParams":
        """A copy with values converted to plain floats/ints, or a DataSetError."""
        v = {}
        for name in ("central_radius", "bragg_radius", "bragg_distance"):
            v[name] = _as_float(name, getattr(self, name), positive=True)
        for name in ("diffuse_inner", "diffuse_outer", "thick_radius"):
            v[name] = _as_float(name, getattr(self, name), minimum=0.0)
        for name in ("shift_amplitude", "shift_gradient"):
            v[name] = _as_float(name, getattr(self, name), minimum=0.0)
        v["bragg_rotation"] = _as_float("bragg_rotation", self.bragg_rotation)
        v["dose"] = _as_float("dose", self.dose, positive=True)
        try:
            count = operator.index(self.bragg_count)
        except TypeError:
            count = None
        if count is None or isinstance(self.bragg_count, bool) or count < 0 or count % 2:
            raise DataSetError(
                f"bragg_count must be an even integer >= 0 (the Bragg disks come in "
                f"pairs opposite each other so they do not move the centre of mass), "
                f"got {self.bragg_count!r}; pass e.g. bragg_count=6"
            )
        v["bragg_count"] = int(count)
        if v["diffuse_outer"] <= v["diffuse_inner"]:
            raise DataSetError(
                f"diffuse_outer ({v['diffuse_outer']}) must be larger than diffuse_inner "
                f"({v['diffuse_inner']}); pass a larger diffuse_outer"
            )
        for name in ("thin_fractions", "thick_fractions"):
            fr = _as_floats(name, getattr(self, name), 3, minimum=0.0)
            if sum(fr) <= 0:
                raise DataSetError(
                    f"{name} (central, bragg, diffuse) must not all be zero, got {fr}"
                )
            v[name] = fr
        v["thick_centre"] = _as_floats("thick_centre", self.thick_centre, 2)
        return dataclasses.replace(self, **v)

    def max_shift(self) -> float:
        """Largest beam shift along either detector axis, in pixels."""
        return self.shift_amplitude + self.shift_gradient / 2

    def check_fits(self, sig_shape: Sequence[int]) -> None:
        """Raise DataSetError unless every shifted pattern stays inside the detector."""
        template = _Template(self, tuple(sig_shape))
        template.check_fits()

    def to_json(self) -> dict:
        """The parameters as plain JSON types."""
        items = dataclasses.asdict(self).items()
        return {k: list(v) if isinstance(v, tuple) else v for k, v in items}


def _as_float(name, value, *, positive=False, minimum=None) -> float:
    try:
        if isinstance(value, (bool, str, bytes)):
            raise TypeError
        out = float(value)
    except (TypeError, ValueError):
        raise DataSetError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(out):
        raise DataSetError(f"{name} must be finite, got {value!r}; pass a finite number")
    if positive and out <= 0:
        raise DataSetError(f"{name} must be > 0, got {value!r}")
    if minimum is not None and out < minimum:
        raise DataSetError(f"{name} must be >= {minimum}, got {value!r}")
    return out


def _as_floats(name, value, n, **kw) -> tuple:
    try:
        items = tuple(value)
    except TypeError:
        items = ()
    if len(items) != n:
        raise DataSetError(f"{name} must be a sequence of {n} numbers, got {value!r}")
    return tuple(_as_float(name, x, **kw) for x in items)


def _as_shape(name, value, ndims, minimum) -> tuple[int, ...]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value,)
    try:
        shape = tuple(value)
        if any(isinstance(n, bool) for n in shape):
            raise TypeError
        shape = tuple(operator.index(n) for n in shape)
    except TypeError:
        shape = None
    if shape is None or len(shape) not in ndims or any(n < minimum for n in shape):
        dims = " or ".join(str(d) for d in ndims)
        raise DataSetError(
            f"{name} must be {dims} integers >= {minimum}, got {value!r}; "
            f"pass e.g. {name}=(256, 256)"
        )
    return shape


def _check_nav_shape(nav_shape) -> tuple[int, ...]:
    return _as_shape("nav_shape", nav_shape, (1, 2), 1)


def _check_sig_shape(sig_shape) -> tuple[int, int]:
    return _as_shape("sig_shape", sig_shape, (2,), _MIN_SIG)


def _check_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.kind not in "uif" or dt.fields is not None:
        raise DataSetError(
            f"dtype {dtype!r} is not a numeric integer or float type numpy knows; pass "
            f"e.g. 'uint16', 'uint8', '>u2', 'int32' or 'float32'"
        )
    return dt


# --------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------


class _Template:
    """The unshifted thin/thick patterns and what is needed to shift them."""

    def __init__(self, params: SampleParams, sig_shape: tuple[int, int]):
        self.params = params
        self.sig_shape = sig_shape
        sy, sx = sig_shape
        self.centre = ((sy - 1) / 2, (sx - 1) / 2)
        dy = (np.arange(sy) - self.centre[0])[:, None]
        dx = (np.arange(sx) - self.centre[1])[None, :]
        self.bragg_positions = _bragg_positions(params)

        central = _disk(dy, dx, (0.0, 0.0), params.central_radius)
        bragg = np.zeros(sig_shape)
        for pos in self.bragg_positions:
            bragg += _disk(dy, dx, pos, params.bragg_radius)
        d = np.hypot(dy, dx)
        inner, outer = params.diffuse_inner, params.diffuse_outer
        inside = (d > inner) & (d < outer)
        ring = np.where(inside, np.sin(np.pi * (d - inner) / (outer - inner)) ** 2, 0.0)
        parts = [p / p.sum() if p.sum() > 0 else p for p in (central, bragg, ring)]
        # index 0: thin, 1: thick; counts per pixel of an unshifted frame
        self.patterns = np.stack(
            [
                params.dose * sum(f * p for f, p in zip(fractions, parts))
                for fractions in (params.thin_fractions, params.thick_fractions)
            ]
        )
        # integer offsets the interpolation may use: floor(s) and floor(s) + 1
        bound = params.max_shift()
        self.offset_range = (math.floor(-bound), math.floor(bound) + 1)
        self.pad = max(-self.offset_range[0], self.offset_range[1])
        self.padded = np.pad(self.patterns, ((0, 0), (self.pad,) * 2, (self.pad,) * 2))

    def check_fits(self) -> None:
        lo, hi = self.offset_range
        support = self.patterns.sum(axis=0) > 0
        for axis, name in ((0, "y"), (1, "x")):
            used = np.flatnonzero(support.any(axis=1 - axis))
            n = self.sig_shape[axis]
            if used.size and (used[0] + lo < 0 or used[-1] + hi > n - 1):
                reach = max(self.centre[axis] - used[0], used[-1] - self.centre[axis])
                raise DataSetError(
                    f"the diffraction pattern does not fit the {self.sig_shape} "
                    f"detector along {name}: it reaches {reach:.1f} px from the centre "
                    f"and the beam shift adds up to {self.params.max_shift():.2f} px, "
                    f"but only {self.centre[axis] - (-lo):.1f} px fit; reduce "
                    f"diffuse_outer, bragg_distance, bragg_radius, shift_amplitude or "
                    f"shift_gradient, or use a larger sig_shape"
                )

    def render(self, shift_y, shift_x, thick) -> np.ndarray:
        """Noise-free frames ``(n, sy, sx)`` float64 for per-frame shifts and regions."""
        sy, sx = self.sig_shape
        n = len(shift_y)
        out = np.empty((n, sy * sx))
        iy = np.floor(shift_y).astype(np.int64)
        ix = np.floor(shift_x).astype(np.int64)
        fy = shift_y - iy
        fx = shift_x - ix
        weights = np.stack(
            [(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], axis=1
        )
        # frames sharing integer offsets and region share the same four source
        # images, so each group is one small GEMM: (frames x 4) @ (4 x pixels)
        keys = np.stack([thick.astype(np.int64), iy, ix], axis=1)
        groups, inverse = np.unique(keys, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        p = self.pad
        for g, (t, oy, ox) in enumerate(groups):
            members = np.flatnonzero(inverse == g)
            src = self.padded[t]
            # output pixel n holds T[n - o] = padded[n - o + pad]
            basis = np.stack(
                [
                    src[p - a : p - a + sy, p - b : p - b + sx].reshape(-1)
                    for a in (oy, oy + 1)
                    for b in (ox, ox + 1)
                ]
            )
            out[members] = weights[members] @ basis
        return out.reshape(n, sy, sx)


def _disk(dy, dx, pos, radius) -> np.ndarray:
    d = np.sqrt((dy - pos[0]) ** 2 + (dx - pos[1]) ** 2)
    return np.clip(radius + 0.5 - d, 0.0, 1.0)


def _bragg_positions(params: SampleParams) -> list[tuple[float, float]]:
    half = params.bragg_count // 2
    r, first = params.bragg_distance, []
    for k in range(half):
        angle = math.radians(params.bragg_rotation) + 2 * math.pi * k / params.bragg_count
        first.append((r * math.sin(angle), r * math.cos(angle)))
    # the opposite partners are exact negatives, so the set is exactly point-symmetric
    return first + [(-y, -x) for y, x in first]


def _scan_fields(nav_shape, params: SampleParams):
    """shift_y, shift_x (float64) and thick (bool), all of ``nav_shape``."""
    ny, nx = (1,) + tuple(nav_shape) if len(nav_shape) == 1 else tuple(nav_shape)
    yy = ((np.arange(ny) + 0.5) / ny)[:, None]
    xx = ((np.arange(nx) + 0.5) / nx)[None, :]
    u, v = yy - 0.5, xx - 0.5
    a, d = params.shift_amplitude, params.shift_gradient
    shift_y = a * np.sin(2 * np.pi * v) + d * u
    shift_x = a * np.cos(2 * np.pi * u) + d * v
    cy, cx = params.thick_centre
    thick = (yy - cy) ** 2 + (xx - cx) ** 2 < params.thick_radius**2
    shape = (ny, nx)
    return tuple(
        np.broadcast_to(f, shape).reshape(nav_shape).copy()
        for f in (shift_y, shift_x, thick)
    )


# --------------------------------------------------------------------------------------
# truth
# --------------------------------------------------------------------------------------


@dataclass(eq=False)
class SampleTruth:
    """The known answers for a sample made with the same shapes and parameters.

    ``shift_y``/``shift_x`` are the exact CoM shifts of the noise-free frames (so their
    CoM is ``centre + shift``), ``thick`` the region of the scan where the central disk
    is dimmer and the scattering brighter. Offsets (``bragg_positions``) are ``(dy,
    dx)`` from ``centre`` before the beam shift.
    """

    nav_shape: tuple[int, ...]
    sig_shape: tuple[int, int]
    params: SampleParams
    centre: tuple[float, float]
    shift_y: np.ndarray
    shift_x: np.ndarray
    thick: np.ndarray
    central_radius: float
    bragg_positions: list[tuple[float, float]]
    bragg_radius: float
    diffuse_inner: float
    diffuse_outer: float
    _template: _Template = field(repr=False)

    @property
    def n_frames(self) -> int:
        return math.prod(self.nav_shape)

    @property
    def com_y(self) -> np.ndarray:
        """Exact CoM (y) of the noise-free frames, detector pixels, nav-shaped."""
        return self.centre[0] + self.shift_y

    @property
    def com_x(self) -> np.ndarray:
        """Exact CoM (x) of the noise-free frames, detector pixels, nav-shaped."""
        return self.centre[1] + self.shift_x

    def noise_free_frames(self, start: int = 0, stop: Optional[int] = None) -> np.ndarray:
        """Expected counts ``(n, sy, sx)`` float64 of flat frames ``start:stop``.

        These are the Poisson means the written frames were drawn from. Mind memory:
        each frame takes ``8 * sy * sx`` bytes.
        """
        stop = self.n_frames if stop is None else stop
        start, stop = operator.index(start), operator.index(stop)
        if not 0 <= start <= stop <= self.n_frames:
            raise DataSetError(
                f"frame range {start}:{stop} is outside 0:{self.n_frames}; pass "
                f"0 <= start <= stop <= {self.n_frames}"
            )
        sl = slice(start, stop)
        return self._template.render(
            self.shift_y.reshape(-1)[sl],
            self.shift_x.reshape(-1)[sl],
            self.thick.reshape(-1)[sl],
        )


def sample_truth(
    nav_shape: Union[int, Sequence[int]] = (256, 256),
    sig_shape: Sequence[int] = (128, 128),
    **params,
) -> SampleTruth:
    """The known answers for ``make_sample(path, nav_shape, sig_shape, **params)``.

    ``params`` are the physics parameters of :class:`SampleParams` (``dose``,
    ``central_radius``...); the seed and dtype do not change the truth.
    """
    nav_shape = _check_nav_shape(nav_shape)
    sig_shape = _check_sig_shape(sig_shape)
    p = SampleParams.for_detector(sig_shape, **params)
    return _truth(nav_shape, sig_shape, p)


def _truth(nav_shape, sig_shape, p: SampleParams) -> SampleTruth:
    template = _Template(p, sig_shape)
    shift_y, shift_x, thick = _scan_fields(nav_shape, p)
    return SampleTruth(
        nav_shape=nav_shape,
        sig_shape=sig_shape,
        params=p,
        centre=template.centre,
        shift_y=shift_y,
        shift_x=shift_x,
        thick=thick,
        central_radius=p.central_radius,
        bragg_positions=list(template.bragg_positions),
        bragg_radius=p.bragg_radius,
        diffuse_inner=p.diffuse_inner,
        diffuse_outer=p.diffuse_outer,
        _template=template,
    )


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------


def _blocks(nav_shape, frame_pixels):
    """Scan-ordered blocks ``(start, stop, selection, shape)``: flat frame range, the
    matching HDF5 hyperslab of the nav axes and its shape. A block is whole scan rows,
    or part of one row when a row alone is over the memory budget."""
    nx = nav_shape[-1]
    per_block = max(1, _BLOCK_ELEMENTS // frame_pixels)
    if len(nav_shape) == 1:
        for a in range(0, nx, per_block):
            b = min(nx, a + per_block)
            yield a, b, np.s_[a:b], (b - a,)
        return
    ny = nav_shape[0]
    if per_block >= nx:
        rows = per_block // nx
        for y in range(0, ny, rows):
            y2 = min(ny, y + rows)
            yield y * nx, y2 * nx, np.s_[y:y2], (y2 - y, nx)
    else:
        for y in range(ny):
            for a in range(0, nx, per_block):
                b = min(nx, a + per_block)
                yield y * nx + a, y * nx + b, np.s_[y, a:b], (b - a,)


def _to_dtype(counts: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind in "ui":
        hi = np.iinfo(dtype).max
        if counts.size and counts.max() > hi:
            counts = np.minimum(counts, hi)
    else:
        hi = np.finfo(dtype).max
        if counts.size and counts.max() > hi:
            counts = np.minimum(counts, hi)
    return counts.astype(dtype)


def make_sample(
    path: Union[str, os.PathLike],
    nav_shape: Union[int, Sequence[int]] = (256, 256),
    sig_shape: Sequence[int] = (128, 128),
    dtype="uint16",
    format: str = "hdf5",
    *,
    seed: int = 0,
    overwrite: bool = False,
    dose: float = DEFAULT_DOSE,
    progress: Optional[Callable[[int, int], None]] = None,
    partition_bytes: Optional[int] = None,
    **params,
) -> pathlib.Path:
    """Write a synthetic crystal data set with known answers; return its path.

    ``format="hdf5"`` writes one file with the frames at ``/data/frames`` (shape
    ``nav_shape + sig_shape``, contiguous, uncompressed, so readers can memory-map it)
    and the sample's description as JSON in its ``stem_explorer_sample`` attribute.
    ``format="raw"`` writes the raw partition format (a directory) through
    ``stem_explorer.io.partitioned.RawPartitionWriter`` (``partition_bytes`` is
    passed on), with the same description in its metadata.

    ``nav_shape`` has one or two axes; ``sig_shape`` two, each >= 16. ``dtype`` is any
    numpy integer or float type ("uint16", "uint8", ">u2", "int32", "float32"...).
    ``dose`` is the mean counts per frame; other physics parameters (``params``) are
    those of :class:`SampleParams`, and :func:`sample_truth` with the same shapes and
    parameters gives the known answers. The output depends only on the shapes,
    parameters and ``seed`` (and the dtype's range).

    Frames are generated and written block by block (a few tens of MiB), and into a
    temporary name beside ``path`` that is renamed at the end, so an interrupted run
    never leaves a partial data set at ``path``. An existing ``path`` raises
    :class:`SampleExistsError` unless ``overwrite=True``; a sample larger than the free
    space raises :class:`DiskSpaceError` before anything is written. ``progress(done, total)`` is
    called with frame counts after each block.
    """
    nav_shape = _check_nav_shape(nav_shape)
    sig_shape = _check_sig_shape(sig_shape)
    dtype = _check_dtype(dtype)
    fmt = str(format).lower()
    if fmt in ("h5", "hdf"):
        fmt = "hdf5"
    if fmt not in FORMATS:
        raise FormatError(
            f"make_sample cannot write format {format!r}; pass format='hdf5' or 'raw'"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataSetError(f"seed must be an integer >= 0, got {seed!r}")
    if progress is not None and not callable(progress):
        raise DataSetError(f"progress must be a callable(done, total), got {progress!r}")
    p = SampleParams.for_detector(sig_shape, dose=dose, **params)
    path = pathlib.Path(path)
    parent = path.parent
    if not parent.is_dir():
        raise DataSetNotFoundError(
            f"cannot write {str(path)!r}: the directory {str(parent)!r} does not exist; "
            f"create it first"
        )
    _check_target(path, overwrite)
    check_free_space(path, nav_shape, sig_shape, dtype)

    record = {
        "generator": "stem_explorer.sample.make_sample",
        "seed": int(seed),
        "nav_shape": list(nav_shape),
        "sig_shape": list(sig_shape),
        "dtype": dtype.str,
        "params": p.to_json(),
    }
    truth = _truth(nav_shape, sig_shape, p)
    template = truth._template
    shift_y = truth.shift_y.reshape(-1)
    shift_x = truth.shift_x.reshape(-1)
    thick = truth.thick.reshape(-1)
    rng = np.random.default_rng(int(seed))
    total = truth.n_frames

    def frames():
        for a, b, sel, shape in _blocks(nav_shape, sig_shape[0] * sig_shape[1]):
            mean = template.render(shift_y[a:b], shift_x[a:b], thick[a:b])
            counts = _to_dtype(rng.poisson(mean), dtype)
            yield b, sel, counts.reshape(shape + sig_shape)

    tag = f".{path.name}.{uuid.uuid4().hex[:8]}"
    tmp = parent / (tag + ".tmp")
    try:
        if fmt == "hdf5":
            _write_hdf5(tmp, frames(), nav_shape, sig_shape, dtype, record, progress,
                        total)
        else:
            _write_raw(tmp, frames(), nav_shape, sig_shape, dtype, record, progress,
                       total, partition_bytes)
        _move_into_place(tmp, path, overwrite, tag)
    except BaseException as exc:
        _remove(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, DataSetError):  # a full disk, a quota...
            raise write_error(path, exc) from None
        raise
    return path


def _check_target(path: pathlib.Path, overwrite: bool) -> None:
    if not os.path.lexists(path):
        return
    if not overwrite:
        raise SampleExistsError(
            f"{str(path)!r} already exists; pass overwrite=True to replace it or "
            f"choose another path"
        )
    if path.is_dir() and not path.is_symlink() and not (path / "dataset.json").exists():
        raise SampleExistsError(
            f"{str(path)!r} is a directory that is not a raw partition data set (no "
            f"dataset.json); refusing to delete it even with overwrite=True: remove it "
            f"yourself or choose another path"
        )


def _move_into_place(tmp: pathlib.Path, path: pathlib.Path, overwrite: bool, tag: str):
    if os.path.lexists(path):
        _check_target(path, overwrite)  # something may have appeared meanwhile
        if path.is_dir() and not path.is_symlink():
            # a directory cannot be replaced in one step: move the old one aside
            old = path.parent / (tag + ".old")
            os.rename(path, old)
            try:
                os.rename(tmp, path)
            except BaseException:
                os.rename(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
            return
        if tmp.is_dir():
            os.remove(path)
    os.replace(tmp, path)


def _remove(tmp: pathlib.Path) -> None:
    try:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.lexists(tmp):
            os.remove(tmp)
    except OSError:  # pragma: no cover - best effort while an error propagates
        pass


def _write_hdf5(tmp, frames, nav_shape, sig_shape, dtype, record, progress, total):
    import h5py

    with h5py.File(tmp, "w") as f:
        dset = f.create_dataset(
            HDF5_DATASET, shape=nav_shape + sig_shape, dtype=dtype, chunks=None
        )
        dset.attrs[SAMPLE_ATTR] = json.dumps(record)
        dset.attrs["seed"] = record["seed"]
        for done, sel, block in frames:
            dset[sel] = block
            if progress is not None:
                progress(done, total)


def _write_raw(tmp, frames, nav_shape, sig_shape, dtype, record, progress, total,
               partition_bytes):
    from .io.partitioned import RawPartitionWriter

    kwargs = {} if partition_bytes is None else {"partition_bytes": partition_bytes}
    with RawPartitionWriter(
        tmp,
        nav_shape=nav_shape,
        sig_shape=sig_shape,
        dtype=dtype,
        metadata={SAMPLE_ATTR: record},
        **kwargs,
    ) as writer:
        for done, sel, block in frames:
            writer.write(block.reshape((-1,) + tuple(sig_shape)))
            if progress is not None:
                progress(done, total)


def standard_sample_path(folder, nav_shape: Sequence[int], sig_shape: Sequence[int]) -> pathlib.Path:
    """Where :func:`ensure_sample` keeps the sample of these shapes in ``folder``."""
    nav, sig = _check_nav_shape(nav_shape), _check_sig_shape(sig_shape)
    return pathlib.Path(folder) / f"sample_{nav[0]}x{nav[-1]}x{sig[0]}x{sig[1]}.h5"


def ensure_sample(
    folder: Union[str, os.PathLike] = "sample_data",
    nav_shape: Sequence[int] = (256, 256),
    sig_shape: Sequence[int] = (128, 128),
    progress: Optional[Callable[[int, int], None]] = None,
) -> pathlib.Path:
    """The standard sample in ``folder`` (``sample_<scan>x<detector>.h5``), written
    first if absent (uint16, HDF5, default physics)."""
    nav, sig = _check_nav_shape(nav_shape), _check_sig_shape(sig_shape)
    path = standard_sample_path(folder, nav, sig)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        make_sample(path, nav_shape=nav, sig_shape=sig, progress=progress)
    return path
