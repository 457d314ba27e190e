"""Live jobs computing in this process (issue 19): the frames the Merlin receiver
records here are computed by the job's own thread (``LiveJob.here``), the workers
joining only for a large backlog. Results equal numpy for every counter depth, on a
spool and on a recording; a chunk that fails here is the job's error. The thread
keeps the acquisition's reduced copy here, from which a mask changed mid-scan
previews the scan so far before its exact values replace the preview."""

import time

import numpy as np
import pytest

from live_helpers import two_worker_client
from stem_explorer import Session, StdFrame, SumFrame, VirtualDetector, masks
from stem_explorer.engine import live_job, warmup
from stem_explorer.engine.reduced_copy import LiveCopy
from stem_explorer.errors import DataSetError
from stem_explorer.io.synthetic import write_mib
from stem_explorer.live import SimulatorProcess, merlin

pytestmark = pytest.mark.cluster

#: pixel depth -> (counter depth, largest count, dtype the receiver records)
DEPTHS = {"U01": (1, 1, "u1"), "U08": (6, 63, "u1"), "U16": (12, 4095, ">u2"), "U32": (24, 2**24 - 1, ">u4")}


client = pytest.fixture(scope="module")(two_worker_client)


def stream(tmp_path, pixel_depth: str, sig_shape, nav_shape, n_distinct=24, seed=1):
    """A synthetic .mib of ``n_distinct`` frames and the scan's frames (cycled through
    them, as the simulator sends them)."""
    counter_depth, top, _dtype = DEPTHS[pixel_depth]
    distinct = np.random.default_rng(seed).integers(0, top + 1, (n_distinct,) + tuple(sig_shape))
    path = write_mib(tmp_path / f"syn_{pixel_depth}.mib", distinct, pixel_depth=pixel_depth,
                     counter_depth=counter_depth)
    return path, distinct[np.arange(int(np.prod(nav_shape))) % n_distinct].astype(np.float64)


