"""The reduced copy in the workers' memory and the previews computed from it: binning
against numpy, sizing within the budget, and jobs on a real multi-process LocalCluster
(the preview is the exact product on the binned data, the exact pass replaces it, a
preview never replaces an exact value, a budget too small falls back to the grid),
and a whole copy fetched into this process, where jobs then preview without tasks."""

import os
import signal
import time

import numpy as np
import pytest
from distributed import Event

import _reference as ref
from stem_explorer import Session, masks
from stem_explorer.analyses import CenterOfMass, FEM, SumFrame, VirtualDetector
from stem_explorer.engine import reduced, reduced_copy, warmup
from stem_explorer.engine.reduced_copy import MAX_SCAN_STEP, PREVIEW_BYTES_PER_WORKER, ReducedCopy, plan_copy
from stem_explorer.errors import OptionError
from test_session import client, raw_dataset, slow_dataset  # noqa: F401 (fixture)

DTYPES = ["uint16", ">u2", "float32"]


@pytest.fixture(autouse=True)
def previews_from_any_copy(monkeypatch):
    """The jobs here pass over their small files in milliseconds, under the time
    from which a preview from the copy is worth it: previews come from it anyway.
    They preview by tasks on the workers: no copy is fetched into this process
    (``HERE_PREVIEW_BYTES``), except where a test says otherwise."""
    monkeypatch.setattr(reduced_copy, "PREVIEW_WORTH_S", 0.0)
    monkeypatch.setattr(reduced_copy, "HERE_PREVIEW_BYTES", 0)


def _data(dtype, nav=(12, 10), sig=(40, 34)):
    return np.random.default_rng(3).integers(0, 4000, nav + sig).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES + ["uint8", "int16"])
@pytest.mark.parametrize("binning", [3, 4])
def test_binned_frames_and_masks_equal_numpy(dtype, binning):
    data = _data(dtype, nav=(5,), sig=(13, 10))  # neither side a multiple of the binning
    spec = reduced.ReducedSpec("k", (5,), (13, 10), np.dtype(dtype).str, binning, 1, 2**30)
    out = np.empty((5, np.prod(spec.binned_shape)), spec.copy_dtype)
    reduced.bin_frames(data.reshape(5, -1), spec.sig_shape, binning, out)
    expected = ref.binned(data, binning).reshape(5, -1)
    np.testing.assert_allclose(out, expected, rtol=1e-7 if dtype == "float32" else 0)
    mask = ref.disk((13, 10), 6, 4, 4.5) * 0.5 + ref.disk((13, 10), 3, 3, 2)
    weights = reduced.bin_matrix(mask.reshape(-1, 1), (13, 10), binning).toarray()[:, 0]
    np.testing.assert_allclose(weights, ref.binned_mask(mask, binning).ravel(), rtol=1e-12)


def test_sum_dtypes_hold_exact_bin_sums():
    assert reduced.sum_dtype(">u2", 16) == np.float32  # 16 x 65535 < 2**24: exact, and read as is
    assert reduced.sum_dtype("u2", 16 * 16) == np.float32 and reduced.sum_dtype("u2", 17 * 17) == np.uint32
    assert reduced.sum_dtype("u1", 16) == np.float32 and reduced.sum_dtype("i2", 4) == np.float32
    assert reduced.sum_dtype("i4", 4) == np.int64 and reduced.sum_dtype("bool", 4) == np.float32
    assert reduced.sum_dtype("float32", 64) == np.float32 and reduced.sum_dtype("float64", 4) == np.float64
    assert reduced.sum_dtype("u8", 4) == np.float64  # would wrap in any integer
    big = np.array([[65535] * 34 * 34], np.uint16)  # the largest sums of 17 x 17 bins stay exact
    out = np.empty((1, 4), reduced.sum_dtype("u2", 17 * 17))
    reduced.bin_frames(big, (34, 34), 17, out)
    assert (out == 65535 * 17 * 17).all()


