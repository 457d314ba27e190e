"""The task of one ingested file, run on a dask worker: write, verify, publish, record.

A task streams its frames into a temporary file of its own in the journal's
``tmp/`` folder (through its node's DataNode on HDFS), reads it back to check its
sha256, and renames it into place, but only while its run still owns the
destination (:mod:`.ingest_lock`): a task left running by a killed client never
replaces a file of the ingestion that took over.

With a codec, the task compresses its frames chunk by chunk into a spooled
temporary file first (in memory up to :data:`SPOOL_MEMORY_BYTES`, then on the
worker's local disk: an upload announces its length), and records the chunk table
in the journal's ``chunks/`` folder before the file's journal entry, so a resumed
ingestion publishes it without reading the file.

Errors that a second attempt cannot mend (bad input, a refusal by HDFS, a full
disk, a checksum mismatch) are returned as a :class:`TaskFailure` instead of being
raised, so dask's ``retries`` do not run the same failure again: the client fails
the job at once. Lost connections are raised and retried; a lost worker is
rescheduled by dask itself.
"""

from __future__ import annotations

import hashlib
import http.client
import math
import pickle
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional

import numpy as np

from ..errors import ChecksumError, DataSetError
from .base import Partition
from .partitioned.chunks import ChunkEncoder
from .partitioned.codecs import ChunkLayout

JOURNAL = "_ingest"
STAGING = f"{JOURNAL}/tmp"  # the run's temporary files: nowhere else in the destination
CHUNK_TABLES = f"{JOURNAL}/chunks"  # chunk sizes and checksums of recorded compressed files
TILE_BYTES = 16 * 2**20  # frames read and sent per step
#: A compressed file is held in memory up to this size while it is encoded (more
#: goes to a temporary file on the worker's disk).
SPOOL_MEMORY_BYTES = 64 * 2**20

#: Errors another attempt may not repeat: the network, not the data.
TRANSIENT_ERRORS = (ConnectionError, TimeoutError, http.client.HTTPException)


@dataclass
class TaskFailure:
    """A task's error that retrying cannot mend, returned as its result."""

    error: BaseException


@dataclass(frozen=True)
class Written:
    """A finished file: its sidecar entry and the store's id of the file renamed into place."""

    record: dict
    file_id: int


def lost_destination(store) -> DataSetError:
    owner = store.lock_owner()
    who = f"host {owner.get('host')}, pid {owner.get('pid')}" if owner else "nobody holds it now"
    return DataSetError(
        f"this ingestion no longer owns {store} ({who}): another ingestion took it over, so "
        f"nothing more is written; run it again once the other one has finished"
    )


def owns(store, token: str) -> bool:
    """Whether the run ``token`` holds the destination's lock."""
    return (store.lock_owner() or {}).get("token") == token


def journal_entry(record: dict) -> str:
    """A journal record as a folder name: one atomic mkdir to write, one listing to
    read them all (a file per record would cost a read each on resume)."""
    return "~".join(str(record[k]) for k in ("file", "start", "stop", "bytes", "sha256"))


def parse_journal_entry(entry: str) -> Optional[dict]:
    """The record of :func:`journal_entry`'s folder name, None for any other name."""
    fields = entry.split("~")
    if len(fields) != 5 or not fields[0].startswith("part-"):
        return None
    try:
        return {"file": fields[0], "start": int(fields[1]), "stop": int(fields[2]),
                "bytes": int(fields[3]), "sha256": fields[4]}
    except ValueError:
        return None


def chunk_table_name(record: dict) -> str:
    """Where the chunk fields of a recorded compressed file are kept in the journal."""
    return f"{CHUNK_TABLES}/{journal_entry(record)}.json"


def read_chunk_tables(store, records: dict) -> None:
    """Add their chunk fields to the journal's ``records`` of compressed files."""
    tables = set(store.names(CHUNK_TABLES))
    for record in records.values():
        name = chunk_table_name(record)
        if name.rsplit("/", 1)[1] in tables:
            record.update(store.read_json(name) or {})


