"""The engine on a real multi-process LocalCluster: results, streaming, cancel,
supersede, worker failure, embedded cluster and connection errors."""

import os
import signal
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import numpy as np
import pytest

import _reference as ref
from stem_explorer import Session, masks
from stem_explorer.analyses import CenterOfMass, PickFrame, StdFrame, SumFrame, VirtualDetector
from stem_explorer.engine.cluster import WORKER_ENV, WORKER_MALLOC
from stem_explorer.engine.worker_setup import WORKER_NICENESS
from stem_explorer.errors import ClusterError, JobCancelledError
from stem_explorer.io import DataSet, FrameReader, open_dataset
from stem_explorer.io.raw import MappedFrameSource

pytestmark = pytest.mark.cluster

# the slow source below is defined here, and workers cannot import test modules
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class SlowReader(FrameReader):
    def __init__(self, inner, delay):
        self.inner, self.delay = inner, delay

    def read(self, start, stop):
        time.sleep(self.delay)
        return self.inner.read(start, stop)

    def close(self):
        self.inner.close()


class SlowSource(MappedFrameSource):
    """A raw file read with a pause per tile: makes jobs last long enough to act on."""

    delay = 0.05

    def open(self, payload=None):
        return SlowReader(super().open(payload), self.delay)


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0")
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


def raw_dataset(tmp_path, data, name="data.raw"):
    path = tmp_path / name
    data.tofile(path)
    return open_dataset(path, nav_shape=data.shape[:-2], sig_shape=data.shape[-2:], dtype=data.dtype.str)


def slow_dataset(tmp_path, nav=(16, 16), sig=(8, 8), delay=0.05):
    data = np.random.default_rng(7).integers(0, 1000, nav + sig).astype(np.uint16)
    path = tmp_path / "slow.raw"
    data.tofile(path)
    source = SlowSource(path, offset=0, n_frames=int(np.prod(nav)), sig_shape=sig, dtype="uint16")
    source.delay = delay
    return DataSet(source, nav, format="raw", path=str(path)), data