def test_the_copy_is_the_finest_that_fits_its_budget_and_previews_quickly():
    nav, sig, dtype = (512, 640), (256, 256), np.dtype("uint16")  # the 40 GiB file's shape
    fast = {"worker_preview_bytes": 2**40}  # the memory budget alone
    spec, _ = plan_copy(nav, sig, dtype, 6 * 2**30, n_workers=4, **fast)
    assert spec.binning == 4 and spec.scan_step == 1 and spec.nbytes == 5 * 2**30  # 64x64 uint32 sums a frame
    assert plan_copy(nav, sig, dtype, spec.nbytes - 1, 4, **fast)[0].binning == 5
    spec, _ = plan_copy(nav, sig, dtype, 30 * 2**20, n_workers=4, **fast)  # 32x32 pixels a bin would take 80 MiB
    assert spec.binning == 32 and spec.scan_step == 2 and spec.nbytes == 20 * 2**20
    assert spec.worker_bytes == 15 * 2**20  # up to twice a worker's share
    spec, reason = plan_copy(nav, sig, dtype, 4 * 2**20, n_workers=4, **fast)
    assert spec is None and "memory budget (4.0 MiB) is too small" in reason and "coarse grid" in reason
    assert "reduced_copy_bytes" in reason and f"one scan row and column in {MAX_SCAN_STEP}" in reason
    assert plan_copy(nav, sig, dtype, 0, 4)[0] is None
    # what the workers read for a preview caps the copy too: 4 x 32 MiB
    spec, _ = plan_copy(nav, sig, dtype, 6 * 2**30, n_workers=4)
    assert (spec.binning, spec.scan_step) == (26, 1) and spec.nbytes <= 4 * PREVIEW_BYTES_PER_WORKER  # 10 x 10 bins
    spec, reason = plan_copy(nav * np.array([4, 4]), sig, dtype, 6 * 2**30, n_workers=1)
    assert spec is None and "more than 1 workers preview quickly" in reason


