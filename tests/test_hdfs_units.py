"""HDFS pieces that need no cluster: URLs and Hadoop configuration, the block-file
layout, CRC checks of block files, and matching locations to dask workers."""

import struct
import zlib

import numpy as np
import pytest

from stem_explorer.engine.locality import WorkerIndex, address_host, is_local, same_host
from stem_explorer.engine.job import _placement
from stem_explorer.errors import DataSetError
from stem_explorer.io.base import Partition
from stem_explorer.io.hdfs import config
from stem_explorer.io.hdfs.blocks import block_path, first_bad_chunk
from stem_explorer.io.hdfs.reader import replica_order
from stem_explorer.io.hdfs.webhdfs import Block
from stem_explorer.io.raw import MappedFrameSource


def site(folder, props: dict):
    rows = "".join(f"<property><name>{k}</name><value>{v}</value></property>" for k, v in props.items())
    (folder / "hdfs-site.xml").write_text(f"<configuration>{rows}</configuration>")
    return folder


def test_parse_urls():
    u = config.parse_url("hdfs://nn.example.org:9000/scans/s1/")
    assert (u.scheme, u.host, u.port, u.path) == ("hdfs", "nn.example.org", 9000, "/scans/s1")
    assert u.child("dataset.json") == "hdfs://nn.example.org:9000/scans/s1/dataset.json"
    assert config.parse_url("hdfs://nn/x").port == 8020
    assert config.parse_url("webhdfs://nn/x").port == 9870
    with pytest.raises(DataSetError, match="not an HDFS URL"):
        config.parse_url("s3://bucket/x")
    assert config.is_hdfs_url("hdfs://nn/x") and not config.is_hdfs_url("/local/hdfs://x")


def test_webhdfs_address_from_hadoop_configuration(tmp_path, monkeypatch):
    conf = site(tmp_path, {"dfs.namenode.rpc-address": "127.0.0.1:9000", "dfs.namenode.http-address": "0.0.0.0:50070"})
    monkeypatch.setenv("HADOOP_CONF_DIR", str(conf))
    client = config.webhdfs_for(config.parse_url("hdfs://localhost:9000/x"))
    # 0.0.0.0 (listen everywhere) is replaced by the URL's host; the RPC address is kept
    assert client.namenode == "localhost:50070" and client.rpc_address == "localhost:9000"
    direct = config.webhdfs_for(config.parse_url("webhdfs://nn:14000/x"))
    assert direct.namenode == "nn:14000" and direct.rpc_address is None


def test_no_webhdfs_server_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("HADOOP_CONF_DIR", raising=False)
    monkeypatch.delenv("HADOOP_HOME", raising=False)
    with pytest.raises(DataSetError, match="cannot find the WebHDFS server.*HADOOP_CONF_DIR.*webhdfs="):
        config.webhdfs_for(config.parse_url("hdfs://127.0.0.1:1/x"))


def test_local_data_dirs(tmp_path, monkeypatch):
    d1, d2 = tmp_path / "d1", tmp_path / "d2"
    d1.mkdir()
    d2.mkdir()
    conf = tmp_path / "conf"
    conf.mkdir()
    site(conf, {"dfs.datanode.data.dir": f"[DISK]file://{d1}, {d2},/does/not/exist"})
    monkeypatch.setenv("HADOOP_CONF_DIR", str(conf))
    assert config.local_data_dirs() == (str(d1), str(d2))
    monkeypatch.delenv("HADOOP_CONF_DIR")
    monkeypatch.delenv("HADOOP_HOME", raising=False)
    assert config.local_data_dirs() == ()


def test_block_path_follows_the_block_id_layout():
    block = Block(0, 1, ("h",), block_id=1073741825 + 0x12345, pool_id="BP-1", generation=1001)
    bid = block.block_id
    assert block_path("/data", block) == (
        f"/data/current/BP-1/current/finalized/subdir{(bid >> 16) & 31}/subdir{(bid >> 8) & 31}/blk_{bid}"
    )


def write_meta(path, kind, crcs, per_chunk=512):
    path.write_bytes(struct.pack(">hbi", 1, kind, per_chunk) + np.asarray(crcs, ">u4").tobytes())
    return path


def test_block_crc32_matches_zlib_and_finds_the_bad_chunk(tmp_path):
    data = np.random.default_rng(1).integers(0, 256, 5 * 512 + 77, dtype=np.uint8)
    crcs = [zlib.crc32(data[i : i + 512].tobytes()) for i in range(0, len(data), 512)]
    meta = write_meta(tmp_path / "b.meta", 1, crcs)
    assert first_bad_chunk(data, str(meta)) is None
    data[3 * 512 + 5] ^= 0x40
    assert first_bad_chunk(data, str(meta)) == 3 * 512


def test_block_crc32c_known_value(tmp_path):
    data = np.frombuffer(b"123456789", np.uint8)
    meta = write_meta(tmp_path / "c.meta", 2, [0xE3069283])  # CRC-32C check value
    assert first_bad_chunk(data, str(meta)) is None
    assert first_bad_chunk(data, str(write_meta(tmp_path / "d.meta", 2, [0]))) == 0


def test_same_host_and_worker_matching():
    assert address_host("tcp://10.0.0.5:4000") == "10.0.0.5"
    assert same_host("localhost", "127.0.0.1")
    assert not same_host("127.0.0.2", "127.0.0.3")
    workers = ["tcp://127.0.0.2:1234", "tcp://127.0.0.3:1234", "tcp://127.0.0.4:99", "tcp://127.0.0.4:98"]
    index = WorkerIndex(workers)
    assert index.local_to(("127.0.0.3", "127.0.0.4")) == workers[1:]
    assert index.local_to(["localhost"]) == [] and index.local_to(None) == []
    assert WorkerIndex(["tcp://127.0.0.1:5"]).local_to(["localhost"]) == ["tcp://127.0.0.1:5"]  # resolved
    assert index.local_to(["tcp://127.0.0.2:1234"]) == workers[:1]
    assert is_local("tcp://127.0.0.2:1234", ["tcp://127.0.0.2:1234"])
    assert not is_local("tcp://127.0.0.2:1234", ["127.0.0.9"])


def test_placement_prefers_matching_workers_and_allows_others(tmp_path):
    path = tmp_path / "x.raw"
    path.write_bytes(bytes(16))
    source = MappedFrameSource(path, offset=0, n_frames=4, sig_shape=(2, 2), dtype="uint8")
    workers = WorkerIndex(["tcp://127.0.0.2:1", "tcp://127.0.0.3:1"])
    here = Partition(0, 0, 4, source, ("127.0.0.3",))
    assert _placement(here, workers) == {"workers": ["tcp://127.0.0.3:1"], "allow_other_workers": True}
    assert _placement(Partition(0, 0, 4, source, ("10.9.9.9",)), workers) == {}
    assert _placement(Partition(0, 0, 4, source), workers) == {}


def test_replica_order_puts_this_host_first():
    block = Block(0, 10, ("a", "b"), http=("10.0.0.1:9864", "10.0.0.2:9864"))
    assert replica_order(block, "10.0.0.2") == ["10.0.0.2:9864", "10.0.0.1:9864"]
    assert replica_order(block, None) == ["10.0.0.1:9864", "10.0.0.2:9864"]
