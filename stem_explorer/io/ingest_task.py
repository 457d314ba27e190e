"""The task of one ingested file, run on a dask worker: write, verify, publish, record.

A task streams its frames into a temporary file of its own in the journal's
``tmp/`` folder (through its node's DataNode on HDFS), reads it back to check its
sha256, and renames it into place, but only while its run still owns the
destination (:mod:`.ingest_lock`): a task left running by a killed client never
replaces a file of the ingestion that took over.

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
import uuid
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..errors import ChecksumError, DataSetError
from .base import Partition

JOURNAL = "_ingest"
STAGING = f"{JOURNAL}/tmp"  # the run's temporary files: nowhere else in the destination
TILE_BYTES = 16 * 2**20  # frames read and sent per step

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


def _portable(exc: BaseException) -> BaseException:
    """``exc``, or a DataSetError with its text when it would not survive pickling."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return DataSetError(f"{type(exc).__name__}: {exc}")


def write_partition(partition: Partition, payload: Any, store, name: str, *, token: str, block_bytes: int,
                    replication: Optional[int]):
    """Write file ``name`` of the run ``token``: a :class:`Written`, or a
    :class:`TaskFailure` for an error retrying cannot mend."""
    tmp = f"{STAGING}/{name}.{token[:8]}-{uuid.uuid4().hex[:8]}"  # unique: orphaned writers never collide
    try:
        if not owns(store, token):
            return TaskFailure(lost_destination(store))
        record = _write_verified(partition, payload, store, tmp, name, block_bytes, replication)
        if not owns(store, token):
            store.remove(tmp)
            return TaskFailure(lost_destination(store))
        store.rename(tmp, name)
        file_id = store.file_id(name)
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


def _write_verified(partition: Partition, payload: Any, store, tmp: str, name: str, block_bytes: int,
                    replication: Optional[int]) -> dict:
    source = partition.source
    frame_bytes = math.prod(source.sig_shape) * np.dtype(source.dtype).itemsize
    length = partition.n_frames * frame_bytes
    digest = hashlib.sha256()
    with source.open(payload) as reader:
        def chunks():
            for a, b in partition.tile_ranges(max(1, TILE_BYTES // frame_bytes)):
                data = np.ascontiguousarray(reader.read(a, b)).reshape(-1).view(np.uint8)
                digest.update(data)
                yield data

        store.create(tmp, length, chunks(), blocksize=block_bytes, replication=replication)
    expected = digest.hexdigest()
    stored = store.sha256(tmp, length)
    if stored != expected:
        raise ChecksumError(
            f"partition file {name} of {store} read back with sha256 {stored}, but {expected} was "
            f"written; the storage corrupted it: re-run the ingestion to write it again"
        )
    return {"file": name, "start": partition.start, "stop": partition.stop, "bytes": length, "sha256": expected}