def test_the_registry_forgets_parts_of_gone_workers_and_other_layouts():
    spec, _ = plan_copy((4, 5), (16, 16), np.dtype("uint16"), 2**20, 2)
    copy = ReducedCopy(spec, 2**20)
    copy.record(0, 10, "tcp://a:1", 100)
    assert copy.wants(0, 10) is None and copy.wants(10, 20) is spec and not copy.usable
    copy.record(10, 20, "tcp://b:1", 100)
    assert copy.usable and copy.complete and copy.nbytes == 200
    copy.record(5, 15, "tcp://b:1", 100)  # a new partition layout replaces both
    assert copy.nbytes == 100 and not copy.complete and copy.usable  # it was whole once
    assert copy.holders(["tcp://a:1"]) == [] and copy.nbytes == 0 and not copy.usable


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_mask_change_previews_from_the_copy_then_refines_to_exact(client, tmp_path, dtype):  # noqa: F811
    data = _data(dtype)
    ds = raw_dataset(tmp_path, data)
    budget = 100_000  # 2x2 bins take 163 kB: 3x3 bins, 4 bytes a sum (81 kB)
    disk = masks.Disk(20, 15, 9)
    with Session(ds, client=client, partition_bytes=data[0, 0].nbytes * 10, reduced_copy_bytes=budget) as session:
        copy = session.reduced_copy
        assert copy.spec.binning == 3 and copy.spec.scan_step == 1 and not copy.usable
        session.run(SumFrame()).result(timeout=60)  # the first full pass leaves the copy
        assert copy.usable and copy.nbytes == copy.spec.nbytes <= budget
        on_workers = client.run(reduced.held_bytes, copy.spec.key)
        assert sum(on_workers.values()) == copy.nbytes  # what the workers hold, measured there
        snapshots = []
        job = session.run(VirtualDetector(disk), CenterOfMass(center=(20, 16)), SumFrame(),  # a reduction: no preview
                          on_partial=snapshots.append)
        final = job.result(timeout=60)
    first = snapshots[0]
    assert first.preview_source == "reduced" and first.filled.all() and first.is_preview
    assert "reduced" in copy.status and "3 x 3 binned" in copy.status
    b = ref.binned(data, 3)
    exact_vd = ref.virtual_image(data, disk.rasterize((40, 34)))
    preview_vd = np.einsum("yxij,ij->yx", b, ref.binned_mask(disk.rasterize((40, 34)), 3))
    y, x = np.indices((40, 34))
    m = [ref.binned_mask(w, 3) for w in (np.ones((40, 34)), y - 20.0, x - 16.0)]
    preview_sx = np.einsum("yxij,ij->yx", b, m[2]) / np.einsum("yxij,ij->yx", b, m[0])
    _, exact_sx, _ = ref.center_of_mass(data, 20, 16)
    for progress in snapshots:
        shown, done = progress.results["vd/mask0"].data, progress.exact
        np.testing.assert_allclose(shown[done], exact_vd[done], rtol=1e-6)
        np.testing.assert_allclose(shown[~done], preview_vd[~done], rtol=1e-5)
        np.testing.assert_allclose(progress.results["com/shift_x"].data[~done], preview_sx[~done], rtol=1e-4, atol=1e-6)
    assert not np.allclose(preview_vd, exact_vd, rtol=1e-3)  # the preview is not the exact result
    np.testing.assert_allclose(final["vd/mask0"].data, exact_vd, rtol=1e-6)
    np.testing.assert_allclose(final["com/shift_x"].data, exact_sx, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(final["sum/frame"].data, ref.frames(data).sum(axis=0), rtol=1e-6)
    assert snapshots[-1].final and snapshots[-1].exact.all() and not snapshots[-1].is_preview


def test_a_copy_over_its_budget_for_binning_alone_holds_every_nth_scan_row(client, tmp_path):  # noqa: F811
    data = _data("uint16", nav=(12, 10), sig=(16, 16))  # the coarsest useful binning: 2x2
    ds = raw_dataset(tmp_path, data)
    disk = masks.Disk(8, 8, 4)
    with Session(ds, client=client, partition_bytes=data[0, 0].nbytes * 10, reduced_copy_bytes=9000) as session:
        spec = session.reduced_copy.spec
        assert (spec.binning, spec.scan_step) == (2, 2) and session.reduced_copy.budget == 9000
        session.run(SumFrame()).result(timeout=60)
        assert 0 < session.reduced_copy.nbytes <= 9000
        snapshots = []
        session.run(VirtualDetector(disk), on_partial=snapshots.append).result(timeout=60)
    first = snapshots[0]
    assert first.preview_source == "reduced" and first.preview_stride == 2
    grid = first.filled & ~first.exact
    assert grid.any() and not grid[1::2, :].any() and not grid[:, 1::2].any()
    preview_vd = np.einsum("yxij,ij->yx", ref.binned(data, 2), ref.binned_mask(disk.rasterize((16, 16)), 2))
    np.testing.assert_allclose(first.results["vd/mask0"].data[grid], preview_vd[grid], rtol=1e-6)
    assert not np.isnan(first.fill_preview(first.results["vd/mask0"].data)).any()


def test_a_grid_preview_computed_here_comes_first_and_keeps_its_values(client, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(warmup, "is_warm", lambda dtype: True)  # as once this process has warmed its kernels
    data = _data("float32", nav=(12, 10), sig=(16, 16))
    ds = raw_dataset(tmp_path, data)
    disk = masks.Disk(8, 7, 5)
    with Session(ds, client=client, partition_bytes=data[0, 0].nbytes * 10) as session:
        session.run(SumFrame()).result(timeout=60)
        # the workers are busy (as from the page cache the grid here is faster than a round trip)
        blockers = [f for w in sorted(client.scheduler_info()["workers"]) for f in _block(client, w, "reduced-grid")]
        snapshots = []
        job = session.run(VirtualDetector(disk), preview_stride=3, on_partial=snapshots.append)
        deadline = time.monotonic() + 30
        while not snapshots:
            assert time.monotonic() < deadline, "no grid preview from here"
            time.sleep(0.02)
        Event("reduced-grid").set()
        final = job.result(timeout=60)
        client.gather(blockers)
    assert job.preview_in_client
    grid, copy = snapshots[0], next(p for p in snapshots if p.preview_source == "reduced")
    assert (grid.preview_source, grid.preview_stride, grid.partitions_done) == ("grid", 3, 0)
    assert grid.filled.sum() == 4 * 4 and not np.isnan(grid.fill_preview(grid.results["vd/mask0"].data)).any()
    assert copy.preview_stride == 1 and copy.filled.all()
    exact = ref.virtual_image(data, disk.rasterize((16, 16)))
    preview_vd = np.einsum("yxij,ij->yx", ref.binned(data, 2), ref.binned_mask(disk.rasterize((16, 16)), 2))
    shown, on_grid = copy.results["vd/mask0"].data, grid.filled
    np.testing.assert_allclose(shown[on_grid], exact[on_grid], rtol=1e-5)  # the grid's exact values stay
    rest = ~on_grid & ~copy.exact
    np.testing.assert_allclose(shown[rest], preview_vd[rest], rtol=1e-5)
    np.testing.assert_allclose(final["vd/mask0"].data, exact, rtol=1e-5)


def test_the_copys_preview_overtakes_a_grid_read_slowly_here(client, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(warmup, "is_warm", lambda dtype: True)
    ds, data = slow_dataset(tmp_path, nav=(12, 10), sig=(16, 16), delay=0.0)
    with Session(ds, client=client, partition_bytes=data[0, 0].nbytes * 10) as session:
        session.run(SumFrame()).result(timeout=60)
        ds.source.delay = 0.2  # a frame from a cold disk: the grid's 16 frames take 3.2 s here
        snapshots = []
        job = session.run(VirtualDetector(masks.Disk(8, 7, 5)), preview_stride=3, on_partial=snapshots.append)
        job.result(timeout=60)
    # the grid here was dropped: the copy's preview had finished first
    assert not job.preview_in_client and snapshots[0].preview_source == "reduced" and snapshots[0].filled.all()


@pytest.mark.parametrize("grid_here", [True, False])
def test_the_copys_preview_is_shown_before_the_partitions_tasks_go(client, tmp_path, monkeypatch, grid_here):  # noqa: F811
    """Once the workers start on the exact pass, taking the preview's results waits
    behind their reads: the preview is merged and delivered first."""
    from stem_explorer.engine.job import Job

    monkeypatch.setattr(warmup, "is_warm", lambda dtype: True)
    ds, data = slow_dataset(tmp_path, nav=(12, 10), sig=(16, 16), delay=0.0)
    events = []
    submit = Job._submit_partitions
    monkeypatch.setattr(Job, "_submit_partitions", lambda self, *a: events.append("partitions") or submit(self, *a))
    with Session(ds, client=client, partition_bytes=data[0, 0].nbytes * 10) as session:
        session.run(SumFrame()).result(timeout=60)
        ds.source.delay = 0.2 if grid_here else 0.0  # a slow grid here: the copy's preview overtakes it
        events.clear()
        job = session.run(VirtualDetector(masks.Disk(8, 7, 5)), preview_stride=3 if grid_here else None,
                          on_partial=lambda p: events.append(p.preview_source if p.is_preview else "exact"))
        job.result(timeout=60)
    assert job.preview_in_client is False
    assert events[:2] == ["reduced", "partitions"], events


def test_a_budget_too_small_falls_back_to_the_coarse_grid(client, tmp_path):  # noqa: F811
    data = _data("uint16", nav=(12, 10), sig=(16, 16))
    ds = raw_dataset(tmp_path, data)
    with Session(ds, client=client, partition_bytes=data[0, 0].nbytes * 10, reduced_copy_bytes=1000) as session:
        assert session.reduced_copy.spec is None and "coarse grid" in session.reduced_copy.status
        session.run(SumFrame()).result(timeout=60)
        snapshots = []
        session.run(VirtualDetector(masks.Disk(8, 8, 4)), preview_stride=4, on_partial=snapshots.append).result(timeout=60)
    assert snapshots[0].preview_source == "grid" and snapshots[0].preview_stride == 4
    with pytest.raises(OptionError, match="reduced_copy_bytes"):
        Session(ds, client=client, reduced_copy_bytes=-1)


def test_analyses_without_a_reduced_form_keep_the_grid_preview(client, tmp_path):  # noqa: F811
    data = _data("uint16", nav=(12, 10), sig=(16, 16))
    ds = raw_dataset(tmp_path, data)
    with Session(ds, client=client, partition_bytes=data[0, 0].nbytes * 10) as session:
        session.run(SumFrame()).result(timeout=60)
        assert session.reduced_copy.usable
        job = session.run(FEM(masks.Ring(8, 8, 2, 6)), VirtualDetector(masks.Disk(8, 8, 4)), preview_stride=4)
        job.result(timeout=60)
        assert job.preview_source == "grid"


def _block(client, worker, name):
    """Keep ``worker`` busy until the dask Event ``name`` is set: three tasks, so the
    scheduler sees no free slot on it (it queues up to 1.1 tasks per thread) and sends
    other jobs' tasks to the other worker."""
    futures = [client.submit(lambda: Event(name).wait(60), workers=[worker], pure=False) for _ in range(3)]
    deadline = time.monotonic() + 30
    while len(client.processing([worker])[worker]) < 3:
        assert time.monotonic() < deadline, "the blocking tasks did not reach the worker"
        time.sleep(0.02)
    return futures


def test_a_late_preview_never_replaces_exact_values(client, tmp_path):  # noqa: F811
    ds, data = slow_dataset(tmp_path, nav=(12, 10), sig=(16, 16), delay=0.0)
    w0, w1 = sorted(client.scheduler_info()["workers"])
    disk = masks.Disk(8, 7, 5)
    with Session(ds, client=client, partition_bytes=data[0, 0].nbytes * 10) as session:
        # the copy is made while w1 is busy: it is all on w0
        blocker = _block(client, w1, "reduced-test-w1")
        session.run(SumFrame()).result(timeout=60)
        Event("reduced-test-w1").set()
        client.gather(blocker)
        assert session.reduced_copy.holders([w0, w1]) == [w0]
        # w0 is busy while w1 computes exact partitions; the preview comes after some
        blocker = _block(client, w0, "reduced-test-w0")
        ds.source.delay = 0.2
        snapshots = []
        job = session.run(VirtualDetector(disk), on_partial=snapshots.append)
        deadline = time.monotonic() + 30
        while job.snapshot(results=False).partitions_done < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        Event("reduced-test-w0").set()
        final = job.result(timeout=60)
        client.gather(blocker)
    # partitions show as they finish once the preview is overdue; then the preview comes
    first = next(progress for progress in snapshots if progress.filled.all())
    assert first.preview_source == "reduced" and 2 <= first.partitions_done < job.n_partitions
    exact = ref.virtual_image(data, disk.rasterize((16, 16)))
    done = first.exact
    assert done.any() and (~done).any()
    np.testing.assert_allclose(first.results["vd/mask0"].data[done], exact[done], rtol=1e-6)
    preview_vd = np.einsum("yxij,ij->yx", ref.binned(data, 2), ref.binned_mask(disk.rasterize((16, 16)), 2))
    np.testing.assert_allclose(first.results["vd/mask0"].data[~done], preview_vd[~done], rtol=1e-6)
    np.testing.assert_allclose(final["vd/mask0"].data, exact, rtol=1e-6)


def test_a_lost_worker_loses_only_its_part_of_the_copy(tmp_path):
    from distributed import Client, LocalCluster

    data = _data("uint16", nav=(12, 10), sig=(16, 16))
    ds = raw_dataset(tmp_path, data)
    disk = masks.Disk(8, 7, 5)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as c:
        with Session(ds, client=c, partition_bytes=data[0, 0].nbytes * 10) as session:
            session.run(SumFrame()).result(timeout=60)
            copy = session.reduced_copy
            pids = c.run(os.getpid)
            assert copy.holders(list(pids)) == sorted(pids)  # both hold parts
            victim = sorted(pids)[1]
            os.kill(pids[victim], signal.SIGKILL)
            deadline = time.monotonic() + 60
            while victim in c.scheduler_info()["workers"]:
                assert time.monotonic() < deadline, "the scheduler did not notice the dead worker"
                time.sleep(0.05)
            snapshots = []
            final = session.run(VirtualDetector(disk), on_partial=snapshots.append).result(timeout=60)
            first = snapshots[0]
            assert first.preview_source == "reduced" and not first.exact.any()
            assert first.filled.any() and not first.filled.all()  # the lost worker's frames wait for the exact pass
            np.testing.assert_allclose(final["vd/mask0"].data, ref.virtual_image(data, disk.rasterize((16, 16))),
                                       rtol=1e-6)
            assert copy.complete and copy.nbytes == copy.spec.nbytes  # that pass binned the lost parts again


def test_the_copy_previews_only_when_the_last_whole_pass_was_slow(client, tmp_path, monkeypatch):  # noqa: F811
    """An exact pass that takes under PREVIEW_WORTH_S shows as soon as a preview
    would: no preview task delays it. A slower one gets the preview."""
    monkeypatch.setattr(reduced_copy, "PREVIEW_WORTH_S", 0.5)
    ds, data = slow_dataset(tmp_path, nav=(12, 10), sig=(16, 16), delay=0.0)
    disk = masks.Disk(8, 7, 5)
    with Session(ds, client=client, partition_bytes=data[0, 0].nbytes * 10) as session:
        session.run(SumFrame()).result(timeout=60)  # fast: leaves the copy
        assert session.reduced_copy.usable and not session.reduced_copy.worth_previewing()
        fast = []
        session.run(VirtualDetector(disk), on_partial=fast.append).result(timeout=60)
        ds.source.delay = 0.1  # each partition's read now takes 0.1 s: 12 partitions
        session.run(SumFrame()).result(timeout=60)
        assert session.reduced_copy.worth_previewing()
        slow = []
        final = session.run(VirtualDetector(disk), on_partial=slow.append).result(timeout=60)
    assert all(progress.preview_source != "reduced" for progress in fast)
    assert slow[0].preview_source == "reduced" and slow[0].filled.all() and slow[0].is_preview
    np.testing.assert_allclose(final["vd/mask0"].data, ref.virtual_image(data, disk.rasterize((16, 16))), rtol=1e-6)


def _until(condition, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_whole_copy_is_fetched_here_and_previews_without_tasks(client, tmp_path, monkeypatch, dtype):  # noqa: F811
    """Once whole, the copy comes into this process too; the next mask change's
    preview is computed here (no preview task), equals the binned product, and the
    exact pass replaces it. Closing the session frees the parts here."""
    from stem_explorer.engine.job import Job

    monkeypatch.setattr(reduced_copy, "HERE_PREVIEW_BYTES", 256 * 2**20)
    monkeypatch.setattr(Job, "_submit_reduced_preview", lambda self: pytest.fail("a preview task went out"))
    data = _data(dtype)
    ds = raw_dataset(tmp_path, data)
    disk = masks.Disk(20, 15, 9)
    with Session(ds, client=client, partition_bytes=data[0, 0].nbytes * 10, reduced_copy_bytes=100_000) as session:
        copy = session.reduced_copy
        assert reduced.held_bytes(copy.spec.key) == 0
        session.run(SumFrame()).result(timeout=60)
        _until(lambda: copy.here, "the copy was not fetched here (and its kernels warmed)")
        assert reduced.held_bytes(copy.spec.key) == copy.nbytes == copy.spec.nbytes
        snapshots = []
        final = session.run(VirtualDetector(disk), on_partial=snapshots.append).result(timeout=60)
        key = copy.spec.key
    assert reduced.held_bytes(key) == 0  # closed: freed here
    first = snapshots[0]
    assert first.preview_source == "reduced" and first.filled.all() and first.is_preview
    preview_vd = np.einsum("yxij,ij->yx", ref.binned(data, 3), ref.binned_mask(disk.rasterize((40, 34)), 3))
    np.testing.assert_allclose(first.results["vd/mask0"].data[~first.exact], preview_vd[~first.exact], rtol=1e-5)
    np.testing.assert_allclose(final["vd/mask0"].data, ref.virtual_image(data, disk.rasterize((40, 34))), rtol=1e-6)
    assert snapshots[-1].exact.all() and not snapshots[-1].is_preview


def test_a_copy_larger_than_a_preview_here_stays_on_the_workers(client, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(reduced_copy, "HERE_PREVIEW_BYTES", 1000)
    data = _data("uint16")
    ds = raw_dataset(tmp_path, data)
    with Session(ds, client=client, partition_bytes=data[0, 0].nbytes * 10, reduced_copy_bytes=100_000) as session:
        copy = session.reduced_copy
        session.run(SumFrame()).result(timeout=60)
        snapshots = []
        session.run(VirtualDetector(masks.Disk(20, 15, 9)), on_partial=snapshots.append).result(timeout=60)
        assert copy.nbytes > 1000 and not copy.here and reduced.held_bytes(copy.spec.key) == 0
    assert snapshots[0].preview_source == "reduced" and snapshots[0].filled.all()


def test_a_fetched_copy_pushed_out_here_previews_by_tasks_again(client, tmp_path, monkeypatch):  # noqa: F811
    """Another copy kept here later may push the fetched parts out (this process
    keeps HERE_PREVIEW_BYTES in all): jobs then preview from the workers' parts."""
    monkeypatch.setattr(reduced_copy, "HERE_PREVIEW_BYTES", 256 * 2**20)
    data = _data("uint16")
    ds = raw_dataset(tmp_path, data)
    with Session(ds, client=client, partition_bytes=data[0, 0].nbytes * 10, reduced_copy_bytes=100_000) as session:
        copy = session.reduced_copy
        session.run(SumFrame()).result(timeout=60)
        _until(lambda: copy.here, "the copy was not fetched here")
        big = reduced.ReducedSpec("test-another-copy", (1,), (16, 16), "uint16", 2, 1, 256 * 2**20)
        reduced.keep_part(big, 0, 1, np.zeros(1, np.int64), np.zeros((1, 256 * 2**20 // 4 - 100), np.float32))
        try:
            assert not copy.here and reduced.held_bytes(copy.spec.key) < copy.nbytes
            snapshots = []
            session.run(VirtualDetector(masks.Disk(20, 15, 9)), on_partial=snapshots.append).result(timeout=60)
        finally:
            reduced.drop_copy("test-another-copy")
    assert snapshots[0].preview_source == "reduced" and snapshots[0].filled.all()
