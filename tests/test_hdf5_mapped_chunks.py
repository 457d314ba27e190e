"""Uncompressed whole-frame chunks mapped zero-copy run by run: runs broken by HDF5's
B-tree nodes, chunks written out of order, partial edge chunks, chunks never written,
the cross-check on open, and the engine over such files."""

import pickle
from itertools import pairwise

import h5py
import numpy as np
import pytest

from stem_explorer import masks
from stem_explorer.analyses import SumFrame, VirtualDetector, build_plan
from stem_explorer.engine import run_local
from stem_explorer.io import hdf5 as hdf5_mod
from stem_explorer.io import open_dataset
from stem_explorer.io.hdf5 import (
    Hdf5ChunkRunsDataSet,
    Hdf5ChunkRunsSource,
    _chunk_runs,
    _chunk_table,
)
from stem_explorer.io.testing import (
    assert_partitions_valid,
    assert_reads_equal,
    is_memory_mapped,
    make_frames,
)

DTYPES = ["uint8", "uint16", ">u2", "float32"]


def write(path, data, chunks, order=None, skip=(), fillvalue=None, maxshape=None):
    """``data`` into a chunked uncompressed dataset, chunk by chunk in ``order`` (chunk
    grid indices; default: logical order), leaving the chunks in ``skip`` unwritten."""
    nav = data.shape[:-2]
    grid = [-(-n // c) for n, c in zip(nav, chunks)]
    order = list(np.ndindex(*grid)) if order is None else order
    with h5py.File(path, "w") as f:
        dset = f.create_dataset(
            "frames", shape=data.shape, dtype=data.dtype, chunks=tuple(chunks) + data.shape[-2:],
            fillvalue=fillvalue, maxshape=maxshape,
        )
        for index in order:
            if tuple(index) in skip:
                continue
            sel = tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, chunks))
            dset[sel] = data[sel]
    return path


def flat(data):
    return data.reshape((-1,) + data.shape[-2:])


def check_tiles(ds, data, tile_frames=5, n_workers=2, target_bytes=None):
    """Every tile of every partition reads right; returns (mapped tiles, all tiles)."""
    frames = flat(data)
    parts = ds.partitions(n_workers, target_bytes or 7 * ds.frame_bytes)
    assert_partitions_valid(ds, parts, n_workers)
    mapped = total = 0
    for p in parts:
        part = pickle.loads(pickle.dumps(p))
        with part.source.open() as reader:
            for a, b in part.tile_ranges(tile_frames):
                tile = reader.read(a, b)
                assert tile.dtype.str == data.dtype.str
                assert np.array_equal(tile, frames[a:b]), (a, b)
                mapped += is_memory_mapped(tile)
                total += 1
    return mapped, total


def check_every_range(ds, data):
    frames = flat(data)
    with ds.source.open() as reader:
        for a in range(ds.n_frames + 1):
            for b in range(a, ds.n_frames + 1):
                got = reader.read(a, b)
                assert got.shape == (b - a,) + ds.sig_shape
                assert np.array_equal(got, frames[a:b]), (a, b)


# -- runs broken by B-tree nodes ------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "nav, chunks",
    [((16, 20), (1, 1)), ((12, 24), (1, 4)), ((300,), (1,)), ((150,), (2,)), ((160, 8), (2, 8))],
)
def test_many_chunks_with_btree_gaps(tmp_path, dtype, nav, chunks):
    data = make_frames(nav, (4, 5), dtype, seed=1)
    with h5py.File(tmp_path / "g.h5", "w") as f:  # all at once: chunks in logical order
        f.create_dataset("frames", data=data, chunks=tuple(chunks) + (4, 5))
    ds = open_dataset(tmp_path / "g.h5")
    meta = ds.metadata
    assert meta["read_path"] == "mapped_chunks", meta
    assert isinstance(ds, Hdf5ChunkRunsDataSet) and isinstance(ds.source, Hdf5ChunkRunsSource)
    assert meta["mapped_runs"] > 1 and meta["mapped_frames"] == ds.n_frames
    assert_reads_equal(ds, data, partitions=ds.partitions(2, 40 * ds.frame_bytes), tile_frames=16)
    mapped, total = check_tiles(ds, data, tile_frames=16, target_bytes=64 * ds.frame_bytes)
    assert mapped == total  # tiles are cut where runs end: every one a view


