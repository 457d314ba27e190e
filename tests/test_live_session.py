"""Sessions on live Merlin acquisitions (issue 19): the simulator in its own process,
the receiver and the session in the test process, the engine's workers in theirs.
Jobs stream results in acquisition order as frames arrive, a job started mid-scan
covers the frames recorded so far and then follows, and results equal the offline
reader's."""

import time
from pathlib import Path

import numpy as np
import pytest

from live_helpers import (arina_writer, de_writer, simulators, slow_writer, staged_de_movie, two_worker_client,
                          write_arina_series)
from stem_explorer import Session, SumFrame, VirtualDetector, masks
from stem_explorer.analyses import build_plan
from stem_explorer.engine import run_local
from stem_explorer.engine.live_job import LiveJob
from stem_explorer.errors import AcquisitionError, JobCancelledError
from stem_explorer.io import open_dataset
from stem_explorer.io.synthetic import write_mib
from stem_explorer.live import SimulatorProcess, merlin, watch
from stem_explorer.results import Results

pytestmark = pytest.mark.cluster

REAL_MIB = sorted((Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "merlin_mib").glob("*.mib"))


client = pytest.fixture(scope="module")(two_worker_client)


@pytest.fixture(scope="module")
def real_simulators(realdata):
    """One simulator process serving every real .mib file."""
    with simulators(REAL_MIB) as sims:
        yield sims


def offline_results(ds, analyses):
    plan, finalize = build_plan(analyses, ds)
    return finalize(run_local(ds.partitions(1), plan), np.ones(ds.n_frames, bool))


def wait_until(predicate, timeout=60.0):
    t0 = time.perf_counter()
    while not predicate():
        assert time.perf_counter() - t0 < timeout, "timed out"
        time.sleep(0.01)


def is_prefix(filled: np.ndarray) -> bool:
    """Whether the filled positions are the scan's first ones (acquisition order)."""
    flat = filled.ravel()
    return bool(flat[: flat.sum()].all())


@pytest.mark.parametrize("path", REAL_MIB, ids=[p.stem for p in REAL_MIB])
def test_real_files_streamed_with_the_offline_readers_results(realdata, real_simulators, client, tmp_path, path):
    """Every real .mib file (1, 6, 12, 24 bit, single and quad, ROI read-outs) from the
    simulator process: the live job's sum frame and virtual bright field equal those
    of the .mib reader, and the recording holds the frames the reader reads."""
    entry = next(e for e in realdata.manifest.values() if e["files"][0].endswith(path.name))
    cy, cx, r = entry["vbf_disk_cy_cx_r"]
    analyses = [SumFrame(), VirtualDetector({"vbf": masks.Disk(cy, cx, r)})]
    offline = open_dataset(path)
    sim = real_simulators[path]
    live = merlin("127.0.0.1", **sim.ports, nav_shape=offline.nav_shape, record=tmp_path / "rec", timeout=20)
    session = Session(live, client=client)
    job = session.run(*analyses)
    assert isinstance(job, LiveJob)
    results = job.result(timeout=60)
    expected = offline_results(offline, analyses)
    assert results["sum/frame"].data.tobytes() == expected["sum/frame"].data.tobytes()
    np.testing.assert_array_equal(results["vd/vbf"].data, expected["vd/vbf"].data)
    np.testing.assert_array_equal(results["sum/frame"].data, np.load(realdata.file(next(
        ref for ref in entry["refs"] if ref.endswith(".sum_frame.npy")))))
    recorded = open_dataset(live.recording_path)
    assert recorded.dtype == offline.dtype and recorded.shape == offline.shape
    np.testing.assert_array_equal(recorded.read_frames(0, recorded.n_frames), offline.read_frames(0, offline.n_frames))
    assert results.provenance["complete"]


