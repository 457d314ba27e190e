"""Ingestion to, reading from and data-local jobs on a real HDFS (Hadoop 2.7.3).

The ``hdfs`` fixture (tests/hdfs_fixtures.py) runs a NameNode, three DataNodes on
127.0.0.2-4 (replication 2, 1 MiB blocks) and one dask worker on each DataNode's
address, so "the worker on the host that holds the block" is checked for real.
"""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter

import cloudpickle
import h5py
import numpy as np
import pytest

import _reference as ref
import stem_explorer as se
from stem_explorer.errors import ChecksumError, DataSetError, DataSetNotFoundError, FormatError
from stem_explorer.io.hdfs import HdfsPartitionSource, HdfsStore
from stem_explorer.io.hdfs import blocks as hdfs_blocks
from stem_explorer.io.hdfs.reader import HdfsPartitionDataSet, HdfsPartitionReader, replica_order
from stem_explorer.io.ingest import JOURNAL, verify
from stem_explorer.io.partitioned import codecs
from stem_explorer.io.testing import make_frames

pytestmark = [pytest.mark.hdfs, pytest.mark.cluster, pytest.mark.slow]

# helpers below run on the workers, which cannot import test modules
cloudpickle.register_pickle_by_value(sys.modules[__name__])

NAV, SIG = (32, 32), (64, 64)  # 1024 frames of 8 KiB: 8 MiB, 8 files of 1 MiB
MiB = 2**20
DISK, RING = se.masks.Disk(31.5, 31.5, 12), se.masks.Ring(31.5, 31.5, 14, 30)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """An HDF5 file (chunked by 16 frames) and its data."""
    data = make_frames(NAV, SIG, "uint16", seed=3)
    path = tmp_path_factory.mktemp("hdfs-src") / "scan.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=data, chunks=(1, 16) + SIG)
    return str(path), data


@pytest.fixture(scope="module")
def ingested(hdfs, hdfs_client, source):
    url = hdfs.url("/tests/scan")
    se.ingest(source[0], url, client=hdfs_client, partition_bytes=MiB, progress=False)
    return url


def ingest_copy(hdfs, hdfs_client, source, name, **kw):
    url = hdfs.url(f"/tests/{name}")
    return url, se.ingest(source[0], url, client=hdfs_client, partition_bytes=MiB, progress=False, **kw)


def test_ingest_writes_whole_blocks_with_checksums(hdfs, ingested, source):
    store = HdfsStore(ingested)
    listing = store.client.list(store.url.path)
    names = sorted(listing)
    assert names == ["dataset.json"] + [f"part-{i:05d}.raw" for i in range(8)]  # no journal, no temporaries
    doc = store.read_json("dataset.json")
    flat = source[1].reshape(-1, *SIG)
    for p in doc["partitions"]:
        status = listing[p["file"]]
        assert status["length"] == p["bytes"] == MiB and status["blockSize"] == MiB and status["replication"] == 2
        assert p["sha256"] == hashlib.sha256(flat[p["start"] : p["stop"]].tobytes()).hexdigest()
        (block,) = store.client.block_locations(store.path(p["file"]))
        assert len(block.http) == 2 and set(block.hosts) <= set(hdfs.hosts)
    assert doc["metadata"]["ingest"]["block_bytes"] == MiB


def test_read_back_equals_source(ingested, source):
    ds = se.open_dataset(ingested)
    assert isinstance(ds, HdfsPartitionDataSet) and ds.shape == NAV + SIG and ds.dtype == np.uint16
    assert np.array_equal(ds.read_frames(0, ds.n_frames), source[1].reshape(-1, *SIG))
    assert np.array_equal(ds.read_frames(100, 300), source[1].reshape(-1, *SIG)[100:300])  # spans files


def test_virtual_images_equal_with_every_partition_local(ingested, source, hdfs_client):
    ds = se.open_dataset(ingested)
    with se.Session(ds, client=hdfs_client, partition_bytes=MiB) as session:
        job = session.run(se.VirtualDetector({"bf": DISK, "adf": RING}), se.SumFrame())
        results = job.result()
        stats = job.stats
    data = source[1]
    bf = ref.virtual_image(data, ref.disk(SIG, 31.5, 31.5, 12))
    adf = ref.virtual_image(data, ref.ring(SIG, 31.5, 31.5, 14, 30))
    assert np.allclose(results["vd/bf"].data, bf) and np.allclose(results["vd/adf"].data, adf)
    assert np.array_equal(results["sum/frame"].data, data.reshape(-1, *SIG).sum(0))
    assert stats.n_partitions == 8 and stats.locality_known == 8
    assert stats.locality_hit_rate == 1.0, stats


