"""Failures after a job starts, with real processes: the client or the cluster closed
under a session, an external scheduler killed, a worker killed by SIGBUS (a mapped
file truncated under the job), a corrupt compressed chunk that crashes its decoder.
Each ends as the package's error saying what happened and what to do, and the
user's process survives."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import dask
import distributed  # noqa: F401 (its config defaults, before dask.config.set below)
import pytest

from stem_explorer import Session
from stem_explorer.analyses import SumFrame
from stem_explorer.errors import ClusterError, FormatError
from test_session import slow_dataset

pytestmark = pytest.mark.cluster

SIG = (8, 8)
FRAME_BYTES = 8 * 8 * 2


def _wait_for_a_partition(job, timeout=180):  # a fresh worker runs niced: slow on a busy machine
    deadline = time.monotonic() + timeout
    while job.snapshot(results=False).partitions_done < 1:
        assert not job.done and time.monotonic() < deadline, job
        time.sleep(0.01)


@pytest.mark.parametrize("closed", ["client", "cluster"])
def test_a_client_or_cluster_closed_under_a_job_is_a_cluster_error(tmp_path, closed):
    ds, _ = slow_dataset(tmp_path, delay=0.05)
    session = Session(ds, n_workers=1, partition_bytes=FRAME_BYTES * 16)
    try:
        job = session.run(SumFrame())
        _wait_for_a_partition(job)
        (session.client if closed == "client" else session.client.cluster).close()
        with pytest.raises(ClusterError, match="client was closed, or its cluster shut down; start a new Session"):
            job.result(timeout=60)
        with pytest.raises(ClusterError, match="start a new Session"):
            session.run(SumFrame())
    finally:
        session.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_external_scheduler_that_dies_is_a_cluster_error(tmp_path):
    ds, _ = slow_dataset(tmp_path, delay=0.05)
    address = f"tcp://127.0.0.1:{_free_port()}"
    # the slow source's module must be importable there (dask pickles it by reference)
    tests = os.path.dirname(__file__)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", address.rsplit(":", 1)[1], "--no-dashboard"], **quiet)
    worker = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
         "--no-nanny", "--no-dashboard"], **quiet)
    try:
        session = Session(ds, address=address, timeout=60, partition_bytes=FRAME_BYTES * 16)
        session.client.wait_for_workers(1, timeout=60)
        job = session.run(SumFrame())
        _wait_for_a_partition(job)
        scheduler.kill()
        scheduler.wait()
        with pytest.raises(ClusterError, match=f"the dask scheduler at {address} was lost .*start a new Session"):
            job.result(timeout=60)
        with pytest.raises(ClusterError, match=f"scheduler at {address} was lost"):
            session.run(SumFrame())
        session.close()
    finally:
        for process in (worker, scheduler):
            process.kill()
            process.wait()


@pytest.fixture
def job_mid_partition(tmp_path):
    """``(data set, job, worker pid)``: a job on one worker that allows no retries (a
    worker's death ends the job on dask's KilledWorker), its first partition merged
    and its second (64 frames, one per tile, 3.2 s) under way with the file mapped."""
    ds, _ = slow_dataset(tmp_path, delay=0.05)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        session = Session(ds, n_workers=1, partition_bytes=FRAME_BYTES * 64, tile_bytes=FRAME_BYTES)
    with session:
        (pid,) = session.client.run(os.getpid).values()
        job = session.run(SumFrame())
        _wait_for_a_partition(job)
        time.sleep(0.5)
        yield ds, job, pid
        session.client.wait_for_workers(1, timeout=60)
        assert pid not in session.client.run(os.getpid).values()  # it died


def test_a_mapped_file_truncated_under_a_job_is_a_format_error(job_mid_partition):
    """The running task's worker dies of SIGBUS; re-reading the partition names the
    truncated file."""
    ds, job, _ = job_mid_partition
    os.truncate(ds.path, 0)  # the task's next frame lies past the file's end
    with pytest.raises(FormatError, match=f"file '{ds.path}' is 0 bytes .* the file is truncated"):
        job.result(timeout=120)


def test_a_worker_killed_from_outside_is_a_cluster_error_that_clears_the_data(job_mid_partition):
    _, job, pid = job_mid_partition
    os.kill(pid, signal.SIGKILL)  # as the kernel's OOM killer would
    with pytest.raises(ClusterError, match=r"1 dask workers died running partition \d+ \(frames \d+ to \d+\); "
                                           r"its frames read without error .* not at fault\. .*worker.* logs"):
        job.result(timeout=120)


CORRUPT_FRAME = 5

#: Runs in a subprocess: reads the corrupt copy in this process and on the cluster,
#: prints the errors, then repairs the copy and goes on with the same session.
SCRIPT = textwrap.dedent(
    """
    import shutil
    import sys

    import dask
    import distributed  # noqa: F401 (its config defaults, before dask.config.set)
    import numpy as np

    from stem_explorer import Session, open_dataset
    from stem_explorer.analyses import SumFrame
    from stem_explorer.errors import FormatError

    def main(corrupt_master, corrupt_data, good_master, good_data, bad):
        bad = int(bad)
        ds, good = open_dataset(corrupt_master), open_dataset(good_master)
        try:
            ds.read_frames(bad, bad + 1)
        except FormatError as exc:
            print("read:", exc)
        assert np.array_equal(ds.read_frames(0, bad), good.read_frames(0, bad))
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):  # one death, not four
            session = Session(ds, n_workers=1)
        with session:
            try:
                session.compute(SumFrame())
            except FormatError as exc:
                print("job:", exc)
            shutil.copy(good_data, corrupt_data)  # repaired: the same session goes on
            session.client.wait_for_workers(1, timeout=240)  # the nanny's new worker
            total = session.compute(SumFrame())["sum/frame"].data
            assert np.array_equal(total, good.read_frames(0, good.n_frames).sum(axis=0))
        print("survived")

    if __name__ == "__main__":
        main(*sys.argv[1:])
    """
)


@pytest.fixture
def corrupt_arina(realdata, tmp_path):
    """A copy of the real ARINA files whose chunk of frame ``CORRUPT_FRAME`` claims a
    2 GiB first LZ4 block (bytes 12-15 of a bitshuffle-LZ4 chunk: its compressed size),
    which makes h5py + hdf5plugin read out of bounds; returns (master, data file)."""
    import h5py

    master, _, data = (realdata.file(name) for name in realdata.entry("arina_4x4x192x192")["files"])
    for path in (master, data):
        shutil.copy(path, tmp_path / path.name)
        os.chmod(tmp_path / path.name, 0o644)
    copy = tmp_path / data.name
    with h5py.File(copy, "r") as f:
        offset = f["entry/data/data"].id.get_chunk_info_by_coord((CORRUPT_FRAME, 0, 0)).byte_offset
    with open(copy, "r+b") as f:
        f.seek(offset + 12)
        f.write(b"\x7f\xff\xff\xff")
    return tmp_path / master.name, copy


def test_the_corruption_crashes_h5py_itself(corrupt_arina):
    """The fixture's bytes do what the next test guards against (upstream: hdf5plugin's
    bitshuffle filter does not bound its reads by the chunk's size)."""
    _, data = corrupt_arina
    read = f"import h5py, hdf5plugin; h5py.File({str(data)!r})['entry/data/data'][{CORRUPT_FRAME}]"
    crash = subprocess.run([sys.executable, "-c", read], capture_output=True)
    assert crash.returncode == -signal.SIGSEGV


def test_a_corrupt_compressed_chunk_is_an_error_and_the_users_process_survives(corrupt_arina, realdata, tmp_path):
    master, data = corrupt_arina
    good_master, _, good_data = (realdata.file(name) for name in realdata.entry("arina_4x4x192x192")["files"])
    (tmp_path / "script.py").write_text(SCRIPT)
    paths = [str(p) for p in (master, data, good_master, good_data)]
    run = subprocess.run(
        [sys.executable, str(tmp_path / "script.py"), *paths, str(CORRUPT_FRAME)],
        capture_output=True, text=True, timeout=540,  # worker restarts: minutes on a busy machine
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    where = f"corrupt chunk at frame {CORRUPT_FRAME} of '{data}'"
    assert any(line.startswith(f"read: {where}") and "SIGSEGV" in line for line in lines), run.stdout
    assert any(line.startswith(f"job: {where}") for line in lines), run.stdout
    assert lines[-1] == "survived"