@pytest.mark.slow
def test_full_speed_256x256_stream_with_the_mask_changed_mid_scan(client, tmp_path):
    """A 256 x 256 scan (1024 distinct 12-bit frames cycled) at full speed: a job runs
    from the start, a second one with other masks supersedes it mid-scan, covers the
    frames recorded so far, follows the rest, fills the scan in acquisition order,
    and its final images equal numpy over the whole data."""
    rng = np.random.default_rng(7)
    distinct = rng.integers(0, 4096, (1024, 32, 32))
    path = write_mib(tmp_path / "syn.mib", distinct, pixel_depth="U16", counter_depth=12)
    n = 256 * 256
    with SimulatorProcess(path, nav_shape=(256, 256)) as sim:
        live = merlin("127.0.0.1", **sim.ports, nav_shape=(256, 256), record=tmp_path / "rec", timeout=20)
        session = Session(live, client=client)
        first = session.run(VirtualDetector(masks.Disk(16, 16, 6)))
        live.wait_for_frames(n // 8, timeout=60)
        recorded_at_start = live.frames_available
        assert recorded_at_start < n, "the stream ended before the mask changed; make the scan larger"
        seen = []
        second = session.run(VirtualDetector({"ring": masks.Ring(16, 16, 4, 12), "disk": masks.Disk(10, 20, 3)}),
                             SumFrame(), supersede=True,
                             on_progress=lambda p: seen.append((p.filled.sum(), is_prefix(p.filled))))
        results = second.result(timeout=120)
    with pytest.raises(JobCancelledError):
        first.result()
    assert live.state == "complete" and live.stats().frames_dropped == 0
    cycle = np.arange(n) % 1024  # frame k of the scan is distinct[k % 1024]
    yy, xx = np.mgrid[:32, :32]
    ring = (16 < (yy - 16) ** 2 + (xx - 16) ** 2) & ((yy - 16) ** 2 + (xx - 16) ** 2 <= 144)  # r_inner < r <= r_outer
    disk = (yy - 10) ** 2 + (xx - 20) ** 2 <= 9
    np.testing.assert_array_equal(results["vd/ring"].data, (distinct * ring).sum((1, 2))[cycle].reshape(256, 256))
    np.testing.assert_array_equal(results["vd/disk"].data, (distinct * disk).sum((1, 2))[cycle].reshape(256, 256))
    np.testing.assert_array_equal(results["sum/frame"].data, 64 * distinct.sum(0))  # each frame 64 times
    assert len(seen) > 2 and all(prefix for _count, prefix in seen)  # streamed, in scan order
    assert [c for c, _p in seen] == sorted(c for c, _p in seen) and seen[-1][0] == n


def test_dropped_connection_ends_the_job_with_the_partial_results_kept(client, tmp_path):
    frames = np.random.default_rng(3).integers(0, 64, (16, 16, 16))
    path = write_mib(tmp_path / "syn.mib", frames, pixel_depth="U08", counter_depth=6)
    with SimulatorProcess(path, nav_shape=(8, 8), fps=100) as sim:
        live = merlin("127.0.0.1", **sim.ports, nav_shape=(8, 8), record=tmp_path / "rec")
        session = Session(live, client=client)
        job = session.run(SumFrame(), VirtualDetector({"bf": masks.Disk(8, 8, 4)}))
        live.wait_for_frames(20, timeout=20)
        sim.kill()
        with pytest.raises(AcquisitionError, match=r"acquisition interrupted after \d+ of 64 frames"):
            job.result(timeout=60)
    n = live.frames_available
    assert 20 <= n < 64
    partial = job.snapshot()
    assert partial.filled.sum() == n and is_prefix(partial.filled) and not partial.final
    saved = Results.load(partial.results.save(tmp_path / "partial.h5"))
    data = frames[np.arange(n) % 16].astype(np.float64)
    np.testing.assert_array_equal(saved["sum/frame"].data, data.sum(0))
    bf = saved["vd/bf"].data.ravel()
    yy, xx = np.mgrid[:16, :16]
    np.testing.assert_array_equal(bf[:n], (data * ((yy - 8) ** 2 + (xx - 8) ** 2 <= 16)).sum((1, 2)))
    assert np.isnan(bf[n:]).all()
    assert open_dataset(live.recording_path).n_frames == n  # the recorded part opens like any file


def test_job_on_a_spool_covers_the_frames_still_held(client, tmp_path):
    """record=None: a job running through the scan sees every frame; the spool's parts
    are deleted once read, the spool when the scan ended and was read."""
    frames = np.random.default_rng(5).integers(0, 64, (16, 16, 16))
    path = write_mib(tmp_path / "syn.mib", frames, pixel_depth="U08", counter_depth=6)
    with SimulatorProcess(path, nav_shape=(8, 16)) as sim:
        live = merlin("127.0.0.1", **sim.ports, nav_shape=(8, 16), spool_bytes=32 * 256)
        job = Session(live, client=client).run(SumFrame())
        results = job.result(timeout=60)
    np.testing.assert_array_equal(results["sum/frame"].data, 8 * frames.sum(0))
    assert live.recording_path is None
    time.sleep(0.1)
    assert not Path(live.recording.dest).exists()  # the spool is gone


def test_watched_folder_fed_by_a_slow_writer(client, tmp_path):
    """A writer process appends frames slowly to a series of two .mib files: the job on
    the watched folder fills the scan in acquisition order as they appear, and ends
    with the .mib reader's results."""
    frames = np.random.default_rng(11).integers(0, 4096, (30, 16, 16))
    source = write_mib(tmp_path / "source.mib", frames, pixel_depth="U16", counter_depth=12)
    folder = tmp_path / "acquisition"
    folder.mkdir()
    writer = slow_writer(source, folder, 30, cuts=(0, 12, 30), delay=0.02, gated=True)
    analyses = [SumFrame(), VirtualDetector({"bf": masks.Disk(8, 8, 4)})]
    # the second file once the first file's frames were drawn
    _live, results, seen = watched_run(folder, "*.mib", analyses, client, writer, gate=12, nav_shape=(5, 6))
    expected = offline_results(open_dataset(source, nav_shape=(5, 6)), analyses)
    np.testing.assert_array_equal(results["sum/frame"].data, expected["sum/frame"].data)
    np.testing.assert_array_equal(results["vd/bf"].data, expected["vd/bf"].data)
    filled = [f for f, _fraction in seen]
    assert [f.sum() for f in filled] == sorted(f.sum() for f in filled)
    # the progress counts frames (the 30 are one partition: it stood at 0 until the end)
    assert [fraction for _f, fraction in seen] == [f.mean() for f in filled]
    assert sorted(p.name for p in folder.iterdir()) == ["acquisition_000.mib", "acquisition_001.mib"]  # untouched


def arina_frames(n=15, sig=(12, 10)):
    """Frames with a bright disk over noise (uint32, as an ARINA stores them)."""
    yy, xx = np.mgrid[: sig[0], : sig[1]]
    beam = ((yy - 6) ** 2 + (xx - 5) ** 2 <= 9) * 1000
    return (np.random.default_rng(19).integers(0, 50, (n,) + sig) + beam).astype(np.uint32)


def staged_arina_series(tmp_path):
    """``(frames, staging folder, master, data files, empty watched folder)``: an
    ARINA acquisition of 3x5 frames in four data files (4, 4, 4, 3), ready to copy."""
    frames = arina_frames()
    staged = tmp_path / "staged"
    staged.mkdir()
    master, data_files = write_arina_series(staged, frames, per_file=4, nav_shape=(3, 5))
    folder = tmp_path / "acquisition"
    folder.mkdir()
    return frames, staged, master, data_files, folder


@pytest.mark.parametrize("mode", ["gated", "in-place"])
def test_watched_arina_series_streams_as_data_files_complete(client, tmp_path, mode):
    """A writer process copies an ARINA master and its four data files (4, 4, 4, 3
    frames) into the watched folder one by one, renamed into place ("gated": each
    data file after the first when the test has seen the first one drawn) or written
    slowly where they are read, pausing longer than settle_s half-way ("in-place":
    a half-written HDF5 file that is not growing is retried, never read or reported
    as damaged). The job fills the scan file by file in acquisition order and ends
    with numpy's results (the real file's test compares with independent readers')."""
    frames, staged, master, data_files, folder = staged_arina_series(tmp_path)
    writer = arina_writer(folder, [master, *data_files], mode=mode, delay=0.15)
    analyses = [SumFrame(), VirtualDetector({"bf": masks.Disk(6, 5, 3)})]
    # gated: the other data files once the first one's frames were drawn
    live, results, seen = watched_run(folder, "*_master.h5", analyses, client, writer, settle_s=0.3,
                                      gate=4 if mode == "gated" else None, gate_lines=3)
    assert live.nav_shape == (3, 5) and live.sig_shape == (12, 10) and live.dtype == np.uint32
    np.testing.assert_array_equal(results["sum/frame"].data, frames.sum(0))
    bf = (frames * masks.rasterize(masks.Disk(6, 5, 3), (12, 10))).sum((1, 2)).reshape(3, 5)
    np.testing.assert_array_equal(results["vd/bf"].data, bf)
    assert {int(f.sum()) for f, _fraction in seen} <= {0, 4, 8, 12, 15}  # whole data files only
    assert live.chunk(0, 0, 15).source.decodes  # decoded on the workers, never here
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in staged.iterdir())  # untouched


