"""The Merlin simulator and receiver (issue 19), each in its own process where they
talk: the simulator runs as ``stem-explorer simulate merlin`` in a subprocess and the
receiver in the test process (or in a subprocess that dies, for recovery). Engine
results on live data are in test_live_session.py."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import psutil
import pytest

from stem_explorer.errors import AcquisitionError, DataSetError
from stem_explorer.io import open_dataset
from stem_explorer.io.partitioned.recording import Recording
from stem_explorer.io.synthetic import write_mib
from stem_explorer.live import MerlinSimulator, SimulatorProcess, merlin, recover_recording, watch
from stem_explorer.live import mpx

from live_helpers import arina_writer, slow_writer, staged_de_movie, write_arina_series, write_de_movie

def real_files(realdata):
    files = sorted(realdata.path.glob("merlin_mib/*.mib"))
    if not files:
        pytest.skip("no .mib files in the real-data folder")
    return files


def synthetic_mib(tmp_path, n=12, shape=(8, 16), pixel_depth="U16", seed=0) -> Path:
    top = {"U08": 64, "U16": 4096, "U32": 2**24}[pixel_depth]
    frames = np.random.default_rng(seed).integers(0, top, (n,) + shape)
    return write_mib(tmp_path / "syn.mib", frames, pixel_depth=pixel_depth,
                     counter_depth={"U08": 6, "U16": 12, "U32": 24}[pixel_depth])


def wait_until(predicate, timeout=20.0):
    t0 = time.perf_counter()
    while not predicate():
        if time.perf_counter() - t0 > timeout:
            raise AssertionError("timed out")
        time.sleep(0.01)


class RawClient:
    """The two MerlinEM connections, spoken by hand (to check the simulator)."""

    def __init__(self, sim):
        self.control = socket.create_connection(("127.0.0.1", sim.control_port), timeout=10)
        self.data = socket.create_connection(("127.0.0.1", sim.data_port), timeout=10)

    def ask(self, kind, name, value=None) -> str:
        self.control.sendall(mpx.request(kind, name, value))
        return mpx.read_text_message(self.control, "sim")

    def receive(self, n_bytes: int) -> bytes:
        return bytes(mpx.recv_exact(self.data, n_bytes, "sim"))

    def close(self):
        self.control.close()
        self.data.close()


# -- the simulator ----------------------------------------------------------------------------
def test_simulator_sends_the_mib_file_byte_for_byte(realdata):
    """Each frame message is MPX,<length + 1>, then the .mib frame record unchanged; the
    acquisition header is the .hdr with this acquisition's frame count; a longer
    acquisition cycles through the file, renumbering the frames."""
    path = next(p for p in real_files(realdata) if p.name.startswith("Quad_9_Frame_CounterDepth_12"))
    raw = path.read_bytes()
    n, stride = 9, len(raw) // 9
    with SimulatorProcess(path) as sim:
        client = RawClient(sim)
        assert client.ask("GET", "COUNTERDEPTH") == "GET,COUNTERDEPTH,12,0"
        assert client.ask("SET", "COUNTERDEPTH", 6) == "SET,COUNTERDEPTH,3"  # the file's depth only
        assert client.ask("GET", "NOSUCHTHING") == "GET,NOSUCHTHING,,2"
        assert client.ask("SET", "NUMFRAMESTOACQUIRE", 2 * n) == "SET,NUMFRAMESTOACQUIRE,0"
        assert client.ask("CMD", "STARTACQUISITION") == "CMD,STARTACQUISITION,0"
        header = mpx.read_text_message(client.data, "sim")
        assert header.startswith("HDR,")
        assert "Frames in Acquisition (Number):\t18" in header
        assert "Counter Depth (number):\t12" in header
        stream = client.receive(2 * n * (15 + stride))
        client.close()
    messages = [stream[k * (15 + stride) : (k + 1) * (15 + stride)] for k in range(2 * n)]
    for k, message in enumerate(messages):
        assert message[:15] == b"MPX,%010d," % (stride + 1)
        record = raw[(k % n) * stride : (k % n + 1) * stride]
        if k < n:
            assert message[15:] == record  # the file's bytes, unchanged
        else:  # only the sequence number differs on the second pass
            assert message[15:19] == b"MQ1," and message[19:25] == b"%06d" % (k + 1)
            assert message[25:] == record[10:]


def test_simulator_paces_frames(tmp_path):
    path = synthetic_mib(tmp_path, n=20)
    with MerlinSimulator(path, nav_shape=(20,), fps=50, control_port=0, data_port=0) as sim:
        client = RawClient(sim)
        client.ask("CMD", "STARTACQUISITION")
        mpx.read_text_message(client.data, "sim")
        t0 = time.perf_counter()
        client.receive(20 * (15 + os.path.getsize(path) // 20))
        elapsed = time.perf_counter() - t0
        client.close()
    assert elapsed >= 19 / 50 * 0.9  # frame 19 is due 0.38 s after frame 0


# -- receiving -------------------------------------------------------------------------------
def test_header_not_matching_the_scan_is_refused_before_any_frame(tmp_path):
    path = synthetic_mib(tmp_path, n=12)  # 8 x 16 frames, 12-bit
    with SimulatorProcess(path) as sim:
        with pytest.raises(AcquisitionError, match=r"8x16 frames, but sig_shape \(16, 16\).*Nothing was recorded"):
            merlin("127.0.0.1", **sim.ports, nav_shape=(3, 4), sig_shape=(16, 16), record=tmp_path / "a")
        with pytest.raises(AcquisitionError, match="refused SET,COUNTERDEPTH: value out of range"):
            merlin("127.0.0.1", **sim.ports, nav_shape=(3, 4), counter_depth=6, record=tmp_path / "b")
    # acquisitions started by someone else (12 frames of 12 bits)
    with SimulatorProcess(path, nav_shape=(3, 4), start_on_connect=True) as sim:
        with pytest.raises(AcquisitionError, match=r"12 frames in the acquisition, but nav_shape \(3, 3\) has 9"):
            merlin("127.0.0.1", **sim.ports, nav_shape=(3, 3), control=False, record=tmp_path / "c")
        with pytest.raises(AcquisitionError, match="counter depth 12, but counter_depth=6 was asked"):
            merlin("127.0.0.1", **sim.ports, nav_shape=(3, 4), counter_depth=6, control=False, record=tmp_path / "d")
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_nothing_listening_is_an_error_naming_the_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    with pytest.raises(AcquisitionError, match=f"cannot connect to the Merlin control port 127.0.0.1:{port}"):
        merlin("127.0.0.1", control_port=port, data_port=port, nav_shape=(2, 2), timeout=2)


def test_receiver_connects_only_to_the_configured_host_and_never_listens(tmp_path):
    path = synthetic_mib(tmp_path)
    me = psutil.Process()
    listening_before = {c.laddr for c in me.net_connections("inet") if c.status == psutil.CONN_LISTEN}
    with SimulatorProcess(path, fps=5) as sim:  # 2.4 s: both connections still open below
        live = merlin("127.0.0.1", **sim.ports, nav_shape=(3, 4))
        mine = [c for c in me.net_connections("inet") if c.raddr and c.raddr.port in (sim.control_port, sim.data_port)]
        listening = {c.laddr for c in me.net_connections("inet") if c.status == psutil.CONN_LISTEN}
        live.wait_for_frames(12, timeout=20)
    assert listening == listening_before
    assert {c.raddr.port for c in mine} == {sim.control_port, sim.data_port}
    assert all(c.raddr.ip == "127.0.0.1" for c in mine)


def test_back_pressure_bounded_buffers_and_no_frame_lost(tmp_path):
    """A spool of two frames' room and a ring of three frames, with a consumer that does
    not read: the receiver stops reading, the simulator waits (reported as stalled
    time), memory stays bounded; once the consumer reads, every frame arrives."""
    path = synthetic_mib(tmp_path, n=16, shape=(64, 64))
    frame = 64 * 64 * 2
    with SimulatorProcess(path, nav_shape=(64, 64)) as sim:
        live = merlin("127.0.0.1", **sim.ports, nav_shape=(64, 64), buffer_bytes=3 * (frame + 400),
                      spool_bytes=8 * frame, partition_bytes=4 * frame)
        token, first = live.register_consumer()
        time.sleep(1.0)  # far longer than 4096 frames need at full speed
        held = live.frames_available
        assert held <= 8 and live.first_held == 0  # nothing released: the consumer read nothing
        stats = live.stats()
        assert stats.buffer_peak_bytes <= stats.buffer_bytes == 3 * (15 + 384 + frame)
        assert stats.stalled_s > 0.5
        while not live.ended:
            live.consumed(token, live.frames_available)
            time.sleep(0.001)
        live.consumed(token, live.frames_available)
    stats = live.stats()
    assert live.state == "complete" and stats.frames_received == 4096 and stats.frames_dropped == 0
    assert stats.buffer_peak_bytes <= stats.buffer_bytes
    assert not os.path.exists(live.recording.dest)  # the spool is gone


def test_dropped_frames_recorded_as_zeros_and_reported(tmp_path):
    path = synthetic_mib(tmp_path, n=12, pixel_depth="U08")
    with SimulatorProcess(path, drop_frames=(3, 4, 9)) as sim:
        live = merlin("127.0.0.1", **sim.ports, nav_shape=(3, 4), record=tmp_path / "rec")
        wait_until(lambda: live.ended)
    stats = live.stats()
    assert live.state == "complete"
    assert (stats.frames_received, stats.frames_dropped, stats.dropped_examples) == (9, 3, [3, 4, 9])
    recorded = open_dataset(live.recording_path).read_frames(0, 12)
    expected = open_dataset(path, nav_shape=(12,)).read_frames(0, 12)
    expected[[3, 4, 9]] = 0
    np.testing.assert_array_equal(recorded, expected)


def read_as_a_job_does(live, on_part_files=None) -> np.ndarray:
    """Consume a live spool as a job does, copying every frame as it arrives and
    releasing it; ``on_part_files(paths)`` sees the spool's part files each time."""
    token, _first = live.register_consumer()
    got, deadline = [], time.perf_counter() + 60
    while len(got) < live.n_frames and not (live.ended and len(got) == live.frames_available):
        assert time.perf_counter() < deadline, f"{len(got)} frames read in 60 s"
        live.wait_for_frames(len(got) + 1, timeout=1.0)
        if on_part_files is not None and os.path.isdir(live.recording.dest):
            on_part_files([e for e in os.scandir(live.recording.dest) if e.name.startswith("part-")])
        available = live.frames_available
        got += list(np.array(live.read_frames(len(got), available)))
        live.consumed(token, available)
    live.unregister_consumer(token)
    return np.array(got)


