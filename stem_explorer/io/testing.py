"""Helpers for testing readers (and code built on them), the way xarray ships
``xarray.testing``: read a data set back through its partitions, as the engine does,
and check that reads are zero-copy where a format promises it."""

from __future__ import annotations

import mmap
from typing import Optional, Sequence

import numpy as np

from .base import DataSet, Partition

__all__ = [
    "DTYPES",
    "SHAPES",
    "assert_partitions_valid",
    "assert_reads_equal",
    "assert_scan_positions",
    "each_dtype_and_shape",
    "is_memory_mapped",
    "make_frames",
    "position_frames",
    "read_through_partitions",
]

#: dtypes every reader is tested with (big-endian included).
DTYPES = ["uint8", "uint16", ">u2", "int32", "float32"]
#: ``(nav_shape, sig_shape)`` pairs: non-square scan and detector, a line scan, a
#: single frame.
SHAPES = [((3, 5), (7, 4)), ((6,), (8, 8)), ((1,), (4, 4)), ((1, 1), (3, 2))]


def make_frames(nav_shape, sig_shape, dtype, seed: int = 0) -> np.ndarray:
    """Seeded random data of shape ``nav_shape + sig_shape`` spanning the dtype's
    range (normal values for floats)."""
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    shape = tuple(nav_shape) + tuple(sig_shape)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(dtype)
    info = np.iinfo(dtype)
    native = dtype.newbyteorder("=")
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=native).astype(dtype)


def position_frames(nav_shape, sig_shape, dtype="uint16", fill: int = 7) -> np.ndarray:
    """Frames ``nav_shape + sig_shape`` (a 2-D scan) whose pixel (0, 0) holds their
    scan row and (0, 1) their scan column, the rest ``fill``: with a non-square scan
    and detector, a reader that transposes or misfolds either cannot pass
    :func:`assert_scan_positions`."""
    frames = np.full(tuple(nav_shape) + tuple(sig_shape), fill, dtype)
    y, x = np.indices(nav_shape)
    frames[..., 0, 0], frames[..., 0, 1] = y, x
    return frames


def assert_scan_positions(ds: DataSet, nav_shape) -> None:
    """Assert that ``ds`` has the scan ``nav_shape`` and that its frame at (y, x), read
    through the partitions, is the one :func:`position_frames` wrote for (y, x)."""
    assert ds.nav_shape == tuple(nav_shape), f"scan {ds.nav_shape} != {tuple(nav_shape)}"
    frames = read_through_partitions(ds, tile_frames=4)
    y, x = np.indices(nav_shape)
    np.testing.assert_array_equal(frames[..., 0, 0], y, err_msg="scan rows out of place")
    np.testing.assert_array_equal(frames[..., 0, 1], x, err_msg="scan columns out of place")


def each_dtype_and_shape(test):
    """Decorator: run ``test`` for every dtype of :data:`DTYPES` and every
    ``(nav_shape, sig_shape)`` pair of :data:`SHAPES`, passed as its arguments
    ``dtype``, ``nav`` and ``sig`` (needs pytest)."""
    import pytest

    test = pytest.mark.parametrize("nav,sig", SHAPES)(test)
    return pytest.mark.parametrize("dtype", DTYPES)(test)


def read_through_partitions(
    ds: DataSet,
    partitions: Optional[Sequence[Partition]] = None,
    *,
    tile_frames: int = 7,
) -> np.ndarray:
    """All frames of ``ds`` as ``nav_shape + sig_shape``, read the way tasks read them:
    each partition's source is pickled and unpickled, opened with its in-process
    payload, and read tile by tile (``tile_frames`` per tile, aligned to chunks)."""
    import pickle

    partitions = ds.partitions() if partitions is None else partitions
    out = np.empty((ds.n_frames,) + ds.sig_shape, ds.dtype)
    for p in partitions:
        part = pickle.loads(pickle.dumps(p))
        with part.source.open(ds.local_payload(p.start, p.stop)) as reader:
            for a, b in part.tile_ranges(tile_frames):
                tile = reader.read(a, b)
                assert tile.shape == (b - a,) + ds.sig_shape, (tile.shape, a, b)
                assert tile.dtype == ds.dtype, (tile.dtype, ds.dtype)
                out[a:b] = tile
    return out.reshape(ds.shape)


def assert_reads_equal(ds: DataSet, expected: np.ndarray, **kw) -> None:
    """Assert that reading ``ds`` through its partitions gives exactly ``expected``
    (values, shape and dtype, byte order included)."""
    got = read_through_partitions(ds, **kw)
    expected = np.asarray(expected)
    assert got.dtype == expected.dtype, f"dtype {got.dtype.str} != {expected.dtype.str}"
    assert got.shape == expected.shape, f"shape {got.shape} != {expected.shape}"
    assert np.array_equal(got, expected), "frames differ"


def is_memory_mapped(array: np.ndarray) -> bool:
    """True when ``array`` is a view whose ``base`` chain ends in a memory map."""
    base = array
    while base is not None:
        if isinstance(base, (np.memmap, mmap.mmap)):
            return True
        base = getattr(base, "base", None)
    return False


def assert_partitions_valid(
    ds: DataSet, partitions: Sequence[Partition], n_workers: int = 1
) -> None:
    """Assert the partition contract: ranges in order, covering every frame exactly
    once, starting on multiples of the source's ``frame_alignment``, and counted in a
    multiple of ``n_workers`` unless there are fewer aligned units than that."""
    assert partitions, "no partitions"
    align = ds.source.frame_alignment
    units = -(-ds.n_frames // align)
    expected_start = 0
    for i, p in enumerate(partitions):
        assert p.index == i, (p.index, i)
        assert p.start == expected_start, f"partition {i} starts at {p.start}"
        assert p.stop > p.start, f"partition {i} is empty"
        assert p.start % align == 0, f"partition {i} start {p.start} not aligned to {align}"
        assert p.stop % align == 0 or p.stop == ds.n_frames, f"partition {i} stop {p.stop}"
        expected_start = p.stop
    assert expected_start == ds.n_frames, f"partitions end at {expected_start}"
    assert len(partitions) % n_workers == 0 or len(partitions) == units, (
        f"{len(partitions)} partitions for {n_workers} workers and {units} units"
    )
