"""``.npy`` reader (memory-mapped through the raw helper)."""

import pickle

import numpy as np
import pytest

from stem_explorer.errors import DataSetError, FormatError
from stem_explorer.io import open_dataset
from stem_explorer.io.testing import (
    assert_partitions_valid, assert_reads_equal, each_dtype_and_shape, is_memory_mapped, make_frames
)


@each_dtype_and_shape
def test_npy_roundtrip(tmp_path, nav, sig, dtype):
    data = make_frames(nav, sig, dtype, seed=1)
    if len(nav) == 1:  # 1-D scans are stored as 3-D frame stacks
        data = data.reshape((nav[0],) + sig)
    path = tmp_path / "frames.npy"
    np.save(path, data)
    ds = open_dataset(path)
    assert ds.format == "npy"
    assert ds.shape == data.shape and ds.dtype.str == data.dtype.str
    parts = ds.partitions(2, 2 * ds.frame_bytes)
    assert_partitions_valid(ds, parts, 2)
    assert_reads_equal(ds, data, partitions=parts, tile_frames=3)
    with parts[0].source.open() as reader:
        assert is_memory_mapped(reader.read(parts[0].start, parts[0].stop))
    assert len(pickle.dumps(parts[0])) < 2000


def test_npy_nav_shape_reshape(tmp_path):
    data = make_frames((12,), (4, 3), "<f4")
    path = tmp_path / "stack.npy"
    np.save(path, data)
    ds = open_dataset(path, nav_shape=(3, 4))
    assert ds.nav_shape == (3, 4)
    assert_reads_equal(ds, data.reshape(3, 4, 4, 3))


def test_npy_wrong_nav_shape_product(tmp_path):
    path = tmp_path / "stack.npy"
    np.save(path, make_frames((12,), (4, 3), "<u2"))
    with pytest.raises(DataSetError, match="whose product is 12"):
        open_dataset(path, nav_shape=(5, 3))


def test_npy_fortran_order_refused(tmp_path):
    path = tmp_path / "fortran.npy"
    np.save(path, np.asfortranarray(make_frames((2, 3), (4, 4), "u2")))
    with pytest.raises(DataSetError, match="np.ascontiguousarray"):
        open_dataset(path)


def test_npy_not_3d_or_4d(tmp_path):
    path = tmp_path / "image.npy"
    np.save(path, np.zeros((4, 4), "u2"))
    with pytest.raises(DataSetError, match="2-D array"):
        open_dataset(path)


def test_npy_truncated(tmp_path):
    path = tmp_path / "cut.npy"
    np.save(path, make_frames((4, 4), (8, 8), "u2"))
    blob = path.read_bytes()
    path.write_bytes(blob[:-100])
    with pytest.raises(FormatError, match="truncated"):
        open_dataset(path)


def test_npy_garbage_header(tmp_path):
    path = tmp_path / "garbage.npy"
    path.write_bytes(b"not an npy file at all")
    with pytest.raises(FormatError, match="not a valid .npy file"):
        open_dataset(path)


def test_npy_version_3_header(tmp_path):
    from numpy.lib import format as npformat

    data = make_frames((2, 3), (4, 5), "<i4")
    path = tmp_path / "v3.npy"
    with open(path, "wb") as f:
        npformat.write_array(f, data, version=(3, 0))
    assert_reads_equal(open_dataset(path), data)