def test_watched_arina_series_whose_writer_stops_ends_interrupted(client, tmp_path):
    """The writer stops after two of four data files: the job ends with the
    acquisition error naming 8 of 15 frames, and the 8 frames read (in a separate
    process: they are compressed) as numpy holds them."""
    frames, _staged, master, data_files, folder = staged_arina_series(tmp_path)
    writer = arina_writer(folder, [master, *data_files[:2]], mode="renamed", delay=0.05)
    live = watch(folder, "*_master.h5", idle_timeout=1.5, settle_s=0.3)
    job = Session(live, client=client).run(SumFrame())
    with pytest.raises(AcquisitionError, match="acquisition interrupted after 8 of 15 frames"):
        job.result(timeout=60)
    assert writer.wait(30) == 0 and live.state == "interrupted"
    np.testing.assert_array_equal(live.read_frames(0, 8), frames[:8])


def test_watched_real_arina_acquisition(realdata, client, tmp_path):
    """The real ARINA master, data file and scan metadata sidecar copied into the
    watched folder: the 4x4 scan (from the sidecar, as the offline reader folds it)
    and the manifest's sum frame and virtual bright field."""
    entry = realdata.entry("arina_4x4x192x192")
    sources = [realdata.file(f"arina/{name}") for name in ("test_00.h5", "test_00_master.h5", "test_00_data_000001.h5")]
    folder = tmp_path / "acquisition"
    folder.mkdir()
    writer = arina_writer(folder, sources, mode="renamed", delay=0.05)
    live = watch(folder, "*_master.h5", idle_timeout=30, settle_s=0.2)
    cy, cx, r = entry["vbf_disk_cy_cx_r"]
    results = Session(live, client=client).run(SumFrame(), VirtualDetector({"bf": masks.Disk(cy, cx, r)})).result(60)
    assert writer.wait(30) == 0 and live.nav_shape == (4, 4)
    refs = {Path(ref).name.split(".")[-2]: np.load(realdata.path / ref) for ref in entry["refs"]}
    np.testing.assert_allclose(results["sum/frame"].data, refs["sum_frame"])
    np.testing.assert_allclose(results["vd/bf"].data, refs["vbf"].reshape(4, 4))


