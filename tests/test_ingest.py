"""Ingestion into a local folder on a real LocalCluster: layout, planning, resuming,
replacing, in-memory sources, codecs and the CLI (HDFS destinations: tests/test_hdfs.py)."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

import stem_explorer as se
from stem_explorer.cli import _size, main
from stem_explorer.errors import ChecksumError, CodecError, DataSetError
from stem_explorer.io import open_dataset
from stem_explorer.io.ingest import JOURNAL, LocalStore, plan_ingest, verify
from stem_explorer.io.ingest_task import CHUNK_TABLES
from stem_explorer.io.partitioned import RawPartitionDataSet, codecs
from stem_explorer.io.testing import make_frames

pytestmark = pytest.mark.cluster

NAV, SIG = (12, 10), (16, 16)  # 120 frames of 512 bytes


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        yield client


def write_h5(path, data):
    """``(path, data)`` of an HDF5 file holding ``data`` chunked by 4 frames."""
    with h5py.File(path, "w") as f:
        f.create_dataset("frames", data=data, chunks=(1, 4) + SIG)
    return str(path), data


@pytest.fixture
def h5(tmp_path):
    return write_h5(tmp_path / "scan.h5", make_frames(NAV, SIG, ">u2", seed=5))


def test_ingest_to_a_folder(client, h5, tmp_path):
    dest = tmp_path / "parts"
    ds = se.ingest(h5[0], dest, client=client, partition_bytes=16 * 512, progress=False)
    assert isinstance(ds, RawPartitionDataSet) and ds.shape == NAV + SIG and ds.dtype.str == ">u2"
    assert ds.metadata["ingested"]["written"] == 8 and ds.metadata["ingested"]["skipped"] == 0
    assert sorted(os.listdir(dest)) == [".ingest.lock", "dataset.json"] + [f"part-{i:05d}.raw" for i in range(8)]
    doc = json.loads((dest / "dataset.json").read_text())
    assert [(p["start"], p["stop"]) for p in doc["partitions"]][-2:] == [(96, 112), (112, 120)]
    assert doc["metadata"]["source"]["path"] == h5[0] and doc["metadata"]["ingest"]["frames_per_file"] == 16
    assert np.array_equal(ds.read_frames(0, ds.n_frames), h5[1].reshape(-1, *SIG))
    assert verify(dest) == {"files": 8, "bytes": 120 * 512}


def test_plan_fits_whole_frames_into_whole_blocks(h5):
    ds = open_dataset(h5[0])
    plan = plan_ingest(ds, partition_bytes=16 * 512 + 100, blocks_per_partition=3)
    assert plan.frames_per_file == 16 and len(plan.files) == 8
    assert plan.block_bytes % 512 == 0 and 2 * plan.block_bytes < 16 * 512 <= 3 * plan.block_bytes
    odd = open_dataset(np.zeros((10, 3, 5), np.uint16))  # 30-byte frames
    assert plan_ingest(odd, partition_bytes=100).block_bytes == 512  # rounded up to HDFS's unit
    assert plan_ingest(odd, partition_bytes=10**9).files == (("part-00000.raw", 0, 10),)
    with pytest.raises(DataSetError, match="blocks_per_partition"):
        plan_ingest(ds, blocks_per_partition=0)


@pytest.mark.parametrize("codec", ["none", "bslz4"])  # compressed: chunk tables from the journal
def test_interrupted_ingestion_resumes(client, h5, tmp_path, codec):
    dest = tmp_path / "parts"
    seen = []

    def interrupt(record):
        seen.append(record["file"])
        if len(seen) == 2:
            raise KeyboardInterrupt

    options = dict(client=client, partition_bytes=16 * 512, progress=False, codec=codec)
    with pytest.raises(KeyboardInterrupt):
        se.ingest(h5[0], dest, on_file=interrupt, **options)
    assert not (dest / "dataset.json").exists()
    recorded = [e.split("~")[0] for e in os.listdir(dest / JOURNAL) if e.startswith("part-")]
    if codec != "none":
        assert len(recorded) >= 2 and len(os.listdir(dest / CHUNK_TABLES)) == len(recorded)
    store = LocalStore(dest)
    ids = {name: store.file_id(name) for name in recorded}
    ds = se.ingest(h5[0], dest, **options)
    run = ds.metadata["ingested"]
    assert run["skipped"] >= 2 and run["written"] + run["skipped"] == 8
    assert {name: store.file_id(name) for name in recorded} == ids  # published from the journal, not rewritten
    assert verify(dest)["files"] == 8 and not (dest / JOURNAL).exists()
    assert np.array_equal(ds.read_frames(0, ds.n_frames), h5[1].reshape(-1, *SIG))
    again = se.ingest(h5[0], dest, **options)
    assert again.metadata["ingested"] == {**again.metadata["ingested"], "written": 0, "skipped": 8}


def test_other_data_needs_overwrite(client, h5, tmp_path):
    dest = tmp_path / "parts"
    se.ingest(h5[0], dest, client=client, partition_bytes=16 * 512, progress=False)
    other = np.arange(6 * 16 * 16, dtype=np.float32).reshape(6, 16, 16)
    with pytest.raises(DataSetError, match="already holds a data set.*overwrite=True"):
        se.ingest(other, dest, client=client, progress=False)
    with pytest.raises(DataSetError, match="already holds a data set"):
        se.ingest(h5[0], dest, client=client, partition_bytes=32 * 512, progress=False)  # another layout
    ds = se.ingest(other, dest, client=client, overwrite=True, progress=False)  # an in-memory source
    assert ds.shape == (6, 16, 16) and np.array_equal(ds.read_frames(0, 6), other)
    assert sorted(os.listdir(dest)) == [".ingest.lock", "dataset.json", "part-00000.raw"]


def test_a_corrupt_file_is_found_and_rewritten_alone(client, h5, tmp_path):
    dest = tmp_path / "parts"
    se.ingest(h5[0], dest, client=client, partition_bytes=16 * 512, progress=False)
    with open(dest / "part-00003.raw", "r+b") as f:
        f.write(b"\0" * 8)
    with pytest.raises(ChecksumError, match=r"part-00003\.raw"):
        verify(dest)
    os.remove(dest / "part-00003.raw")
    ds = se.ingest(h5[0], dest, client=client, partition_bytes=16 * 512, progress=False)
    assert (ds.metadata["ingested"]["written"], ds.metadata["ingested"]["skipped"]) == (1, 7)
    assert verify(dest)["files"] == 8


def test_cli_ingest(h5, tmp_path, capsys):
    dest = tmp_path / "parts"
    assert main(["ingest", h5[0], str(dest), "--partition-bytes", "8K", "--workers", "1", "-q"]) == 0
    assert "8 partition files (8 written, 0 already complete)" in capsys.readouterr().out
    assert main(["ingest", h5[0], str(dest), "--partition-bytes", "8K", "--workers", "1", "-q"]) == 0
    assert "(0 written, 8 already complete)" in capsys.readouterr().out
    assert main(["ingest", h5[0], str(tmp_path / "x"), "--webhdfs", "nn:9870", "--workers", "1"]) == 2
    assert "webhdfs= applies to hdfs://" in capsys.readouterr().err


def test_sizes():
    assert [_size(t) for t in ("4096", "8K", "128M", "128MiB", "1G", "1.5K")] == [4096, 8192, 2**27, 2**27, 2**30, 1536]
    with pytest.raises(Exception, match="not a size"):
        _size("lots")


# -- with a codec: layout, resuming from the journal's chunk tables, analyses equal to
# those on the uncompressed files, the CLI, and a worker that lacks the codec's package
# (a real worker process that cannot import it)
FRAME_BYTES = 512


def ingest_counting(source, dest, client, **options):
    """``source`` ingested in files of 16 frames."""
    return se.ingest(source[0], dest, client=client, partition_bytes=16 * FRAME_BYTES, progress=False, **options)


@pytest.fixture
def counting_h5(tmp_path, monkeypatch):
    """Counting data (about 0.3 electrons per pixel) in a chunked HDF5 file; chunks of
    4 frames (planned on the client, so the workers follow)."""
    monkeypatch.setattr(codecs, "CHUNK_BYTES", 4 * FRAME_BYTES)
    return write_h5(tmp_path / "scan.h5", np.random.default_rng(5).poisson(0.3, size=NAV + SIG).astype(">u2"))


def test_ingest_with_a_codec(client, counting_h5, tmp_path):
    dest = tmp_path / "parts"
    ds = ingest_counting(counting_h5, dest, client, codec="zstd3")
    names = [f"part-{i:05d}.zstd3" for i in range(8)]
    assert sorted(os.listdir(dest)) == [".ingest.lock", "dataset.json"] + names
    doc = json.loads((dest / "dataset.json").read_text())
    assert doc["version"] == 2 and doc["codec"]["chunk_frames"] == 4
    assert doc["metadata"]["ingest"]["codec"]["name"] == "zstd3"
    assert [len(p["chunk_bytes"]) for p in doc["partitions"]] == [4] * 7 + [2]
    stored = sum(p["bytes"] for p in doc["partitions"])
    assert stored * 3 < ds.nbytes and verify(dest) == {"files": 8, "bytes": stored}  # bytes as stored
    assert np.array_equal(ds.read_frames(0, ds.n_frames), counting_h5[1].reshape(-1, *SIG))


def test_another_codec_is_another_layout(client, counting_h5, tmp_path):
    dest = tmp_path / "parts"
    ingest_counting(counting_h5, dest, client, codec="bslz4")
    with pytest.raises(DataSetError, match="another source or layout"):
        ingest_counting(counting_h5, dest, client, codec="zstd1")
    ingest_counting(counting_h5, dest, client, overwrite=True)  # replaces every file
    assert sorted(os.listdir(dest)) == [".ingest.lock", "dataset.json"] + [f"part-{i:05d}.raw" for i in range(8)]


def run_all(ds, client):
    disk, ring = se.masks.Disk(7.5, 7.5, 4), se.masks.Ring(7.5, 7.5, 3, 7)
    with se.Session(ds, client=client, partition_bytes=32 * FRAME_BYTES) as session:
        job = session.run(se.VirtualDetector({"bf": disk, "adf": ring}), se.SumFrame(), se.StdFrame(),
                          se.MaxFrame(), se.CenterOfMass(center=(7.5, 7.5), radius=5),
                          se.RadialProfile(center=(7.5, 7.5), edges=[0, 2, 4, 6, 8]),
                          se.PickFrame([(5, 3), (11, 9)]))
        return job.result()


def test_analyses_on_compressed_data_equal_those_on_raw(client, counting_h5, tmp_path):
    raw = ingest_counting(counting_h5, tmp_path / "raw", client)
    packed = ingest_counting(counting_h5, tmp_path / "lz4", client, codec="bslz4")
    expected, got = run_all(raw, client), run_all(packed, client)
    assert sorted(got) == sorted(expected) and len(got) >= 8
    for key in expected:
        if key.startswith("std/"):  # partials merge in the order tasks finish: float64 rounding differs
            np.testing.assert_allclose(got[key].data, expected[key].data, rtol=1e-12, err_msg=key)
        else:
            assert np.array_equal(got[key].data, expected[key].data, equal_nan=True), key
    flat = counting_h5[1].reshape(-1, *SIG).astype(np.float64)
    assert np.array_equal(got["sum/frame"].data, flat.sum(0))


def test_cli_ingest_with_a_codec(client, counting_h5, tmp_path, capsys):
    dest = tmp_path / "parts"
    args = ["ingest", counting_h5[0], str(dest), "--partition-bytes", "8K", "--codec", "bslz4", "-q",
            "--address", client.scheduler.address]
    assert main(args) == 0
    assert "8 partition files (8 written, 0 already complete)" in capsys.readouterr().out
    assert json.loads((dest / "dataset.json").read_text())["codec"]["name"] == "bslz4"
    with pytest.raises(SystemExit) as exit_:
        main(["ingest", counting_h5[0], str(tmp_path / "x"), "--codec", "lz5"])
    assert exit_.value.code == 2 and "invalid choice: 'lz5'" in capsys.readouterr().err


WORKER_WITHOUT_NUMCODECS = """
import sys
sys.modules["numcodecs"] = None  # as on a host where it is not installed: importing it fails
from distributed.cli.dask_worker import main
sys.argv = ["dask-worker", sys.argv[1], "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1"]
main()
"""


@pytest.fixture
def bare_worker():
    """A scheduler whose one worker process cannot import numcodecs."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=0, host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster:
        worker = subprocess.Popen([sys.executable, "-c", WORKER_WITHOUT_NUMCODECS, cluster.scheduler_address],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with Client(cluster) as client:
                client.wait_for_workers(1, timeout=120)
                yield client
        finally:
            worker.terminate()
            worker.wait(30)


def test_a_worker_without_the_codec_package_names_codec_and_package(bare_worker, client, counting_h5, tmp_path):
    with pytest.raises(ImportError):
        bare_worker.submit(__import__, "numcodecs", pure=False).result()
    packed = ingest_counting(counting_h5, tmp_path / "lz4", client, codec="bslz4")
    message = (r"is compressed with codec bslz4 \(blosc lz4, level 5, bit-shuffle\), which needs the Python "
               r"package numcodecs on .*pip install 'stem_explorer\[compression\]'")
    with se.Session(packed, client=bare_worker) as session:
        with pytest.raises(CodecError, match=message):
            session.run(se.SumFrame()).result()
    with pytest.raises(CodecError, match=r"codec zstd1 .*package numcodecs on "):  # writing needs it too
        ingest_counting(counting_h5, tmp_path / "again", bare_worker, codec="zstd1")
    assert not (tmp_path / "again" / "dataset.json").exists()
    raw = ingest_counting(counting_h5, tmp_path / "raw", bare_worker)  # uncompressed: no codec needed
    with se.Session(raw, client=bare_worker) as session:
        assert np.array_equal(session.run(se.SumFrame()).result()["sum/frame"].data,
                              counting_h5[1].reshape(-1, *SIG).astype(np.float64).sum(0))
