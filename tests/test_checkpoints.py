"""Checkpoints of long jobs on a real multi-process cluster: a resumed job computes only
the partitions its checkpoint lacks and ends equal to an uninterrupted run and to
numpy; a checkpoint made for other work or damaged is never mixed in; a file that is
not a checkpoint is never touched; results say whether they are complete."""

import os
import warnings

import numpy as np
import pytest

import _reference as ref
from stem_explorer import Session, masks
from stem_explorer.analyses import CenterOfMass, PickFrame, StdFrame, SumFrame, VirtualDetector
from stem_explorer.engine.checkpoint import checkpoint_path
from stem_explorer.engine.checkpoint_file import read_checkpoint
from stem_explorer.errors import CheckpointError, CheckpointWarning, JobCancelledError, SaveError
from stem_explorer.results import Results
from test_session import slow_dataset

pytestmark = pytest.mark.cluster

FRAME_BYTES = 8 * 8 * 2
PARTITION_BYTES = FRAME_BYTES * 16  # about 16 partitions of the 16 x 16 scan
DISK = masks.Disk(4, 4, 2.5)


def _analyses():
    return [SumFrame(), VirtualDetector(DISK), CenterOfMass(center=(3.5, 3.5), radius=3), StdFrame()]


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None)
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


def _assert_equal_to_numpy(results, data):
    frames = ref.frames(data)
    np.testing.assert_array_equal(results["sum/frame"].data, frames.sum(axis=0))
    np.testing.assert_array_equal(results["vd/mask0"].data, ref.virtual_image(data, DISK.rasterize((8, 8))))
    np.testing.assert_allclose(results["std/frame"].data, frames.std(axis=0), rtol=1e-9)


def _assert_same(a, b):
    """Equal to an uninterrupted run: bit for bit but for the float moments of std."""
    assert set(a) == set(b)
    for key in a:
        if key.startswith("std/"):
            np.testing.assert_allclose(a[key].data, b[key].data, rtol=1e-12)
        else:
            np.testing.assert_array_equal(a[key].data, b[key].data)


def _interrupted(session, ck):
    """Run until the checkpoint holds some partitions, then cancel, as a kill stops a
    run (a save under way when cancel() returns may still land: it is whole)."""
    job = session.run(*_analyses(), checkpoint=ck, checkpoint_every=0.05)
    for progress in job:
        if job.checkpoint.saves and progress.partitions_done < progress.n_partitions - 4:
            break
    job.cancel()


def test_a_resumed_job_computes_only_the_missing_partitions(client, tmp_path):
    ds, data = slow_dataset(tmp_path, delay=0.05)
    ck = checkpoint_path(tmp_path / "out.h5")
    snapshots = []
    with Session(ds, client=client, partition_bytes=PARTITION_BYTES) as session:
        _interrupted(session, ck)
        job = session.run(*_analyses(), checkpoint=ck, checkpoint_every=0.05, on_partial=snapshots.append)
        resumed = job.result(timeout=120)
        uninterrupted = session.run(*_analyses()).result(timeout=120)
    k, n, stats = job.checkpoint.resumed, job.n_partitions, job.stats
    assert 0 < k < n and stats.partitions_resumed == k
    assert sum(stats.tasks_per_worker.values()) == n - k  # only the missing partitions ran
    first = snapshots[0]  # the checkpoint's partitions, delivered before any task's
    assert first.partitions_done == k and first.bytes_done == 0
    assert stats.bytes_done == np.count_nonzero(~first.filled) * FRAME_BYTES
    vd = ref.virtual_image(data, DISK.rasterize((8, 8)))
    np.testing.assert_array_equal(first.results["vd/mask0"].data[first.filled], vd[first.filled])
    assert not first.results.complete
    _assert_same(resumed, uninterrupted)
    _assert_equal_to_numpy(resumed, data)
    assert resumed.complete and resumed.filled.all()


def test_job_save_writes_the_results_then_removes_its_checkpoint(client, tmp_path):
    ds, data = slow_dataset(tmp_path, delay=0)
    out = tmp_path / "out.h5"
    ck = checkpoint_path(out)
    with Session(ds, client=client, partition_bytes=PARTITION_BYTES) as session:
        job = session.run(*_analyses(), checkpoint=ck, checkpoint_every=1e-6)
        job.result(timeout=120)
        assert ck.exists() and job.checkpoint.saves >= 1  # the job alone never removes it
        assert job.save(out) == out
    assert not ck.exists()
    loaded = Results.load(out)
    _assert_equal_to_numpy(loaded, data)
    assert loaded.complete and loaded.filled.shape == (16, 16) and loaded.filled.all()


def test_a_checkpoint_of_a_changed_data_file_is_not_used(client, tmp_path):
    ds, data = slow_dataset(tmp_path, delay=0)
    ck = tmp_path / "ck"
    with Session(ds, client=client, partition_bytes=PARTITION_BYTES) as session:
        session.run(*_analyses(), checkpoint=ck, checkpoint_every=1e-6).result(timeout=120)
        assert len(read_checkpoint(ck).done) >= 15
        changed = (data[::-1]).copy()  # same size, other bytes
        changed.tofile(ds.path)
        os.utime(ds.path, ns=(0, os.stat(ds.path).st_mtime_ns + 1))  # coarse clocks: the write may keep the time
        with pytest.warns(CheckpointWarning, match=r"made for other work \(dataset\.files\[0\]\.mtime_ns: \d+ -> \d+\).* starts from the beginning"):
            job = session.run(*_analyses(), checkpoint=ck, checkpoint_every=1e-6)
        results = job.result(timeout=120)
    assert job.stats.partitions_resumed == 0 and sum(job.stats.tasks_per_worker.values()) == job.n_partitions
    _assert_equal_to_numpy(results, changed)
    assert read_checkpoint(ck).identity == job.checkpoint._identity  # replaced by the new job's


