"""HDF5 reader: layouts (contiguous / chunked / compressed), dataset discovery through
links, bad input, and a real ARINA master + data file pair."""

import os
import pickle

import h5py
import hdf5plugin
import numpy as np
import pytest

from stem_explorer.errors import DataSetError, DataSetNotFoundError, FormatError
from stem_explorer.io import open_dataset
from stem_explorer.io.hdf5 import Hdf5FrameSource, _frame_alignment, is_hdf5
from stem_explorer.io.raw import MappedFrameSource
from stem_explorer.io.testing import (
    assert_partitions_valid, assert_reads_equal, each_dtype_and_shape, is_memory_mapped, make_frames
)

LAYOUTS = ["contiguous", "chunk_frames", "chunk_rows_split", "gzip", "bitshuffle_lz4"]


def storage_options(layout, shape):
    """h5py create_dataset keywords for ``layout`` of data ``shape``."""
    nav, (sy, sx) = shape[:-2], shape[-2:]
    frames = (1,) * len(nav) + (sy, sx)
    split = tuple(min(2, n) for n in nav) + ((sy + 1) // 2, (sx + 1) // 2)
    if layout == "contiguous":
        return {}
    if layout == "chunk_frames":
        return {"chunks": frames}
    if layout == "chunk_rows_split":
        return {"chunks": split}
    if layout == "gzip":
        return {"chunks": split, "compression": "gzip", "shuffle": True}
    if layout == "bitshuffle_lz4":
        return {"chunks": split, **hdf5plugin.Bitshuffle(cname="lz4")}
    raise ValueError(layout)


def write_h5(path, data, name="frames", **options):
    with h5py.File(path, "w") as f:
        f.create_dataset(name, data=data, **options)
    return path


@pytest.mark.parametrize("layout", LAYOUTS)
@each_dtype_and_shape
def test_hdf5_roundtrip(tmp_path, layout, dtype, nav, sig):
    data = make_frames(nav, sig, dtype, seed=2)
    if len(nav) == 1:
        data = data.reshape((nav[0],) + sig)
    options = storage_options(layout, data.shape)
    path = write_h5(tmp_path / "data.h5", data, **options)
    ds = open_dataset(path)
    assert ds.format == "hdf5"
    assert ds.shape == data.shape
    assert ds.dtype.str == data.dtype.str
    meta = ds.metadata
    assert meta["dataset"] == "/frames"
    if layout == "contiguous":
        assert meta["read_path"] == "mmap" and meta["chunks"] is None
        assert isinstance(ds.source, MappedFrameSource)
    elif layout == "chunk_frames":
        # uncompressed whole-frame chunks written in order lie back to back: mapped
        assert meta["read_path"] == "mmap" and tuple(meta["chunks"]) == options["chunks"]
        assert isinstance(ds.source, MappedFrameSource)
    else:
        assert meta["read_path"] == "chunked"
        assert tuple(meta["chunks"]) == options["chunks"]
        assert ds.source.frame_alignment == _frame_alignment(data.shape, options["chunks"])
    if layout == "gzip":
        assert meta["compression"] == "gzip" and meta["filters"] == ["shuffle", "gzip"]
    if layout == "bitshuffle_lz4":
        assert meta["compression"] == "bitshuffle-lz4"
    for n_workers, target in [(1, None), (2, ds.frame_bytes)]:
        parts = ds.partitions(n_workers, target)
        assert_partitions_valid(ds, parts, n_workers)
        assert_reads_equal(ds, data, partitions=parts, tile_frames=2)
    for part in parts:
        assert len(pickle.dumps(part)) < 2000


def test_whole_frame_chunks_out_of_order_are_mapped_run_by_run(tmp_path):
    data = make_frames((4, 6), (5, 7), "uint16", seed=3)
    with h5py.File(tmp_path / "rev.h5", "w") as f:
        dset = f.create_dataset("frames", shape=data.shape, dtype=data.dtype, chunks=(1, 3, 5, 7))
        for y in reversed(range(4)):  # chunks allocated in reverse order
            dset[y] = data[y]
    ds = open_dataset(tmp_path / "rev.h5")
    # one run per scan row (its two chunks were written together), not one mapping
    assert ds.metadata["read_path"] == "mapped_chunks"
    assert ds.metadata["mapped_runs"] == 4
    assert_reads_equal(ds, data, partitions=ds.partitions(2, ds.frame_bytes), tile_frames=2)


def test_hdf5_frame_alignment_rules():
    # 3-D: frames per chunk
    assert _frame_alignment((10, 8, 8), (4, 8, 8)) == 4
    # 4-D, chunk spans several scan rows (partial row width): whole groups of c0 rows
    assert _frame_alignment((6, 5, 8, 8), (2, 2, 8, 8)) == 10
    # 4-D, full rows per chunk
    assert _frame_alignment((6, 5, 8, 8), (3, 5, 8, 8)) == 15
    # 4-D, one row per chunk, row split evenly: the chunk's frame count
    assert _frame_alignment((4, 6, 8, 8), (1, 3, 8, 4)) == 3
    assert _frame_alignment((4, 6, 8, 8), (1, 1, 8, 8)) == 1
    # 4-D, one row per chunk but row not split evenly: whole rows
    assert _frame_alignment((4, 6, 8, 8), (1, 4, 8, 8)) == 6
    assert _frame_alignment((4, 6, 8, 8), None) == 1
    # 5-D (y, x, channels): chunks of one channel at two x positions: whole scan rows
    assert _frame_alignment((2, 3, 2, 8, 8), (1, 2, 1, 8, 8)) == 6
    # every channel of one position per chunk: the channels
    assert _frame_alignment((2, 3, 2, 8, 8), (1, 1, 2, 8, 8)) == 2


def test_hdf5_chunked_any_range_reads(tmp_path):
    """Every frame range, including ones starting/stopping mid scan row, reads right."""
    data = make_frames((3, 5), (7, 4), "<u2", seed=5)
    path = write_h5(tmp_path / "c.h5", data, chunks=(2, 2, 4, 2), compression="gzip")
    ds = open_dataset(path)
    flat = data.reshape(-1, 7, 4)
    with ds.source.open() as reader:
        for a in range(16):
            for b in range(a, 16):
                got = reader.read(a, b)
                assert got.shape == (b - a, 7, 4)
                assert np.array_equal(got, flat[a:b]), (a, b)


def test_hdf5_partitions_follow_chunks(tmp_path):
    data = make_frames((6, 5), (4, 4), "u1")
    path = write_h5(tmp_path / "c.h5", data, chunks=(2, 2, 4, 4))
    ds = open_dataset(path)
    assert ds.source.frame_alignment == 10
    for n_workers in (1, 2, 3, 4):
        parts = ds.partitions(n_workers, target_bytes=1)
        assert_partitions_valid(ds, parts, n_workers)
        assert all(p.start % 10 == 0 for p in parts)
        assert len(parts) == 3  # 30 frames / 10 per aligned unit
        for p in parts:
            assert all(a % 10 == 0 for a, _b in p.tile_ranges(4))


def test_hdf5_contiguous_is_zero_copy(tmp_path):
    data = make_frames((4, 3), (5, 6), ">u2")
    path = write_h5(tmp_path / "c.h5", data)
    ds = open_dataset(path)
    with ds.partitions()[0].source.open() as reader:
        tile = reader.read(1, 9)
        assert tile.dtype.str == ">u2"
        assert is_memory_mapped(tile) and not tile.flags.owndata
        assert np.array_equal(tile, data.reshape(-1, 5, 6)[1:9])


def test_hdf5_userblock_and_unknown_suffix(tmp_path):
    """The superblock after a user block is found by the sniffer and the mmap offset
    accounts for it."""
    data = make_frames((2, 3), (4, 4), "<i4")
    path = tmp_path / "odd.xyz"
    with h5py.File(path, "w", userblock_size=1024) as f:
        f["frames"] = data
    assert is_hdf5(path)
    ds = open_dataset(path)
    assert ds.format == "hdf5" and ds.metadata["read_path"] == "mmap"
    assert_reads_equal(ds, data)


def test_hdf5_external_link_autopick_and_mmap_target(tmp_path):
    data = make_frames((2, 4), (6, 5), "<u2", seed=7)
    write_h5(tmp_path / "data_000001.h5", data.reshape(8, 6, 5), name="entry/data/data")
    master = tmp_path / "master.h5"
    with h5py.File(master, "w") as f:
        f["entry/instrument/detector/flatfield"] = np.ones((6, 5), "f4")
        f["entry/data/data_000001"] = h5py.ExternalLink("data_000001.h5", "/entry/data/data")
    cwd = os.getcwd()
    os.chdir(tmp_path.parent)  # links resolve relative to the master, not the cwd
    try:
        ds = open_dataset(master, nav_shape=(2, 4))
    finally:
        os.chdir(cwd)
    assert ds.metadata["dataset"] == "/entry/data/data_000001"
    assert ds.metadata["data_file"] == str(tmp_path / "data_000001.h5")
    assert ds.metadata["read_path"] == "mmap"
    assert ds.source.path == str(tmp_path / "data_000001.h5")
    assert_reads_equal(ds, data)


def test_hdf5_soft_link_counts_once(tmp_path):
    """A NeXus-style soft link to the frames does not make the file ambiguous."""
    data = make_frames((3,), (4, 4), "f4")
    path = tmp_path / "nexus.nxs"
    with h5py.File(path, "w") as f:
        f.create_dataset("entry/instrument/detector/data", data=data, chunks=(1, 4, 4))
        f["entry/data/data"] = h5py.SoftLink("/entry/instrument/detector/data")
        f["entry/loop"] = h5py.SoftLink("/entry")  # cycles must not hang the walk
    ds = open_dataset(path)
    assert ds.metadata["dataset"] == "/entry/data/data"
    assert_reads_equal(ds, data)
    ds2 = open_dataset(path, dataset="entry/instrument/detector/data")
    assert_reads_equal(ds2, data)


def test_hdf5_nav_shape_reshape(tmp_path):
    data = make_frames((2, 6), (3, 3), "u2")
    path = write_h5(tmp_path / "r.h5", data, chunks=(1, 3, 3, 3), compression="gzip")
    ds = open_dataset(path, nav_shape=(3, 4))
    assert ds.nav_shape == (3, 4)
    assert ds.source.frame_alignment == 3
    assert_reads_equal(ds, data.reshape(3, 4, 3, 3))
    with pytest.raises(DataSetError, match="whose product is 12"):
        open_dataset(path, nav_shape=(5, 5))


def test_hdf5_reader_pickles_without_h5py_objects(tmp_path):
    data = make_frames((2, 2), (4, 4), "u2")
    path = write_h5(tmp_path / "p.h5", data, chunks=(1, 1, 4, 4), compression="gzip")
    ds = open_dataset(path)
    assert isinstance(ds.source, Hdf5FrameSource)
    reader = ds.source.open()
    reader.read(0, 2)
    blob = pickle.dumps(ds.partitions()[0])
    assert len(blob) < 2000
    reader.close()
    assert reader._file is None


# -- bad input --------------------------------------------------------------------------
def test_hdf5_missing_dataset_path_lists_candidates(tmp_path):
    path = write_h5(tmp_path / "d.h5", np.zeros((2, 3, 4, 4), "u2"), name="entry/frames")
    with pytest.raises(DataSetNotFoundError) as info:
        open_dataset(path, dataset="/entry/nothing")
    msg = str(info.value)
    assert "'/entry/nothing'" in msg and "does not exist" in msg
    assert "/entry/frames (2, 3, 4, 4) uint16" in msg and "dataset=" in msg
    with pytest.raises(DataSetNotFoundError, match="is a group, not a dataset"):
        open_dataset(path, dataset="entry")


def test_hdf5_dataset_not_3d_or_4d(tmp_path):
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f["image"] = np.zeros((4, 4), "u2")
        f["frames"] = np.zeros((2, 4, 4), "u2")
    with pytest.raises(DataSetError) as info:
        open_dataset(path, dataset="image")
    msg = str(info.value)
    assert "shape (4, 4) (2-D)" in msg and "3-D" in msg and "/frames (2, 4, 4)" in msg


def test_hdf5_ambiguous_lists_candidates(tmp_path):
    path = tmp_path / "two.h5"
    with h5py.File(path, "w") as f:
        f["a/frames"] = np.zeros((2, 2, 4, 4), "u2")
        f["b/frames"] = np.zeros((3, 2, 4, 4), "f4")
        f["b/background"] = np.zeros((4, 4), "f4")
    before = path.read_bytes()
    with pytest.raises(DataSetError) as info:
        open_dataset(path)
    msg = str(info.value)
    assert "several 3-D/4-D datasets" in msg and "pass dataset=" in msg
    assert "/a/frames (2, 2, 4, 4) uint16" in msg and "/b/frames (3, 2, 4, 4) float32" in msg
    assert "/b/background" not in msg
    assert path.read_bytes() == before
    assert open_dataset(path, dataset="b/frames").shape == (3, 2, 4, 4)


def test_hdf5_no_candidates(tmp_path):
    path = tmp_path / "none.h5"
    with h5py.File(path, "w") as f:
        f["image"] = np.zeros((4, 4), "u2")
        f["broken"] = h5py.ExternalLink("missing.h5", "/data")  # reported, not fatal
    with pytest.raises(DataSetError, match="no 3-D or 4-D numeric dataset.*/image"):
        open_dataset(path)


def test_hdf5_unavailable_filter_monkeypatched(tmp_path, monkeypatch):
    data = make_frames((2, 2), (4, 4), "u2")
    bitshuffle = hdf5plugin.Bitshuffle(cname="lz4")
    path = write_h5(tmp_path / "bs.h5", data, chunks=(1, 2, 4, 4), **bitshuffle)
    real = h5py.h5z.filter_avail
    monkeypatch.setattr(h5py.h5z, "filter_avail", lambda code: code != 32008 and real(code))
    with pytest.raises(FormatError) as info:
        open_dataset(path)
    msg = str(info.value)
    assert "'bitshuffle'" in msg and "32008" in msg and "pip install hdf5plugin" in msg


def test_hdf5_unregistered_filter(tmp_path):
    """A filter id no plugin provides (written with allow_unknown_filter)."""
    path = tmp_path / "unknown.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "frames", shape=(2, 2, 4, 4), dtype="u2", chunks=(1, 1, 4, 4),
            compression=32999, allow_unknown_filter=True,
        )
    with pytest.raises(FormatError, match=r"filter id 32999.*pip install hdf5plugin"):
        open_dataset(path)


