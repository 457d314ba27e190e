"""Where the NameNode is and where this node's blocks live: ``hdfs://`` URLs and the
Hadoop configuration (``core-site.xml`` / ``hdfs-site.xml`` in ``$HADOOP_CONF_DIR``).

``hdfs://host:port/path`` names the NameNode's RPC address, but reads and writes go
through WebHDFS on its HTTP port, found (in order) from an explicit ``webhdfs=``
option, from the configuration (the ``dfs.namenode.http-address`` beside a matching
``dfs.namenode.rpc-address``), or by trying the default ports (9870 for Hadoop 3,
50070 for Hadoop 2). ``webhdfs://host:http_port/path`` names the HTTP server directly.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

from ...errors import DataSetError
from .webhdfs import WebHDFS

DEFAULT_RPC_PORT = 8020
DEFAULT_HTTP_PORTS = (9870, 50070)
SCHEMES = ("hdfs", "webhdfs")


@dataclass(frozen=True)
class HdfsURL:
    """A parsed ``hdfs://`` or ``webhdfs://`` URL; ``path`` is absolute, without a
    trailing slash."""

    scheme: str
    host: str
    port: int
    path: str

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"

    def child(self, name: str) -> str:
        """The URL of ``name`` inside this directory."""
        return f"{self.scheme}://{self.authority}{self.path.rstrip('/')}/{name}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.authority}{self.path}"


def is_hdfs_url(text) -> bool:
    return isinstance(text, str) and text.split("://", 1)[0].lower() in SCHEMES and "://" in text


def parse_url(url: str) -> HdfsURL:
    """Split ``hdfs://host[:port]/path``; a clear error for anything else."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES or not parts.hostname:
        raise DataSetError(
            f"{url!r} is not an HDFS URL; write hdfs://NAMENODE:RPC_PORT/path (or "
            f"webhdfs://NAMENODE:HTTP_PORT/path)"
        )
    port = parts.port or (DEFAULT_RPC_PORT if scheme == "hdfs" else DEFAULT_HTTP_PORTS[0])
    path = "/" + urllib.parse.unquote(parts.path).strip("/")
    return HdfsURL(scheme, parts.hostname, port, path)


def hadoop_conf_dir() -> Optional[str]:
    """``$HADOOP_CONF_DIR``, else ``$HADOOP_HOME/etc/hadoop``, else None."""
    conf = os.environ.get("HADOOP_CONF_DIR")
    if not conf and os.environ.get("HADOOP_HOME"):
        conf = os.path.join(os.environ["HADOOP_HOME"], "etc", "hadoop")
    return conf if conf and os.path.isdir(conf) else None


def site_properties(conf_dir: Optional[str] = None) -> dict:
    """Properties of ``core-site.xml`` then ``hdfs-site.xml`` (which wins) in
    ``conf_dir`` (default: :func:`hadoop_conf_dir`); empty without configuration."""
    conf_dir = conf_dir or hadoop_conf_dir()
    if not conf_dir:
        return {}
    props = {}
    for name in ("core-site.xml", "hdfs-site.xml"):
        path = os.path.join(conf_dir, name)
        try:
            mtime = os.stat(path).st_mtime_ns
        except FileNotFoundError:
            continue
        props.update(_parse_site(path, mtime))
    return props


@lru_cache(maxsize=16)
def _parse_site(path: str, _mtime: int) -> dict:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise DataSetError(f"cannot parse Hadoop configuration {path}: {exc}") from None
    return {
        p.findtext("name", "").strip(): p.findtext("value", "").strip()
        for p in root.iter("property")
    }


def _same_endpoint(a: str, b: str) -> bool:
    """``host:port`` strings naming the same endpoint (host names resolved)."""
    try:
        (ha, pa), (hb, pb) = a.rsplit(":", 1), b.rsplit(":", 1)
        return pa == pb and (ha.lower() == hb.lower() or socket.gethostbyname(ha) == socket.gethostbyname(hb))
    except (ValueError, OSError):
        return False


def webhdfs_for(url: HdfsURL, webhdfs: Optional[str] = None, user: Optional[str] = None) -> WebHDFS:
    """A :class:`WebHDFS` client for the NameNode of ``url``."""
    if url.scheme == "webhdfs":
        return WebHDFS(url.authority, user=user)
    if webhdfs:
        return WebHDFS(webhdfs, rpc_address=url.authority, user=user)
    props = site_properties()
    rpc = props.get("dfs.namenode.rpc-address") or urllib.parse.urlsplit(props.get("fs.defaultFS", "")).netloc
    http_address = props.get("dfs.namenode.http-address")
    if rpc and http_address and _same_endpoint(rpc, url.authority):
        http_host, http_port = http_address.rsplit(":", 1)
        if http_host in ("0.0.0.0", ""):
            http_host = url.host
        return WebHDFS(f"{http_host}:{http_port}", rpc_address=url.authority, user=user)
    tried = []
    for port in DEFAULT_HTTP_PORTS:
        client = WebHDFS(f"{url.host}:{port}", rpc_address=url.authority, user=user, timeout=3.0)
        why = client.ping()
        if why is None:
            return WebHDFS(client.namenode, rpc_address=url.authority, user=user)
        tried.append(f"{client.namenode}: {why}")
    raise DataSetError(
        f"cannot find the WebHDFS server of the NameNode {url.authority}: no Hadoop "
        f"configuration names it (set HADOOP_CONF_DIR to a folder whose hdfs-site.xml has "
        f"dfs.namenode.http-address) and the default ports did not answer ({'; '.join(tried)}); "
        f"pass webhdfs='HOST:HTTP_PORT' or use a webhdfs://HOST:HTTP_PORT/... URL"
    )


def local_data_dirs() -> tuple[str, ...]:
    """This node's DataNode block folders (``dfs.datanode.data.dir``), or ``()``.

    Entries may carry a storage type (``[DISK]``) and a ``file://`` scheme; only
    existing folders are returned.
    """
    value = site_properties().get("dfs.datanode.data.dir", "")
    dirs = []
    for entry in value.split(","):
        entry = entry.strip()
        if entry.startswith("["):
            entry = entry.split("]", 1)[-1]
        if entry.startswith("file:"):
            entry = urllib.parse.urlsplit(entry).path
        if entry and os.path.isdir(entry):
            dirs.append(entry)
    return tuple(dirs)
