"""The coarse-first preview: grid sizing and filling, and jobs on a real LocalCluster
whose first partial result covers the whole scan field at coarse resolution."""

import math
import os
import threading

import dask.array as da
import numpy as np
import pytest

import _reference as ref
from stem_explorer import Session, masks
from stem_explorer.analyses import CenterOfMass, SumFrame, VirtualDetector
from stem_explorer.engine import preview, warmup
from stem_explorer.errors import FormatError
from test_session import client, raw_dataset, slow_dataset  # noqa: F401 (fixture)


def test_auto_stride_keeps_the_preview_within_its_budget():
    sample = (256, 256)
    assert preview.auto_stride(sample, 128 * 128 * 2) == 12  # 484 frames, 15.1 MiB
    for nav, frame_bytes in [((256, 256), 32768), ((1024, 1024), 32768), ((4096, 4096), 2**20), ((10**6,), 512)]:
        stride = preview.auto_stride(nav, frame_bytes)
        n = preview.grid_indices(nav, stride).size
        assert n * frame_bytes <= preview.PREVIEW_BYTES and n <= preview.PREVIEW_FRAMES
    assert preview.auto_stride((32, 32), 32768) == 1  # small: no preview
    assert preview.auto_stride((4, 4, 4), 2**20) == 1  # 3-D scans: none


def test_grid_indices_and_fill():
    idx = preview.grid_indices((5, 7), 3)
    np.testing.assert_array_equal(idx, [0, 3, 6, 21, 24, 27])
    np.testing.assert_array_equal(preview.grid_indices((10,), 2), [0, 4, 8])
    image = np.arange(35, dtype=float).reshape(5, 7)
    filled = np.zeros((5, 7), bool)
    filled.flat[idx] = True
    shown = preview.fill_from_grid(np.where(filled, image, np.nan), filled, 3)
    expected = image[::3, ::3].repeat(3, 0).repeat(3, 1)[:5, :7]
    np.testing.assert_array_equal(shown, expected)
    filled[3:, :] = True  # a finished partition keeps its exact values
    shown = preview.fill_from_grid(np.where(filled, image, np.nan), filled, 3)
    np.testing.assert_array_equal(shown[3:], image[3:])
    np.testing.assert_array_equal(shown[:3], expected[:3])
    line = np.where(np.arange(10) % 4 == 0, np.arange(10.0), np.nan)
    np.testing.assert_array_equal(preview.fill_from_grid(line, ~np.isnan(line), 2), [0, 0, 0, 0, 4, 4, 4, 4, 8, 8])
    with pytest.raises(ValueError, match="stride"):
        preview.grid_indices((4, 4), 0)


@pytest.fixture(params=["client", "cluster"])
def preview_where(request, monkeypatch):
    """Where jobs compute their preview: in this process (as once its kernels are warm)
    or in a task (before, or for data this process cannot read cheaply)."""
    monkeypatch.setattr(warmup, "is_warm", lambda dtype: request.param == "client")
    return request.param


@pytest.mark.parametrize("nav", [(12, 10), (90,)], ids=["2d", "1d"])
def test_first_partial_is_the_whole_field_preview(client, tmp_path, nav, preview_where):  # noqa: F811
    ds, data = slow_dataset(tmp_path, nav=nav, sig=(8, 8), delay=0.02)
    disk = masks.Disk(4, 3, 2.5)
    snapshots = []
    with Session(ds, client=client, partition_bytes=8 * 8 * 2 * 10) as session:
        job = session.run(VirtualDetector(disk), CenterOfMass(), SumFrame(), preview_stride=2, on_partial=snapshots.append)
        final = job.progress(timeout=60)
    assert job.preview_in_client == (preview_where == "client")
    grid = np.zeros(math.prod(nav), bool)
    grid[preview.grid_indices(nav, 2)] = True
    first = snapshots[0]
    assert first.preview_stride == 2 and first.filled.ravel()[grid].all()
    if job.preview_in_client:  # before any task's result
        assert first.partitions_done == 0 and (first.filled.ravel() == grid).all()
    # else it may include partitions that finished before the preview task
    expected = ref.virtual_image(data, disk.rasterize((8, 8)))
    image = first.results["vd/mask0"].data
    np.testing.assert_allclose(image[first.filled], expected[first.filled], rtol=1e-6)
    assert np.isnan(image[~first.filled]).all()
    shown = first.fill_preview(image)
    assert not np.isnan(shown).any()
    np.testing.assert_allclose(shown, preview.fill_from_grid(expected, first.filled, 2), rtol=1e-6)
    for s in snapshots:  # every value shown is exact, at every step
        np.testing.assert_allclose(s.results["vd/mask0"].data[s.filled], expected[s.filled], rtol=1e-6)
    np.testing.assert_allclose(final.results["vd/mask0"].data, expected, rtol=1e-6)
    np.testing.assert_array_equal(final.results["sum/frame"].data, ref.frames(data).sum(axis=0))
    assert final.final and final.filled.all() and final.results.provenance["complete"]