def watched_run(folder, pattern, analyses, client, writer, gate=None, gate_lines=1, **watch_options):
    """Watch the files ``writer`` writes into ``folder`` and run ``analyses`` on them;
    with ``gate``, the writer is sent ``gate_lines`` lines once that many frames were drawn.
    Returns the data set, the results and the ``(filled, fraction)`` the job reported."""
    try:
        live = watch(folder, pattern, idle_timeout=60, **watch_options)
        seen = []
        job = Session(live, client=client).run(*analyses, on_progress=lambda p: seen.append((p.filled.copy(), p.fraction)))
        if gate is not None:
            wait_until(lambda: seen and seen[-1][0].sum() == gate)
            writer.stdin.write("go on\n" * gate_lines)
            writer.stdin.flush()
        results = job.result(timeout=120)
    finally:
        writer.stdin.close()
        writer.wait(60)
    assert writer.returncode == 0 and live.state == "complete"
    assert all(is_prefix(f) for f, _fraction in seen) and seen[-1][0].all()
    return live, results, seen


DE_MOVIES = ["de_mrc_00405_movie", "de_mrc_custom", "de_mrc_roi_random_scan"]


@pytest.mark.parametrize("key", DE_MOVIES)
def test_watched_real_de_movie_fed_by_a_slow_writer(realdata, client, tmp_path, key):
    """A writer process writes a real DE movie into the watched folder as DE-Server
    does (its _info.txt and scan coordinates first, then the MRC header, then frame
    by frame): the scan, scan coordinates and calibration are the offline reader's,
    the job fills the scan in acquisition order, and it ends with the offline
    reader's results and the manifest's sum frame and virtual bright field."""
    entry = realdata.entry(key)
    movie, *sides = (realdata.file(name) for name in entry["files"])
    offline = open_dataset(movie)
    folder = tmp_path / "acquisition"
    folder.mkdir()
    writer = de_writer(movie, folder, frame_bytes=offline.frame_bytes, n_frames=offline.n_frames,
                       delay=1.0 / offline.n_frames, side_files=sides)
    cy, cx, r = entry["vbf_disk_cy_cx_r"]
    analyses = [SumFrame(), VirtualDetector({"bf": masks.Disk(cy, cx, r)})]
    live, results, _seen = watched_run(folder, "*_movie.mrc", analyses, client, writer)
    assert (live.nav_shape, live.sig_shape, live.dtype) == (offline.nav_shape, offline.sig_shape, offline.dtype)
    assert live.metadata.get("scan_coordinates") == offline.metadata.get("scan_coordinates")
    assert live.calibration == offline.calibration
    expected = offline_results(offline, analyses)
    np.testing.assert_array_equal(results["sum/frame"].data, expected["sum/frame"].data)
    np.testing.assert_array_equal(results["vd/bf"].data, expected["vd/bf"].data)
    refs = {Path(ref).name.split(".")[-2]: np.load(realdata.path / ref) for ref in entry["refs"]}
    np.testing.assert_allclose(results["sum/frame"].data, refs["sum_frame"])
    np.testing.assert_allclose(results["vd/bf"].data, refs["vbf"].reshape(live.nav_shape))


