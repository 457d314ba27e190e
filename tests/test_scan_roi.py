"""Scan ROI for every analysis (issue 17): results against plain numpy, in several
dtypes and shapes, run in this process; the reads limited to the ROI's tiles and
chunks (counted by the job's statistics, and proven on compressed partitions whose
chunks outside the ROI are damaged: reading one would raise); bad ROIs. Through a
cluster: tests/test_session.py's session fixture."""

import json

import numpy as np
import pytest

import _reference as ref
from test_analyses import SHAPES, make_data
from stem_explorer import masks
from stem_explorer.analyses import (
    CenterOfMass,
    MaxFrame,
    MeanFrame,
    PickFrame,
    RoiSum,
    StdFrame,
    SumFrame,
    VirtualDetector,
    build_plan,
)
from stem_explorer.analyses.scan_roi import roi_to_frames
from stem_explorer.engine import run_local
from stem_explorer.engine.roi import plan_frames, read_blocks
from stem_explorer.errors import AnalysisError, FormatError
from stem_explorer.io import open_dataset
from stem_explorer.io.partitioned import codecs, write_raw_partitions

DTYPES = ["uint8", "uint16", ">u2", "int32", "float32"]


def an_roi(nav):
    """Every third position plus the last one (runs of one frame and a run at the end)."""
    roi = np.zeros(nav, bool)
    roi.flat[::3] = True
    roi.flat[-1] = True
    return roi