def test_workers_read_their_own_blocks_from_disk(ingested, hdfs, hdfs_client):
    source = se.open_dataset(ingested).source

    def local_files():
        return sorted(i for i in range(len(source.parts)) if source.file(i).local(0) is not None)

    found = hdfs_client.run(local_files)
    for address, files in found.items():
        host = address.split("://")[1].rsplit(":", 1)[0]
        holds = sorted(i for i, part in enumerate(source.parts) if host in part[3][0].hosts)
        assert files == holds and files, (address, files, holds)
    assert hdfs_client.run(lambda: bool(hdfs_blocks._CORRUPT)) == dict.fromkeys(found, False)


def test_remote_reads_go_to_a_datanode_holding_a_replica(ingested, source):
    ds = se.open_dataset(ingested)
    client = ds.source.client
    name, start, _stop, (block,) = ds.source.parts[3]
    path = f"{ds.source.directory}/{name}"
    want = source[1].reshape(-1, *SIG)[start : start + 8].reshape(-1).view(np.uint8)
    buf = np.empty(want.size, np.uint8)
    for order in (replica_order(block, None), ["127.0.0.9:1"] + list(block.http), []):
        buf[:] = 0
        served = client.read_into(path, 0, memoryview(buf), order)
        # the DataNode asked, or the one the NameNode redirected to, holds the block
        assert served in block.http and np.array_equal(buf, want)
    with pytest.raises(DataSetNotFoundError):
        client.read_into(path + ".missing", 0, memoryview(buf), block.http)


def test_open_errors_name_the_fix(hdfs, ingested):
    with pytest.raises(DataSetNotFoundError, match="not a raw partition data set, or its ingestion did not finish"):
        se.open_dataset(hdfs.url("/tests/nothing-here"))
    store = HdfsStore(hdfs.url("/tests/broken"))
    store.client.create(store.path("dataset.json"), 5, [b"{nope"], overwrite=True)
    with pytest.raises(DataSetError, match="not valid JSON"):
        se.open_dataset(str(store.url))
    deep = b"[" * 100_000 + b"]" * 100_000
    store.client.create(store.path("dataset.json"), len(deep), [deep], overwrite=True)
    with pytest.raises(FormatError, match="nested too deeply"):
        se.open_dataset(str(store.url))


class SlowHdfsSource(HdfsPartitionSource):
    """Reads as the real source, with a pause per tile, so a job lasts long enough to
    lose a node in the middle of it."""

    def open(self, payload=None):
        reader = HdfsPartitionReader(self)
        read = reader.read

        def slow_read(start, stop):
            time.sleep(0.03)
            return read(start, stop)

        reader.read = slow_read
        return reader


