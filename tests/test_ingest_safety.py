"""Ingestion never loses or mixes data: one ingestion per destination at a time (two
real CLI processes), only its own files deleted, no source overwritten by itself,
deterministic task errors not retried, and clear errors for a full file system or a
destination that is a file (the full file system is a real tmpfs)."""

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import psutil
import pytest

import stem_explorer as se
from stem_explorer.cli import main
from stem_explorer.errors import DataSetError, FormatError
from stem_explorer.io.ingest import JOURNAL, verify
from stem_explorer.io.testing import make_frames

pytestmark = pytest.mark.cluster

SIG = (16, 16)  # 512-byte frames of uint16
PART = 16 * 512  # 16 frames a partition file


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        yield client


def npy(folder: Path, name: str, n_frames: int, seed: int):
    data = make_frames((n_frames,), SIG, "uint16", seed=seed)
    path = folder / name
    np.save(path, data)
    return str(path), data


def ingest(source, dest, client, **kw):
    return se.ingest(source, dest, client=client, partition_bytes=PART, progress=False, **kw)


def cli(*args):
    """``stem-explorer ARGS`` as a real process."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "stem_explorer", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def records(dest: Path) -> list:
    return [e for e in os.listdir(dest / JOURNAL) if e.startswith("part-")] if (dest / JOURNAL).is_dir() else []


def wait_for(condition, timeout=120, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def wait_idle(client):
    """Until no task runs (a cancelled task already running still finishes)."""
    wait_for(lambda: not any(client.processing().values()), 60, "an idle cluster")


def signal_tree(proc, sig) -> list:
    """Send ``sig`` to every descendant of ``proc`` (its cluster's processes); their PIDs."""
    children = psutil.Process(proc.pid).children(recursive=True)
    for child in children:
        child.send_signal(sig)
    return children


# -- 20.1: one ingestion per destination ---------------------------------------------------
def test_a_second_cli_ingest_is_refused_while_the_first_runs(tmp_path):
    a_src, a_data = npy(tmp_path, "a.npy", 128 * 16, seed=1)  # 128 files
    b_src, _b = npy(tmp_path, "b.npy", 40 * 16, seed=2)
    dest = tmp_path / "dest"
    a = cli("ingest", a_src, dest, "--partition-bytes", PART, "--workers", "1", "-q")
    stopped = []
    try:
        wait_for(lambda: len(records(dest)) >= 2 or a.poll() is not None, what="A's first files")
        assert a.poll() is None, a.communicate()
        stopped = signal_tree(a, signal.SIGSTOP)  # A's workers pause mid-run: A still owns DEST
        b = cli("ingest", b_src, dest, "--partition-bytes", PART, "--workers", "1", "--overwrite", "-q")
        out, err = b.communicate(timeout=120)
        assert b.returncode == 2, (out, err)
        assert re.search(rf"{re.escape(str(dest))} is being written by another ingestion .*pid {a.pid}", err), err
        assert "Traceback" not in err
    finally:
        for child in stopped:
            child.send_signal(signal.SIGCONT)
    out, err = a.communicate(timeout=300)
    assert a.returncode == 0, err
    ds = se.open_dataset(dest, verify="full")
    assert ds.n_frames == 128 * 16 and np.array_equal(ds.read_frames(0, ds.n_frames), a_data)
    assert sorted(os.listdir(dest)) == [".ingest.lock", "dataset.json"] + [f"part-{i:05d}.raw" for i in range(128)]


def test_the_lock_of_a_killed_ingestion_is_stale(tmp_path):
    src, data = npy(tmp_path, "a.npy", 64 * 16, seed=1)
    dest = tmp_path / "dest"
    a = cli("ingest", src, dest, "--partition-bytes", PART, "--workers", "1", "-q")
    wait_for(lambda: len(records(dest)) >= 2 or a.poll() is not None, what="A's first files")
    children = psutil.Process(a.pid).children(recursive=True)
    a.kill()
    a.wait()
    _gone, alive = psutil.wait_procs(children, timeout=60)  # its cluster goes with it
    for child in alive:
        child.kill()
    assert not alive, f"the killed ingestion's cluster outlived it: {alive}"
    b = cli("ingest", src, dest, "--partition-bytes", PART, "--workers", "1", "-q")
    out, err = b.communicate(timeout=120)
    assert b.returncode == 0, err
    written, complete = map(int, re.search(r"\((\d+) written, (\d+) already complete\)", out).groups())
    assert complete >= 2 and written + complete == 64
    ds = se.open_dataset(dest, verify="full")
    assert np.array_equal(ds.read_frames(0, ds.n_frames), data)


def test_records_written_by_another_run_are_not_adopted(client, tmp_path):
    """A file replaced under a running ingestion (as a run that lost its lock would
    do) is not published."""
    src, data = npy(tmp_path, "a.npy", 8 * 16, seed=1)
    dest = tmp_path / "dest"
    stranger = tmp_path / "stranger.raw"
    stranger.write_bytes(b"\7" * PART)

    def replace_a_finished_file(record):
        if stranger.exists():
            os.replace(stranger, dest / record["file"])

    with pytest.raises(DataSetError, match=r"part-\d{5}\.raw .*replaced.*another process"):
        ingest(src, dest, client, on_file=replace_a_finished_file)
    assert not (dest / "dataset.json").exists()
    ds = ingest(src, dest, client, overwrite=True)
    assert np.array_equal(ds.read_frames(0, ds.n_frames), data)


# -- 20.2: only files ingestion wrote are deleted -----------------------------------------
def user_files(dest: Path) -> dict:
    """Files a user keeps in the destination, with names close to ingestion's."""
    (dest / "my.tmpdata").mkdir(parents=True)
    (dest / "my.tmpdata" / "keep.txt").write_text("mine")
    (dest / "part-2_measurements").mkdir()
    (dest / "part-2_measurements" / "m.csv").write_text("1,2")
    files = {"notes.tmp.txt": "notes", "part-list.txt": "list", "dataset.json.tmp": "draft"}
    for name, text in files.items():
        (dest / name).write_text(text)
    return {**files, "my.tmpdata/keep.txt": "mine", "part-2_measurements/m.csv": "1,2"}


def assert_kept(dest: Path, files: dict):
    assert {name: (dest / name).read_text() for name in files if (dest / name).exists()} == files


def test_ingest_keeps_the_users_files(client, tmp_path):
    src, data = npy(tmp_path, "a.npy", 4 * 16, seed=1)
    dest = tmp_path / "dest"
    files = user_files(dest)
    ingest(src, dest, client)
    assert_kept(dest, files)
    ingest(src, dest, client, overwrite=True)  # a data set is there: only its files go
    assert_kept(dest, files)
    other, other_data = npy(tmp_path, "b.npy", 2 * 16, seed=2)
    ds = ingest(other, dest, client, overwrite=True)  # fewer files: the old ones go
    assert_kept(dest, files)
    assert np.array_equal(ds.read_frames(0, ds.n_frames), other_data)
    assert sorted(n for n in os.listdir(dest) if n.startswith("part-0")) == ["part-00000.raw", "part-00001.raw"]


def test_overwrite_into_a_folder_without_a_data_set_keeps_the_users_files(client, tmp_path):
    src, data = npy(tmp_path, "a.npy", 4 * 16, seed=1)
    dest = tmp_path / "dest"
    files = user_files(dest)
    ds = ingest(src, dest, client, overwrite=True)
    assert_kept(dest, files)
    assert np.array_equal(ds.read_frames(0, ds.n_frames), data)


def test_a_file_that_ingestion_did_not_write_is_never_replaced(client, tmp_path):
    src, _data = npy(tmp_path, "a.npy", 4 * 16, seed=1)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "part-00001.raw").write_text("a user's file")
    for overwrite in (False, True):
        with pytest.raises(DataSetError, match=r"part-00001\.raw .*not written by an ingestion.*move it"):
            ingest(src, dest, client, overwrite=overwrite)
        assert (dest / "part-00001.raw").read_text() == "a user's file"
    (dest / JOURNAL).mkdir()
    (dest / JOURNAL / "mine.txt").write_text("x")
    os.remove(dest / "part-00001.raw")
    with pytest.raises(DataSetError, match=rf"{JOURNAL} .*not an ingestion journal"):
        ingest(src, dest, client, overwrite=True)
    assert (dest / JOURNAL / "mine.txt").read_text() == "x"


