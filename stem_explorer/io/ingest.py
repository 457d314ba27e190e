"""Ingestion: any readable data set -> raw partitions + ``dataset.json``, on the cluster.

``ingest(source, dest)`` plans partition files of whole HDFS blocks (one block each
by default, ``blocks_per_partition`` for more), and runs one task per file on the
dask workers: each task reads its frames from the source itself, streams them into
``<file>.tmp-<id>`` (through its own node's DataNode on HDFS), reads the file back
to verify its sha256, renames it into place and records it in the journal folder
``_ingest/``. No frame passes through the client. When every file is recorded, the
client publishes ``dataset.json`` atomically and removes the journal.

Re-running the same ingestion resumes it: files already recorded in the journal
(with the recorded size) are skipped, the rest written. A run that stops at any
point leaves no ``dataset.json``, so nothing ever points at a half-written file.
``dest`` is a local (or shared) folder or ``hdfs://namenode:port/path``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

import numpy as np

from .._json import jsonable
from ..errors import ChecksumError, DataSetError
from .base import DataSet, Partition
from .hdfs.config import is_hdfs_url
from .hdfs.store import HdfsStore
from .open import open_dataset
from .partitioned.sidecar import FORMAT_NAME, FORMAT_VERSION, SIDECAR_NAME, validate_sidecar

#: Bytes per ingested partition file: HDFS's default block size.
INGEST_PARTITION_BYTES = 128 * 2**20
JOURNAL = "_ingest"
PLAN_NAME = f"{JOURNAL}/plan.json"
PUBLISHED_NAME = f"{JOURNAL}/published.json"  # a sidecar taken back while files are rewritten
_HDFS_CHECKSUM_BYTES = 512  # HDFS block sizes are multiples of this
_TILE_BYTES = 16 * 2**20  # frames read and sent per step


class LocalStore:
    """A local or shared folder as an ingestion target (same operations as
    :class:`~stem_explorer.io.hdfs.HdfsStore`)."""

    def __init__(self, path):
        self.root = os.path.abspath(os.fspath(path))

    def __str__(self) -> str:
        return self.root

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def list(self, sub: str = "") -> dict:
        """``{name: size}`` of the files in the folder (or its subfolder ``sub``)."""
        folder = self.path(sub) if sub else self.root
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return {}
        return {n: os.path.getsize(os.path.join(folder, n)) for n in names if os.path.isfile(os.path.join(folder, n))}

    def names(self, sub: str = "") -> list:
        """Names of every entry (files and folders) of the folder or its ``sub``."""
        try:
            return os.listdir(self.path(sub) if sub else self.root)
        except FileNotFoundError:
            return []

    def file_id(self, name: str) -> int:
        """Changes whenever the file is written anew (inode and modification time)."""
        stat = os.stat(self.path(name))
        return hash((stat.st_ino, stat.st_mtime_ns))

    def makedirs(self, sub: str = "") -> None:
        os.makedirs(self.path(sub) if sub else self.root, exist_ok=True)

    def create(self, name: str, length: int, chunks: Iterable, **_hdfs_options) -> None:
        """Write file ``name`` from ``chunks``, synced to disk; block options are HDFS's."""
        with open(self.path(name), "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        if os.path.getsize(self.path(name)) != length:
            raise DataSetError(f"{self.path(name)}: wrote {os.path.getsize(self.path(name))} bytes, expected {length}")

    def sha256(self, name: str, length: int) -> str:
        """sha256 of the file as stored (``length`` is known from the listing here)."""
        h = hashlib.sha256()
        with open(self.path(name), "rb") as f:
            while chunk := f.read(8 * 2**20):
                h.update(chunk)
        return h.hexdigest()

    def rename(self, src: str, dst: str) -> None:
        os.replace(self.path(src), self.path(dst))

    def remove(self, name: str) -> None:
        """Delete a file or folder (recursively); nothing when it does not exist."""
        target = self.path(name)
        if os.path.isdir(target):
            shutil.rmtree(target)
        elif os.path.exists(target):
            os.remove(target)

    def read_json(self, name: str) -> Optional[dict]:
        try:
            with open(self.path(name), encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def write_json(self, name: str, doc: dict) -> None:
        """Publish ``doc`` as ``name`` atomically: an fsync'd temporary, then a rename."""
        os.makedirs(os.path.dirname(self.path(name)), exist_ok=True)
        data = (json.dumps(doc, indent=1) + "\n").encode()
        self.create(f"{name}.tmp", len(data), [data])
        self.rename(f"{name}.tmp", name)


def store_for(dest, *, webhdfs: Optional[str] = None):
    """The store of ``dest``: HDFS for ``hdfs://`` / ``webhdfs://`` URLs, else local."""
    if is_hdfs_url(os.fspath(dest)):
        return HdfsStore(dest, webhdfs=webhdfs)
    if webhdfs:
        raise DataSetError(f"webhdfs= applies to hdfs:// destinations, not {dest!r}")
    return LocalStore(dest)


@dataclass(frozen=True)
class IngestPlan:
    """File names and frame ranges, and the HDFS block size of every file."""

    frames_per_file: int
    block_bytes: int
    files: tuple  # (name, start, stop)

    def fingerprint(self, ds: DataSet, replication: Optional[int]) -> dict:
        """What makes two ingestions the same: source and layout (plain JSON)."""
        layout = {"frames_per_file": self.frames_per_file, "block_bytes": self.block_bytes,
                  "replication": replication, "n_files": len(self.files)}
        return json.loads(json.dumps(jsonable({"source": ds.describe(), "ingest": layout})))


def plan_ingest(ds: DataSet, partition_bytes: int = INGEST_PARTITION_BYTES, blocks_per_partition: int = 1) -> IngestPlan:
    """Files of about ``partition_bytes`` (whole frames) made of ``blocks_per_partition``
    HDFS blocks: the block size is a file's bytes over the block count, rounded up
    to the 512-byte checksum unit HDFS requires."""
    if int(partition_bytes) != partition_bytes or partition_bytes <= 0:
        raise DataSetError(f"partition_bytes must be a positive number of bytes, got {partition_bytes!r}")
    if int(blocks_per_partition) != blocks_per_partition or blocks_per_partition < 1:
        raise DataSetError(f"blocks_per_partition must be a positive integer, got {blocks_per_partition!r}")
    per_file = max(1, int(partition_bytes) // ds.frame_bytes)
    per_file = min(per_file, ds.n_frames)
    block = math.ceil(per_file * ds.frame_bytes / blocks_per_partition)
    block = math.ceil(block / _HDFS_CHECKSUM_BYTES) * _HDFS_CHECKSUM_BYTES
    files = tuple(
        (f"part-{i:05d}.raw", a, min(ds.n_frames, a + per_file))
        for i, a in enumerate(range(0, ds.n_frames, per_file))
    )
    return IngestPlan(per_file, block, files)


def write_partition(partition: Partition, payload: Any, store, name: str, *, block_bytes: int,
                    replication: Optional[int]) -> dict:
    """The task of one file: write, verify, publish, record. Returns its sidecar entry."""
    source = partition.source
    frame_bytes = math.prod(source.sig_shape) * np.dtype(source.dtype).itemsize
    length = partition.n_frames * frame_bytes
    digest = hashlib.sha256()
    tmp = f"{name}.tmp-{uuid.uuid4().hex[:12]}"  # unique: an orphaned writer never collides

    with source.open(payload) as reader:
        def chunks():
            for a, b in partition.tile_ranges(max(1, _TILE_BYTES // frame_bytes)):
                data = np.ascontiguousarray(reader.read(a, b)).reshape(-1).view(np.uint8)
                digest.update(data)
                yield data

        store.create(tmp, length, chunks(), blocksize=block_bytes, replication=replication)
    expected = digest.hexdigest()
    stored = store.sha256(tmp, length)
    if stored != expected:
        store.remove(tmp)
        raise ChecksumError(
            f"partition file {name} of {store} read back with sha256 {stored}, but {expected} was "
            f"written; the storage corrupted it: re-run the ingestion to write it again"
        )
    store.rename(tmp, name)
    record = {"file": name, "start": partition.start, "stop": partition.stop, "bytes": length, "sha256": expected}
    store.makedirs(f"{JOURNAL}/{_journal_entry(record)}")
    return record


def _journal_entry(record: dict) -> str:
    """A journal record as a folder name: one atomic mkdir to write, one listing to
    read them all (a file per record would cost a read each on resume)."""
    return "~".join(str(record[k]) for k in ("file", "start", "stop", "bytes", "sha256"))


def _parse_entry(entry: str) -> Optional[dict]:
    fields = entry.split("~")
    if len(fields) != 5 or not fields[0].startswith("part-"):
        return None
    try:
        return {"file": fields[0], "start": int(fields[1]), "stop": int(fields[2]),
                "bytes": int(fields[3]), "sha256": fields[4]}
    except ValueError:
        return None


def _recorded(store, sidecar: Optional[dict]) -> dict:
    """Every record known: journal entries, a sidecar being repaired, the sidecar."""
    records = {}
    for doc in (store.read_json(PUBLISHED_NAME), sidecar):
        records.update({p["file"]: p for p in (doc or {}).get("partitions", [])})
    for entry in store.names(JOURNAL):
        record = _parse_entry(entry)
        if record is not None:
            records[record["file"]] = record
    return records


def _completed(store, plan: IngestPlan, records: dict) -> dict:
    """The records of files that are done: in the plan, present with the recorded size."""
    sizes = store.list()
    done = {}
    for name, start, stop in plan.files:
        r = records.get(name)
        if r and (r["start"], r["stop"]) == (start, stop) and sizes.get(name) == r["bytes"]:
            done[name] = {k: r[k] for k in ("file", "start", "stop", "bytes", "sha256")}
    return done


def _prepare(store, fingerprint: dict, overwrite: bool) -> Optional[dict]:
    """Check what ``store`` holds against this ingestion; returns its sidecar when the
    same ingestion was published before (possibly with files missing since).

    Another data set or unfinished ingestion is an error unless ``overwrite``, which
    removes it (sidecar first) and starts afresh.
    """
    sidecar = store.read_json(SIDECAR_NAME)
    journal_plan = store.read_json(PLAN_NAME)
    if overwrite:
        for name in [SIDECAR_NAME, JOURNAL, *(n for n in store.names() if n.startswith("part-"))]:
            store.remove(name)
        sidecar = journal_plan = None
    elif sidecar is not None:
        metadata = sidecar.get("metadata") or {}
        if any(metadata.get(k) != v for k, v in fingerprint.items()):
            raise DataSetError(
                f"{store} already holds a data set ({SIDECAR_NAME}) of another source or layout; "
                f"pass overwrite=True (--overwrite) to replace it, or choose another destination"
            )
    elif journal_plan is not None and journal_plan != fingerprint:
        raise DataSetError(
            f"{store} holds an unfinished ingestion of another source or layout ({PLAN_NAME}); "
            f"pass overwrite=True (--overwrite) to discard it, or choose another destination"
        )
    if journal_plan is None:
        store.makedirs(JOURNAL)
        store.write_json(PLAN_NAME, fingerprint)
    return sidecar


@contextmanager
def _cluster(client, address: Optional[str], n_workers: Optional[int]):
    """The given client, a client of ``address``, or an embedded LocalCluster's."""
    if client is not None:
        yield client
        return
    from ..engine.cluster import connect, start_local_cluster

    if address is not None:
        with connect(address) as c:
            yield c
        return
    from distributed import Client

    with start_local_cluster(n_workers) as cluster, Client(cluster) as c:
        yield c


def _write_all(client, ds: DataSet, store, plan: IngestPlan, todo: list, replication: Optional[int],
               done_bytes: int, progress: bool, on_file: Optional[Callable]) -> dict:
    """One task per file of ``todo``; records by file name as they complete."""
    from distributed import as_completed
    from tqdm.auto import tqdm

    parts = []
    for i, (_name, a, b) in enumerate(todo):
        source = ds.source.subset(a, b) if hasattr(ds.source, "subset") else ds.source
        parts.append(Partition(i, a, b, source))
    payloads = ds.payloads(client, parts)
    run = uuid.uuid4().hex[:8]
    futures = [
        client.submit(write_partition, part, payload, store, name, block_bytes=plan.block_bytes,
                      replication=replication, key=f"stem-explorer-ingest-{run}-{name}", pure=False,
                      retries=2)  # a file is rewritten from scratch under a new temporary name
        for part, payload, (name, _a, _b) in zip(parts, payloads, todo)
    ]
    total = done_bytes + sum((b - a) * ds.frame_bytes for _n, a, b in todo)
    records = {}
    with tqdm(total=total, initial=done_bytes, unit="B", unit_scale=True, disable=not progress,
              desc=f"ingest -> {store}") as bar:
        try:
            for _future, record in as_completed(futures, loop=client.loop, with_results=True):
                records[record["file"]] = record
                bar.update(record["bytes"])
                if on_file is not None:
                    on_file(record)
        except BaseException:
            client.cancel(futures)
            raise
    return records


def _publish(store, ds: DataSet, plan: IngestPlan, records: dict, metadata: dict) -> None:
    """Write ``dataset.json`` atomically, then drop the journal and stray temporaries."""
    doc = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "nav_shape": list(ds.nav_shape),
        "sig_shape": list(ds.sig_shape),
        "dtype": ds.dtype.str,
        "partitions": [records[name] for name, _a, _b in plan.files],
        "metadata": jsonable(metadata),
    }
    validate_sidecar(doc, f"{store}/{SIDECAR_NAME}")
    store.write_json(SIDECAR_NAME, doc)
    store.remove(JOURNAL)
    for name in store.names():
        if ".tmp" in name:
            store.remove(name)


def ingest(
    source,
    dest,
    *,
    partition_bytes: int = INGEST_PARTITION_BYTES,
    blocks_per_partition: int = 1,
    replication: Optional[int] = None,
    client=None,
    address: Optional[str] = None,
    n_workers: Optional[int] = None,
    overwrite: bool = False,
    progress: bool = True,
    webhdfs: Optional[str] = None,
    metadata: Optional[dict] = None,
    on_file: Optional[Callable[[dict], None]] = None,
    format: Optional[str] = None,
    **open_options,
) -> DataSet:
    """Write ``source`` as raw partitions + ``dataset.json`` at ``dest``, on a cluster.

    ``source`` is anything :func:`~stem_explorer.open_dataset` opens (with ``format``
    and ``open_options``) or a :class:`DataSet`; the workers must be able to read it
    (a shared file system, or the same path on every node). ``dest`` is a folder or
    ``hdfs://namenode:port/path``. Each file holds about ``partition_bytes`` (default
    128 MiB, HDFS's default block size) in ``blocks_per_partition`` HDFS blocks, with
    ``replication`` replicas (default: the cluster's). The cluster is ``client``, the
    scheduler at ``address``, or an embedded LocalCluster of ``n_workers``.

    Re-running resumes: recorded files are skipped. ``overwrite=True`` discards what
    ``dest`` holds first. ``on_file(record)`` is called on the client as each file is
    done. Returns the new data set, opened; its ``metadata["ingested"]`` says how
    many files this run wrote and skipped.
    """
    t0 = time.perf_counter()
    if isinstance(source, DataSet):
        if format is not None or open_options:
            raise DataSetError("ingest() got an open DataSet with format/options; pass the path instead")
        ds = source
    else:
        ds = open_dataset(source, format=format, **open_options)
    store = store_for(dest, webhdfs=webhdfs)
    plan = plan_ingest(ds, partition_bytes, blocks_per_partition)
    fingerprint = plan.fingerprint(ds, replication)
    sidecar = _prepare(store, fingerprint, overwrite)
    done = _completed(store, plan, _recorded(store, sidecar))
    todo = [f for f in plan.files if f[0] not in done]
    skipped = len(done)
    if todo or sidecar is None:
        if sidecar is not None:  # unpublish before rewriting files it names
            store.rename(SIDECAR_NAME, PUBLISHED_NAME)
        with _cluster(client, address, n_workers) as c:
            done_bytes = sum(r["bytes"] for r in done.values())
            done.update(_write_all(c, ds, store, plan, todo, replication, done_bytes, progress, on_file))
        _publish(store, ds, plan, done, {**(metadata or {}), **fingerprint})
    opened = open_dataset(dest, webhdfs=webhdfs) if webhdfs else open_dataset(dest)
    opened.metadata["ingested"] = {"written": len(todo), "skipped": skipped,
                                   "seconds": round(time.perf_counter() - t0, 3)}
    return opened


def verify(dest, *, webhdfs: Optional[str] = None) -> dict:
    """Check every partition file at ``dest`` (folder or HDFS URL) against its size and
    sha256 in ``dataset.json``; ChecksumError names each file that differs. Returns
    ``{"files": n, "bytes": total}``."""
    if is_hdfs_url(dest):
        from .hdfs import open_hdfs

        ds = open_hdfs(dest, verify="full", webhdfs=webhdfs)
        return {"files": ds.metadata["n_files"], "bytes": ds.nbytes}
    from .partitioned import verify_partitions

    return verify_partitions(dest)