def _portable(exc: BaseException) -> BaseException:
    """``exc``, or a DataSetError with its text when it would not survive pickling."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return DataSetError(f"{type(exc).__name__}: {exc}")


def write_partition(partition: Partition, payload: Any, store, name: str, *, token: str, block_bytes: int,
                    replication: Optional[int], layout: Optional[ChunkLayout] = None):
    """Write file ``name`` of the run ``token`` (compressed with ``layout``, if
    given): a :class:`Written`, or a :class:`TaskFailure` for an error retrying
    cannot mend."""
    tmp = f"{STAGING}/{name}.{token[:8]}-{uuid.uuid4().hex[:8]}"  # unique: orphaned writers never collide
    try:
        if not owns(store, token):
            return TaskFailure(lost_destination(store))
        record = _write_verified(partition, payload, store, tmp, name, block_bytes, replication, layout)
        if not owns(store, token):
            store.remove(tmp)
            return TaskFailure(lost_destination(store))
        store.rename(tmp, name)
        file_id = store.file_id(name)
        if layout is not None:
            table = {k: record[k] for k in ("chunk_bytes", "chunk_crc32c")}
            store.write_json(chunk_table_name(record), table, staging=f"{tmp}.chunks")
        store.makedirs(f"{JOURNAL}/{journal_entry(record)}")
        return Written(record, file_id)
    except TRANSIENT_ERRORS:
        _discard(store, tmp)
        raise
    except Exception as exc:
        _discard(store, tmp)
        return TaskFailure(_portable(exc))


def _discard(store, tmp: str) -> None:
    """Remove this task's temporary file, if it got that far (best effort: the error
    that brought us here matters more)."""
    try:
        store.remove(tmp)
    except Exception:
        pass


def _hashed(pieces: Iterable, digest) -> Iterator:
    for piece in pieces:
        digest.update(piece)
        yield piece


@contextmanager
def _encoded(encoder: ChunkEncoder, blocks: Iterable[np.ndarray]):
    """``(pieces, length)`` of the compressed file made of ``blocks``, spooled."""
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES) as spool:
        for block in blocks:
            for chunk in encoder.feed(block):
                spool.write(chunk)
        for chunk in encoder.flush():
            spool.write(chunk)
        length = spool.tell()
        spool.seek(0)
        yield iter(lambda: spool.read(TILE_BYTES), b""), length


def _write_verified(partition: Partition, payload: Any, store, tmp: str, name: str, block_bytes: int,
                    replication: Optional[int], layout: Optional[ChunkLayout]) -> dict:
    source = partition.source
    frame_bytes = math.prod(source.sig_shape) * np.dtype(source.dtype).itemsize
    digest = hashlib.sha256()
    options = dict(blocksize=block_bytes, replication=replication)
    with source.open(payload) as reader:
        blocks = (reader.read(a, b) for a, b in partition.tile_ranges(max(1, TILE_BYTES // frame_bytes)))
        if layout is None:
            length = partition.n_frames * frame_bytes
            pieces = (np.ascontiguousarray(b).reshape(-1).view(np.uint8) for b in blocks)
            store.create(tmp, length, _hashed(pieces, digest), **options)
            chunks = {}
        else:
            encoder = ChunkEncoder(layout, source.dtype, source.sig_shape, f"{store}/{name}")
            with _encoded(encoder, blocks) as (pieces, length):
                store.create(tmp, length, _hashed(pieces, digest), **options)
            chunks = encoder.record()
    expected = digest.hexdigest()
    stored = store.sha256(tmp, length)
    if stored != expected:
        raise ChecksumError(
            f"partition file {name} of {store} read back with sha256 {stored}, but {expected} was "
            f"written; the storage corrupted it: re-run the ingestion to write it again"
        )
    return {"file": name, "start": partition.start, "stop": partition.stop, "bytes": length, "sha256": expected,
            **chunks}