# -- 20.3: a source is never its own destination -------------------------------------------
def test_a_data_set_is_not_ingested_into_itself(client, tmp_path):
    src, data = npy(tmp_path, "a.npy", 4 * 16, seed=1)
    folder = tmp_path / "set"
    ingest(src, folder, client)
    link = tmp_path / "link"
    link.symlink_to(folder)
    for source, dest in [(folder, folder), (link, folder), (folder, link), (folder, folder / "sub"),
                         (src, tmp_path)]:
        with pytest.raises(DataSetError, match="overlap.*choose a destination outside"):
            ingest(str(source), dest, client, overwrite=True)
    assert main(["ingest", str(folder), str(folder), "--overwrite", "--address", client.scheduler.address, "-q"]) == 2
    assert verify(folder)["files"] == 4
    assert np.array_equal(se.open_dataset(folder).read_frames(0, 64), data)


# -- 13.7: deterministic errors fail at once ----------------------------------------------
def test_a_task_error_that_cannot_pass_on_retry_fails_the_job_at_once(client, tmp_path):
    data = make_frames((16,), SIG, "uint16", seed=3)
    path = tmp_path / "corrupt.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("frames", data=data, chunks=(16,) + SIG, compression="gzip")
        offset = f["frames"].id.get_chunk_info(0).byte_offset
    with open(path, "r+b") as f:  # the deflate stream of the only chunk is broken
        f.seek(offset + 10)
        f.write(b"\xff" * 64)
    with pytest.raises(FormatError, match=r"cannot read frames 0:16 .*corrupt\.h5"):
        se.ingest(str(path), tmp_path / "dest", client=client, partition_bytes=16 * 512, progress=False)

    def attempts(dask_scheduler):  # how often each ingestion task was started
        starts = [str(t[0]) for t in dask_scheduler.transition_log if t[2] == "processing"]
        return Counter(k for k in starts if k.startswith("stem-explorer-ingest-"))

    assert set(client.run_on_scheduler(attempts).values()) == {1}