def test_not_hdf5_with_h5_suffix(tmp_path):
    path = tmp_path / "fake.h5"
    path.write_bytes(b"this is not hdf5" * 100)
    with pytest.raises(FormatError, match="cannot be opened as HDF5"):
        open_dataset(path)
    assert path.read_bytes() == b"this is not hdf5" * 100


def test_hdf5_missing_file(tmp_path):
    with pytest.raises(DataSetNotFoundError, match="absent.h5"):
        open_dataset(tmp_path / "absent.h5")


# -- real data ---------------------------------------------------------------------------
def test_arina_master_through_external_link(realdata):
    entry = realdata.entry("arina_4x4x192x192")
    master = realdata.file("arina/test_00_master.h5")
    realdata.file("arina/test_00_data_000001.h5")
    ds = open_dataset(master, nav_shape=(4, 4))
    assert ds.format == "hdf5"
    assert ds.nav_shape == (4, 4) and ds.sig_shape == tuple(entry["shape"][2:])
    assert ds.metadata["dataset"] == "/entry/data/data_000001"
    assert ds.metadata["data_file"].endswith("test_00_data_000001.h5")
    assert ds.metadata["compression"].startswith("bitshuffle")
    assert ds.metadata["read_path"] == "chunked"

    parts = ds.partitions(n_workers=2, target_bytes=4 * ds.frame_bytes)
    assert_partitions_valid(ds, parts, 2)
    frames = np.empty((ds.n_frames,) + ds.sig_shape, ds.dtype)
    for part in parts:
        with pickle.loads(pickle.dumps(part.source)).open() as reader:
            for a, b in part.tile_ranges(3):
                frames[a:b] = reader.read(a, b)

    sum_ref = np.load(realdata.file(entry["refs"][0]))
    vbf_ref = np.load(realdata.file(entry["refs"][1]))
    assert np.array_equal(frames.sum(axis=0, dtype=np.float64), sum_ref)
    cy, cx, r = entry["vbf_disk_cy_cx_r"]
    y, x = np.indices(ds.sig_shape)
    disk = (y - cy) ** 2 + (x - cx) ** 2 <= r**2
    vbf = frames.astype(np.float64)[:, disk].sum(axis=1).reshape(ds.nav_shape)
    assert vbf.shape == vbf_ref.shape
    assert np.array_equal(vbf, vbf_ref)


def test_hdf5_master_without_its_data_file(tmp_path):
    master = tmp_path / "master.h5"
    with h5py.File(master, "w") as f:
        f["entry/data/data_000001"] = h5py.ExternalLink("data_000001.h5", "/entry/data/data")
    with pytest.raises(DataSetError) as info:
        open_dataset(master)
    msg = str(info.value)
    assert "missing file data_000001.h5:/entry/data/data" in msg and "beside the master" in msg
    with pytest.raises(DataSetNotFoundError, match="cannot be opened.*missing file data_000001"):
        open_dataset(master, dataset="entry/data/data_000001")