def test_a_checkpoint_of_other_analyses_is_not_used(client, tmp_path):
    ds, data = slow_dataset(tmp_path, delay=0)
    ck = tmp_path / "ck"
    with Session(ds, client=client, partition_bytes=PARTITION_BYTES) as session:
        session.run(VirtualDetector(masks.Disk(4, 4, 1)), checkpoint=ck, checkpoint_every=1e-6).result(timeout=120)
        with pytest.warns(CheckpointWarning, match=r"made for other work \(context\.analyses\[0\]\.masks\.radius: 1\.0 -> 2\.5; plan\.ops\[0\]"):
            job = session.run(VirtualDetector(DISK), checkpoint=ck)
        results = job.result(timeout=120)
    assert job.stats.partitions_resumed == 0
    np.testing.assert_array_equal(results["vd/mask0"].data, ref.virtual_image(data, DISK.rasterize((8, 8))))


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "emptied after the marker"])
def test_a_damaged_checkpoint_warns_and_the_job_starts_afresh(client, tmp_path, damage):
    ds, data = slow_dataset(tmp_path, delay=0)
    ck = tmp_path / "ck"
    with Session(ds, client=client, partition_bytes=PARTITION_BYTES) as session:
        session.run(*_analyses(), checkpoint=ck, checkpoint_every=1e-6).result(timeout=120)
        blob = bytearray(ck.read_bytes())
        if damage == "truncated":
            blob = blob[: len(blob) // 2]
        elif damage == "flipped byte":
            blob[len(blob) * 2 // 3] ^= 0x10
        else:
            blob = blob[:16]
        ck.write_bytes(bytes(blob))
        with pytest.warns(CheckpointWarning, match=f"checkpoint '{ck}' is damaged .*starts from the beginning"):
            job = session.run(*_analyses(), checkpoint=ck, checkpoint_every=1e-6)
        results = job.result(timeout=120)
    assert job.stats.partitions_resumed == 0
    _assert_equal_to_numpy(results, data)
    assert read_checkpoint(ck).done  # a good checkpoint replaced the damaged one


def test_a_file_that_is_not_a_checkpoint_is_refused_and_left_alone(client, tmp_path):
    ds, _ = slow_dataset(tmp_path, delay=0)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes, not a checkpoint")
    with Session(ds, client=client) as session:
        with pytest.raises(CheckpointError, match=f"'{notes}' is not a checkpoint of stem_explorer .* left as it is"):
            session.run(SumFrame(), checkpoint=notes)
        with pytest.raises(SaveError, match="is a folder"):
            session.run(SumFrame(), checkpoint=tmp_path)
        # a checkpoint replaced by another file before the results are saved stays
        ck = tmp_path / "ck"
        job = session.run(SumFrame(), checkpoint=ck, checkpoint_every=1e-6)
        job.result(timeout=120)
        ck.write_text("replaced")
        job.save(tmp_path / "out.h5")
    assert notes.read_text() == "my notes, not a checkpoint" and ck.read_text() == "replaced"


def test_data_in_memory_cannot_be_checkpointed(client, tmp_path):
    data = np.zeros((4, 4, 8, 8), np.uint16)
    with Session(data, client=client) as session:
        with pytest.raises(CheckpointError, match="checkpoints need a data set read from files"):
            session.run(SumFrame(), checkpoint=tmp_path / "ck")
    assert not (tmp_path / "ck").exists()


def test_results_of_a_cancelled_job_say_they_are_incomplete(client, tmp_path):
    ds, data = slow_dataset(tmp_path, delay=0.05)
    with Session(ds, client=client, partition_bytes=PARTITION_BYTES) as session:
        job = session.run(VirtualDetector(DISK))
        for progress in job:
            if progress.partitions_done >= 2:
                break
        job.cancel()
        with pytest.raises(JobCancelledError):
            job.result()
    partial = progress.results
    assert not partial.complete and partial.filled.any()
    np.testing.assert_array_equal(partial.filled, progress.filled)
    loaded = Results.load(partial.save(tmp_path / "partial.h5"))
    assert not loaded.complete and loaded.provenance["complete"] is False
    np.testing.assert_array_equal(loaded.filled, progress.filled)
    image = loaded["vd/mask0"].data
    np.testing.assert_array_equal(image[loaded.filled], ref.virtual_image(data, DISK.rasterize((8, 8)))[loaded.filled])
    assert np.isnan(image[~loaded.filled]).all()


def test_results_saved_before_completeness_was_recorded_load_as_before(tmp_path):
    import h5py

    Results({}, {"complete": False}).save(tmp_path / "old.h5")
    with h5py.File(tmp_path / "old.h5", "a") as f:  # as files written before
        del f.attrs["complete"]
    old = Results.load(tmp_path / "old.h5")
    assert old.filled is None and old.complete is False
    assert Results({}).complete is True


def test_a_scan_roi_job_is_not_checkpointed(client, tmp_path):
    ds, data = slow_dataset(tmp_path, delay=0)
    roi = np.zeros((16, 16), bool)
    roi[2:5, 3:9] = True
    with Session(ds, client=client, partition_bytes=PARTITION_BYTES) as session:
        with pytest.raises(CheckpointError, match="a job over a scan roi is not checkpointed"):
            session.run(SumFrame(), roi=roi, checkpoint=tmp_path / "ck")
        picked = session.run(PickFrame((3, 4)), checkpoint=tmp_path / "ck", checkpoint_every=1e-6)
        np.testing.assert_array_equal(picked.result(timeout=120)["pick/frames"].data[0], data[3, 4])
    assert picked.checkpoint is None and not (tmp_path / "ck").exists()  # a few frames: nothing to resume