def test_watched_synthetic_de_movie_fills_the_scan_as_frames_are_written(client, tmp_path):
    """A synthetic 5x6 DE movie with an extended header, written frame by frame; the
    writer pauses after 12 frames until the test has seen them drawn (the scan fills
    while the file grows), then ends: numpy's results, the file untouched."""
    frames = np.random.default_rng(5).integers(0, 60000, (30, 16, 12)).astype(np.uint16)
    movie, folder, writer = staged_de_movie(tmp_path, frames, (5, 6), delay=0.02, extended_header_bytes=200, gate=12)
    analyses = [SumFrame(), VirtualDetector({"bf": masks.Disk(8, 6, 4)})]
    live, results, seen = watched_run(folder, "*_movie.mrc", analyses, client, writer, gate=12)
    assert live.nav_shape == (5, 6) and live.metadata["scan_shape_source"] == "_info.txt (Scan - Size Y/X)"
    np.testing.assert_array_equal(results["sum/frame"].data, frames.sum(0, dtype=np.int64))
    bf = (frames * masks.rasterize(masks.Disk(8, 6, 4), (16, 12))).sum((1, 2)).reshape(5, 6)
    np.testing.assert_array_equal(results["vd/bf"].data, bf)
    assert 12 in [int(f.sum()) for f, _fraction in seen]
    assert (folder / "scan_movie.mrc").read_bytes() == movie.read_bytes()