def test_tiles_are_cut_at_run_edges_and_stay_aligned(tmp_path):
    data = make_frames((300,), (4, 5), "uint16")
    write(tmp_path / "g.h5", data, (4,))
    ds = open_dataset(tmp_path / "g.h5")
    runs = ds.source.runs
    edges = set(runs[:, :2].ravel().tolist())
    for p in ds.partitions(1):
        tiles = p.tile_ranges(32)
        assert tiles[0][0] == p.start and tiles[-1][1] == p.stop
        assert all(a < b and b == c for (a, b), (c, _) in pairwise(tiles))
        for a, b in tiles:
            assert a % 4 == 0 and (b % 4 == 0 or b == ds.n_frames)
            assert not any(a < e < b for e in edges)
            assert b - a <= 32


def test_partition_descriptors_carry_only_their_runs(tmp_path):
    # every chunk its own run (written in shuffled order): the full table is big, but a
    # partition's source keeps the few runs of its own frames
    nav = (64, 64)
    data = make_frames(nav, (2, 2), "uint8", seed=4)
    order = [tuple(i) for i in np.random.default_rng(0).permutation(list(np.ndindex(*nav)))]
    write(tmp_path / "s.h5", data, (1, 1), order=order)
    ds = open_dataset(tmp_path / "s.h5")
    assert ds.metadata["mapped_runs"] > 3000
    parts = ds.partitions(2, 64 * ds.frame_bytes)
    for p in parts:
        assert len(p.source.runs) <= p.n_frames
        assert len(pickle.dumps(p)) < 4000
    assert_reads_equal(ds, data, partitions=parts, tile_frames=16)