def test_spool_received_in_place_reuses_the_consumed_parts(tmp_path):
    """record=None: frames are received straight into the spool's part files, and the
    files of parts every consumer has read are reused (their memory stays allocated)
    instead of each part being a new file: 24 parts of 4 frames pass through at most
    the spool's 6 (and the part being received). The frames are the file's, and no
    spool is left."""
    path = synthetic_mib(tmp_path, n=16, shape=(16, 16))
    inodes = set()
    with SimulatorProcess(path, nav_shape=(8, 12), fps=400) as sim:
        live = merlin("127.0.0.1", **sim.ports, nav_shape=(8, 12), partition_bytes=4 * 512, spool_bytes=6 * 4 * 512)
        frames = read_as_a_job_does(live, lambda files: inodes.update(e.inode() for e in files))
    assert live.state == "complete" and live.stats().frames_received == 96
    expected = open_dataset(path, nav_shape=(16,)).read_frames(0, 16)
    np.testing.assert_array_equal(frames, expected[np.arange(96) % 16])
    # a consumer that keeps up may see one file reused for every part (the ideal)
    assert 1 <= len(inodes) <= 7, f"{len(inodes)} part files for 24 parts"
    assert not os.path.exists(live.recording.dest)


def test_frames_dropped_into_a_reused_spool_part_read_as_zeros(tmp_path):
    """Frames the detector dropped land in reused spool parts, which hold older
    frames: they read as zeros all the same, and are reported."""
    path = synthetic_mib(tmp_path, n=16, shape=(16, 16), pixel_depth="U08")
    dropped = (21, 22, 40, 70)
    with SimulatorProcess(path, nav_shape=(8, 12), fps=400, drop_frames=dropped) as sim:
        live = merlin("127.0.0.1", **sim.ports, nav_shape=(8, 12), partition_bytes=4 * 256)
        frames = read_as_a_job_does(live)
    stats = live.stats()
    assert live.state == "complete" and (stats.frames_dropped, stats.dropped_examples) == (4, list(dropped))
    expected = open_dataset(path, nav_shape=(16,)).read_frames(0, 16)[np.arange(96) % 16]
    expected[list(dropped)] = 0
    np.testing.assert_array_equal(frames, expected)


