"""Ingestion's data side: plans, the journal and publishing of raw partitions.

:func:`stem_explorer.engine.ingestion.ingest` (``stem_explorer.ingest``) runs an
ingestion on the cluster with what this module provides. ``ingest(source, dest)`` plans partition files of whole HDFS blocks (one block each
by default, ``blocks_per_partition`` for more; never smaller than the NameNode's
minimum block size), and runs one task per file on the dask workers
(:mod:`.ingest_task`): each task reads its frames from the source itself, streams
them into a temporary file in the journal folder ``_ingest/`` (through its own node's
DataNode on HDFS), reads it back to verify its sha256, renames it into place and
records it in the journal. No frame passes through the client. When every file is
recorded, the client checks that each is still the file its task renamed into place,
publishes ``dataset.json`` atomically and removes the journal.

One ingestion owns a destination at a time (:mod:`.ingest_lock`): a second one fails
at once, naming the first one's host and PID; the lock of an owner that died is
stale and taken over. An ingestion deletes only what ingestion wrote there: the
files of the data set it replaces (as its ``dataset.json`` lists them), those its
journal records, and the journal. A file of a planned name that nothing lists is
never replaced (an error says to move it), and a source is never its own
destination.

Re-running the same ingestion resumes it: files already recorded (with the recorded
size) are skipped, the rest written. A run that stops at any point leaves no
``dataset.json``, so nothing ever points at a half-written file.
``dest`` is a local (or shared) folder or ``hdfs://namenode:port/path``.

``codec`` compresses each file chunk by chunk on the workers (a preset of
:data:`~.partitioned.codecs.CODECS`); ``partition_bytes`` then counts the frames'
uncompressed bytes, so a partition is the same work whatever the codec.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Optional

from .._json import jsonable
from ..errors import DataSetError
from .base import DataSet
from .hdfs.config import is_hdfs_url
from .hdfs.store import HdfsStore
from .ingest_task import (CHUNK_TABLES, JOURNAL, STAGING, lost_destination, owns, parse_journal_entry,
                          read_chunk_tables, write_partition)
from .local_store import LocalStore
from .partitioned.codecs import ChunkLayout, file_frames, part_file_name
from .partitioned.sidecar import SIDECAR_NAME, sidecar_document, validate_sidecar

#: Bytes per ingested partition file: HDFS's default block size.
INGEST_PARTITION_BYTES = 128 * 2**20
PLAN_NAME = f"{JOURNAL}/plan.json"
PUBLISHED_NAME = f"{JOURNAL}/published.json"  # a sidecar taken back while files are rewritten
_HDFS_CHECKSUM_BYTES = 512  # HDFS block sizes are multiples of this


def store_for(dest, *, webhdfs: Optional[str] = None):
    """The store of ``dest``: HDFS for ``hdfs://`` / ``webhdfs://`` URLs, else local."""
    if is_hdfs_url(os.fspath(dest)):
        return HdfsStore(dest, webhdfs=webhdfs)
    if webhdfs:
        raise DataSetError(f"webhdfs= applies to hdfs:// destinations, not {dest!r}")
    return LocalStore(dest)


@dataclass(frozen=True)
class IngestPlan:
    """File names and frame ranges, the HDFS block size of every file, and the chunk
    layout of compressed files (None: uncompressed)."""

    frames_per_file: int
    block_bytes: int
    files: tuple  # (name, start, stop)
    layout: Optional[ChunkLayout] = None

    def fingerprint(self, ds: DataSet, replication: Optional[int]) -> dict:
        """What makes two ingestions the same: source and layout (plain JSON)."""
        layout = {"frames_per_file": self.frames_per_file, "block_bytes": self.block_bytes,
                  "replication": replication, "n_files": len(self.files)}
        if self.layout is not None:  # absent when uncompressed: earlier ingestions stay the same
            layout["codec"] = self.layout.to_sidecar()
        return json.loads(json.dumps(jsonable({"source": ds.describe(), "ingest": layout})))


