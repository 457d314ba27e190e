"""Ingestion into a local folder on a real LocalCluster: layout, planning, resuming,
replacing, in-memory sources and the CLI (HDFS destinations: tests/test_hdfs.py)."""

import json
import os

import h5py
import numpy as np
import pytest

import stem_explorer as se
from stem_explorer.cli import _size, main
from stem_explorer.errors import ChecksumError, DataSetError
from stem_explorer.io import open_dataset
from stem_explorer.io.ingest import JOURNAL, LocalStore, plan_ingest, verify
from stem_explorer.io.partitioned import RawPartitionDataSet
from stem_explorer.io.testing import make_frames

pytestmark = pytest.mark.cluster

NAV, SIG = (12, 10), (16, 16)  # 120 frames of 512 bytes


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        yield client


@pytest.fixture
def h5(tmp_path):
    data = make_frames(NAV, SIG, ">u2", seed=5)
    path = tmp_path / "scan.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("frames", data=data, chunks=(1, 4) + SIG)
    return str(path), data


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


def test_interrupted_ingestion_resumes(client, h5, tmp_path):
    dest = tmp_path / "parts"
    seen = []

    def interrupt(record):
        seen.append(record["file"])
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        se.ingest(h5[0], dest, client=client, partition_bytes=16 * 512, progress=False, on_file=interrupt)
    assert not (dest / "dataset.json").exists()
    recorded = [e.split("~")[0] for e in os.listdir(dest / JOURNAL) if e.startswith("part-")]
    store = LocalStore(dest)
    ids = {name: store.file_id(name) for name in recorded}
    ds = se.ingest(h5[0], dest, client=client, partition_bytes=16 * 512, progress=False)
    run = ds.metadata["ingested"]
    assert run["skipped"] >= 2 and run["written"] + run["skipped"] == 8
    assert {name: store.file_id(name) for name in recorded} == ids
    assert verify(dest)["files"] == 8 and not (dest / JOURNAL).exists()
    assert np.array_equal(ds.read_frames(0, ds.n_frames), h5[1].reshape(-1, *SIG))
    again = se.ingest(h5[0], dest, client=client, partition_bytes=16 * 512, progress=False)
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