def test_connection_dropped_mid_scan_keeps_the_recorded_part(tmp_path):
    path = synthetic_mib(tmp_path, n=16)
    # slow enough that the scan cannot end before the kill: the receiver records the
    # frames the socket holds after it (each small partition is a file of its own)
    with SimulatorProcess(path, nav_shape=(8, 8), fps=20) as sim:
        live = merlin("127.0.0.1", **sim.ports, nav_shape=(8, 8), record=tmp_path / "rec", partition_bytes=5 * 256)
        live.wait_for_frames(20, timeout=20)
        sim.kill()
        wait_until(lambda: live.ended)
    n = live.frames_available
    assert live.state == "interrupted" and 20 <= n < 64
    assert isinstance(live.error, AcquisitionError)
    assert f"acquisition interrupted after {n} of 64 frames" in str(live.error)
    with pytest.raises(AcquisitionError, match="interrupted"):
        live.wait_for_frames(64)
    recorded = open_dataset(live.recording_path)
    assert recorded.n_frames == n
    assert recorded.nav_shape == ((n // 8, 8) if n % 8 == 0 else (n,))
    assert recorded.metadata["acquisition"]["planned_nav_shape"] == [8, 8]
    frames = open_dataset(path, nav_shape=(16,)).read_frames(0, 16)
    np.testing.assert_array_equal(recorded.read_frames(0, n), frames[np.arange(n) % 16])


def test_connection_dropped_mid_scan_into_a_spool(tmp_path):
    """Received in place into a spool: the detector killed mid-scan ends the
    acquisition interrupted after the whole frames received, which read as sent."""
    path = synthetic_mib(tmp_path, n=16)
    with SimulatorProcess(path, nav_shape=(8, 8), fps=100) as sim:
        live = merlin("127.0.0.1", **sim.ports, nav_shape=(8, 8), partition_bytes=5 * 256)
        live.wait_for_frames(20, timeout=20)
        sim.kill()
        wait_until(lambda: live.ended)
    n = live.frames_available
    assert live.state == "interrupted" and 20 <= n < 64
    assert re.search(f"acquisition interrupted after {n} of 64 frames: the (detector closed the data "
                     f"connection|data connection failed)", str(live.error))
    frames = open_dataset(path, nav_shape=(16,)).read_frames(0, 16)
    np.testing.assert_array_equal(live.read_frames(0, n), frames[np.arange(n) % 16])


def test_recording_recovered_after_the_receiver_process_dies(tmp_path):
    """The receiver runs in its own process, which is killed mid-scan: the parts it
    completed (journalled) and the whole frames of the part it was writing are
    published by recover_recording."""
    path = synthetic_mib(tmp_path, n=16)
    dest = tmp_path / "rec"
    with SimulatorProcess(path, nav_shape=(8, 8), fps=100) as sim:
        script = textwrap.dedent(f"""
            import sys, time
            from stem_explorer.live import merlin
            live = merlin("127.0.0.1", {sim.control_port}, {sim.data_port}, nav_shape=(8, 8),
                          record={str(dest)!r}, partition_bytes=6 * 256)
            live.wait_for_frames(25, timeout=20)
            print("recorded", flush=True)
            time.sleep(60)
        """)
        receiver = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        try:
            assert receiver.stdout.readline().strip() == "recorded"
            receiver.send_signal(signal.SIGKILL)
            receiver.wait(10)
        finally:
            if receiver.poll() is None:
                receiver.kill()
            receiver.stdout.close()
    assert not (dest / "dataset.json").exists() and (dest / "recording.json").exists()
    with pytest.raises(DataSetError, match="unfinished recording"):  # not overwritten by accident
        Recording(dest, nav_shape=(8, 8), sig_shape=(8, 16), dtype=">u2")
    recovered = recover_recording(dest)
    n = recovered.n_frames
    assert n >= 24  # four complete parts of six frames at least
    assert recovered.metadata["acquisition"]["reason"].startswith("recovered")
    frames = open_dataset(path, nav_shape=(16,)).read_frames(0, 16)
    np.testing.assert_array_equal(recovered.read_frames(0, n), frames[np.arange(n) % 16])
    assert not (dest / "recording.json").exists()
    assert open_dataset(dest).n_frames == n


def test_watched_series_that_stops_growing_ends_interrupted(tmp_path):
    """A writer that stops after 7 of 12 frames: the watched data set holds the 7
    frames as the .mib reader reads them and then ends interrupted (idle_timeout)."""
    source = synthetic_mib(tmp_path, n=12)
    folder = tmp_path / "acq"
    folder.mkdir()
    writer = slow_writer(source, folder, 12, cuts=(0, 4, 7), delay=0.01)
    live = watch(folder, nav_shape=(3, 4), idle_timeout=1.0)
    writer.wait(30)
    wait_until(lambda: live.ended)
    assert live.state == "interrupted"
    assert "acquisition interrupted after 7 of 12 frames" in str(live.error)
    np.testing.assert_array_equal(live.read_frames(0, 7), open_dataset(source, nav_shape=(12,)).read_frames(0, 7))
    with pytest.raises(DataSetError, match="not available"):
        live.read_frames(6, 9)


def test_watched_de_movie_whose_writer_stops_ends_interrupted(tmp_path):
    """DE-Server stops after 7 of 12 frames: the watched movie holds the 7 frames as
    the MRC reader reads them, then ends interrupted (idle_timeout) saying so."""
    frames = np.random.default_rng(3).integers(0, 4000, (12, 8, 6)).astype(np.uint16)
    movie, folder, writer = staged_de_movie(tmp_path, frames, (3, 4), delay=0.01, extended_header_bytes=64, stop=7)
    live = watch(folder, "*_movie.mrc", idle_timeout=1.0)
    assert writer.wait(30) == 0
    wait_until(lambda: live.ended)
    assert live.state == "interrupted" and live.nav_shape == (3, 4)
    assert "acquisition interrupted after 7 of 12 frames" in str(live.error)
    np.testing.assert_array_equal(live.read_frames(0, 7), open_dataset(movie).read_frames(0, 7))
    with pytest.raises(DataSetError, match="not available"):
        live.read_frames(6, 9)


def test_watch_refuses_a_de_movie_it_cannot_follow(tmp_path):
    """No movie, a movie without its _info.txt, an info file that announces no frame
    count, a second movie of another frame shape: each an AcquisitionError saying
    what to do."""
    with pytest.raises(AcquisitionError, match="no file matching '\\*_movie.mrc' with a whole MRC header"):
        watch(tmp_path, "*_movie.mrc", first_file_timeout=0.2)
    (tmp_path / "scan_movie.mrc").write_bytes(b"\0" * 500)  # a header still being written
    with pytest.raises(AcquisitionError, match="within 0.2 s \\(last: .*scan_movie.mrc. cannot be read as MRC"):
        watch(tmp_path, "*_movie.mrc", first_file_timeout=0.2)
    write_de_movie(tmp_path, np.zeros((4, 3, 3), np.uint16))
    with pytest.raises(AcquisitionError, match="no scan_info.txt appeared beside it.*pass nav_shape"):
        watch(tmp_path, "*_movie.mrc", first_file_timeout=0.2)
    (tmp_path / "scan_info.txt").write_text("Scan - Enable = Enable\nScan - Type = XY File\n")
    with pytest.raises(AcquisitionError, match="does not say how many frames.*pass nav_shape"):
        watch(tmp_path, "*_movie.mrc")
    write_de_movie(tmp_path, np.zeros((2, 5, 5), np.uint16), name="second")  # after scan_ in name order
    live = watch(tmp_path, "*_movie.mrc", nav_shape=(2, 3))
    wait_until(lambda: live.ended)
    assert "acquisition interrupted after 4 of 6 frames" in str(live.error)
    assert "holds frames (5, 5) uint16" in str(live.error) and "another acquisition" in str(live.error)


def test_watch_refuses_what_it_cannot_follow(tmp_path):
    with pytest.raises(AcquisitionError, match="only Merlin .mib series"):
        watch(tmp_path, "*.h5")
    with pytest.raises(AcquisitionError, match="no file matching"):
        watch(tmp_path, "*.mib", first_file_timeout=0.2)
    synthetic_mib(tmp_path, n=4)
    with pytest.raises(AcquisitionError, match="pass nav_shape"):
        watch(tmp_path, "syn.mib")
    with pytest.raises(AcquisitionError, match="no ARINA master file matching"):
        watch(tmp_path, "*_master.h5", first_file_timeout=0.2)
    with h5py.File(tmp_path / "scan_master.h5", "w") as f:
        f["entry/data/data_000001"] = h5py.ExternalLink("scan_data_000001.h5", "/entry/data/data")
    with pytest.raises(AcquisitionError, match="does not say how many frames.*pass nav_shape"):
        watch(tmp_path, "*_master.h5")
    with pytest.raises(AcquisitionError, match="no complete data file scan_data_000001.h5"):
        watch(tmp_path, "*_master.h5", nav_shape=(2, 2), first_file_timeout=0.3)


def test_watched_arina_file_of_another_acquisition_ends_interrupted(tmp_path):
    """A data file whose frames are not the series' (another detector shape) ends the
    acquisition interrupted, naming the file, after the frames before it."""
    frames = np.arange(6 * 4 * 3, dtype=np.uint32).reshape(6, 4, 3)
    master, files = write_arina_series(tmp_path, frames, per_file=3, nav_shape=(2, 3))
    (tmp_path / "other").mkdir()
    write_arina_series(tmp_path / "other", np.zeros((3, 5, 5), np.uint32), per_file=3, nav_shape=(1, 3))
    os.replace(tmp_path / "other" / "scan_data_000001.h5", files[1])
    live = watch(tmp_path, "*_master.h5", settle_s=0.1, idle_timeout=30)
    wait_until(lambda: live.ended)
    assert "acquisition interrupted after 3 of 6 frames" in str(live.error)
    assert "scan_data_000002.h5" in str(live.error) and "another acquisition" in str(live.error)
    np.testing.assert_array_equal(live.read_frames(0, 3), frames[:3])


def test_spools_of_dead_processes_are_removed_and_others_kept(tmp_path):
    """A receiver killed with its spool in /dev/shm leaves it there (memory until a
    restart): the next spool removes those whose process is gone, and only them."""
    from stem_explorer.io.partitioned import recording

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    root = recording._SPOOL_ROOT if os.access(recording._SPOOL_ROOT, os.W_OK) else tempfile.gettempdir()
    orphan = Path(root) / f"stem-explorer-live-{dead.pid}-abc123"
    alive = Path(root) / f"stem-explorer-live-{os.getpid()}-def456"
    unrelated = Path(root) / "stem-explorer-live-notapid"
    for folder in (orphan, alive, unrelated):
        folder.mkdir()
        (folder / "part-00000.raw").write_bytes(b"x")
    try:
        spool = Recording(None, nav_shape=(2,), sig_shape=(2, 2), dtype="u1", keep=False)
        assert not orphan.exists() and alive.exists() and unrelated.exists()
        assert Path(spool.dest).name.startswith(f"stem-explorer-live-{os.getpid()}-")
        spool.close()
        assert not Path(spool.dest).exists()
    finally:
        for folder in (alive, unrelated):
            shutil.rmtree(folder)


def test_watched_arina_file_that_never_opens_ends_interrupted(tmp_path):
    """The second data file is there but cut short (its writer died): it is retried,
    not read, until the idle timeout, and the error says which file did not open."""
    frames = np.arange(6 * 4 * 3, dtype=np.uint32).reshape(6, 4, 3)
    _master, files = write_arina_series(tmp_path, frames, per_file=3, nav_shape=(2, 3))
    os.truncate(files[1], os.path.getsize(files[1]) * 2 // 3)
    live = watch(tmp_path, "*_master.h5", settle_s=0.1, idle_timeout=1.0)
    wait_until(lambda: live.ended)
    assert "acquisition interrupted after 3 of 6 frames: no new frame for 1 s" in str(live.error)
    assert f"{str(files[1])!r} does not open as HDF5 yet" in str(live.error)
    np.testing.assert_array_equal(live.read_frames(0, 3), frames[:3])


def test_watched_arina_file_written_slower_than_the_idle_timeout(tmp_path):
    """Data files written in place take 2.4 s each, longer than the 2 s idle timeout,
    but change at least every 1.6 s: the acquisition is not idle, it ends complete."""
    frames = np.arange(12 * 4 * 3, dtype=np.uint32).reshape(12, 4, 3)
    (tmp_path / "staged").mkdir()
    (tmp_path / "acq").mkdir()
    master, files = write_arina_series(tmp_path / "staged", frames, per_file=6, nav_shape=(3, 4))
    writer = arina_writer(tmp_path / "acq", [master, *files], mode="in-place", delay=0.4)
    live = watch(tmp_path / "acq", "*_master.h5", settle_s=0.2, idle_timeout=2.0)
    wait_until(lambda: live.ended, timeout=60)
    assert writer.wait(30) == 0
    assert live.state == "complete", live.error
    np.testing.assert_array_equal(live.read_frames(0, 12), frames)


#: Runs in a subprocess (before read_frames decoded in its own process, this one died).
_READ_CORRUPT = """
import sys
from stem_explorer.errors import FormatError
from stem_explorer.live import watch
live = watch(sys.argv[1], "*_master.h5", settle_s=0.1)
live.wait_for_frames(live.n_frames, timeout=60)
print("good:", int(live.read_frames(0, 5).sum()))
try:
    live.read_frames(4, 8)
except FormatError as exc:
    print("read:", exc)
print("survived")
"""


def test_watched_arina_corrupt_chunk_is_an_error_not_a_crash(tmp_path):
    """A bitshuffle-LZ4 chunk (frame 5) whose first block claims 2 GiB, which makes
    hdf5plugin read out of bounds (see test_job_failures): the watched data set's
    read_frames decodes in a separate process, so the caller gets a FormatError
    naming the frame and the file, and lives on."""
    frames = np.arange(8 * 192 * 192, dtype=np.uint32).reshape(8, 192, 192) % 251  # the real ARINA frame
    _master, files = write_arina_series(tmp_path, frames, per_file=4, nav_shape=(2, 4))
    with h5py.File(files[1], "r") as f:
        offset = f["entry/data/data"].id.get_chunk_info_by_coord((1, 0, 0)).byte_offset
    with open(files[1], "r+b") as f:
        f.seek(offset + 12)
        f.write(b"\x7f\xff\xff\xff")
    run = subprocess.run([sys.executable, "-c", _READ_CORRUPT, str(tmp_path)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert lines[0] == f"good: {int(frames[:5].sum())}"  # the frames before it, across both files
    assert any(line.startswith(f"read: corrupt chunk at frame 5 of '{files[1]}'") and "SIGSEGV" in line
               for line in lines), run.stdout
    assert lines[-1] == "survived"