def test_no_preview_when_turned_off_or_only_reductions(client, tmp_path):  # noqa: F811
    data = np.random.default_rng(3).integers(0, 100, (12, 10, 6, 6)).astype(np.uint16)
    ds = raw_dataset(tmp_path, data)
    with Session(ds, client=client, partition_bytes=6 * 6 * 2 * 10) as session:
        assert session.run(VirtualDetector(masks.Disk(3, 3, 2)), preview_stride=1).preview_stride == 1
        assert session.run(SumFrame(), preview_stride=3).preview_stride == 1
        job = session.run(VirtualDetector(masks.Disk(3, 3, 2)))  # small: auto says none
        assert job.preview_stride == 1
        job.result(timeout=60)


@pytest.mark.parametrize("lazy", [False, True], ids=["numpy", "dask"])
def test_preview_from_in_memory_data(client, preview_where, lazy):  # noqa: F811
    data = np.random.default_rng(5).integers(0, 255, (9, 8, 5, 5)).astype(np.uint8)
    snapshots = []
    frames = da.from_array(data, chunks=(3, 8, 5, 5)) if lazy else data
    with Session(frames, client=client, partition_bytes=5 * 5 * 8) as session:
        job = session.run(CenterOfMass(center=(2.0, 2.0)), preview_stride=3, on_partial=snapshots.append)
        final = job.result(timeout=60)
    # a dask array would have to be computed here first: its preview is a task
    assert job.preview_in_client == (preview_where == "client" and not lazy)
    shift_y, shift_x, _ = ref.center_of_mass(data, 2.0, 2.0)
    # in-memory partitions may finish before the preview's data reached its worker,
    # so only exactness is asserted here, at every step
    for s in snapshots:
        np.testing.assert_allclose(s.results["com/shift_x"].data[s.filled], shift_x[s.filled], rtol=1e-6)
    np.testing.assert_allclose(final["com/shift_y"].data, shift_y, rtol=1e-6)


def test_warm_up_marks_the_dtypes_it_warmed():
    assert not warmup.wait_warm("int16", timeout=0)  # never started: no wait
    warmup.warm_up(("uint8",), partitions=False)
    assert warmup.is_warm("uint8") and warmup.is_warm(np.uint8) and warmup.wait_warm("uint8")


def test_warm_up_compiles_the_kernels_that_swap_big_endian_pixels():
    """A plan whose ops all read big-endian uint16 as stored (a virtual detector and
    the sum frame: a live Merlin job's) runs kernels of their own; the warm-up runs
    them too, so the first live chunk does not wait for numba."""
    from stem_explorer.engine import kernels

    warmup.warm_up([">u2"])
    assert kernels.accumulate_sum_u32_swapped.signatures


def test_a_session_over_large_cheaply_read_data_warms_this_process_after_a_job(client, tmp_path, monkeypatch):  # noqa: F811
    started = []
    monkeypatch.setattr(warmup, "warm_up_in_background", lambda dtypes, partitions: started.append((list(dtypes), partitions)))
    monkeypatch.setattr(warmup, "is_warm", lambda dtype: False)
    big = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.uint16, shape=(256, 256, 8, 8))
    del big  # a preview grid of every 4th row and column
    small = np.zeros((4, 4, 8, 8), np.uint16)
    for data, warms in [(str(tmp_path / "big.npy"), True), (small, False)]:
        started.clear()
        with Session(data, client=client) as session:
            assert session.dataset.random_access_here
            assert started == []  # not while the session starts
            session.run(SumFrame()).result(timeout=60)
        assert started[:1] == ([([np.dtype(np.uint16)], False)] if warms else [])  # the preview's kernels