@pytest.mark.slow
def test_explorer_accepts_a_live_source(client, tmp_path):
    """Explorer(live) opens on the data set the receiver returns, places the beam and
    fills the navigation image while the scan is still being recorded, and once the
    frames are in shows the sum frame and the navigation image of the .mib reader."""
    from stem_explorer.masks import rasterize
    from stem_explorer.widgets import Explorer

    yy, xx = np.mgrid[:32, :32]
    beam = ((yy - 15) ** 2 + (xx - 17) ** 2 <= 36) * 200
    frames = np.random.default_rng(2).integers(0, 20, (24, 32, 32)) + beam
    path = write_mib(tmp_path / "syn.mib", frames, pixel_depth="U16", counter_depth=12)
    with Session(np.zeros((2, 3, 32, 32), ">u2"), client=client) as warm:  # the kernels compiled first
        warm.run(SumFrame(), VirtualDetector(masks.Disk(15, 17, 6))).result(120)
    with SimulatorProcess(path, nav_shape=(4, 6), fps=4) as sim:  # about 6 s of scanning
        live = merlin("127.0.0.1", **sim.ports, nav_shape=(4, 6), record=tmp_path / "rec")
        explorer = Explorer(live, client=client, export_dir=str(tmp_path / "exports"))
        try:
            deadline = time.monotonic() + 60
            while not live.ended and time.monotonic() < deadline:
                image = explorer.navigation_image()
                if image is not None and np.isfinite(image).any():
                    break
                time.sleep(0.05)
            filled = explorer.navigation_image()
            assert not live.ended, "the navigation view stayed empty until the scan ended"
            assert 0 < np.isfinite(filled).sum() < filled.size
            explorer.wait(120)
            assert explorer.error is None
            np.testing.assert_array_equal(explorer.detector_image(), frames.sum(0))
            expected = (frames * rasterize(explorer.editor.mask(), (32, 32))).sum((1, 2)).reshape(4, 6)
            np.testing.assert_allclose(explorer.navigation_image(), expected, rtol=1e-6)
        finally:
            explorer.close()


def test_a_job_after_a_spooled_scan_ended_says_the_frames_were_discarded(client, tmp_path):
    """Without a recording folder the frames go once the running jobs have read them:
    a job started after the scan's end gets an AcquisitionError saying so, not an
    empty image that looks like a result."""
    frames = np.random.default_rng(4).integers(0, 60, (16, 8, 16)).astype(np.uint8)
    path = write_mib(tmp_path / "syn.mib", frames, pixel_depth="U08", counter_depth=6)
    with SimulatorProcess(path, nav_shape=(8, 8), fps=None) as sim:
        live = merlin("127.0.0.1", **sim.ports, nav_shape=(8, 8))
        with Session(live, client=client) as session:
            total = session.run(SumFrame()).result(timeout=60)["sum/frame"].data
            assert live.state == "complete" and live.recording.first_held == live.frames_available == 64
            with pytest.raises(AcquisitionError, match="64 frames of this acquisition were discarded.*record="):
                session.run(VirtualDetector(masks.Disk(4, 8, 3))).result(timeout=60)
    np.testing.assert_array_equal(total, frames[np.arange(64) % 16].sum(axis=0))