@pytest.mark.parametrize("dtype", ["uint16", ">u2", "float32"])
def test_cluster_results_equal_numpy(client, tmp_path, dtype):
    data = np.random.default_rng(1).integers(0, 3000, (12, 10, 14, 9)).astype(dtype)
    ds = raw_dataset(tmp_path, data)
    disk = masks.Disk(7, 4, 3)
    with Session(ds, client=client, partition_bytes=14 * 9 * 2 * 10) as session:
        job = session.run(VirtualDetector(disk), CenterOfMass(center=(6.5, 4)), SumFrame(), StdFrame())
        results = job.result(timeout=60)
        assert job.n_partitions >= 4 and job.n_partitions % 2 == 0
    np.testing.assert_allclose(results["vd/mask0"].data, ref.virtual_image(data, disk.rasterize((14, 9))), rtol=1e-6)
    sy, sx, _ = ref.center_of_mass(data, 6.5, 4)
    np.testing.assert_allclose(results["com/shift_x"].data, sx, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(results["sum/frame"].data, ref.frames(data).sum(axis=0))
    np.testing.assert_allclose(results["std/frame"].data, ref.frames(data).std(axis=0), rtol=1e-9)
    assert job.stats.bytes_done == data.nbytes
    assert set(job.stats.tasks_per_worker) <= set(client.scheduler_info()["workers"])


def test_in_memory_numpy_on_cluster(client):
    data = np.random.default_rng(2).integers(0, 255, (7, 5, 6, 6)).astype(np.uint8)
    with Session(data, client=client, partition_bytes=200) as session:
        results = session.compute(SumFrame(), PickFrame((6, 4)))
    np.testing.assert_array_equal(results["sum/frame"].data, ref.frames(data).sum(axis=0))
    np.testing.assert_array_equal(results["pick/frames"].data[0], data[6, 4])


def test_streaming_partial_results(client, tmp_path):
    ds, data = slow_dataset(tmp_path, delay=0.01)
    with Session(ds, client=client, partition_bytes=8 * 8 * 2 * 16) as session:
        job = session.run(VirtualDetector(masks.Disk(4, 4, 2)))
        snapshots = list(job)
    assert snapshots[-1].final and snapshots[-1].fraction == 1.0
    fractions = [s.fraction for s in snapshots]
    assert fractions == sorted(fractions) and len(snapshots) >= 2
    for s in snapshots:
        image = s.results["vd/mask0"].data
        assert s.filled.shape == (16, 16)
        assert np.all(np.isnan(image[~s.filled])) and np.all(np.isfinite(image[s.filled]))
    expected = ref.virtual_image(data, masks.Disk(4, 4, 2).rasterize((8, 8)))
    np.testing.assert_allclose(snapshots[-1].results["vd/mask0"].data, expected)
    # filled grows monotonically
    for a, b in zip(snapshots, snapshots[1:]):
        assert np.all(b.filled[a.filled])


def test_cancel_stops_delivery_and_pending_work(client, tmp_path):
    ds, _ = slow_dataset(tmp_path, delay=0.1)
    delivered = []
    with Session(ds, client=client, partition_bytes=8 * 8 * 2 * 8) as session:
        job = session.run(SumFrame(), on_partial=lambda p: delivered.append(time.perf_counter()))
        while not delivered:
            time.sleep(0.005)
        assert job.cancel() is True
        cancelled_at = time.perf_counter()
        with pytest.raises(JobCancelledError):
            job.result(timeout=10)
        time.sleep(0.5)
        # no callback starts after cancel() returns; one already past its check may
        # still run (cancel() never waits for a callback: it may need the caller's lock)
        assert sum(t > cancelled_at for t in delivered) <= 1
        assert job.snapshot(results=False).partitions_done < job.n_partitions
    # pending tasks were dropped: a new job on the same workers is not queued behind them
    fast = open_dataset(np.ones((4, 4, 8, 8), np.uint16))
    with Session(fast, client=client) as other:
        np.testing.assert_array_equal(other.compute(SumFrame())["sum/frame"].data, np.full((8, 8), 16.0))


def test_supersede_never_delivers_stale_results(client, tmp_path):
    ds, _ = slow_dataset(tmp_path, delay=0.05)
    events = []
    lock = threading.Lock()

    def recorder(job_name):
        def record(progress):
            with lock:
                events.append(job_name)
        return record

    with Session(ds, client=client, partition_bytes=8 * 8 * 2 * 16) as session:
        first = session.run(VirtualDetector(masks.Disk(4, 4, 1)), on_partial=recorder("first"))
        while "first" not in events:
            time.sleep(0.005)
        second = session.run(VirtualDetector(masks.Disk(4, 4, 3)), on_partial=recorder("second"), supersede=True)
        assert first.cancelled
        second.result(timeout=60)
    assert events[-1] == "second"
    first_second = events.index("second")
    assert "first" not in events[first_second:]
    with pytest.raises(JobCancelledError):
        first.result()


def test_worker_killed_mid_job_gives_identical_result(tmp_path):
    from distributed import Client, LocalCluster

    ds, data = slow_dataset(tmp_path, nav=(16, 16), delay=0.05)
    expected = ref.frames(data).sum(axis=0)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as c:
        pids = c.run(os.getpid)
        with Session(ds, client=c, partition_bytes=8 * 8 * 2 * 8) as session:
            job = session.run(SumFrame())
            while job.snapshot(results=False).partitions_done < 2:
                time.sleep(0.005)
            assert not job.done
            victim = sorted(pids.values())[0]
            os.kill(victim, signal.SIGKILL)
            results = job.result(timeout=120)
        np.testing.assert_array_equal(results["sum/frame"].data, expected)
        assert job.snapshot(results=False).partitions_done == job.n_partitions
        new_pids = c.run(os.getpid)
        assert victim not in new_pids.values()


def _session_and_autogroup():
    """Whether this process leads its own session, and its autogroup (None without)."""
    enabled = Path("/proc/sys/kernel/sched_autogroup_enabled")
    group = Path("/proc/self/autogroup")
    on = enabled.exists() and enabled.read_text().strip() == "1" and group.exists()
    return os.getsid(0) == os.getpid(), group.read_text().strip() if on else None


def test_embedded_local_cluster(tmp_path):
    data = np.arange(3 * 4 * 5 * 6, dtype=np.uint16).reshape(3, 4, 5, 6)
    with Session(raw_dataset(tmp_path, data), n_workers=2) as session:
        assert session.n_workers == 2
        assert session.dashboard_link is None  # served only on request (dashboard=True)
        assert session.client.scheduler.address.startswith("tls://127.0.0.1:")
        workers = session.client.scheduler_info()["workers"].values()
        assert {w["nthreads"] for w in workers} == {1}
        assert all(w["host"] == "127.0.0.1" for w in workers)
        environ = session.client.run(lambda: {k: os.environ.get(k) for k in {**WORKER_ENV, **WORKER_MALLOC}})
        assert list(environ.values()) == [{**WORKER_ENV, **WORKER_MALLOC}] * 2
        frame = session.pick_frame((2, 3))
        np.testing.assert_array_equal(frame, data[2, 3])
        # embedded workers yield the cores to this process (and a notebook's browser)
        niceness = set(session.client.run(os.nice, 0).values())
        assert niceness == {min(os.nice(0) + WORKER_NICENESS, 19)}
        # ... also where Linux shares the CPU between sessions first (autogroups)
        for leader, group in session.client.run(_session_and_autogroup).values():
            assert leader
            assert group is None or group.endswith(f"nice {WORKER_NICENESS}")
        cluster = session._cluster
    assert cluster.status.name in ("closed", "closing")


def test_unreachable_address_is_a_clear_error(tmp_path):
    data = np.zeros((2, 2, 4, 4), np.uint8)
    start = time.perf_counter()
    with pytest.raises(ClusterError, match="tcp://127.0.0.1:9"):
        Session(raw_dataset(tmp_path, data), address="tcp://127.0.0.1:9", timeout=2)
    assert time.perf_counter() - start < 30


def test_task_errors_surface_in_result(client, tmp_path):
    data = np.zeros((4, 4, 4, 4), np.uint16)
    ds = raw_dataset(tmp_path, data)
    os.unlink(ds.path)  # the workers cannot find the file any more
    with Session(ds, client=client) as session:
        job = session.run(SumFrame())
        with pytest.raises(FileNotFoundError, match="does not exist"):
            job.result(timeout=60)


def _write_format(tmp_path, data, kind):
    """``data`` written in one of the readers' formats; returns the opened DataSet."""
    import h5py
    import hdf5plugin

    if kind == "npy":
        np.save(tmp_path / "d.npy", data)
        return open_dataset(tmp_path / "d.npy")
    if kind == "raw_partitions":
        from stem_explorer.io.partitioned import write_raw_partitions

        return write_raw_partitions(tmp_path / "parts", data, partition_bytes=data[0, 0].nbytes * 7)
    options = {
        "hdf5_chunked": dict(chunks=(1, 3) + data.shape[2:]),
        "hdf5_bitshuffle": dict(chunks=(2, data.shape[1]) + data.shape[2:], **hdf5plugin.Bitshuffle(cname="lz4")),
        "hdf5_gzip_split_detector": dict(chunks=(1, 2, data.shape[2] // 2, data.shape[3]), compression="gzip"),
    }[kind]
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f.create_dataset("scan/frames", data=data, **options)
    return open_dataset(tmp_path / "d.h5")


@pytest.mark.parametrize("kind", ["npy", "raw_partitions", "hdf5_chunked", "hdf5_bitshuffle", "hdf5_gzip_split_detector"])
def test_every_reader_through_the_cluster(client, tmp_path, kind):
    data = np.random.default_rng(4).integers(0, 4000, (9, 6, 10, 12)).astype(np.uint16)
    ds = _write_format(tmp_path, data, kind)
    disk = masks.Disk(4.5, 5.5, 3)
    with Session(ds, client=client, partition_bytes=data[0].nbytes * 2, tile_bytes=data[0, 0].nbytes * 4) as session:
        job = session.run(VirtualDetector(disk), SumFrame(), StdFrame(), PickFrame([(8, 5), (0, 1)]))
        results = job.result(timeout=60)
        assert job.n_partitions > 1
    np.testing.assert_allclose(results["vd/mask0"].data, ref.virtual_image(data, disk.rasterize((10, 12))))
    np.testing.assert_array_equal(results["sum/frame"].data, ref.frames(data).sum(axis=0))
    np.testing.assert_allclose(results["std/frame"].data, ref.frames(data).std(axis=0), rtol=1e-10)
    np.testing.assert_array_equal(results["pick/frames"].data, data[[8, 0], [5, 1]])


def test_real_arina_file_through_the_engine(client, realdata):
    entry = realdata.entry("arina_4x4x192x192")
    path = realdata.file(entry["files"][0])
    sum_ref, vbf_ref = (np.load(realdata.file(name)) for name in entry["refs"])
    cy, cx, r = entry["vbf_disk_cy_cx_r"]
    ds = open_dataset(path, nav_shape=tuple(entry["shape"][:2]))
    with Session(ds, client=client) as session:
        results = session.compute(SumFrame(), VirtualDetector(masks.Disk(cy, cx, r)))
    np.testing.assert_array_equal(results["sum/frame"].data, sum_ref)
    np.testing.assert_array_equal(results["vd/mask0"].data, vbf_ref.reshape(ds.nav_shape))


def test_partitions_spread_over_workers_and_large_plans_are_scattered(client, tmp_path, monkeypatch):
    """A job's plan must not pin its tasks to one worker (a plan held by one worker
    drew every task there); plans over the inline limit go by scatter, same results."""
    from stem_explorer.engine import tasks

    ds, data = slow_dataset(tmp_path, nav=(16, 16), delay=0.02)
    disk = masks.Disk(4, 4, 2)
    expected = ref.virtual_image(data, disk.rasterize((8, 8)))
    with Session(ds, client=client, partition_bytes=8 * 8 * 2 * 16) as session:
        job = session.run(VirtualDetector(disk), preview_stride=1)
        np.testing.assert_allclose(job.result(timeout=60)["vd/mask0"].data, expected)
        assert len(job.stats.tasks_per_worker) == 2 and min(job.stats.tasks_per_worker.values()) >= 4
        monkeypatch.setattr(tasks, "INLINE_PLAN_BYTES", 0)
        monkeypatch.setattr("stem_explorer.engine.job.INLINE_PLAN_BYTES", 0)
        job = session.run(VirtualDetector(disk), preview_stride=2)
        np.testing.assert_allclose(job.result(timeout=60)["vd/mask0"].data, expected)
        assert not isinstance(job._plan_arg, tasks.PlanParcel)