# -- chunks written out of order -----------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nav, chunks", [((6, 9), (1, 3)), ((6, 9), (2, 9)), ((40,), (3,)), ((7, 10), (1, 4))])
def test_shuffled_chunks(tmp_path, dtype, nav, chunks):
    data = make_frames(nav, (3, 4), dtype, seed=2)
    grid = [-(-n // c) for n, c in zip(nav, chunks)]
    cells = list(np.ndindex(*grid))
    order = [cells[i] for i in np.random.default_rng(7).permutation(len(cells))]
    write(tmp_path / "s.h5", data, chunks, order=order)
    ds = open_dataset(tmp_path / "s.h5")
    assert ds.metadata["read_path"] == "mapped_chunks"
    check_every_range(ds, data)
    for tile_frames in (1, 4, 64):
        assert_reads_equal(ds, data, partitions=ds.partitions(2, 9 * ds.frame_bytes), tile_frames=tile_frames)


# -- partial edge chunks ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "nav, chunks",
    [
        ((5, 7), (1, 3)),  # scan row not a multiple of the chunk: padded last chunk per row
        ((5, 4), (2, 4)),  # whole rows per chunk, last chunk half padding
        ((10,), (4,)),  # 3-D stack, last chunk half padding
        ((3, 2), (1, 5)),  # a chunk wider than the scan row (resizable dataset)
    ],
)
@pytest.mark.parametrize("dtype", ["uint16", ">u2"])
@pytest.mark.parametrize("reverse", [False, True])
def test_partial_edge_chunks(tmp_path, nav, chunks, dtype, reverse):
    data = make_frames(nav, (4, 3), dtype, seed=3)
    maxshape = (None,) * len(nav) + (4, 3) if chunks[-1] > nav[-1] else None
    order = list(np.ndindex(*[-(-n // c) for n, c in zip(nav, chunks)]))
    write(tmp_path / "e.h5", data, chunks, order=order[::-1] if reverse else order, maxshape=maxshape)
    ds = open_dataset(tmp_path / "e.h5")
    if not reverse and nav in ((10,), (5, 4)):  # the only padding is past the last frame
        assert ds.metadata["read_path"] == "mmap"
    else:  # padding (or reversed order) between the chunks' frames
        assert ds.metadata["read_path"] == "mapped_chunks"
        assert ds.metadata["mapped_frames"] == ds.n_frames
    check_every_range(ds, data)
    mapped, total = check_tiles(ds, data, tile_frames=3)
    assert mapped == total


def test_shrunk_resizable_dataset(tmp_path):
    """Chunks past a shrunk extent hold no frames; the edge chunk maps its valid part."""
    data = make_frames((10,), (3, 3), "uint16", seed=5)
    with h5py.File(tmp_path / "r.h5", "w") as f:
        dset = f.create_dataset("frames", shape=(16, 3, 3), maxshape=(None, 3, 3), dtype="u2", chunks=(4, 3, 3))
        for i in reversed(range(0, 16, 4)):
            dset[i : i + 4] = np.concatenate([data, data])[i : i + 4]
        dset.resize((10, 3, 3))
    ds = open_dataset(tmp_path / "r.h5")
    assert ds.shape == (10, 3, 3)
    assert ds.metadata["read_path"] == "mapped_chunks" and ds.metadata["mapped_frames"] == 10
    check_every_range(ds, data)


# -- chunks never written -----------------------------------------------------------------------
@pytest.mark.parametrize("fillvalue", [None, 7])
def test_unwritten_chunks_read_the_fill_value(tmp_path, fillvalue):
    nav, chunks = (6, 8), (1, 2)
    data = make_frames(nav, (3, 3), "uint16", seed=6)
    skip = {(0, 0), (2, 1), (2, 2), (5, 3)}
    write(tmp_path / "u.h5", data, chunks, skip=skip, fillvalue=fillvalue)
    expected = data.copy()
    for y, x in skip:
        expected[y, 2 * x : 2 * x + 2] = fillvalue or 0
    ds = open_dataset(tmp_path / "u.h5")
    assert ds.metadata["read_path"] == "mapped_chunks"
    assert ds.metadata["mapped_frames"] == ds.n_frames - 2 * len(skip)
    check_every_range(ds, expected)
    mapped, total = check_tiles(ds, expected, tile_frames=4)
    assert 0 < mapped < total
    assert_reads_equal(ds, expected, partitions=ds.partitions(3, 5 * ds.frame_bytes), tile_frames=3)


def test_only_one_chunk_written(tmp_path):
    data = make_frames((4,), (2, 2), "float32")
    write(tmp_path / "one.h5", data, (1,), skip={(0,), (1,), (3,)})
    ds = open_dataset(tmp_path / "one.h5")
    expected = np.zeros_like(data)
    expected[2] = data[2]
    assert ds.metadata["read_path"] == "mapped_chunks"
    check_every_range(ds, expected)


def test_nothing_written_reads_through_h5py(tmp_path):
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f.create_dataset("frames", shape=(3, 4, 2, 2), dtype="u2", chunks=(1, 2, 2, 2), fillvalue=3)
    ds = open_dataset(tmp_path / "empty.h5")
    assert ds.metadata["read_path"] == "chunked"
    assert_reads_equal(ds, np.full((3, 4, 2, 2), 3, "u2"))


# -- what is not mapped ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "chunks, options",
    [
        ((1, 2, 3, 3), {"compression": "gzip"}),  # filtered
        ((2, 2, 3, 3), {}),  # two partial rows per chunk: frames not consecutive
        ((1, 2, 2, 3), {}),  # part frames
    ],
)
def test_not_mappable_layouts_keep_h5py(tmp_path, chunks, options):
    data = make_frames((4, 6), (3, 3), "uint16")
    with h5py.File(tmp_path / "n.h5", "w") as f:
        f.create_dataset("frames", data=data, chunks=chunks, **options)
    ds = open_dataset(tmp_path / "n.h5")
    assert ds.metadata["read_path"] == "chunked"
    assert type(ds).__name__ == "DataSet"
    assert_reads_equal(ds, data, tile_frames=5)


def test_wrong_addresses_are_caught_on_open(tmp_path, monkeypatch):
    """The cross-check against h5py refuses a mapping whose offsets are off."""
    data = make_frames((300,), (4, 5), "uint16")
    write(tmp_path / "g.h5", data, (1,))
    real = hdf5_mod._chunk_table

    def shifted(dset, **kw):
        table = real(dset, **kw)
        table[len(table) // 2 :, -2] += 2  # later chunks two bytes off
        return table

    monkeypatch.setattr(hdf5_mod, "_chunk_table", shifted)
    ds = open_dataset(tmp_path / "g.h5")
    assert ds.metadata["read_path"] == "chunked"
    assert_reads_equal(ds, data, tile_frames=8)


def test_chunk_table_without_chunk_iter_agrees(tmp_path):
    nav = (9, 10)
    data = make_frames(nav, (2, 3), "int16")
    cells = list(np.ndindex(5, 9))
    order = [cells[i] for i in np.random.default_rng(1).permutation(len(cells))]
    write(tmp_path / "t.h5", data, (2, 1), order=order[:-3])
    with h5py.File(tmp_path / "t.h5", "r") as f:
        dset = f["frames"]
        walked = _chunk_table(dset)
        looked_up = _chunk_table(dset, iterate=False)
        assert len(walked) == len(cells) - 3
        assert sorted(map(tuple, walked.tolist())) == sorted(map(tuple, looked_up.tolist()))
        assert _chunk_runs(dset) is None  # (2, 1) chunks: frames not consecutive


def test_chunk_lookups_past_the_cap_give_up(tmp_path, monkeypatch):
    data = make_frames((20,), (2, 2), "uint16")
    write(tmp_path / "c.h5", data, (1,), order=list(np.ndindex(20))[::-1])
    monkeypatch.setattr(hdf5_mod, "_MAX_CHUNK_LOOKUPS", 19)
    with h5py.File(tmp_path / "c.h5", "r") as f:
        assert _chunk_table(f["frames"], iterate=False) is None
        assert len(_chunk_table(f["frames"])) == 20


def test_the_one_run_case_is_a_plain_mapping(tmp_path):
    data = make_frames((5, 6), (3, 3), "uint16")
    write(tmp_path / "o.h5", data, (1, 6))
    ds = open_dataset(tmp_path / "o.h5")
    assert ds.metadata["read_path"] == "mmap"
    assert type(ds).__name__ == "DataSet"


def test_nav_shape_reshape_keeps_the_mapping(tmp_path):
    data = make_frames((300,), (2, 2), "uint16")
    write(tmp_path / "g.h5", data, (3,))
    ds = open_dataset(tmp_path / "g.h5", nav_shape=(15, 20))
    assert isinstance(ds, Hdf5ChunkRunsDataSet) and ds.nav_shape == (15, 20)
    assert_reads_equal(ds, data.reshape(15, 20, 2, 2), tile_frames=10)


# -- through the engine ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_engine_results_equal_the_raw_file(tmp_path, dtype):
    nav, sig = (18, 20), (9, 8)
    data = make_frames(nav, sig, dtype, seed=8)
    if data.dtype.kind == "u":
        data = (data % 200).astype(dtype)  # sums stay exact in float32
    skip = {(3, 2), (3, 3)}
    write(tmp_path / "d.h5", data, (1, 4), skip=skip)
    expected = data.copy()
    for y, x in skip:
        expected[y, 4 * x : 4 * x + 4] = 0
    expected.tofile(tmp_path / "d.raw")
    h5 = open_dataset(tmp_path / "d.h5")
    raw = open_dataset(tmp_path / "d.raw", nav_shape=nav, sig_shape=sig, dtype=data.dtype.str)
    assert h5.metadata["read_path"] == "mapped_chunks" and h5.metadata["mapped_runs"] > 1
    analyses = [VirtualDetector({"bf": masks.Disk(4, 3.5, 2.5)}), SumFrame()]
    results = []
    for ds in (h5, raw):
        plan, finalize = build_plan(analyses, ds, tile_bytes=24 * ds.frame_bytes)
        accs = run_local(ds.partitions(2, 60 * ds.frame_bytes), plan)
        results.append(finalize(accs, np.ones(ds.n_frames, bool)))
    keys = sorted(results[1])
    assert len(keys) == 2
    for key in keys:
        assert np.array_equal(np.asarray(results[0][key].data), np.asarray(results[1][key].data)), key
    native = expected.astype(expected.dtype.newbyteorder("="))
    sum_key = next(k for k in keys if "sum" in k)
    np.testing.assert_allclose(results[0][sum_key].data, native.sum(axis=(0, 1), dtype=np.float64), rtol=1e-5)


def test_subset_and_breaks():
    runs = [[0, 5, 100], [5, 9, 1000], [12, 20, 2000]]  # frames 9:12 in no run
    src = Hdf5ChunkRunsSource("x.h5", "/f", shape=(20, 2, 3), dtype="<u2", runs=runs)
    assert src.breaks(0, 20).tolist() == [5, 9, 12]
    assert src.breaks(5, 9).tolist() == []
    assert src.breaks(4, 13).tolist() == [5, 9, 12]
    assert src.breaks(10, 12).tolist() == []
    sub = src.subset(3, 14)
    assert sub.runs.tolist() == [[3, 5, 100 + 3 * 12], [5, 9, 1000], [12, 14, 2000]]
    assert src.subset(9, 12).runs.tolist() == []
    assert src.subset(6, 7).runs.tolist() == [[6, 7, 1012]]
    assert sub.n_frames == 20 and sub.path == "x.h5" and src.runs.shape == (3, 3)
