"""A small WebHDFS client on the standard library (``http.client``).

It does what ingestion and reading need and no more: file status and listings,
rename/delete/mkdirs, streaming uploads of known length, ranged reads straight into a
caller's buffer (``readinto``, no intermediate ``bytes``), block locations, and the
NameNode's list of live DataNodes. It speaks to Hadoop 2.x and 3.x NameNodes (block
locations: ``GET_BLOCK_LOCATIONS``, falling back to Hadoop 3's public
``GETFILEBLOCKLOCATIONS``).

Reads can go straight to a chosen DataNode's WebHDFS server (with the NameNode's RPC
address as ``namenoderpcaddress``, which is what a NameNode redirect says too), so a
worker reads from the DataNode on its own host instead of whichever one the NameNode
picks, and moves on to the next replica when a DataNode is down.

A :class:`WebHDFS` object holds only addresses, so it pickles into tasks; connections
are kept per process and thread.
"""

from __future__ import annotations

import getpass
import http.client
import json
import os
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from ...errors import DataSetError, DataSetNotFoundError

#: Errors that mean "this server is not reachable / went away": try another one.
CONNECTION_ERRORS = (ConnectionError, TimeoutError, http.client.HTTPException, OSError)

_LOCAL = threading.local()


@dataclass(frozen=True)
class Block:
    """One HDFS block of a file: byte range, identity, and the replicas' DataNodes.

    ``hosts`` holds each replica's host name and IP (deduplicated, replica order);
    ``http`` the replicas' WebHDFS servers ``ip:port``. ``block_id`` is None when
    the NameNode only offers public block locations (Hadoop 3 without the private op).
    """

    offset: int
    length: int
    hosts: tuple[str, ...]
    http: tuple[str, ...] = ()
    block_id: Optional[int] = None
    pool_id: Optional[str] = None
    generation: Optional[int] = None


def _connection(address: str, timeout: float) -> http.client.HTTPConnection:
    pool = getattr(_LOCAL, "pool", None)
    if pool is None:
        pool = _LOCAL.pool = {}
    conn = pool.get(address)
    if conn is None:
        host, port = address.rsplit(":", 1)
        conn = pool[address] = http.client.HTTPConnection(host, int(port), timeout=timeout)
    return conn


def _drop_connection(address: str) -> None:
    conn = getattr(_LOCAL, "pool", {}).pop(address, None)
    if conn is not None:
        conn.close()


class AlreadyExistsError(DataSetError, FileExistsError):
    """HDFS refused to create a file that exists (``overwrite=False``)."""


def _remote_error(status: int, body: bytes, what: str) -> DataSetError:
    """The RemoteException of a WebHDFS error response as our exception type."""
    try:
        remote = json.loads(body)["RemoteException"]
        kind, message = remote.get("exception", "?"), remote.get("message", "")
        # some servers append the Java stack trace: the user needs the first lines only
        message = " ".join(message.split("\n\tat ")[0].split())
    except (ValueError, KeyError, TypeError):
        kind, message = f"HTTP {status}", body[:300].decode("utf-8", "replace")
    if kind == "FileNotFoundException" or status == 404:
        return DataSetNotFoundError(f"{what}: not found on HDFS ({message}); check the path")
    if kind == "FileAlreadyExistsException":
        return AlreadyExistsError(f"{what}: the file exists on HDFS ({message})")
    return DataSetError(f"{what} failed on HDFS: {kind}: {message}")