def run_with_roi(ds, analyses, roi, tile_frames=3, target_bytes=700):
    plan, finalize = build_plan(analyses, ds, tile_bytes=tile_frames * ds.frame_bytes)
    frames = None if roi is None else roi_to_frames(roi, ds)
    accumulators = run_local(ds.partitions(2, target_bytes=target_bytes), plan, roi=frames)
    return finalize(accumulators, np.ones(ds.n_frames, bool))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_roi_results_match_numpy(tmp_path, dtype, shape):
    nav, sig = SHAPES[shape]
    data = make_data(nav, sig, dtype)
    (tmp_path / "d.raw").write_bytes(data.tobytes())
    ds = open_dataset(tmp_path / "d.raw", nav_shape=nav, sig_shape=sig, dtype=data.dtype.str)
    cy, cx = (sig[0] - 1) / 2, (sig[1] - 1) / 2
    disk = masks.Disk(cy, cx, 2.5)
    roi = an_roi(nav)
    results = run_with_roi(ds, [VirtualDetector(disk), CenterOfMass(center=(cy, cx)), SumFrame(), MeanFrame(),
                                StdFrame(), MaxFrame()], roi)
    inside = ref.frames(data)[roi.ravel()]
    image = results["vd/mask0"].data
    np.testing.assert_allclose(image[roi], ref.virtual_image(data, disk.rasterize(sig))[roi], rtol=1e-5, atol=1e-3)
    assert np.isnan(image[~roi]).all() and image.shape == nav  # per position: NaN outside the ROI
    _, _, total = ref.center_of_mass(data, cy, cx, None)
    np.testing.assert_allclose(results["com/total"].data[roi], total[roi], rtol=1e-6)
    assert np.isnan(results["com/shift_y"].data[~roi]).all()
    np.testing.assert_array_equal(results["sum/frame"].data, inside.sum(axis=0))  # reductions: the ROI only
    np.testing.assert_allclose(results["mean/frame"].data, inside.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(results["std/frame"].data, inside.std(axis=0), rtol=1e-9, atol=1e-9)
    native = inside.astype(inside.dtype.newbyteorder("="))
    np.testing.assert_array_equal(results["max/frame"].data, native.max(axis=0))


def test_a_position_list_and_a_shape_select_the_same_frames(tmp_path):
    data = make_data((6, 9), (4, 5), "uint16")
    (tmp_path / "d.raw").write_bytes(data.tobytes())
    ds = open_dataset(tmp_path / "d.raw", nav_shape=(6, 9), sig_shape=(4, 5), dtype="uint16")
    rect = masks.Rectangle(1, 2, 3, 4)  # rows 1..3, columns 2..5
    positions = [(r, c) for r in range(1, 4) for c in range(2, 6)]
    boolean = np.zeros((6, 9), bool)
    boolean[1:4, 2:6] = True
    expected = np.flatnonzero(boolean.ravel())
    for roi in (rect, rect.to_dict(), positions, boolean):
        np.testing.assert_array_equal(roi_to_frames(roi, ds), expected)
    sums = run_with_roi(ds, [SumFrame()], positions)["sum/frame"].data
    np.testing.assert_array_equal(sums, data[1:4, 2:6].reshape(-1, 4, 5).sum(axis=0))


def test_read_blocks_cover_only_the_chunks_holding_wanted_frames():
    # one frame a chunk: exactly the runs, each its own read
    assert read_blocks(np.array([3, 4, 5, 9, 20]), 32, 1, 8) == [(3, 6, [(3, 6)]), (9, 10, [(9, 10)]), (20, 21, [(20, 21)])]
    # chunks of 4: runs in the same or touching chunks share one read; chunk 12:16 holds
    # no wanted frame and is not read
    assert read_blocks(np.array([1, 2, 6, 17]), 30, 4, 8) == [(0, 8, [(1, 3), (6, 7)]), (16, 20, [(17, 18)])]
    # a long run is cut into tiles; the last chunk ends at the partition's end
    assert read_blocks(np.arange(2, 27), 27, 4, 8) == [(0, 8, [(2, 8)]), (8, 16, [(8, 16)]), (16, 24, [(16, 24)]),
                                                        (24, 27, [(24, 27)])]


def test_ops_declare_the_frames_they_need(tmp_path):
    data = make_data((4, 6), (3, 3), "uint16")
    (tmp_path / "d.raw").write_bytes(data.tobytes())
    ds = open_dataset(tmp_path / "d.raw", nav_shape=(4, 6), sig_shape=(3, 3), dtype="uint16")
    pick = build_plan([PickFrame([(2, 5), (0, 1)])], ds)[0]
    region = build_plan([PickFrame((0, 1)), RoiSum(masks.Rectangle(3, 0, 1, 2))], ds)[0]
    full = build_plan([PickFrame((0, 1)), SumFrame()], ds)[0]
    np.testing.assert_array_equal(plan_frames(pick.ops), [1, 17])
    np.testing.assert_array_equal(plan_frames(region.ops), [1, 18, 19])
    assert plan_frames(full.ops) is None  # the sum needs every frame
    np.testing.assert_array_equal(plan_frames(full.ops, np.array([1, 2, 3])), [1, 2, 3])


@pytest.fixture
def damaged_outside(tmp_path, monkeypatch):
    return make_damaged_outside(tmp_path, monkeypatch)


def make_damaged_outside(tmp_path, monkeypatch):
    """Compressed partitions (chunks of 3 frames) whose every chunk is damaged except
    those holding the ROI's frames: a read of any other chunk raises."""
    nav, sig = (6, 10), (8, 8)
    data = make_data(nav, sig, "uint16", seed=3)
    monkeypatch.setattr(codecs, "CHUNK_BYTES", 3 * 128)
    ds = write_raw_partitions(tmp_path / "ds", data, partition_bytes=12 * 128, codec="bslz4")
    roi = np.zeros(nav, bool)
    roi[1, 2:5] = True  # frames 12, 13, 14: chunk 12:15
    roi[4, 7] = True  # frame 47: chunk 45:48
    kept = {12, 45}
    doc = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    for part in doc["partitions"]:
        offsets = np.concatenate([[0], np.cumsum(part["chunk_bytes"])])
        with open(tmp_path / "ds" / part["file"], "r+b") as f:
            for c in range(len(part["chunk_bytes"])):
                if part["start"] + 3 * c not in kept:
                    f.seek(int(offsets[c]) + 20)
                    f.write(b"\xff\x00\xff")
    return ds, data, roi


def test_only_the_rois_chunks_are_read(damaged_outside):
    ds, data, roi = damaged_outside
    with pytest.raises(FormatError, match="damaged"):  # the damage is seen when read
        run_with_roi(ds, [SumFrame()], None, target_bytes=12 * 128)
    results = run_with_roi(ds, [SumFrame(), VirtualDetector(masks.Disk(4, 4, 3)), PickFrame([(4, 7), (1, 3)]),
                                RoiSum(roi)], roi, target_bytes=12 * 128)
    np.testing.assert_array_equal(results["sum/frame"].data, data[roi].sum(axis=0))
    np.testing.assert_array_equal(results["roi/frame"].data, data[roi].sum(axis=0))
    np.testing.assert_array_equal(results["pick/frames"].data, data[[4, 1], [7, 3]])
    assert np.isnan(results["vd/mask0"].data[~roi]).all()
    # with no ROI, PickFrame and RoiSum alone read their own chunks only
    alone = run_with_roi(ds, [PickFrame((1, 4)), RoiSum(roi)], None, target_bytes=12 * 128)
    np.testing.assert_array_equal(alone["pick/frames"].data[0], data[1, 4])
    np.testing.assert_array_equal(alone["roi/frame"].data, data[roi].sum(axis=0))


@pytest.mark.parametrize("roi,message", [
    (np.ones((3, 3), bool), r"roi has shape \(3, 3\) but the scan has shape \(4, 6\)"),
    (np.zeros((4, 6), bool), "roi selects no scan position"),
    (masks.Rectangle(10, 10, 2, 2), r"roi: the shape Rectangle\(.*\) lies outside the scan of shape \(4, 6\)"),
    ([(0, 1), (2, 2), (0, 1)], r"roi lists scan position \(0, 1\) more than once"),
    ([(0, 1), (4, 0)], r"roi: scan position \(4, 0\) is outside the scan"),
    ([(0, 1, 2)], "each position of roi needs 2 indices"),
    ([], "roi is empty"),
    (np.ones((4, 6)), "roi must be integer scan positions"),
    ([[True, False], [True]], "roi must be a boolean array of the scan's shape, a mask shape or a list of positions"),
])
def test_bad_rois_are_refused_naming_the_parameter(tmp_path, roi, message):
    (tmp_path / "d.raw").write_bytes(bytes(4 * 6 * 9 * 2))
    ds = open_dataset(tmp_path / "d.raw", nav_shape=(4, 6), sig_shape=(3, 3), dtype="uint16")
    with pytest.raises(AnalysisError, match=message):
        roi_to_frames(roi, ds)


def test_a_shape_roi_needs_a_2d_scan(tmp_path):
    (tmp_path / "d.raw").write_bytes(bytes(8 * 4))
    ds = open_dataset(tmp_path / "d.raw", nav_shape=(8,), sig_shape=(2, 2), dtype="uint8")
    with pytest.raises(AnalysisError, match="a shape as roi needs a 2-D scan"):
        roi_to_frames(masks.Disk(0, 0, 2), ds)
    np.testing.assert_array_equal(roi_to_frames([5, 2], ds), [2, 5])  # 1-D positions: plain integers


def _resident_pages(path) -> np.ndarray:
    """Which pages of ``path`` are in the page cache (``mincore`` on a fresh mapping)."""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    size = path.stat().st_size
    with open(path, "rb") as f:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, f.fileno(), 0)
        vec = np.zeros(-(-size // mmap.PAGESIZE), np.uint8)
        try:
            assert libc.mincore(addr, size, vec.ctypes.data) == 0
        finally:
            libc.munmap(addr, size)
    return (vec & 1).astype(bool)


def test_a_mapped_reader_fetches_the_rois_blocks_when_told(tmp_path):
    """``will_need`` asks the kernel for the blocks' bytes at once (a cold ROI's runs
    were otherwise faulted in one read-ahead window after another): they come into the
    page cache without being touched, the rest of the file stays out."""
    import os
    import time

    frame = 64 * 1024  # 16 pages a frame
    path = tmp_path / "d.raw"
    path.write_bytes(np.random.default_rng(0).integers(0, 255, 64 * frame, np.uint8).tobytes())
    with open(path, "rb") as f:
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    if _resident_pages(path).any():
        pytest.skip("this file system keeps the file's pages in memory (tmpfs?)")
    ds = open_dataset(path, nav_shape=(64,), sig_shape=(256, 128), dtype="uint16")
    with ds.source.open() as reader:
        reader.will_need([(10, 12), (40, 41)])
        wanted = np.zeros(64 * 16, bool)
        wanted[10 * 16 : 12 * 16] = wanted[40 * 16 : 41 * 16] = True
        deadline = time.monotonic() + 10
        while not _resident_pages(path)[wanted].all() and time.monotonic() < deadline:
            time.sleep(0.01)
        resident = _resident_pages(path)
    assert resident[wanted].all()
    assert not resident[50 * 16 :].any()  # far from both: not read
