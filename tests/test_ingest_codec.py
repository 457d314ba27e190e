"""Ingestion with a codec on a real LocalCluster: layout, resuming from the journal's
chunk tables, analyses equal to those on the uncompressed files, the CLI, and a
worker that lacks the codec's package (a real worker process that cannot import it)."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

import stem_explorer as se
from stem_explorer.cli import main
from stem_explorer.errors import CodecError
from stem_explorer.io.ingest import JOURNAL, LocalStore, verify
from stem_explorer.io.ingest_task import CHUNK_TABLES
from stem_explorer.io.partitioned import codecs

pytestmark = pytest.mark.cluster

NAV, SIG = (12, 10), (16, 16)  # 120 frames of 512 bytes
FRAME = 512


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        yield client


@pytest.fixture
def h5(tmp_path, monkeypatch):
    """Counting data (about 0.3 electrons per pixel) in a chunked HDF5 file; chunks of
    4 frames (planned on the client, so the workers follow)."""
    monkeypatch.setattr(codecs, "CHUNK_BYTES", 4 * FRAME)
    data = np.random.default_rng(5).poisson(0.3, size=NAV + SIG).astype(">u2")
    path = tmp_path / "scan.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("frames", data=data, chunks=(1, 4) + SIG)
    return str(path), data


def test_ingest_with_a_codec(client, h5, tmp_path):
    dest = tmp_path / "parts"
    ds = se.ingest(h5[0], dest, client=client, partition_bytes=16 * FRAME, progress=False, codec="zstd3")
    names = [f"part-{i:05d}.zstd3" for i in range(8)]
    assert sorted(os.listdir(dest)) == [".ingest.lock", "dataset.json"] + names
    doc = json.loads((dest / "dataset.json").read_text())
    assert doc["version"] == 2 and doc["codec"]["chunk_frames"] == 4
    assert doc["metadata"]["ingest"]["codec"]["name"] == "zstd3"
    assert [len(p["chunk_bytes"]) for p in doc["partitions"]] == [4] * 7 + [2]
    stored = sum(p["bytes"] for p in doc["partitions"])
    assert stored * 3 < ds.nbytes and verify(dest) == {"files": 8, "bytes": stored}  # bytes as stored
    assert np.array_equal(ds.read_frames(0, ds.n_frames), h5[1].reshape(-1, *SIG))


def test_compressed_ingestion_resumes_from_its_journal(client, h5, tmp_path):
    dest = tmp_path / "parts"
    seen = []

    def interrupt(record):
        seen.append(record["file"])
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        se.ingest(h5[0], dest, client=client, partition_bytes=16 * FRAME, progress=False, codec="bslz4",
                  on_file=interrupt)
    recorded = [e.split("~")[0] for e in os.listdir(dest / JOURNAL) if e.startswith("part-")]
    assert len(recorded) >= 2 and len(os.listdir(dest / CHUNK_TABLES)) == len(recorded)
    store = LocalStore(dest)
    ids = {name: store.file_id(name) for name in recorded}
    ds = se.ingest(h5[0], dest, client=client, partition_bytes=16 * FRAME, progress=False, codec="bslz4")
    run = ds.metadata["ingested"]
    assert run["skipped"] >= 2 and run["written"] + run["skipped"] == 8
    assert {name: store.file_id(name) for name in recorded} == ids  # published from the journal, not rewritten
    assert not (dest / JOURNAL).exists()
    assert np.array_equal(ds.read_frames(0, ds.n_frames), h5[1].reshape(-1, *SIG))
    # another codec is another layout: it needs overwrite, which replaces every file
    with pytest.raises(se.errors.DataSetError, match="another source or layout"):
        se.ingest(h5[0], dest, client=client, partition_bytes=16 * FRAME, progress=False, codec="zstd1")
    se.ingest(h5[0], dest, client=client, partition_bytes=16 * FRAME, progress=False, overwrite=True)
    assert sorted(os.listdir(dest)) == [".ingest.lock", "dataset.json"] + [f"part-{i:05d}.raw" for i in range(8)]


def run_all(ds, client):
    disk, ring = se.masks.Disk(7.5, 7.5, 4), se.masks.Ring(7.5, 7.5, 3, 7)
    with se.Session(ds, client=client, partition_bytes=32 * FRAME) as session:
        job = session.run(se.VirtualDetector({"bf": disk, "adf": ring}), se.SumFrame(), se.StdFrame(),
                          se.MaxFrame(), se.CenterOfMass(center=(7.5, 7.5), radius=5),
                          se.RadialProfile(center=(7.5, 7.5), edges=[0, 2, 4, 6, 8]), se.PickFrame([(5, 3), (11, 9)]))
        return job.result()


def test_analyses_on_compressed_data_equal_those_on_raw(client, h5, tmp_path):
    raw = se.ingest(h5[0], tmp_path / "raw", client=client, partition_bytes=16 * FRAME, progress=False)
    packed = se.ingest(h5[0], tmp_path / "lz4", client=client, partition_bytes=16 * FRAME, progress=False,
                       codec="bslz4")
    expected, got = run_all(raw, client), run_all(packed, client)
    assert sorted(got) == sorted(expected) and len(got) >= 8
    for key in expected:
        if key.startswith("std/"):  # partials merge in the order tasks finish: float64 rounding differs
            np.testing.assert_allclose(got[key].data, expected[key].data, rtol=1e-12, err_msg=key)
        else:
            assert np.array_equal(got[key].data, expected[key].data, equal_nan=True), key
    flat = h5[1].reshape(-1, *SIG).astype(np.float64)
    assert np.array_equal(got["sum/frame"].data, flat.sum(0))


def test_cli_ingest_with_a_codec(client, h5, tmp_path, capsys):
    dest = tmp_path / "parts"
    args = ["ingest", h5[0], str(dest), "--partition-bytes", "8K", "--codec", "bslz4", "-q",
            "--address", client.scheduler.address]
    assert main(args) == 0
    assert "8 partition files (8 written, 0 already complete)" in capsys.readouterr().out
    assert json.loads((dest / "dataset.json").read_text())["codec"]["name"] == "bslz4"
    with pytest.raises(SystemExit) as exit_:
        main(["ingest", h5[0], str(tmp_path / "x"), "--codec", "lz5"])
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


def test_a_worker_without_the_codec_package_names_codec_and_package(bare_worker, client, h5, tmp_path):
    with pytest.raises(ImportError):
        bare_worker.submit(__import__, "numcodecs", pure=False).result()
    packed = se.ingest(h5[0], tmp_path / "lz4", client=client, partition_bytes=16 * FRAME, progress=False,
                       codec="bslz4")
    message = (r"is compressed with codec bslz4 \(blosc lz4, level 5, bit-shuffle\), which needs the Python "
               r"package numcodecs on .*pip install 'stem_explorer\[compression\]'")
    with se.Session(packed, client=bare_worker) as session:
        with pytest.raises(CodecError, match=message):
            session.run(se.SumFrame()).result()
    with pytest.raises(CodecError, match=r"codec zstd1 .*package numcodecs on "):  # writing needs it too
        se.ingest(h5[0], tmp_path / "again", client=bare_worker, progress=False, codec="zstd1")
    assert not (tmp_path / "again" / "dataset.json").exists()
    raw = se.ingest(h5[0], tmp_path / "raw", client=bare_worker, progress=False)  # uncompressed: no codec needed
    with se.Session(raw, client=bare_worker) as session:
        assert np.array_equal(session.run(se.SumFrame()).result()["sum/frame"].data,
                              h5[1].reshape(-1, *SIG).astype(np.float64).sum(0))