def test_a_file_truncated_after_opening_fails_the_job_with_a_clear_error(client, tmp_path, monkeypatch):  # noqa: F811
    """The preview in this process fails; its task reads the same frames and the job
    reports why."""
    monkeypatch.setattr(warmup, "is_warm", lambda dtype: True)
    data = np.ones((16, 16, 8, 8), np.uint16)
    ds = raw_dataset(tmp_path, data)
    os.truncate(tmp_path / "data.raw", 1000)
    with Session(ds, client=client, partition_bytes=8 * 8 * 2 * 64) as session:
        job = session.run(VirtualDetector(masks.Disk(4, 4, 2)), preview_stride=4)
        with pytest.raises(FormatError, match="truncated"):
            job.result(timeout=60)
        assert not job.preview_in_client


def test_a_preview_in_the_client_runs_blas_on_its_own_thread(monkeypatch):
    """Woken OpenBLAS threads spin on the cores the workers need."""
    from threadpoolctl import threadpool_info

    from stem_explorer.engine import tasks

    def blas_threads():
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    seen = []
    monkeypatch.setattr(tasks, "compute_preview", lambda pieces, plan, stop=None: seen.append(blas_threads()))
    before = blas_threads()
    tasks.compute_preview_here([], None)
    assert seen and all(n == 1 for n in seen[0]) and blas_threads() == before


def test_run_returns_before_the_preview_here_has_read_its_frames(client, tmp_path, monkeypatch):  # noqa: F811
    """Cold frames come from disk: the job's thread reads them, never the caller."""
    from stem_explorer.engine import tasks

    monkeypatch.setattr(warmup, "is_warm", lambda dtype: True)
    release, reading = threading.Event(), threading.Event()
    compute = tasks.compute_preview

    def slow_compute(pieces, plan, stop=None):
        reading.set()
        assert release.wait(60)
        return compute(pieces, plan, stop)

    monkeypatch.setattr(tasks, "compute_preview", slow_compute)
    data = np.random.default_rng(2).integers(0, 100, (16, 16, 8, 8)).astype(np.uint16)
    snapshots = []
    with Session(raw_dataset(tmp_path, data), client=client, partition_bytes=8 * 8 * 2 * 64) as session:
        job = session.run(VirtualDetector(masks.Disk(4, 4, 2)), preview_stride=4, on_partial=snapshots.append)
        assert reading.wait(60) and not job.done  # run() returned while the preview was read
        release.set()
        final = job.progress(timeout=60)
    assert job.preview_in_client and snapshots[0].partitions_done == 0
    expected = ref.virtual_image(data, masks.Disk(4, 4, 2).rasterize((8, 8)))
    np.testing.assert_allclose(final.results["vd/mask0"].data, expected, rtol=1e-6)


def test_a_burst_of_superseding_jobs_delivers_only_the_last_ones_after_it_starts(client, tmp_path, preview_where):  # noqa: F811
    """Jobs replaced before their preview, their tasks or both were under way: each is
    cancelled at whatever stage, nothing stale follows the last job's first snapshot,
    and the last result is exact."""
    data = np.random.default_rng(4).integers(0, 500, (24, 20, 8, 8)).astype(np.uint16)
    events, lock = [], threading.Lock()

    def recorder(k):
        def record(progress):
            with lock:
                events.append(k)
        return record

    radii = [1.0 + 0.25 * k for k in range(12)]
    with Session(raw_dataset(tmp_path, data), client=client, partition_bytes=8 * 8 * 2 * 40) as session:
        jobs = [
            session.run(VirtualDetector(masks.Disk(4, 4, r)), preview_stride=4, on_partial=recorder(k), supersede=True)
            for k, r in enumerate(radii)
        ]
        final = jobs[-1].result(timeout=60)
    assert all(job.done for job in jobs[:-1])  # cancelled (or, on a slow day, finished first)
    last = len(radii) - 1
    assert last in events and all(k == last for k in events[events.index(last):])
    expected = ref.virtual_image(data, masks.Disk(4, 4, radii[-1]).rasterize((8, 8)))
    np.testing.assert_allclose(final["vd/mask0"].data, expected, rtol=1e-6)