def plan_ingest(ds: DataSet, partition_bytes: int = INGEST_PARTITION_BYTES, blocks_per_partition: int = 1,
                min_block_bytes: int = 0, codec: str = "none") -> IngestPlan:
    """Files of about ``partition_bytes`` (whole frames; whole chunks of ``codec``)
    made of ``blocks_per_partition`` HDFS blocks: the block size is a file's
    uncompressed bytes over the block count, at least ``min_block_bytes`` (the
    NameNode refuses smaller blocks; a file may be smaller than its block), rounded
    up to the 512-byte checksum unit HDFS requires."""
    if int(partition_bytes) != partition_bytes or partition_bytes <= 0:
        raise DataSetError(f"partition_bytes must be a positive number of bytes, got {partition_bytes!r}")
    if int(blocks_per_partition) != blocks_per_partition or blocks_per_partition < 1:
        raise DataSetError(f"blocks_per_partition must be a positive integer, got {blocks_per_partition!r}")
    per_file = max(1, int(partition_bytes) // ds.frame_bytes)
    per_file = min(per_file, ds.n_frames)
    layout = ChunkLayout.of(codec, ds.frame_bytes, per_file)
    if layout is not None:
        per_file = file_frames(per_file, layout.chunk_frames)
    block = max(math.ceil(per_file * ds.frame_bytes / blocks_per_partition), min_block_bytes)
    block = math.ceil(block / _HDFS_CHECKSUM_BYTES) * _HDFS_CHECKSUM_BYTES
    files = tuple(
        (part_file_name(i, layout), a, min(ds.n_frames, a + per_file))
        for i, a in enumerate(range(0, ds.n_frames, per_file))
    )
    return IngestPlan(per_file, block, files, layout)


def _listed(doc: Optional[dict]) -> dict:
    """The partition records of a sidecar by file name (plain names only: a name with a
    folder in it is nothing ingestion wrote)."""
    parts = (doc or {}).get("partitions", [])
    return {p["file"]: p for p in parts if isinstance(p, dict) and isinstance(p.get("file"), str)
            and p["file"] == os.path.basename(p["file"]) and p["file"] not in ("", ".", "..")}


def _ours(store, sidecar: Optional[dict]) -> dict:
    """Every record of a file ingestion wrote here: the sidecar's, one being repaired,
    the journal's."""
    records = {**_listed(store.read_json(PUBLISHED_NAME)), **_listed(sidecar)}
    journal = {}
    for entry in store.names(JOURNAL):
        record = parse_journal_entry(entry)
        if record is not None:
            journal[record["file"]] = record
    read_chunk_tables(store, journal)
    return {**records, **journal}


def completed(store, plan: IngestPlan, records: dict) -> tuple[dict, dict]:
    """The records of files that are done (in the plan, present with the recorded
    size), and their file ids now."""
    sizes, ids = store.list(), store.file_ids()
    done = {}
    for name, start, stop in plan.files:
        r = records.get(name)
        if r and (r["start"], r["stop"]) == (start, stop) and sizes.get(name) == r["bytes"] and \
                (plan.layout is None or "chunk_bytes" in r):
            keys = ("file", "start", "stop", "bytes", "sha256") + (() if plan.layout is None else
                                                                  ("chunk_bytes", "chunk_crc32c"))
            done[name] = {k: r[k] for k in keys}
    return done, {name: ids[name] for name in done}


def _check_journal(store) -> Optional[dict]:
    """The plan of the journal folder, None without one; an error when a folder of
    that name is not ingestion's (only its temporaries and records may be in a journal
    that has no plan yet)."""
    plan = store.read_json(PLAN_NAME)
    if plan is None:
        allowed = ("tmp", "published.json", CHUNK_TABLES.rsplit("/", 1)[1])
        foreign = [n for n in store.names(JOURNAL) if n not in allowed and parse_journal_entry(n) is None]
        if foreign:
            raise DataSetError(
                f"{store.path(JOURNAL)} is not an ingestion journal (it has no plan.json but holds "
                f"{foreign[0]!r}); it is not ingestion's to delete: move it away, then re-run"
            )
    return plan


def _check_sidecar(store, fingerprint: dict, overwrite: bool) -> Optional[dict]:
    sidecar = store.read_json(SIDECAR_NAME)
    if sidecar is None:
        return None
    validate_sidecar(sidecar, f"{store}/{SIDECAR_NAME}")  # only a real sidecar says which files are ours
    metadata = sidecar.get("metadata") or {}
    if not overwrite and any(metadata.get(k) != v for k, v in fingerprint.items()):
        raise DataSetError(
            f"{store} already holds a data set ({SIDECAR_NAME}) of another source or layout; "
            f"pass overwrite=True (--overwrite) to replace it, or choose another destination"
        )
    return sidecar


def prepare(store, plan: IngestPlan, fingerprint: dict, overwrite: bool, token: str) -> tuple:
    """Check what ``store`` holds against this ingestion. Returns its sidecar when the
    same ingestion was published before (possibly with files missing since), and the
    records this ingestion may resume from.

    Another data set or unfinished ingestion is an error unless ``overwrite``, which
    removes it and starts afresh: the journal's plan first (its records are never
    resumed from again), then the files ingestion wrote, then the sidecar and the
    journal, so that an interrupted removal can be run again. A file of a planned
    name that nothing lists is an error either way.
    """
    journal_plan = _check_journal(store)
    sidecar = _check_sidecar(store, fingerprint, overwrite)
    if not overwrite and journal_plan is not None and journal_plan != fingerprint:
        raise DataSetError(
            f"{store} holds an unfinished ingestion of another source or layout ({PLAN_NAME}); "
            f"pass overwrite=True (--overwrite) to discard it, or choose another destination"
        )
    ours = _ours(store, sidecar)
    present = set(store.names())
    foreign = [name for name, _a, _b in plan.files if name in present and name not in ours]
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise DataSetError(
            f"{store.path(foreign[0])}{more} exists and was not written by an ingestion ({SIDECAR_NAME} "
            f"and the journal do not list it), so it is not replaced: move it away or choose another "
            f"destination"
        )
    if overwrite:
        files = store.list()
        for name in [PLAN_NAME, *(n for n in ours if n in files), SIDECAR_NAME, JOURNAL]:
            store.remove(name)
        sidecar, journal_plan = None, None
    resumable = sidecar is not None or journal_plan == fingerprint
    store.makedirs(STAGING)
    if plan.layout is not None:
        store.makedirs(CHUNK_TABLES)
    if journal_plan is None:
        store.write_json(PLAN_NAME, fingerprint, staging=f"{STAGING}/plan.json.{token}")
    return sidecar, ours if resumable else {}


def _same_bytes(store, record: dict) -> bool:
    """Whether a file written anew since it was recorded holds the recorded bytes (a
    task dask ran twice, as it does when a worker is lost before its result arrived).
    Read by the client, but only for such files."""
    try:
        return store.sha256(record["file"], record["bytes"]) == record["sha256"]
    except (OSError, DataSetError):
        return False


def publish(store, ds: DataSet, plan: IngestPlan, records: dict, file_ids: dict, metadata: dict,
             token: str) -> None:
    """Write ``dataset.json`` atomically, then drop the journal. Only while this run
    owns the destination, and only when every file is the one recorded."""
    if not owns(store, token):
        raise lost_destination(store)
    now = store.file_ids()
    replaced = [name for name, _a, _b in plan.files if now.get(name) != file_ids[name]
                and not _same_bytes(store, records[name])]
    if replaced:
        raise DataSetError(
            f"{store.path(replaced[0])} was replaced by another process during this ingestion, so "
            f"nothing was published; make sure no other program writes into {store}, then run the "
            f"ingestion again with overwrite=True (--overwrite)"
        )
    doc = sidecar_document(ds.nav_shape, ds.sig_shape, ds.dtype, [records[name] for name, _a, _b in plan.files],
                           jsonable(metadata), plan.layout)
    validate_sidecar(doc, f"{store}/{SIDECAR_NAME}")
    store.write_json(SIDECAR_NAME, doc, staging=f"{STAGING}/{SIDECAR_NAME}.{token}")
    store.remove(JOURNAL)


def verify(dest, *, webhdfs: Optional[str] = None) -> dict:
    """Check every partition file at ``dest`` (folder or HDFS URL) against its size and
    sha256 in ``dataset.json``; ChecksumError names each file that differs. Returns
    ``{"files": n, "bytes": total}`` (bytes as stored)."""
    if is_hdfs_url(dest):
        from .hdfs import open_hdfs

        ds = open_hdfs(dest, verify="full", webhdfs=webhdfs)
        stored = sum(block.length for part in ds.source.parts for block in part[3])  # compressed: less than nbytes
        return {"files": ds.metadata["n_files"], "bytes": stored}
    from .partitioned import verify_partitions

    return verify_partitions(dest)
