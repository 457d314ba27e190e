"""In-memory data sets (numpy and dask arrays) and their per-partition payloads."""

import pickle

import dask.array as da
import numpy as np
import pytest

from stem_explorer.errors import DataSetError
from stem_explorer.io import open_dataset
from stem_explorer.io.memory import InMemoryDataSet, MemoryBlock, MemoryFrameSource
from stem_explorer.io.testing import (
    DTYPES,
    SHAPES,
    assert_partitions_valid,
    assert_reads_equal,
    make_frames,
)


@pytest.mark.parametrize("kind", ["numpy", "dask"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nav,sig", SHAPES)
def test_memory_roundtrip(kind, dtype, nav, sig):
    data = make_frames(nav, sig, dtype, seed=4)
    if len(nav) == 1:
        data = data.reshape((nav[0],) + sig)
    array = data if kind == "numpy" else da.from_array(data, chunks=(1,) * (data.ndim - 2) + (2, 3))
    ds = open_dataset(array)
    assert isinstance(ds, InMemoryDataSet) and ds.format == "memory"
    assert ds.shape == data.shape and ds.dtype.str == data.dtype.str
    assert ds.is_dask == (kind == "dask")
    parts = ds.partitions(2, 2 * ds.frame_bytes)
    assert_partitions_valid(ds, parts, 2)
    assert_reads_equal(ds, data, partitions=parts, tile_frames=2)


def test_memory_numpy_views_not_copies():
    data = make_frames((3, 4), (5, 5), "u2")
    ds = open_dataset(data)
    payload = ds.local_payload(2, 9)
    with ds.source.open(payload) as reader:
        tile = reader.read(3, 7)
        assert np.shares_memory(tile, data)
        assert np.array_equal(tile, data.reshape(-1, 5, 5)[3:7])
        with pytest.raises(DataSetError, match="outside this task's in-memory block"):
            reader.read(0, 4)


def test_memory_source_pickles_without_data():
    data = make_frames((64, 64), (32, 32), "f4")  # 16 MiB
    ds = open_dataset(data)
    for part in ds.partitions(4, 2**20):
        assert len(pickle.dumps(part)) < 2000
    assert isinstance(ds.source, MemoryFrameSource)
    with pytest.raises(DataSetError, match="DataSet.payloads"):
        ds.source.open(None)


def test_memory_nav_shape_and_errors():
    data = make_frames((12,), (3, 2), "i4")
    ds = open_dataset(data, nav_shape=(4, 3))
    assert ds.nav_shape == (4, 3)
    assert_reads_equal(ds, data.reshape(4, 3, 3, 2))
    with pytest.raises(DataSetError, match="whose product is 12"):
        open_dataset(data, nav_shape=(5, 2))
    with pytest.raises(DataSetError, match="2-D"):
        open_dataset(np.zeros((4, 4)))
    with pytest.raises(DataSetError, match="not numbers"):
        open_dataset(np.zeros((2, 2, 2), dtype=object))
    with pytest.raises(DataSetError, match="the 'memory' reader"):
        open_dataset(data, format="hdf5")


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with distributed.Client(
        processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0"
    ) as c:
        yield c


def _read_partition(partition, payload):
    out = np.empty((partition.n_frames,) + partition.source.sig_shape, partition.source.dtype)
    with partition.source.open(payload) as reader:
        for a, b in partition.tile_ranges(2):
            out[a - partition.start : b - partition.start] = reader.read(a, b)
    return out


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_memory_payloads_on_cluster(client, kind):
    data = make_frames((5, 4), (6, 3), ">u2", seed=9)
    array = data if kind == "numpy" else da.from_array(data, chunks=(2, 3, 6, 3))
    ds = open_dataset(array)
    parts = ds.partitions(n_workers=2, target_bytes=3 * ds.frame_bytes)
    payloads = ds.payloads(client, parts)
    assert len(payloads) == len(parts)
    futures = [client.submit(_read_partition, p, f, pure=False) for p, f in zip(parts, payloads)]
    blocks = client.gather(futures)
    assert all(block.dtype.str == ">u2" for block in blocks)
    got = np.concatenate(blocks).reshape(data.shape)  # (concatenate goes native-endian)
    assert np.array_equal(got, data)
    first = client.gather(payloads[0])
    assert isinstance(first, MemoryBlock) and first.start == parts[0].start
    assert first.stop == parts[0].stop