class WebHDFS:
    """Client of one NameNode's WebHDFS server at ``namenode`` (``host:http_port``).

    ``rpc_address`` (``host:port``) is the NameNode's RPC address, needed to read or
    write through a DataNode of our choosing; when None it is learnt from the first
    NameNode redirect. ``user`` defaults to ``$HADOOP_USER_NAME``, else the login name.
    """

    def __init__(self, namenode: str, *, rpc_address: Optional[str] = None,
                 user: Optional[str] = None, timeout: float = 60.0):
        self.namenode = namenode
        self.rpc_address = rpc_address
        self.user = user or os.environ.get("HADOOP_USER_NAME") or getpass.getuser()
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"WebHDFS({self.namenode!r}, rpc_address={self.rpc_address!r}, user={self.user!r})"

    # -- plumbing -------------------------------------------------------------------------
    def _target(self, path: str, op: str, **params) -> str:
        query = {"op": op, "user.name": self.user}
        query.update({k: v for k, v in params.items() if v is not None})
        quoted = urllib.parse.quote("/" + path.lstrip("/"))
        return f"/webhdfs/v1{quoted}?{urllib.parse.urlencode(query)}"

    def _send(self, address: str, method: str, target: str):
        """One body-less request on a kept-alive connection (reconnecting once if the
        server closed the kept one). Returns the response, body unread."""
        for attempt in (0, 1):
            conn = _connection(address, self.timeout)
            try:
                conn.request(method, target)
                return conn.getresponse()
            except CONNECTION_ERRORS:
                _drop_connection(address)
                if attempt:
                    raise

    def _call(self, method: str, path: str, op: str, **params) -> dict:
        """A metadata operation on the NameNode; the parsed JSON answer."""
        what = f"WebHDFS {op} {path}"
        try:
            resp = self._send(self.namenode, method, self._target(path, op, **params))
            body = resp.read()
        except CONNECTION_ERRORS as exc:
            raise DataSetError(
                f"{what}: no WebHDFS server answered at {self.namenode} ({exc}); check the "
                f"NameNode's HTTP address (dfs.namenode.http-address) and that it is running"
            ) from None
        if resp.status != 200:
            raise _remote_error(resp.status, body, what)
        return json.loads(body) if body else {}

    def ping(self) -> Optional[str]:
        """None when a WebHDFS server answers at :attr:`namenode`, else why not."""
        try:
            resp = self._send(self.namenode, "GET", self._target("/", "GETFILESTATUS"))
            resp.read()
        except CONNECTION_ERRORS as exc:
            return str(exc)
        return None if resp.status == 200 else f"HTTP {resp.status}"

    # -- metadata -------------------------------------------------------------------------
    def status(self, path: str) -> dict:
        """``FileStatus`` of ``path`` (length, type, blockSize, modificationTime...)."""
        return self._call("GET", path, "GETFILESTATUS")["FileStatus"]

    def list(self, path: str) -> dict:
        """``{name: FileStatus}`` of a directory's entries."""
        entries = self._call("GET", path, "LISTSTATUS")["FileStatuses"]["FileStatus"]
        return {e["pathSuffix"]: e for e in entries}

    def mkdirs(self, path: str) -> None:
        self._call("PUT", path, "MKDIRS")

    def rename(self, src: str, dst: str, overwrite: bool = False) -> None:
        """Rename ``src`` to ``dst``, atomically on the NameNode; with ``overwrite`` an
        existing file ``dst`` is replaced in the same step."""
        if overwrite:
            self._call("PUT", src, "RENAME", destination=dst, renameoptions="OVERWRITE")
        elif not self._call("PUT", src, "RENAME", destination=dst).get("boolean"):
            raise DataSetError(f"HDFS could not rename {src} to {dst} (does {dst} exist already?)")

    def touch(self, path: str, mtime: float) -> None:
        """Set the modification time of ``path`` to ``mtime`` (seconds since the epoch)."""
        self._call("PUT", path, "SETTIMES", modificationtime=int(mtime * 1000), accesstime=-1)

    def delete(self, path: str, recursive: bool = False) -> bool:
        return bool(self._call("DELETE", path, "DELETE", recursive=str(recursive).lower()).get("boolean"))

    def configuration(self, name: str) -> Optional[str]:
        """The NameNode's value of configuration property ``name`` (its ``/conf``
        servlet), or None when the servlet does not answer (e.g. restricted to admins)."""
        try:
            resp = self._send(self.namenode, "GET", "/conf?format=json")
            body = resp.read()
            properties = json.loads(body)["properties"] if resp.status == 200 else []
        except (*CONNECTION_ERRORS, ValueError, KeyError, TypeError):
            return None
        return next((p.get("value") for p in properties if p.get("key") == name), None)

    # -- DataNodes and locations -------------------------------------------------------------
    def datanodes(self) -> list[dict]:
        """Live DataNodes from the NameNode's JMX: ``{"host", "http"}`` each (host name,
        WebHDFS server ``ip:port``)."""
        what = "the NameNode's list of live DataNodes (/jmx NameNodeInfo)"
        try:
            resp = self._send(self.namenode, "GET", "/jmx?qry=Hadoop:service=NameNode,name=NameNodeInfo")
            body = resp.read()
            beans = json.loads(body)["beans"] if resp.status == 200 else []
            live = json.loads(beans[0]["LiveNodes"]) if beans else {}
        except (*CONNECTION_ERRORS, ValueError, KeyError) as exc:
            raise DataSetError(f"cannot read {what} at {self.namenode}: {exc}") from None
        return [
            {"host": name.rsplit(":", 1)[0], "http": info["infoAddr"]}
            for name, info in live.items()
        ]

    def block_locations(self, path: str) -> list[Block]:
        """The blocks of file ``path`` with their replicas, in file order."""
        try:
            doc = self._call("GET", path, "GET_BLOCK_LOCATIONS")["LocatedBlocks"]
        except DataSetNotFoundError:
            raise
        except DataSetError as exc:
            if "GET_BLOCK_LOCATIONS" not in str(exc) and "IllegalArgument" not in str(exc):
                raise
            return self._public_block_locations(path)
        blocks = []
        for lb in doc.get("locatedBlocks", []):
            b = lb["block"]
            replicas = lb.get("locations", [])
            hosts = dict.fromkeys(h for r in replicas for h in (r.get("hostName"), r.get("ipAddr")) if h)
            blocks.append(Block(
                offset=int(lb["startOffset"]), length=int(b["numBytes"]), hosts=tuple(hosts),
                http=tuple(f"{r.get('ipAddr') or r['hostName']}:{r['infoPort']}" for r in replicas),
                block_id=int(b["blockId"]), pool_id=b["blockPoolId"], generation=int(b["generationStamp"]),
            ))
        return blocks

    def _public_block_locations(self, path: str) -> list[Block]:
        """Hadoop 3's ``GETFILEBLOCKLOCATIONS``: hosts only, no block identity."""
        doc = self._call("GET", path, "GETFILEBLOCKLOCATIONS")["BlockLocations"]["BlockLocation"]
        return [
            Block(offset=int(b["offset"]), length=int(b["length"]),
                  hosts=tuple(dict.fromkeys([*b.get("hosts", []), *(n.rsplit(":", 1)[0] for n in b.get("names", []))])))
            for b in doc
        ]

    def learn_rpc_address(self, path: str = "/") -> str:
        """The NameNode's RPC address, from the query of one of its redirects."""
        if self.rpc_address:
            return self.rpc_address
        resp = self._send(self.namenode, "GET", self._target(path, "OPEN", length=0))
        resp.read()
        location = resp.getheader("Location") or ""
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
        if "namenoderpcaddress" not in query:
            raise DataSetError(
                f"the NameNode at {self.namenode} did not redirect a read of {path} to a "
                f"DataNode (HTTP {resp.status}); are DataNodes running?"
            )
        self.rpc_address = query["namenoderpcaddress"][0]
        return self.rpc_address

    # -- data -------------------------------------------------------------------------------
    def _redirect(self, method: str, path: str, op: str, excluded: Sequence[str], **params) -> tuple[str, str]:
        """Ask the NameNode which DataNode serves ``op``, avoiding the hosts in
        ``excluded``; returns that DataNode's ``(address, target)``."""
        exclude = ",".join(dict.fromkeys(excluded)) or None
        resp = self._send(self.namenode, method, self._target(path, op, excludedatanodes=exclude, **params))
        body = resp.read()
        if resp.status != 307:
            raise _remote_error(resp.status, body, f"WebHDFS {op} {path}")
        parts = urllib.parse.urlsplit(resp.getheader("Location"))
        return parts.netloc, f"{parts.path}?{parts.query}"

    def open_read(self, path: str, offset: int, length: int, datanodes: Sequence[str] = ()) -> "ReadStream":
        """Start reading ``length`` bytes of ``path`` at ``offset``.

        ``datanodes`` (``host:http_port``) are asked in order, directly; then
        DataNodes the NameNode picks, excluding those that failed.
        """
        failures, excluded = [], []
        rpc = self.learn_rpc_address(path)
        for attempt in range(len(datanodes) + 2):
            address = datanodes[attempt] if attempt < len(datanodes) else "the NameNode's choice"
            conn = None
            try:
                if attempt < len(datanodes):
                    target = self._target(path, "OPEN", namenoderpcaddress=rpc, offset=offset, length=length)
                else:
                    address, target = self._redirect("GET", path, "OPEN", excluded, offset=offset, length=length)
                host, port = address.rsplit(":", 1)
                conn = http.client.HTTPConnection(host, int(port), timeout=self.timeout)
                conn.request("GET", target)
                resp = conn.getresponse()
                if resp.status != 200:
                    raise _remote_error(resp.status, resp.read(), f"WebHDFS OPEN {path}")
                return ReadStream(conn, resp, address, offset, offset + length)
            except DataSetNotFoundError:
                raise
            except (DataSetError, *CONNECTION_ERRORS) as exc:  # down, or failed: the next replica
                if conn is not None:
                    conn.close()
                    excluded.append(address.rsplit(":", 1)[0])
                failures.append(f"{address}: {exc}")
        raise DataSetError(
            f"could not read {length} bytes at offset {offset} of HDFS file {path}: every "
            f"replica failed ({'; '.join(failures)}); check that its DataNodes are running"
        )

    def read_into(self, path: str, offset: int, out: memoryview, datanodes: Sequence[str] = ()) -> str:
        """Fill ``out`` with the bytes of ``path`` from ``offset`` (see :meth:`open_read`);
        a DataNode that fails mid-read is left out of one more try. Returns the address
        that served the bytes."""
        stream = self.open_read(path, offset, len(out), datanodes)
        try:
            stream.readinto(out)
        except CONNECTION_ERRORS:
            others = [a for a in datanodes if a != stream.address]
            stream = self.open_read(path, offset, len(out), others)
            stream.readinto(out)
        finally:
            stream.close()
        return stream.address

    def read_all(self, path: str) -> bytes:
        """A whole (small) file, e.g. a sidecar, through the NameNode's redirect."""
        size = int(self.status(path)["length"])
        buf = bytearray(size)
        if size:
            self.read_into(path, 0, memoryview(buf))
        return bytes(buf)

    def create(self, path: str, length: int, chunks: Iterable, *, overwrite: bool = False,
               blocksize: Optional[int] = None, replication: Optional[int] = None,
               datanode: Optional[str] = None) -> None:
        """Write a file of ``length`` bytes from ``chunks`` (buffers), streamed.

        With ``datanode`` (``host:http_port``) the upload goes to that DataNode, which
        then holds the first replica of every block; otherwise (or when it does not
        answer) to one the NameNode picks. A DataNode that refuses the connection is
        excluded and another one asked, as long as no byte was sent.
        """
        params = dict(overwrite=str(overwrite).lower(), blocksize=blocksize, replication=replication)
        chunks = iter(chunks)
        chosen = [datanode] if datanode else []
        last = len(chosen) + 2
        excluded: list[str] = []
        for attempt in range(last + 1):
            if attempt < len(chosen):
                address = chosen[attempt]
                target = self._target(path, "CREATE", namenoderpcaddress=self.learn_rpc_address(), **params)
            else:
                address, target = self._redirect("PUT", path, "CREATE", excluded, **params)
            _drop_connection(address)  # a fresh connection: a stale kept one would look like a dead node
            conn = _connection(address, self.timeout)
            sent = None
            try:
                conn.putrequest("PUT", target)
                conn.putheader("Content-Length", str(length))
                conn.putheader("Content-Type", "application/octet-stream")
                conn.endheaders()
                sent = 0
                for chunk in chunks:
                    conn.send(chunk)
                    sent += memoryview(chunk).nbytes
                resp = conn.getresponse()
                body = resp.read()
            except CONNECTION_ERRORS:
                refusal = _early_answer(conn) if sent is not None else None
                _drop_connection(address)
                if refusal is not None and refusal[0] != 201:
                    raise _remote_error(*refusal, f"WebHDFS CREATE {path} (DataNode {address})") from None
                if sent is not None or attempt == last:  # bytes are gone: the caller retries
                    raise
                excluded.append(address.rsplit(":", 1)[0])
                continue
            if sent != length:
                raise DataSetError(f"upload of {path}: {sent} bytes sent, {length} announced")
            if resp.status != 201:
                raise _remote_error(resp.status, body, f"WebHDFS CREATE {path} (DataNode {address})")
            return