def test_the_tasks_of_a_lost_worker_run_again(client, tmp_path):
    src, data = npy(tmp_path, "a.npy", 64 * 16, seed=4)
    dest = tmp_path / "dest"
    pids = client.run(os.getpid)
    killed = []

    def kill_a_worker(record):
        if not killed:
            worker, pid = next(iter(pids.items()))
            os.kill(pid, signal.SIGKILL)  # its nanny starts a new one
            killed.append(worker)

    ds = ingest(src, dest, client, on_file=kill_a_worker)
    assert killed and ds.metadata["ingested"]["written"] == 64
    assert verify(dest)["files"] == 64 and np.array_equal(ds.read_frames(0, ds.n_frames), data)
    client.wait_for_workers(2, timeout=60)


# -- 20.13: clear errors for a full file system, a destination that is a file --------------
@pytest.fixture
def full_fs(tmp_path):
    """A 1 MiB tmpfs (needs root; skips elsewhere)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_ingest_onto_a_full_file_system(client, tmp_path, full_fs, capsys):
    src, _data = npy(tmp_path, "a.npy", 8 * 256, seed=1)  # 2 MiB
    dest = full_fs / "dest"
    args = ["ingest", src, str(dest), "--partition-bytes", "256K", "--address", client.scheduler.address, "-q"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert re.search(rf"{re.escape(str(dest))}.*no space left.*free space", err, re.I), err
    wait_idle(client)
    assert not os.listdir(dest / JOURNAL / "tmp")  # the failed tasks' temporaries are gone


def test_sample_onto_a_full_file_system(full_fs, capsys):
    out = full_fs / "s.h5"
    assert main(["sample", str(out), "--nav-shape", "32", "32", "--sig-shape", "32", "32", "-q"]) == 2
    err = capsys.readouterr().err
    # refused before writing: the sample's size is checked against the free space
    assert re.search(rf"{re.escape(str(out))}.*needs .* free.*smaller nav_shape", err, re.I), err
    assert os.listdir(full_fs) == []  # the partial temporary is gone


def test_ingest_destination_that_is_a_file(tmp_path, capsys):
    src, _data = npy(tmp_path, "a.npy", 16, seed=1)
    target = tmp_path / "notes.txt"
    target.write_text("keep")
    assert main(["ingest", src, str(target), "--workers", "1", "-q"]) == 2
    assert re.search(rf"{re.escape(str(target))} is a file.*folder", capsys.readouterr().err)
    assert target.read_text() == "keep"
