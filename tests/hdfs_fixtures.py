"""Fixtures of the HDFS tests: a real HDFS with dask workers beside its DataNodes.

``hdfs`` starts once per test session (``scripts/hdfs/minicluster.py``): a NameNode,
three DataNodes on 127.0.0.2-4 (replication 2, 1 MiB blocks) and a dask scheduler
with one single-threaded worker per DataNode address. The first run downloads
Hadoop's jars (about 220 MB once, cached in ``~/.cache/stem_explorer``). Tests skip,
saying why, only when Java (or a Debian package the harness names) is missing.
"""

import importlib.util
import os
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parents[1] / "scripts" / "hdfs" / "minicluster.py"


def _harness():
    spec = importlib.util.spec_from_file_location("stem_explorer_minicluster", HARNESS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def hdfs(tmp_path_factory):
    """The running :class:`MiniCluster`; ``HADOOP_CONF_DIR`` points at its client
    configuration for the session, so ``hdfs://`` URLs find its WebHDFS server."""
    harness = _harness()
    try:
        harness.prepare_hadoop()
    except harness.HarnessUnavailable as exc:
        pytest.skip(f"no HDFS test cluster: {exc}")
    cluster = harness.MiniCluster(tmp_path_factory.mktemp("hdfs"), nodes=3, replication=2, block_size=2**20,
                                  python_path=[Path(__file__).parent])
    cluster.start()
    saved = os.environ.get("HADOOP_CONF_DIR")
    os.environ["HADOOP_CONF_DIR"] = str(cluster.client_conf)
    try:
        yield cluster
    finally:
        if saved is None:
            os.environ.pop("HADOOP_CONF_DIR", None)
        else:
            os.environ["HADOOP_CONF_DIR"] = saved
        cluster.stop()


@pytest.fixture(scope="session")
def hdfs_client(hdfs):
    """A dask Client of the workers paired with the DataNodes (not the default
    scheduler: it lives for the whole session, and other tests compute with theirs)."""
    from distributed import Client

    with Client(hdfs.scheduler_address, timeout=30, set_as_default=False) as client:
        yield client
