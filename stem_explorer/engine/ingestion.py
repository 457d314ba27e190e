"""Running an ingestion on the cluster: one task per partition file, through the
engine's task runner (:mod:`.runner`), with the planning, journal and publishing of
:mod:`stem_explorer.io.ingest`."""

from __future__ import annotations

import time
from typing import Callable, Optional

from ..errors import DataSetError
from ..io.base import DataSet, Partition
from ..io.ingest import (INGEST_PARTITION_BYTES, PUBLISHED_NAME, IngestPlan, completed, plan_ingest, prepare, publish,
                         store_for)
from ..io.ingest_lock import new_token
from ..io.ingest_task import TaskFailure, write_partition
from ..io.open import open_dataset
from ..io.partitioned.sidecar import SIDECAR_NAME
from . import failures
from .runner import cancel_quietly, cluster_client, finished, submit_tasks


def _write_all(client, ds: DataSet, store, plan: IngestPlan, todo: list, replication: Optional[int], token: str,
               done_bytes: int, progress: bool, on_file: Optional[Callable]) -> dict:
    """One task per file of ``todo``; their :class:`~stem_explorer.io.ingest_task.Written`
    results by file name as they complete. The first task failure fails the run."""
    from tqdm.auto import tqdm

    parts = []
    for i, (_name, a, b) in enumerate(todo):
        source = ds.source.subset(a, b) if hasattr(ds.source, "subset") else ds.source
        parts.append(Partition(i, a, b, source))
    payloads = ds.payloads(client, parts)
    names = [name for name, _a, _b in todo]
    futures = submit_tasks(
        client, write_partition, parts, payloads, [store] * len(parts), names,
        keys=[f"stem-explorer-ingest-{token[:8]}-{name}" for name in names],
        token=token, block_bytes=plan.block_bytes, replication=replication, layout=plan.layout,
        pure=False, retries=2,  # lost connections only: other failures come back as TaskFailure
    )
    total = done_bytes + sum((b - a) * ds.frame_bytes for _n, a, b in todo)
    written = {}
    with tqdm(total=total, initial=done_bytes, unit="B", unit_scale=True, disable=not progress,
              desc=f"ingest -> {store}") as bar:
        try:
            for future, result in finished(client, futures):
                future.release()  # done: a worker lost later must not run it (and rewrite the file) again
                if isinstance(result, TaskFailure):
                    raise result.error
                written[result.record["file"]] = result
                bar.update(result.record["bytes"])
                if on_file is not None:
                    on_file(result.record)
        except BaseException as exc:
            cancel_quietly(client, futures)
            error = failures.explain(exc, client, None)
            if error is exc:
                raise
            raise error from exc
    return written


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
    codec: str = "none",
    **open_options,
) -> DataSet:
    """Write ``source`` as raw partitions + ``dataset.json`` at ``dest``, on a cluster.

    ``source`` is anything :func:`~stem_explorer.open_dataset` opens (with ``format``
    and ``open_options``) or a :class:`~stem_explorer.io.DataSet`; the workers must be
    able to read it (a shared file system, or the same path on every node). ``dest``
    is a folder or ``hdfs://namenode:port/path``, and neither holds nor lies inside
    the source. Each file holds about ``partition_bytes`` (default 128 MiB, HDFS's
    default block size) in ``blocks_per_partition`` HDFS blocks, with ``replication``
    replicas (default: the cluster's). The cluster is ``client``, the scheduler at
    ``address``, or an embedded cluster of ``n_workers``. ``codec`` (``--codec``)
    compresses the files with a preset of
    :data:`~stem_explorer.io.partitioned.codecs.CODECS` (default ``"none"``).

    Re-running resumes: recorded files are skipped. ``overwrite=True`` first removes
    the data set (or unfinished ingestion) that ``dest`` holds, and nothing else.
    ``dest`` is owned by one ingestion at a time: while another one runs, this raises
    a DataSetError naming its host and PID. ``on_file(record)`` is called on the
    client as each file is done. Returns the new data set, opened; its
    ``metadata["ingested"]`` says how many files this run wrote and skipped. How the
    files are planned, journalled and published: :mod:`stem_explorer.io.ingest`.
    """
    t0 = time.perf_counter()
    if isinstance(source, DataSet):
        if format is not None or open_options:
            raise DataSetError("ingest() got an open DataSet with format/options; pass the path instead")
        ds = source
    else:
        ds = open_dataset(source, format=format, **open_options)
    store = store_for(dest, webhdfs=webhdfs)
    store.check_destination()
    if store.overlaps(ds.path):
        raise DataSetError(
            f"the source {ds.path} and the destination {store} overlap (one is, or lies inside, the "
            f"other): ingesting would replace the data it reads; choose a destination outside the source"
        )
    plan = plan_ingest(ds, partition_bytes, blocks_per_partition, store.min_block_bytes(), codec)
    fingerprint = plan.fingerprint(ds, replication)
    token = new_token()
    with store.lock(token):
        sidecar, resumable = prepare(store, plan, fingerprint, overwrite, token)
        done, file_ids = completed(store, plan, resumable)
        todo = [f for f in plan.files if f[0] not in done]
        skipped = len(done)
        if todo or sidecar is None:
            if sidecar is not None:  # unpublish before rewriting files it names
                store.rename(SIDECAR_NAME, PUBLISHED_NAME)
            with cluster_client(client, address, n_workers) as c:
                done_bytes = sum(r["bytes"] for r in done.values())
                written = _write_all(c, ds, store, plan, todo, replication, token, done_bytes, progress, on_file)
            done.update({name: w.record for name, w in written.items()})
            file_ids.update({name: w.file_id for name, w in written.items()})
            stored = {"calibration": ds.calibration.to_dict(), **(metadata or {}), **fingerprint}
            publish(store, ds, plan, done, file_ids, stored, token)
    opened = open_dataset(dest, webhdfs=webhdfs) if webhdfs else open_dataset(dest)
    opened.metadata["ingested"] = {"written": len(todo), "skipped": skipped,
                                   "seconds": round(time.perf_counter() - t0, 3)}
    return opened