def disk(sig_shape, cy, cx, r):
    yy, xx = np.mgrid[: sig_shape[0], : sig_shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


@pytest.mark.parametrize("pixel_depth, sig_shape, record", [
    ("U01", (16, 32), False), ("U08", (24, 16), True), ("U16", (32, 32), False), ("U16", (20, 28), True),
    ("U32", (8, 16), False),
])
def test_chunks_computed_here_equal_numpy(client, tmp_path, pixel_depth, sig_shape, record):
    """Every frame of the scan computed by the job's thread here (this process warm),
    on a spool and on a recording; the images and frames equal numpy's."""
    nav = (6, 10)
    path, frames = stream(tmp_path, pixel_depth, sig_shape, nav)
    warmup.warm_up([DEPTHS[pixel_depth][2]])  # the kernels here, as a session's first job warms them
    cy, cx, r = sig_shape[0] / 2, sig_shape[1] / 3, 5
    with SimulatorProcess(path, nav_shape=nav, fps=400) as sim:
        live = merlin("127.0.0.1", **sim.ports, nav_shape=nav, record=tmp_path / "rec" if record else None, timeout=20)
        job = Session(live, client=client).run(VirtualDetector({"bf": masks.Disk(cy, cx, r)}), SumFrame(), StdFrame())
        results = job.result(timeout=60)
    assert job.here is not None and job.here.frames == frames.shape[0]  # nothing went to the workers
    assert live.stats().frames_dropped == 0
    np.testing.assert_array_equal(results["vd/bf"].data, (frames * disk(sig_shape, cy, cx, r)).sum((1, 2)).reshape(nav))
    np.testing.assert_array_equal(results["sum/frame"].data, frames.sum(0))
    np.testing.assert_allclose(results["std/frame"].data, frames.std(0), rtol=1e-9, atol=1e-9)
    live.close()


def test_while_following_the_thread_here_works_alone(client, tmp_path, monkeypatch):
    """Even when every backlog counts as large, the workers take only frames recorded
    before the job started: those arriving later are the thread's."""
    nav = (6, 8)
    path, frames = stream(tmp_path, "U16", (16, 16), nav)
    warmup.warm_up([">u2"])
    monkeypatch.setattr(live_job, "CATCH_UP_S", 0.0)
    monkeypatch.setattr(live_job, "HERE_DELAY_S", 0.1)  # new frames would be due to workers first
    with SimulatorProcess(path, nav_shape=nav, fps=50) as sim:
        live = merlin("127.0.0.1", **sim.ports, nav_shape=nav, record=tmp_path / "rec", timeout=20)
        live.wait_for_frames(8, timeout=30)
        job = Session(live, client=client).run(SumFrame())
        results = job.result(timeout=60)
    assert 8 <= job.frames_at_start < frames.shape[0]
    assert frames.shape[0] - job.here.frames <= job.frames_at_start
    np.testing.assert_array_equal(results["sum/frame"].data, frames.sum(0))
    live.close()


def test_a_large_backlog_is_shared_with_the_workers(client, tmp_path, monkeypatch):
    """A job started after a recorded scan ended: its thread here and the workers
    (any backlog counts as large here) take chunks of it; merged in order, the results
    equal numpy."""
    nav = (16, 16)
    path, frames = stream(tmp_path, "U16", (32, 32), nav)
    warmup.warm_up([">u2"])
    monkeypatch.setattr(live_job, "CATCH_UP_S", 0.0)
    with SimulatorProcess(path, nav_shape=nav) as sim:
        live = merlin("127.0.0.1", **sim.ports, nav_shape=nav, record=tmp_path / "rec", timeout=20)
        live.wait_for_frames(frames.shape[0], timeout=30)
        seen = []
        session = Session(live, client=client, partition_bytes=16 * 32 * 32 * 2)  # 16-frame chunks
        job = session.run(SumFrame(), VirtualDetector({"bf": masks.Disk(16, 16, 6)}),
                          on_progress=lambda p: seen.append(int(p.filled.sum())))
        results = job.result(timeout=60)
    workers = [host for host in job.stats.tasks_per_worker if host.startswith("tcp://")]
    assert 0 < job.here.frames < frames.shape[0] and workers
    assert seen == sorted(seen) and seen[-1] == frames.shape[0]
    np.testing.assert_array_equal(results["sum/frame"].data, frames.sum(0))
    np.testing.assert_array_equal(results["vd/bf"].data, (frames * disk((32, 32), 16, 16, 6)).sum((1, 2)).reshape(nav))
    live.close()


def test_a_chunk_failing_here_is_the_jobs_error(client, tmp_path, monkeypatch):
    path, frames = stream(tmp_path, "U08", (16, 16), (4, 8))
    warmup.warm_up(["u1"])

    def broken(partition, plan, payload=None, frames=None, binner=None):
        raise DataSetError(f"frames {partition.start}:{partition.stop} could not be read (test)")

    monkeypatch.setattr(live_job, "read_partition_here", broken)
    with SimulatorProcess(path, nav_shape=(4, 8)) as sim:
        live = merlin("127.0.0.1", **sim.ports, nav_shape=(4, 8), timeout=20)
        job = Session(live, client=client).run(SumFrame())
        with pytest.raises(DataSetError, match="could not be read"):
            job.result(timeout=60)
    live.close()


def test_a_cancelled_job_lets_go_of_the_acquisition_at_once(client, tmp_path):
    """Cancelled between two frames of a slow acquisition, a job stops following at
    once (its thread here ends, and a spool no longer keeps frames for it), not when
    the next frame arrives."""
    path, _frames = stream(tmp_path, "U08", (16, 16), (2, 4))
    warmup.warm_up(["u1"])
    with SimulatorProcess(path, nav_shape=(2, 4), fps=0.5) as sim:
        live = merlin("127.0.0.1", **sim.ports, nav_shape=(2, 4), timeout=20)
        job = Session(live, client=client).run(SumFrame())
        live.wait_for_frames(1, timeout=20)
        t0 = time.perf_counter()
        while job.frames_done < 1:
            assert time.perf_counter() - t0 < 20
            time.sleep(0.01)
        job.cancel()
        time.sleep(0.5)  # the next frame comes 2 s after the last
        assert not live._consumers and live.frames_available < 8
    live.close()


def binned_reference(frames, mask, binning):
    """Each frame's product with ``mask`` on the binned data: the bins' sums times the
    mask's mean over each bin (how the reduced copy previews a mask)."""
    n, h, w = frames.shape
    bh, bw = -(-h // binning), -(-w // binning)
    padded = np.zeros((n, bh * binning, bw * binning))
    padded[:, :h, :w] = frames
    sums = padded.reshape(n, bh, binning, bw, binning).sum((2, 4))
    weights = np.zeros((bh * binning, bw * binning))
    weights[:h, :w] = mask
    counts = np.zeros_like(weights)
    counts[:h, :w] = 1
    fraction = weights.reshape(bh, binning, bw, binning).sum((1, 3)) / counts.reshape(bh, binning, bw, binning).sum((1, 3))
    return (sums * fraction).sum((1, 2))


@pytest.mark.parametrize("pixel_depth, sig_shape", [("U16", (32, 32)), ("U08", (24, 20))])
def test_a_mask_changed_mid_scan_previews_the_scan_so_far_from_the_copy(client, tmp_path, monkeypatch, pixel_depth,
                                                                        sig_shape):
    """The first job's thread bins the frames into the copy here as it computes them;
    the job of a mask changed mid-scan bins those recorded since its last chunk, then
    first shows every frame recorded so far, at the
    binned data's exact values (labelled a preview), then the exact values replace
    them (never the other way round) and the final image equals numpy."""
    nav = (16, 24)
    path, frames = stream(tmp_path, pixel_depth, sig_shape, nav)
    warmup.warm_up([DEPTHS[pixel_depth][2]])
    ring = disk(sig_shape, 12, 10, 9) & ~disk(sig_shape, 12, 10, 4)
    snapshots = []
    with SimulatorProcess(path, nav_shape=nav, fps=100) as sim:
        live = merlin("127.0.0.1", **sim.ports, nav_shape=nav, record=tmp_path / "rec", timeout=20)
        session = Session(live, client=client)
        copy = session.reduced_copy
        assert isinstance(copy, LiveCopy) and copy.spec is not None and copy.spec.scan_step == 1
        assert "filled as the frames arrive" in copy.status
        first = session.run(VirtualDetector({"bf": masks.Disk(12, 10, 5)}), SumFrame())
        t0 = time.perf_counter()
        while first.frames_done < 96:
            assert time.perf_counter() - t0 < 30
            time.sleep(0.005)
        delay = live_job.HERE_DELAY_S
        monkeypatch.setattr(live_job, "HERE_DELAY_S", 60.0)  # the first job falls behind: frames not binned yet
        while live.frames_available < first.frames_done + 24:
            assert time.perf_counter() - t0 < 30
            time.sleep(0.005)
        binned, at = copy.nbytes // copy.spec.frame_bytes, live.frames_available
        second = session.run(VirtualDetector({"ring": masks.Ring(12, 10, 4, 9)}), supersede=True,
                             on_partial=lambda p: snapshots.append(p))
        monkeypatch.setattr(live_job, "HERE_DELAY_S", delay)
        results = second.result(timeout=60)
    assert 96 <= binned < at - 16 and copy.nbytes == frames.shape[0] * copy.spec.frame_bytes  # the second job binned the rest
    preview = snapshots[0]
    assert preview.preview_source == "reduced" and preview.is_preview
    shown = preview.filled.ravel() & ~preview.exact.ravel()
    # every frame recorded so far: those the copy held, and those binned as the job started
    assert preview.filled.ravel()[:at].all() and shown.sum() >= binned - 16  # (bar any made exact meanwhile)
    expected = binned_reference(frames, ring, copy.spec.binning)
    np.testing.assert_allclose(preview.results["vd/ring"].data.ravel()[shown], expected[shown], rtol=1e-5)
    for earlier, later in zip(snapshots, snapshots[1:]):  # exact values stay exact
        assert not (earlier.exact & ~later.exact).any()
        np.testing.assert_array_equal(later.results["vd/ring"].data[earlier.exact], earlier.results["vd/ring"].data[earlier.exact])
    assert not snapshots[-1].is_preview
    np.testing.assert_allclose(results["vd/ring"].data, (frames * ring).sum((1, 2)).reshape(nav), rtol=1e-9)
    session.close()
    assert copy.nbytes == 0 and not copy.usable
    live.close()


def test_the_live_copy_bins_each_frame_once():
    """A chunk overlapping binned frames bins only those after them; one inside them
    none."""
    from stem_explorer.engine.reduced import ReducedSpec

    copy = LiveCopy(ReducedSpec("test-live-copy", (4, 8), (16, 16), ">u2", 4, 1, 2**20), 2**20)
    assert not copy.usable and copy.binner(0, 10).start == 0
    copy.record(0, 10, "here", 100)
    assert copy.usable
    assert (copy.binner(5, 20).start, copy.binner(5, 20).stop) == (10, 20)
    assert copy.binner(2, 8) is None
    copy.record(10, 20, "here", 100)
    assert copy.nbytes == 200 and copy.binner(0, 20) is None


def test_live_sessions_say_why_they_have_no_copy(client, tmp_path):
    """With a budget of 0 there is no copy, and the status says why; jobs still run."""
    path, frames = stream(tmp_path, "U08", (16, 16), (4, 8))
    warmup.warm_up(["u1"])
    with SimulatorProcess(path, nav_shape=(4, 8)) as sim:
        live = merlin("127.0.0.1", **sim.ports, nav_shape=(4, 8), timeout=20)
        session = Session(live, client=client, reduced_copy_bytes=0)
        assert session.reduced_copy.spec is None and "budget is 0" in session.reduced_copy.status
        results = session.run(SumFrame()).result(timeout=60)
    np.testing.assert_array_equal(results["sum/frame"].data, frames.sum(0))
    live.close()