def _early_answer(conn: http.client.HTTPConnection) -> Optional[tuple[int, bytes]]:
    """The status and body a DataNode sent before it closed an upload it refused (it
    answers as soon as HDFS refuses the file, without reading the body, so the refusal
    reaches us as a broken pipe); None when nothing arrived."""
    try:
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (*CONNECTION_ERRORS, http.client.HTTPException):
        return None


class ReadStream:
    """An open ranged read: the bytes of one file from :attr:`position` to
    :attr:`end`, served by the DataNode at :attr:`address` on its own connection.

    Reading a block tile by tile through one stream costs one request per block
    instead of one per tile.
    """

    def __init__(self, conn: http.client.HTTPConnection, response, address: str, position: int, end: int):
        self._conn = conn
        self._response = response
        self.address = address
        self.position = position
        self.end = end

    def readinto(self, out: memoryview) -> None:
        """Fill ``out`` with the next ``len(out)`` bytes."""
        pos, n = 0, len(out)
        if self.position + n > self.end:
            raise ValueError(f"reading {n} bytes at {self.position} passes the stream's end {self.end}")
        while pos < n:
            got = self._response.readinto(out[pos:])
            if not got:
                raise http.client.IncompleteRead(b"", n - pos)
            pos += got
        self.position += n

    def close(self) -> None:
        self._conn.close()