def test_job_completes_after_losing_a_datanode_and_its_worker(ingested, source, hdfs, hdfs_client):
    ds = se.open_dataset(ingested)
    s = ds.source
    slow = SlowHdfsSource(s.client, s.directory, s.parts, n_frames=s.n_frames, sig_shape=s.sig_shape, dtype=s.dtype)
    slow_ds = HdfsPartitionDataSet(slow, ds.nav_shape, format=ds.format, path=ds.path)
    lost = 2
    killed = []

    def kill_node(progress):
        if not killed:
            killed.append(progress.partitions_done)
            hdfs.kill_worker(lost)
            hdfs.kill_datanode(lost)

    try:
        with se.Session(slow_ds, client=hdfs_client, partition_bytes=MiB, tile_bytes=MiB // 8) as session:
            job = session.run(se.VirtualDetector({"bf": DISK}), on_progress=kill_node)
            results = job.result(timeout=120)
            stats = job.stats
    finally:
        hdfs.start_datanode(lost, wait=False)
        hdfs.start_worker(lost)
    assert killed and killed[0] < 8
    assert np.allclose(results["vd/bf"].data, ref.virtual_image(source[1], ref.disk(SIG, 31.5, 31.5, 12)))
    assert stats.n_partitions == 8


def test_corrupt_partition_is_named_by_its_checksum(hdfs, hdfs_client, source):
    url, _ds = ingest_copy(hdfs, hdfs_client, source, "corrupt")
    store = HdfsStore(url)
    garbage = np.full(MiB, 7, np.uint8)
    store.client.create(store.path("part-00001.raw"), MiB, [garbage], overwrite=True)
    se.open_dataset(url)  # sizes still match: the cheap check passes
    for check in (lambda: se.open_dataset(url, verify="full"), lambda: verify(url)):
        with pytest.raises(ChecksumError, match=r"part-00001\.raw: expected sha256.*re-run the ingestion"):
            check()
    # the fix the message names: delete the file, re-run; only that file is written
    store.remove("part-00001.raw")
    again = se.ingest(source[0], url, client=hdfs_client, partition_bytes=MiB, progress=False)
    assert again.metadata["ingested"]["written"] == 1 and again.metadata["ingested"]["skipped"] == 7
    assert verify(url) == {"files": 8, "bytes": 8 * MiB}


def test_corrupt_replica_on_disk_is_read_from_another(hdfs, hdfs_client, source):
    url, ds = ingest_copy(hdfs, hdfs_client, source, "replica")
    name, start, stop, (block,) = ds.source.parts[2]
    node = next(i for i, h in enumerate(hdfs.hosts) if h in block.hosts)
    path = hdfs_blocks.block_path(str(hdfs.data_dir(node)), block)
    with open(path, "r+b") as f:
        f.seek(1000)
        f.write(b"\xff" * 64)
    worker = next(a for a in hdfs_client.scheduler_info()["workers"] if hdfs.hosts[node] in a)
    frames = hdfs_client.submit(ds.read_frames, start, stop, workers=[worker], pure=False).result()
    assert np.array_equal(frames, source[1].reshape(-1, *SIG)[start:stop])
    corrupt = hdfs_client.run(lambda: sorted(k[0] for k in hdfs_blocks._CORRUPT), workers=[worker])[worker]
    assert path in corrupt


def wait_idle(client, timeout=30):
    """Until the scheduler has no task in flight (a cancelled task already running on a
    worker still finishes there, unseen)."""
    deadline = time.monotonic() + timeout
    while any(client.processing().values()):
        assert time.monotonic() < deadline, client.processing()
        time.sleep(0.1)


def test_interrupted_ingestion_resumes_without_rewriting(hdfs, hdfs_client, source):
    url = hdfs.url("/tests/resume")
    store = HdfsStore(url)

    def stop_after_three(record, seen=[]):
        seen.append(record)
        if len(seen) == 3:
            raise KeyboardInterrupt("stopped by the test")

    with pytest.raises(KeyboardInterrupt):
        se.ingest(source[0], url, client=hdfs_client, partition_bytes=MiB, progress=False, on_file=stop_after_three)
    wait_idle(hdfs_client)
    assert "dataset.json" not in store.names()
    journal = [e.split("~")[0] for e in store.names(JOURNAL) if e.startswith("part-")]
    assert len(journal) >= 3
    ids = {name: store.file_id(name) for name in journal}
    ds = se.ingest(source[0], url, client=hdfs_client, partition_bytes=MiB, progress=False)
    run = ds.metadata["ingested"]
    # a task already running when the first run stopped may have finished its file since
    assert run["skipped"] >= len(journal) and run["written"] == 8 - run["skipped"] > 0
    assert {name: store.file_id(name) for name in journal} == ids  # not rewritten
    assert verify(url)["files"] == 8
    assert not [n for n in store.names() if ".tmp" in n] and JOURNAL not in store.names()
    assert np.array_equal(ds.read_frames(0, ds.n_frames), source[1].reshape(-1, *SIG))


def test_cli_ingest_killed_mid_run_then_resumed(hdfs, hdfs_client, source, tmp_path):
    url = hdfs.url("/tests/cli")
    store = HdfsStore(url)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "stem_explorer", "ingest", source[0], url, "--address",
           hdfs.scheduler_address, "--partition-bytes", "256K", "-q"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while len([e for e in store.names(JOURNAL) if e.startswith("part-")]) < 2 and proc.poll() is None:
        assert time.monotonic() < deadline, "the ingestion wrote nothing"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    wait_idle(hdfs_client)
    names = store.names()
    # killed before publishing (the usual case) or just after: never a sidecar with partial files
    if "dataset.json" in names:
        assert verify(url)["files"] == 32
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    written, complete = map(int, re.search(r"\((\d+) written, (\d+) already complete\)", out.stdout).groups())
    assert written + complete == 32 and complete >= 2  # what the killed run finished stays
    assert verify(url) == {"files": 32, "bytes": 8 * MiB}


# -- a stock NameNode, one ingestion at a time, no retries of refusals, no self-ingestion --
def test_a_small_data_set_on_default_namenode_limits(hdfs, hdfs_client, tmp_path):
    """The test NameNode keeps Hadoop's default minimum block size (1 MiB); a 10 KiB
    data set (files far smaller than that) is written in blocks of the minimum."""
    url = hdfs.url("/tests/small")
    store = HdfsStore(url)
    with urllib.request.urlopen(f"http://{hdfs.namenode_http}/conf?format=json", timeout=10) as r:
        conf = {p["key"]: p["value"] for p in json.load(r)["properties"]}
    assert conf["dfs.namenode.fs-limits.min-block-size"] == "1048576"  # Hadoop's default
    data = make_frames((10,), (32, 16), "uint16", seed=4)  # 1 KiB frames
    np.save(tmp_path / "small.npy", data)
    cmd = [sys.executable, "-m", "stem_explorer", "ingest", str(tmp_path / "small.npy"), url, "--address",
           hdfs.scheduler_address, "--partition-bytes", "4K", "-q"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    listing = store.client.list(store.url.path)
    assert [listing[f"part-{i:05d}.raw"]["blockSize"] for i in range(3)] == [MiB] * 3
    assert listing["part-00002.raw"]["length"] == 2 * 1024
    assert np.array_equal(se.open_dataset(url, verify="full").read_frames(0, 10), data)


def ingest_attempts(client) -> Counter:
    """How often the scheduler started each ingestion task so far."""
    def count(dask_scheduler):
        starts = [str(t[0]) for t in dask_scheduler.transition_log if t[2] == "processing"]
        return Counter(k for k in starts if k.startswith("stem-explorer-ingest-"))

    return client.run_on_scheduler(count)


@pytest.mark.parametrize("partition_bytes", [MiB, 8 * MiB])  # 8 MiB: refused while it uploads
def test_an_hdfs_refusal_fails_the_ingestion_at_once(hdfs, hdfs_client, source, partition_bytes):
    url = hdfs.url(f"/tests/refused-{partition_bytes}")
    before = ingest_attempts(hdfs_client)
    with pytest.raises(DataSetError, match=r"CREATE .*Requested replication 1000 exceeds maximum 512$"):
        # above dfs.replication.max
        se.ingest(source[0], url, client=hdfs_client, partition_bytes=partition_bytes, replication=1000,
                  progress=False)
    wait_idle(hdfs_client)
    started = ingest_attempts(hdfs_client) - before
    assert started and set(started.values()) == {1}, started


def test_an_hdfs_data_set_is_not_ingested_into_itself(hdfs, hdfs_client, ingested):
    store = HdfsStore(ingested)
    webhdfs_url = f"webhdfs://{store.client.namenode}{store.url.path}"
    for dest in (ingested, ingested + "/sub", webhdfs_url):
        with pytest.raises(DataSetError, match="overlap.*choose a destination outside"):
            se.ingest(ingested, dest, client=hdfs_client, overwrite=True, progress=False)
    with pytest.raises(DataSetError, match=r"dataset\.json is a file; pass a folder"):
        se.ingest(ingested, ingested + "/dataset.json", client=hdfs_client, progress=False)
    assert verify(ingested)["files"] == 8


HOLD_LEASE = """
import sys, time
from stem_explorer.io.hdfs import HdfsStore
from stem_explorer.io.hdfs.lease import HdfsLease
with HdfsLease(HdfsStore(sys.argv[1])).hold("a" * 32):
    print("held", flush=True)
    time.sleep(600)
"""


def test_one_ingestion_per_hdfs_destination(hdfs, hdfs_client, source):
    url = hdfs.url("/tests/leased")
    store = HdfsStore(url)
    owner = subprocess.Popen([sys.executable, "-c", HOLD_LEASE, url], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout.readline().strip() == "held"
        cmd = [sys.executable, "-m", "stem_explorer", "ingest", source[0], url, "--address", hdfs.scheduler_address,
               "--partition-bytes", "1M", "--overwrite", "-q"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and f"pid {owner.pid}" in out.stderr, out.stderr
        assert "is being written by another ingestion" in out.stderr and "Traceback" not in out.stderr
    finally:
        owner.kill()  # SIGKILL: no release; the lease names a dead process of this host
        owner.wait()
    assert store.lock_owner()["pid"] == owner.pid
    ingest_copy(hdfs, hdfs_client, source, "leased")
    assert verify(url)["files"] == 8 and ".ingest.lock" not in store.names()


def test_an_hdfs_lease_of_another_host_expires(hdfs, hdfs_client, source):
    from stem_explorer.io.hdfs.lease import EXPIRY_S

    url = hdfs.url("/tests/elsewhere")
    store = HdfsStore(url)
    record = {"token": "b" * 32, "host": "another-host", "pid": 4242, "since": "earlier"}
    data = json.dumps(record).encode()
    store.client.create(store.path(".ingest.lock"), len(data), [data])
    with pytest.raises(DataSetError, match="being written by another ingestion .*another-host, pid 4242"):
        ingest_copy(hdfs, hdfs_client, source, "elsewhere")  # refreshed just now
    store.client.touch(store.path(".ingest.lock"), time.time() - EXPIRY_S - 10)
    ingest_copy(hdfs, hdfs_client, source, "elsewhere")  # not refreshed for too long: stale
    assert verify(url)["files"] == 8 and not [n for n in store.names() if n.startswith(".ingest.lock")]


@pytest.fixture(scope="module")
def counting_source(tmp_path_factory):
    """Counting data (about 0.3 electrons per pixel) that compresses, in an HDF5 file."""
    data = np.random.default_rng(8).poisson(0.3, size=NAV + SIG).astype("uint16")
    path = tmp_path_factory.mktemp("hdfs-counting") / "scan.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=data, chunks=(1, 16) + SIG)
    return str(path), data


def test_a_compressed_data_set_on_hdfs(hdfs, hdfs_client, counting_source, monkeypatch):
    monkeypatch.setattr(codecs, "CHUNK_BYTES", 32 * SIG[0] * SIG[1] * 2)  # 4 chunks of 32 frames per file
    raw_url, raw = ingest_copy(hdfs, hdfs_client, counting_source, "counting-raw")
    url, packed = ingest_copy(hdfs, hdfs_client, counting_source, "counting-bslz4", codec="bslz4")
    store = HdfsStore(url)
    listing = store.client.list(store.url.path)
    assert sorted(listing) == ["dataset.json"] + [f"part-{i:05d}.bslz4" for i in range(8)]
    doc = store.read_json("dataset.json")
    assert doc["version"] == 2 and doc["codec"]["name"] == "bslz4"
    assert all(listing[p["file"]]["length"] == p["bytes"] < MiB // 4 for p in doc["partitions"])
    assert verify(url) == {"files": 8, "bytes": sum(p["bytes"] for p in doc["partitions"])}
    ds = se.open_dataset(url)
    assert isinstance(ds, HdfsPartitionDataSet) and ds.metadata["read_path"].startswith("hdfs, decode bslz4")
    flat = counting_source[1].reshape(-1, *SIG)
    assert np.array_equal(ds.read_frames(0, ds.n_frames), flat)
    assert np.array_equal(ds.read_frames(100, 300), flat[100:300])  # spans files, cuts chunks

    def run(dataset):
        with se.Session(dataset, client=hdfs_client, partition_bytes=MiB) as session:
            job = session.run(se.VirtualDetector({"bf": DISK, "adf": RING}), se.SumFrame(), se.StdFrame())
            return job.result(), job.stats

    (expected, _), (got, stats) = run(raw), run(ds)
    for key in expected:  # std: partials merge in the order tasks finish, float64 rounding differs
        np.testing.assert_allclose(got[key].data, expected[key].data, rtol=1e-12 if key.startswith("std/") else 0)
    assert stats.n_partitions == 8 and stats.locality_hit_rate == 1.0, stats

    # a damaged chunk: the error names the HDFS file and the chunk's frames
    part = doc["partitions"][3]
    data = bytearray(store.client.read_all(store.path(part["file"])))
    data[part["chunk_bytes"][0] + 100] ^= 0x10
    store.client.create(store.path(part["file"]), len(data), [bytes(data)], overwrite=True)
    damaged = se.open_dataset(url)
    chunk_frames = doc["codec"]["chunk_frames"]
    assert chunk_frames == 32
    first = part["start"] + chunk_frames
    message = (rf"partition file {store.url.path}/{part['file']} \(HDFS, NameNode [^)]+\) is damaged: its compressed "
               rf"chunk 1 \(frames {first}:{first + chunk_frames},.*CRC-32C")
    with pytest.raises(FormatError, match=message):
        damaged.read_frames(0, damaged.n_frames)
    with se.Session(damaged, client=hdfs_client, partition_bytes=MiB) as session:
        with pytest.raises(FormatError, match=message):
            session.run(se.SumFrame()).result()
    assert np.array_equal(damaged.read_frames(0, first), flat[:first])
